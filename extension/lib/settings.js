// User settings (options page) in chrome.storage.local: the token stays on this machine
// (storage.sync would copy it to every signed-in browser).

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

export async function loadSettings(storage = globalThis.chrome?.storage?.local) {
  const { settings } = await storage.get('settings');
  return normalizeSettings(settings ?? {});
}

export async function saveSettings(settings, storage = globalThis.chrome?.storage?.local) {
  const s = normalizeSettings(settings);
  await storage.set({ settings: s });
  return s;
}
