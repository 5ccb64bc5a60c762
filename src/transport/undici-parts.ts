/**
 * The parts of undici the transport uses, loaded from undici's own files
 * rather than its index: the index also loads fetch, the mock agent, the
 * cache, the SOCKS5 interceptor and more that bits never calls — on this
 * machine requiring the index takes ~160 ms, these parts ~60 ms, and every
 * command that talks to a server paid the difference at start-up (issue 13's
 * 1 MiB rows). The types are undici's own. undici has no `exports` map, so
 * the deep paths are allowed; scripts/build-exe.mjs bundles them as written
 * (it turns `createRequire(import.meta.url)('…')` into require).
 *
 * Loaded on first use, not at import: a plain-http download sends its HEAD and
 * GETs through the bulk reader (bulk-get.ts) and never needs undici, whose
 * parts and the built-ins they pull in (http2, tls, …) cost ~40 ms to evaluate.
 */
import { createRequire } from 'node:module';
import type { Client as UndiciClient, buildConnector as UndiciBuildConnector, errors as UndiciErrors } from 'undici';

export interface UndiciParts {
  Client: typeof UndiciClient;
  buildConnector: typeof UndiciBuildConnector;
  errors: typeof UndiciErrors;
}

let parts: UndiciParts | undefined;

export function undici(): UndiciParts {
  if (parts) return parts;
  const Client = createRequire(import.meta.url)('undici/lib/dispatcher/client.js') as typeof UndiciClient;
  // What undici's index does to give every dispatcher request()/stream()/pipeline() (undici is pinned to one version).
  const Dispatcher = createRequire(import.meta.url)('undici/lib/dispatcher/dispatcher.js') as { prototype: object };
  const api = createRequire(import.meta.url)('undici/lib/api/index.js') as object;
  if (!('request' in Dispatcher.prototype)) Object.assign(Dispatcher.prototype, api);
  parts = {
    Client,
    buildConnector: createRequire(import.meta.url)('undici/lib/core/connect.js') as typeof UndiciBuildConnector,
    errors: createRequire(import.meta.url)('undici/lib/core/errors.js') as typeof UndiciErrors,
  };
  return parts;
}

/** undici's error classes if undici was loaded; undefined before, when no error can be one of them. */
export function undiciErrorsIfLoaded(): typeof UndiciErrors | undefined {
  return parts?.errors;
}

export type Client = UndiciClient;
export declare namespace Client {
  type Options = UndiciClient.Options;
}
export type buildConnector = typeof UndiciBuildConnector;
export declare namespace buildConnector {
  type BuildOptions = UndiciBuildConnector.BuildOptions;
  type connector = UndiciBuildConnector.connector;
  type Options = UndiciBuildConnector.Options;
  type Callback = UndiciBuildConnector.Callback;
}
