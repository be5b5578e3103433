// extension/lib/relay.js: the media messages a content script posts to the offscreen document.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { toBase64, fromBase64, audioMessage, videoMessage, parseRelayMessage } from '../../extension/lib/relay.js';

const bytes = (n, seed = 7) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);

test('base64 round-trips every byte value and large payloads (the chunked path)', () => {
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  assert.deepEqual(fromBase64(toBase64(all)), all);
  const big = bytes(200_003);
  assert.deepEqual(fromBase64(toBase64(big)), big);
  assert.equal(toBase64(new Uint8Array([1, 2, 3])), Buffer.from([1, 2, 3]).toString('base64'));
  assert.throws(() => fromBase64('not base64!'), TypeError);
  assert.throws(() => fromBase64('abc'), TypeError);
});

test('an audio frame survives the port as JSON, with its sample position and wall time', () => {
  const pcm = bytes(3200);
  const wire = JSON.parse(JSON.stringify(audioMessage(pcm, { startSample: 16000, samples: 1600, wallMs: 1234.5 })));
  const m = parseRelayMessage(wire);
  assert.deepEqual({ ...m, bytes: undefined }, { kind: 'audio', bytes: undefined, startSample: 16000, samples: 1600, wallMs: 1234.5 });
  assert.deepEqual(m.bytes, pcm);
});

test('a video frame survives the port as JSON, with its size', () => {
  const jpeg = bytes(40_000);
  const m = parseRelayMessage(JSON.parse(JSON.stringify(videoMessage(jpeg, { wallMs: 99, width: 640, height: 360 }))));
  assert.equal(m.kind, 'video');
  assert.equal(m.width, 640);
  assert.equal(m.height, 360);
  assert.deepEqual(m.bytes, jpeg);
});

test('malformed messages are dropped, not passed on', () => {
  const ok = audioMessage(bytes(3200), { startSample: 0, samples: 1600, wallMs: 1 });
  for (const bad of [
    null, 'x', {}, { k: 'z' },
    { ...ok, s: -1 }, { ...ok, s: 1.5 }, { ...ok, n: 0 }, { ...ok, w: 'now' },
    { ...ok, n: 1599 }, // payload length does not match the sample count
    { ...ok, d: '***' },
    { k: 'v', w: 1, W: 0, H: 10, d: 'AAAA' }, { k: 'v', w: 1, W: 10, H: 10, d: '' },
    { k: 'rect', rect: { x: 0, y: 0, w: 'a', h: 1 } },
  ]) assert.equal(parseRelayMessage(bad), null, JSON.stringify(bad)?.slice(0, 80));
  assert.equal(parseRelayMessage({ k: 'v', w: 1, W: 10, H: 10, d: toBase64(bytes(5000)) }, { maxBytes: 1000 }), null, 'over the size limit');
});

test('hello, rect and state messages are normalised', () => {
  assert.deepEqual(parseRelayMessage({ k: 'hello', audio: true, video: 'element', rect: { x: 0.1, y: 0.2, w: 0.5, h: 0.4, extra: 1 } }),
    { kind: 'hello', audio: true, video: 'element', reason: '', rect: { x: 0.1, y: 0.2, w: 0.5, h: 0.4 } });
  assert.deepEqual(parseRelayMessage({ k: 'hello', audio: 'yes', video: 'canvas' }), { kind: 'hello', audio: false, video: 'none', reason: '', rect: null });
  assert.deepEqual(parseRelayMessage({ k: 'state', paused: true, wallMs: 5 }), { kind: 'state', paused: true, ended: false, wallMs: 5 });
});
