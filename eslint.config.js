// ESLint flat config for the project's JavaScript (`make lint-js`, part of `make lint` and `make test`).
// Each file gets the globals of the realm it runs in: extension pages, the content script and the
// demo page run in a browser window, the MV3 service worker (background.js) in a service worker,
// lib/video-worker.js in a dedicated worker, lib/pcm-worklet.js in an AudioWorklet; tests/js in node.
import js from '@eslint/js';
import globals from 'globals';

const SERVICE_WORKER = ['extension/background.js'];
const WORKER = ['extension/lib/video-worker.js'];
const WORKLET = ['extension/lib/pcm-worklet.js'];
const CONTENT_SCRIPT = ['extension/content/content.js'];

export default [
  { ignores: ['node_modules/', 'dist/', 'build/'] },
  js.configs.recommended,
  {
    files: ['extension/**/*.js', 'server/static/**/*.js'],
    languageOptions: { ecmaVersion: 2024, sourceType: 'module' },
  },
  {
    // window realms: options page, offscreen document, content script, lib/ modules they import, demo page
    files: ['extension/**/*.js', 'server/static/**/*.js'],
    ignores: [...SERVICE_WORKER, ...WORKER, ...WORKLET],
    languageOptions: { globals: { ...globals.browser } },
  },
  {
    files: ['extension/**/*.js'],
    ignores: [...WORKER, ...WORKLET], // no extension APIs in a dedicated worker or an AudioWorklet
    languageOptions: { globals: { ...globals.webextensions } },
  },
  { files: SERVICE_WORKER, languageOptions: { globals: { ...globals.serviceworker } } },
  { files: WORKER, languageOptions: { globals: { ...globals.worker } } },
  { files: WORKLET, languageOptions: { globals: { ...globals.audioWorklet } } },
  {
    // manifest.json content_scripts run as a classic script (it loads lib/*.js with import())
    files: CONTENT_SCRIPT,
    languageOptions: { sourceType: 'script' },
  },
  {
    files: ['tests/js/**/*.mjs', 'tests/js/**/*.js', 'eslint.config.js'],
    languageOptions: { ecmaVersion: 2024, sourceType: 'module', globals: { ...globals.node } },
  },
];
