// Media from a content script to the extension's offscreen document, over a chrome.runtime port.
//
// A content script runs with the page's origin: a WebSocket it opened would carry the page's
// Origin, which the server refuses (server/admission.py), and it would need the token. So the
// content script only captures (the page's <video>: captureStream() → lib/capture.js) and posts
// the PCM16 and JPEG frames to the offscreen document, which owns the Transport, the token and
// the media clock. Runtime messages are JSON, so payloads travel as base64 (4/3 of the bytes:
// about 0.3 MB/s for 10 JPEG frames of 360p and ten 100 ms audio frames a second).
//
// Messages, content script → offscreen ({k: kind, ...}):
//   {k: 'hello', audio: bool, video: 'element' | 'none', reason, rect, capture: id}
//   {k: 'a', s: startSample, n: samples, w: wallMs, d: base64 PCM16}
//   {k: 'v', w: wallMs, W: width, H: height, d: base64 JPEG}
//   {k: 'rect', rect}                       the analysed video's place (fractions of the viewport)
//   {k: 'state', paused, ended, wallMs}     the analysed video paused, played or ended
// offscreen → content script:
//   {k: 'flow', live, paused, fps, shortSide, maxWidth, maxHeight}

export const MEDIA_PORT = 'vibescope-media';
export const MAX_RELAY_BYTES = 4 * 1024 * 1024;

/** Uint8Array → base64 (the built-in where the browser has it). */
export function toBase64(bytes) {
  if (typeof bytes.toBase64 === 'function') return bytes.toBase64();
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

/** base64 → Uint8Array; throws on anything that is not base64. */
export function fromBase64(text) {
  if (typeof text !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) {
    throw new TypeError('not base64');
  }
  if (typeof Uint8Array.fromBase64 === 'function') return Uint8Array.fromBase64(text);
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i += 1) out[i] = bin.charCodeAt(i);
  return out;
}

export function audioMessage(pcm, { startSample, samples, wallMs }) {
  return { k: 'a', s: startSample, n: samples, w: wallMs, d: toBase64(pcm) };
}

export function videoMessage(jpeg, { wallMs, width, height }) {
  return { k: 'v', w: wallMs, W: width, H: height, d: toBase64(jpeg) };
}

const finite = (x) => typeof x === 'number' && Number.isFinite(x);
const isRect = (r) => r && typeof r === 'object' && ['x', 'y', 'w', 'h'].every((k) => finite(r[k]));

/**
 * Check one message from the port. Returns {kind, ...} or null for anything malformed (wrong
 * types, a payload over `maxBytes`, an unknown kind): the offscreen document drops those.
 */
export function parseRelayMessage(msg, { maxBytes = MAX_RELAY_BYTES } = {}) {
  if (!msg || typeof msg !== 'object') return null;
  const payload = () => {
    if (typeof msg.d !== 'string' || msg.d.length > Math.ceil(maxBytes / 3) * 4) return null;
    try { return fromBase64(msg.d); } catch { return null; }
  };
  switch (msg.k) {
    case 'a': {
      if (!Number.isInteger(msg.s) || msg.s < 0 || !Number.isInteger(msg.n) || msg.n <= 0 || !finite(msg.w)) return null;
      const bytes = payload();
      if (!bytes || bytes.length !== msg.n * 2) return null; // PCM16 mono
      return { kind: 'audio', bytes, startSample: msg.s, samples: msg.n, wallMs: msg.w };
    }
    case 'v': {
      if (!finite(msg.w) || !Number.isInteger(msg.W) || !Number.isInteger(msg.H) || msg.W <= 0 || msg.H <= 0) return null;
      const bytes = payload();
      if (!bytes || bytes.length === 0) return null;
      return { kind: 'video', bytes, wallMs: msg.w, width: msg.W, height: msg.H };
    }
    case 'hello':
      return {
        kind: 'hello',
        audio: msg.audio === true,
        video: msg.video === 'element' ? 'element' : 'none',
        reason: typeof msg.reason === 'string' ? msg.reason.slice(0, 300) : '',
        rect: isRect(msg.rect) ? { x: msg.rect.x, y: msg.rect.y, w: msg.rect.w, h: msg.rect.h } : null,
      };
    case 'rect':
      return isRect(msg.rect) ? { kind: 'rect', rect: { x: msg.rect.x, y: msg.rect.y, w: msg.rect.w, h: msg.rect.h } } : null;
    case 'state':
      return { kind: 'state', paused: msg.paused === true, ended: msg.ended === true, wallMs: finite(msg.wallMs) ? msg.wallMs : null };
    default:
      return null;
  }
}
