// What the overlay shows (extension/lib/overlay-model.js): no invented points, provenance and
// confidence always present, BGM hysteresis, a trail that fades over the last seconds.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  OverlayModel, MusicState, vaToXY, confidenceOpacity, describeVA, provenance, formatNumber,
} from '../../extension/lib/overlay-model.js';

const ev = (t, over = {}) => ({
  type: 'overlay', t, valence: null, arousal: null, confidence: null,
  music: { probability: null, level_db: null }, speech: { probability: null }, face: { present: null },
  latency_ms: 10, models: {}, ...over,
});

test('null valence/arousal shows "not available" and no point, never a fake one', () => {
  const m = new OverlayModel();
  m.update(ev(0.1));
  const v = m.view();
  assert.equal(v.va.available, false);
  assert.equal(v.va.x, undefined);
  assert.equal(v.va.valence, '—');
  assert.match(v.va.words, /not available/);
  assert.equal(v.music.stateText, 'music: not available');
  assert.equal(v.speech.text, '—');
  assert.deepEqual(v.trail, []);
});

test('circumplex mapping: pleasant is right, excited is up, values clipped to [-1, 1]', () => {
  assert.deepEqual(vaToXY(1, 1), { x: 1, y: 0 });
  assert.deepEqual(vaToXY(-1, -1), { x: 0, y: 1 });
  assert.deepEqual(vaToXY(0, 0), { x: 0.5, y: 0.5 });
  assert.deepEqual(vaToXY(3, -7), { x: 1, y: 1 });
});

test('confidence dims the point; unknown confidence is dim, not bright', () => {
  assert.ok(confidenceOpacity(0) < confidenceOpacity(0.5));
  assert.ok(confidenceOpacity(0.5) < confidenceOpacity(1));
  assert.equal(confidenceOpacity(1), 1);
  assert.ok(confidenceOpacity(null) < 0.5);
});

test('the words say what the V/A model learned from', () => {
  const m = new OverlayModel({});
  m.update(ev(0.1, { valence: 0.5, arousal: -0.4, confidence: 0.4, va_status: 'simulated-teacher' }));
  assert.equal(m.view().va.words, 'leans pleasant, calm · learned from simulated cues, not human ratings');
  m.update(ev(0.2, { valence: 0.5, arousal: -0.4, confidence: 0.4 }));
  assert.equal(m.view().va.words, 'leans pleasant, calm');
});

test('words describe and hedge instead of pronouncing', () => {
  assert.equal(describeVA(0.5, -0.4), 'leans pleasant, calm');
  assert.equal(describeVA(0.05, 0.1), 'near neutral');
  assert.equal(describeVA(null, 0.1), 'not available');
  assert.equal(formatNumber(-0.3), '−0.30');
});

test('the trail keeps the last 5 s of media time and older points are fainter', () => {
  const m = new OverlayModel({ trailSeconds: 5 });
  for (let i = 1; i <= 80; i += 1) m.update(ev(i * 0.1, { valence: Math.sin(i / 10), arousal: 0.2, confidence: 1 }));
  const v = m.view();
  assert.ok(m.trail.every((p) => 8.0 - p.t <= 5 + 1e-9));
  assert.ok(v.trail.length > 10);
  assert.ok(v.trail[0].opacity < v.trail.at(-1).opacity);
  // a new session (time goes back) clears the trail
  m.update(ev(0.1, { valence: 0, arousal: 0, confidence: 1 }));
  assert.equal(m.view().trail.length, 0);
});

test('"BGM detected" needs the music probability high for a second, and low for a second to clear', () => {
  const s = new MusicState();
  const seq = (from, n, p) => Array.from({ length: n }, (_, i) => s.update(from + i * 0.1, p));
  assert.ok(seq(0.1, 10, 0.9).every((d) => d === false));
  assert.equal(s.update(1.1, 0.9), true);
  assert.equal(s.update(1.2, 0.1), true); // one low tick does not clear it
  assert.equal(s.update(1.3, 0.9), true);
  assert.ok(seq(1.4, 10, 0.1).every((d) => d === true));
  assert.equal(s.update(2.4, 0.1), false);
});

test('provenance names the model of each field and whether it is validated on human ratings', () => {
  const components = {
    tagf: { id: 'tagf-v0', card: 'models/tagf.md', validated: false },
    speech: { id: 'silero-vad-6', card: 'silero card', validated: true },
  };
  const p = provenance({ valence: 'tagf-v0', arousal: 'tagf-v0', speech: 'silero-vad-6', face: 'retinaface-mnet025' }, components);
  assert.deepEqual(p.map((x) => [x.label, x.model, x.validated]), [
    ['valence + arousal', 'tagf-v0', false],
    ['speech', 'silero-vad-6', true],
    ['face', 'retinaface-mnet025', null],
  ]);
  const m = new OverlayModel();
  m.setComponents(components);
  m.update(ev(0.1, { valence: 0.2, arousal: 0.1, confidence: 0.3, models: { valence: 'tagf-v0', arousal: 'tagf-v0' } }));
  assert.equal(m.view().provenance[0].validatedText, 'not validated on human ratings');
});

test('music meter shows probability and level when the server computes them', () => {
  const m = new OverlayModel();
  m.update(ev(0.1, { music: { probability: 0.93, level_db: -21.5 } }));
  const v = m.view().music;
  assert.equal(v.probabilityText, '93%');
  assert.equal(v.level, '-22 dB');
  assert.equal(v.stateText, 'no BGM detected');
});

test('a tick whose frame was not analysed keeps the last face state for a second, then says so', () => {
  const m = new OverlayModel();
  m.update(ev(0.1, { face: { present: true, score: 0.99 } }));
  m.update(ev(0.2, { face: { present: null, score: null } })); // frame skipped: no flicker
  assert.equal(m.view().face, 'face in view');
  m.update(ev(1.0, { face: { present: null, score: null } }));
  assert.equal(m.view().face, 'face in view');
  m.update(ev(1.2, { face: { present: null, score: null } })); // over a second without a frame
  assert.equal(m.view().face, 'face: not available');
  m.update(ev(1.3, { face: { present: false, score: null } }));
  assert.equal(m.view().face, 'no face');
  m.update(ev(0.1, { face: { present: null } })); // a new session forgets the old one's face
  assert.equal(m.view().face, 'face: not available');
});

test('"server busy" shows while the server reports skipped video frames, and clears', () => {
  const m = new OverlayModel();
  m.update(ev(0.1, { dropped: { video_frames: 0 } }));
  assert.equal(m.view().latency.busy, false);
  m.update(ev(0.2, { dropped: { video_frames: 1 } }));
  assert.equal(m.view().latency.busy, true);
  m.update(ev(3.1, { dropped: { video_frames: 1 } })); // no new skip for nearly 3 s
  assert.equal(m.view().latency.busy, true);
  m.update(ev(3.3, { dropped: { video_frames: 1 } }));
  assert.equal(m.view().latency.busy, false);
  m.update(ev(3.4, { dropped: { video_frames: 2 } }));
  assert.equal(m.view().latency.busy, true);
  m.update(ev(0.1, { dropped: { video_frames: 0 } })); // a new session starts clear
  assert.equal(m.view().latency.busy, false);
});
