// extension/lib/media-clock.js: one clock for audio and video across captures, pauses and sessions.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { MediaClock, MAX_VIDEO_LEAD_S } from '../../extension/lib/media-clock.js';

const S = 1600; // 100 ms at 16 kHz
const W0 = 1_700_000_000_000; // an epoch ms

/** Feed n audio frames of a capture starting at sample `first`, the first one ending at `wall`. */
function feed(clock, n, { first = 0, wall = W0 + 100 } = {}) {
  const ts = [];
  for (let i = 0; i < n; i += 1) ts.push(clock.audio(first + i * S, S, wall + i * 100));
  return ts;
}

test('audio is placed by its samples, video by the wall time since the last audio frame', () => {
  const c = new MediaClock();
  assert.equal(c.video(W0 + 20), 0, 'a picture before any audio starts the clock');
  assert.deepEqual(feed(c, 3), [0, 100_000, 200_000]);
  assert.ok(Math.abs(c.endT - 0.3) < 1e-9);
  // the last audio frame (ending at 0.3 s) arrived at W0 + 300: a picture 40 ms later is at 0.34 s
  assert.equal(c.video(W0 + 340), 340_000);
  // jitter in the audio's arrival does not move the audio; the video follows the audio
  assert.equal(c.audio(3 * S, S, W0 + 460), 300_000);
  assert.equal(c.video(W0 + 470), 410_000);
});

test('video never goes back and never runs more than MAX_VIDEO_LEAD_S ahead of the audio', () => {
  const c = new MediaClock();
  feed(c, 2);
  const a = c.video(W0 + 250);
  const b = c.video(W0 + 240); // taken "earlier" by a skewed clock
  assert.ok(b > a);
  // the audio stalls for 20 s: the pictures stay within the lead the server accepts
  const late = c.video(W0 + 20_000);
  assert.ok(late / 1e6 <= c.endT + MAX_VIDEO_LEAD_S + 1e-9, `${late}`);
});

test('a new capture (samples from 0 again) continues after the wall time that passed: a gap, not a jump back', () => {
  const c = new MediaClock();
  feed(c, 10); // 0 .. 1.0 s, last frame in at W0 + 1000
  c.rebase(W0 + 3000, { gap: true }); // the new document starts capturing 2 s later
  const ts = feed(c, 2, { wall: W0 + 3100 });
  assert.deepEqual(ts, [3_000_000, 3_100_000]);
  // the last audio frame (ending at 3.2 s) arrived at W0 + 3200
  assert.equal(c.video(W0 + 3150), 3_150_000, 'from the last audio frame');
  assert.equal(c.segments, 1);
});

test('samples that go back without a rebase continue where the audio ended', () => {
  const c = new MediaClock();
  feed(c, 5);
  assert.equal(c.audio(0, S, W0 + 700), 500_000);
  assert.equal(c.audio(S, S, W0 + 800), 600_000);
});

test('pause freezes the clock; resume continues without a gap although the capture went on', () => {
  const c = new MediaClock();
  feed(c, 10); // to 1.0 s
  c.pause(W0 + 1050);
  assert.equal(c.at(W0 + 9000), c.at(W0 + 1050), 'no media time passes while paused');
  c.resume(W0 + 9000);
  // the tab's audio kept counting samples meanwhile (80 frames): analysis goes on at 1.05 s
  const [t] = feed(c, 1, { first: 90 * S, wall: W0 + 9100 });
  assert.equal(t, 1_050_000);
  assert.equal(c.paused, false);
});

test('at() is the media time due now: what a resume says came due while away (catch_up_until_t)', () => {
  const c = new MediaClock();
  feed(c, 10); // last frame (end 1.0 s) in at W0 + 1000
  assert.equal(c.at(W0 + 1000), 1.0);
  assert.equal(c.at(W0 + 4500), 4.5);
});
