// User settings (options page). Everything but the token lives in chrome.storage.local (not
// storage.sync, which would copy it to every signed-in browser). The token does not: content
// scripts can read chrome.storage.local, and they run inside pages. It is kept in the extension
// origin's IndexedDB, which only the extension's own pages and its service worker can open (a
// content script's indexedDB is the page's), and it is never sent to a content script: the
// offscreen document reads it itself when it connects.

export const DEFAULT_SETTINGS = Object.freeze({
  server: 'http://127.0.0.1:8765',
  token: '',
  fps: 10,
  shortSide: 360,
  show: { circumplex: true, music: true, speech: true, provenance: true },
});

/** Merge stored values over the defaults, refusing out-of-range ones. */
export function normalizeSettings(stored = {}) {
  const s = { ...DEFAULT_SETTINGS, ...stored, show: { ...DEFAULT_SETTINGS.show, ...(stored.show ?? {}) } };
  const fps = Number(s.fps);
  s.fps = Number.isFinite(fps) ? Math.min(30, Math.max(1, fps)) : DEFAULT_SETTINGS.fps;
  const side = Number(s.shortSide);
  s.shortSide = Number.isFinite(side) ? Math.min(1080, Math.max(144, Math.round(side))) : DEFAULT_SETTINGS.shortSide;
  s.server = String(s.server ?? '').trim() || DEFAULT_SETTINGS.server;
  s.token = String(s.token ?? '');
  return s;
}

// --- the token's store -------------------------------------------------------------------------

const DB_NAME = 'vibescope-secrets';
const STORE = 'kv';
const TOKEN_KEY = 'token';

/** A key/value store in this origin's IndexedDB: {get(key), set(key, value)}. */
export function indexedDbSecrets(idb = globalThis.indexedDB) {
  let opened = null;
  const db = () => {
    opened ??= new Promise((resolve, reject) => {
      const req = idb.open(DB_NAME, 1);
      req.onupgradeneeded = () => req.result.createObjectStore(STORE);
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => { opened = null; reject(req.error); };
    });
    return opened;
  };
  const run = async (mode, fn) => {
    const d = await db();
    return new Promise((resolve, reject) => {
      const tx = d.transaction(STORE, mode);
      const req = fn(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(req?.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  };
  return {
    get: (key) => run('readonly', (s) => s.get(key)),
    set: (key, value) => run('readwrite', (s) => s.put(value, key)),
  };
}

/** The store for the token: the extension origin's IndexedDB; none outside the extension's own pages. */
export function defaultSecrets() {
  const inExtension = globalThis.location?.protocol === 'chrome-extension:';
  return inExtension && globalThis.indexedDB ? indexedDbSecrets() : null;
}

let sharedSecrets;
function secretsOrDefault(secrets) {
  if (secrets !== undefined) return secrets;
  sharedSecrets ??= defaultSecrets();
  return sharedSecrets;
}

/**
 * The settings, with the token (from `secrets`). A token an older version kept in
 * chrome.storage.local is moved to `secrets` and removed from there.
 */
export async function loadSettings(storage = globalThis.chrome?.storage?.local, secrets = undefined) {
  const store = secretsOrDefault(secrets);
  const { settings } = await storage.get('settings');
  const stored = { ...(settings ?? {}) };
  let token = '';
  if (typeof stored.token === 'string') {
    const legacy = stored.token;
    delete stored.token;
    if (store) {
      if (legacy) await store.set(TOKEN_KEY, legacy);
      await storage.set({ settings: stored });
    }
    token = legacy;
  }
  if (store) token = (await store.get(TOKEN_KEY)) ?? token;
  return normalizeSettings({ ...stored, token });
}

/** The token alone (the offscreen document has no chrome.storage; it reads the token itself). */
export async function loadToken(secrets = undefined) {
  const store = secretsOrDefault(secrets);
  return store ? String((await store.get(TOKEN_KEY)) ?? '') : '';
}

/** Save the settings: the token to `secrets`, the rest to chrome.storage.local. */
export async function saveSettings(settings, storage = globalThis.chrome?.storage?.local, secrets = undefined) {
  const store = secretsOrDefault(secrets);
  if (!store) throw new Error('the token can only be saved from the extension\'s own pages');
  const s = normalizeSettings(settings);
  const { token, ...rest } = s;
  await store.set(TOKEN_KEY, token);
  await storage.set({ settings: rest });
  return s;
}

/** What a content script may know of the settings: never the token. */
export function forPage(settings) {
  return { fps: settings.fps, shortSide: settings.shortSide, show: { ...settings.show } };
}
