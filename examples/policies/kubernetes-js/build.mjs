// Builds the policy component: policy.js + StarlingMonkey (SpiderMonkey) ->
// kubernetes_js.wasm (or the path given as the first argument).
//
//   npm ci           # componentize-js, as pinned in package-lock.json
//   npm run build    # -> kubernetes_js.wasm
//
// The bindings for the `claim-policy` world are generated from ../../../wit/gantry-policy@0.1.0
// on every build, inside componentize-js: nothing generated is committed.

import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile, rename } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? resolve(here, 'kubernetes_js.wasm'));

const { component } = await componentize({
  sourcePath: resolve(here, 'policy.js'),
  witPath: resolve(here, '../../../wit/gantry-policy@0.1.0'),
  worldName: 'claim-policy',
  // A claim policy needs none of these, and Gantry links none of them:
  // `http` would import wasi:http, which a policy may not have; without
  // `random` and `clocks`, Math.random() and Date.now() are deterministic.
  // `stdio` stays, so an uncaught exception's message reaches stderr, which
  // Gantry captures and reports with the trap.
  disableFeatures: ['http', 'fetch-event', 'random', 'clocks'],
});

// Written beside the target, then renamed: a reader never sees half a file.
const tmp = `${out}.${process.pid}.tmp`;
await writeFile(tmp, component);
await rename(tmp, out);
console.log(`${out}: ${component.length} bytes`);
