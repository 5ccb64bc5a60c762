/** The download client (MC-BUP §3.6): see src/client/download/index.ts. This path is what the jobs layer imports. */
export * from './download/index.js';
