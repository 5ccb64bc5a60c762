// What scripts/bundle.mjs (dist/bundle/, the CLI bin/bits runs) and scripts/build-exe.mjs (the
// single executable) both need from esbuild.
import { readFileSync } from 'node:fs';

/**
 * createRequire(import.meta.url)('undici/…') finds undici in node_modules at run time, out of
 * the bundler's sight: make it a plain require the bundler resolves into the bundle.
 */
export const inlineRuntimeRequires = {
  name: 'inline-runtime-requires',
  setup(b) {
    b.onLoad({ filter: /[\\/]src[\\/].*\.ts$/ }, (args) => {
      const text = readFileSync(args.path, 'utf8');
      const contents = text.replace(/createRequire\(import\.meta\.url\)\((['"][^'"]+['"])\)/g, 'require($1)');
      return { contents, loader: 'ts' };
    });
  },
};
