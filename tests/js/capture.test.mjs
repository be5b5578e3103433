// The pure parts of the capture path: resampling to 16 kHz, framing into PCM16, the video frame
// rate gate and output sizing (extension/lib/resample.js, extension/lib/video-encoder.js).
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { Resampler, Framer, downmix, toPcm16 } from '../../extension/lib/resample.js';
import { targetSize, cropRect, FrameGate } from '../../extension/lib/video-encoder.js';

const sine = (f, rate, n, amp = 0.5) => Float32Array.from({ length: n }, (_, i) => amp * Math.sin((2 * Math.PI * f * i) / rate));
const rms = (x) => Math.sqrt(x.reduce((s, v) => s + v * v, 0) / x.length);

function resampleAll(x, inRate, chunk) {
  const r = new Resampler(inRate, 16000);
  const parts = [];
  for (let i = 0; i < x.length; i += chunk) parts.push(r.push(x.subarray(i, i + chunk)));
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

for (const inRate of [48000, 44100, 16000, 22050]) {
  test(`a 1 kHz tone at ${inRate} Hz comes out at 16 kHz with its level and pitch`, () => {
    const x = sine(1000, inRate, inRate); // 1 s
    const y = resampleAll(x, inRate, 128);
    assert.ok(Math.abs(y.length - 16000) <= 60, `length ${y.length}`);
    const mid = y.subarray(1000, 15000);
    assert.ok(Math.abs(rms(mid) - 0.5 / Math.SQRT2) < 0.01, `rms ${rms(mid)}`);
    let crossings = 0;
    for (let i = 1; i < mid.length; i += 1) if (mid[i - 1] < 0 && mid[i] >= 0) crossings += 1;
    assert.ok(Math.abs(crossings - 875) <= 2, `crossings ${crossings}`); // 14000 samples = 0.875 s
  });
}

test('content above the new Nyquist is removed instead of folding back', () => {
  const y = resampleAll(sine(12000, 48000, 48000), 48000, 128); // would alias to 4 kHz
  assert.ok(rms(y.subarray(1000, 15000)) < 0.5 / Math.SQRT2 / 100, `rms ${rms(y.subarray(1000, 15000))}`); // < -40 dB
});

test('the output does not depend on how the input is chunked', () => {
  const x = Float32Array.from({ length: 9000 }, (_, i) => Math.sin(i * 0.37) * Math.cos(i * 0.011));
  const ref = resampleAll(x, 44100, 9000);
  for (const chunk of [1, 7, 128, 1000]) {
    const y = resampleAll(x, 44100, chunk);
    assert.equal(y.length, ref.length);
    for (let i = 0; i < y.length; i += 1) assert.ok(Math.abs(y[i] - ref[i]) < 1e-6, `chunk ${chunk} sample ${i}`);
  }
});

test('downmix averages channels', () => {
  assert.deepEqual(Array.from(downmix([Float32Array.of(1, 0.5), Float32Array.of(0, -0.5)])), [0.5, 0]);
});

test('PCM16 conversion clips instead of wrapping', () => {
  assert.deepEqual(Array.from(toPcm16(Float32Array.of(0, 1, -1, 2, -2, 0.5))), [0, 32767, -32767, 32767, -32768, 16384]);
});

test('framer emits 100 ms frames of 1600 samples with their start sample', () => {
  const f = new Framer(1600);
  const frames = [...f.push(new Float32Array(1000)), ...f.push(new Float32Array(2500)), ...f.push(new Float32Array(100))];
  assert.deepEqual(frames.map((x) => [x.pcm.length, x.startSample]), [[1600, 0], [1600, 1600]]);
  assert.equal(f.fill, 400);
});

test('output size: short side 360, never upscaled, within the server limits, even', () => {
  assert.deepEqual(targetSize(1920, 1080), { width: 640, height: 360 });
  assert.deepEqual(targetSize(1080, 1920), { width: 360, height: 640 }); // Shorts / TikTok
  assert.deepEqual(targetSize(320, 240), { width: 320, height: 240 });
  assert.deepEqual(targetSize(1920, 1080, { shortSide: 720, maxWidth: 640, maxHeight: 640 }), { width: 640, height: 360 });
  assert.deepEqual(targetSize(333, 1001), { width: 334, height: 1002 }); // odd → even (no upscale beyond rounding)
});

test('crop to the video element rectangle, whole frame when unknown or degenerate', () => {
  assert.deepEqual(cropRect(1280, 720, null), { sx: 0, sy: 0, sw: 1280, sh: 720 });
  assert.deepEqual(cropRect(1280, 720, { x: 0.25, y: 0, w: 0.5, h: 1 }), { sx: 320, sy: 0, sw: 640, sh: 720 });
  assert.deepEqual(cropRect(1280, 720, { x: -0.1, y: 0.5, w: 2, h: 2 }), { sx: 0, sy: 360, sw: 1280, sh: 360 });
  assert.deepEqual(cropRect(1280, 720, { x: 0.5, y: 0.5, w: 0.001, h: 0.5 }), { sx: 0, sy: 0, sw: 1280, sh: 720 });
});

test('the frame gate keeps 10 of 30 fps and does not burst after a stall', () => {
  const g = new FrameGate(10);
  let kept = 0;
  for (let i = 0; i < 90; i += 1) if (g.accept(i * (1000 / 30))) kept += 1; // 3 s at 30 fps
  assert.ok(kept >= 29 && kept <= 31, `kept ${kept}`);
  // 2 s without frames, then 30 fps again: at most one extra frame, not 20 frames of debt
  let burst = 0;
  for (let i = 0; i < 3; i += 1) if (g.accept(5000 + i * (1000 / 30))) burst += 1;
  assert.ok(burst <= 2, `burst ${burst}`);
});
