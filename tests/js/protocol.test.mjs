// extension/lib/protocol.js against the shared vectors (tests/vectors/protocol.json, generated from
// server/protocol.py) and the Transport's sequencing/resume/backoff/drop rules.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import {
  HEADER_SIZE, Kind, ProtocolError, DEFAULT_LIMITS, CloseCode, Transport,
  encodeFrame, decodeFrame, parseControl, buildHello, sniffImage, backoffDelayMs, streamUrl, httpBase,
} from '../../extension/lib/protocol.js';
import { FakeSocket, FakeClock } from './fakes.mjs';

const vectors = JSON.parse(readFileSync(new URL('../vectors/protocol.json', import.meta.url), 'utf8'));
const hex = (h) => Uint8Array.from(h.match(/../g) ?? [], (b) => parseInt(b, 16));
const toHex = (u8) => Buffer.from(u8).toString('hex');

test('header size matches the Python definition', () => {
  assert.equal(HEADER_SIZE, vectors.header_size);
});

for (const v of vectors.frames) {
  test(`vector frame decodes like Python: ${v.name}`, () => {
    const f = decodeFrame(hex(v.hex));
    assert.equal(f.kind, v.kind);
    assert.equal(f.seq, v.seq);
    assert.equal(f.timestampUsBig, BigInt(v.timestamp_us));
    assert.equal(toHex(f.payload), v.payload_hex);
    if (v.image !== null) assert.equal(sniffImage(f.payload), v.image);
  });
  test(`vector frame re-encodes to the same bytes: ${v.name}`, () => {
    const bytes = encodeFrame(v.kind, v.seq, BigInt(v.timestamp_us), hex(v.payload_hex));
    assert.equal(toHex(bytes), v.hex);
  });
}

for (const v of vectors.invalid_frames) {
  test(`invalid vector is refused with Python's code: ${v.name}`, () => {
    assert.throws(() => decodeFrame(hex(v.hex)), (err) => {
      assert.ok(err instanceof ProtocolError);
      assert.equal(err.code, v.error);
      assert.equal(err.seq, v.seq);
      return true;
    });
  });
}

for (const v of vectors.hellos) {
  test(`buildHello equals Python's Hello.to_json: ${v.name}`, () => {
    assert.deepEqual(buildHello(v.js_args), JSON.parse(v.json));
  });
}

for (const v of vectors.controls) {
  test(`parseControl agrees with Python: ${JSON.stringify(v.text)}`, () => {
    if (v.error) {
      assert.throws(() => parseControl(v.text), (err) => err.code === v.error);
    } else {
      assert.equal(parseControl(v.text).type, v.type);
    }
  });
}

test('encodeFrame refuses seq 0, seq above uint32 and negative timestamps', () => {
  assert.throws(() => encodeFrame(Kind.AUDIO, 0, 0, new Uint8Array()), RangeError);
  assert.throws(() => encodeFrame(Kind.AUDIO, 2 ** 32, 0, new Uint8Array()), RangeError);
  assert.throws(() => encodeFrame(Kind.AUDIO, 1, -1, new Uint8Array()), RangeError);
  assert.throws(() => encodeFrame(9, 1, 0, new Uint8Array()), RangeError);
});

test('backoff doubles from 250 ms to 8 s with jitter in [d/2, d]', () => {
  const hi = [0, 1, 2, 3, 4, 5, 6, 7, 12].map((a) => backoffDelayMs(a, () => 0.999999));
  const lo = [0, 1, 2, 3, 4, 5, 6, 7, 12].map((a) => backoffDelayMs(a, () => 0));
  assert.deepEqual(hi.map(Math.round), [250, 500, 1000, 2000, 4000, 8000, 8000, 8000, 8000]);
  assert.deepEqual(lo, [125, 250, 500, 1000, 2000, 4000, 4000, 4000, 4000]);
});

test('streamUrl normalises addresses and refuses credentials in the URL', () => {
  assert.equal(streamUrl('127.0.0.1:8765'), 'ws://127.0.0.1:8765/v1/stream');
  assert.equal(streamUrl('http://h:1/'), 'ws://h:1/v1/stream');
  assert.equal(streamUrl('https://h.example/vs'), 'wss://h.example/vs/v1/stream');
  assert.equal(streamUrl('ws://h:2/v1/stream'), 'ws://h:2/v1/stream');
  assert.throws(() => streamUrl('ws://h:2/v1/stream?token=abc'), TypeError);
  assert.throws(() => streamUrl('ftp://h'), TypeError);
  assert.throws(() => streamUrl(''), TypeError);
  assert.equal(httpBase('wss://h.example/vs/v1/stream'), 'https://h.example/vs');
});

// --- Transport ------------------------------------------------------------------------------------

function makeTransport(opts = {}) {
  const clock = new FakeClock();
  FakeSocket.reset();
  const events = [];
  const states = [];
  const t = new Transport({
    url: 'ws://127.0.0.1:9/v1/stream',
    token: 'tok',
    WebSocketImpl: FakeSocket,
    timers: clock,
    now: () => clock.now,
    random: () => 0.999999,
    onEvent: (e) => events.push(e),
    onState: (s) => states.push(s),
    ...opts,
  });
  return { t, clock, events, states };
}

const welcome = (over = {}) => ({ type: 'welcome', protocol: 1, session_id: 'S1', resume_token: 'R1', resumed: false, acked_seq: 0, limits: {}, models: {}, ...over });
const pcm = (n = 3200) => new Uint8Array(n);
const jpeg = () => hex('ffd8ffe000');
const seqsOf = (frames) => frames.map((b) => decodeFrame(b).seq);

test('hello goes first with the token in the message, never in the URL', () => {
  const { t } = makeTransport();
  t.start();
  const ws = FakeSocket.last;
  assert.equal(ws.url, 'ws://127.0.0.1:9/v1/stream');
  ws.open();
  const hello = JSON.parse(ws.sentText[0]);
  assert.equal(hello.type, 'hello');
  assert.equal(hello.token, 'tok');
  assert.equal(hello.session_id, undefined);
  assert.equal(ws.sentBinary.length, 0);
});

test('audio captured before the welcome is kept and sent after it, seq from 1', () => {
  const { t } = makeTransport();
  t.start();
  assert.equal(t.sendAudio(pcm(), 0), true);
  assert.equal(t.sendAudio(pcm(), 100000), true);
  const ws = FakeSocket.last;
  ws.open();
  assert.equal(ws.sentBinary.length, 0);
  ws.receive(welcome());
  assert.deepEqual(seqsOf(ws.sentBinary), [1, 2]);
  assert.equal(t.state, 'live');
});

test('video is not admitted before the session is live (dropped, audio kept)', () => {
  const { t } = makeTransport();
  t.start();
  assert.equal(t.sendVideo(jpeg(), 0), false);
  assert.equal(t.stats.dropped.video, 1);
});

test('all media kinds share one increasing seq and acks release kept frames', () => {
  const { t } = makeTransport();
  t.start();
  const ws = FakeSocket.last;
  ws.open();
  ws.receive(welcome());
  t.sendAudio(pcm(), 0);
  t.sendVideo(jpeg(), 0);
  t.sendAudio(pcm(), 100000);
  t.sendVideo(jpeg(), 100000);
  assert.deepEqual(seqsOf(ws.sentBinary), [1, 2, 3, 4]);
  assert.deepEqual(ws.sentBinary.map((b) => decodeFrame(b).kind), [1, 2, 1, 2]);
  ws.receive({ type: 'ack', seq: 3 });
  assert.deepEqual(t.unacked.map((f) => f.seq), [4]);
  ws.receive({ type: 'ack', seq: 2 }); // stale ack: no effect
  assert.deepEqual(t.unacked.map((f) => f.seq), [4]);
});

test('after a drop the client reconnects with backoff, resumes, and resends exactly the unacked frames', () => {
  const { t, clock, events } = makeTransport();
  t.start();
  let ws = FakeSocket.last;
  ws.open();
  ws.receive(welcome());
  for (let i = 0; i < 5; i += 1) t.sendAudio(pcm(), i * 100000);
  ws.receive({ type: 'ack', seq: 2 });
  ws.receive({ type: 'overlay', t: 0.2, valence: null, arousal: null });
  ws.serverClose(1006);
  assert.equal(t.state, 'reconnecting');
  t.sendAudio(pcm(), 500000); // captured while down: kept, seq 6
  assert.equal(FakeSocket.instances.length, 1);
  clock.advance(249);
  assert.equal(FakeSocket.instances.length, 1, 'waits the backoff before reconnecting');
  clock.advance(2);
  ws = FakeSocket.last;
  assert.equal(FakeSocket.instances.length, 2);
  assert.equal(ws.url, 'ws://127.0.0.1:9/v1/stream?session=S1', 'routing hint for a proxy, no credential');
  ws.open();
  const hello = JSON.parse(ws.sentText[0]);
  assert.equal(hello.session_id, 'S1');
  assert.equal(hello.resume_token, 'R1');
  assert.equal(hello.last_event_t, 0.2);
  ws.receive(welcome({ resumed: true, acked_seq: 3 }));
  assert.deepEqual(seqsOf(ws.sentBinary), [4, 5, 6]);
  // the server replays stored events after last_event_t; an older one is not shown twice
  ws.receive({ type: 'overlay', t: 0.2 });
  ws.receive({ type: 'overlay', t: 0.3 });
  assert.deepEqual(events.map((e) => e.t), [0.2, 0.3]);
  assert.equal(t.stats.duplicateEvents, 1);
  t.sendAudio(pcm(), 600000);
  assert.deepEqual(seqsOf(ws.sentBinary), [4, 5, 6, 7]);
});

test('backoff grows across failed attempts and resets after a welcome', () => {
  const { t, clock } = makeTransport();
  t.start();
  FakeSocket.last.serverClose(1006); // never opened
  const delays = [];
  for (let i = 0; i < 7; i += 1) {
    const before = FakeSocket.instances.length;
    let waited = 0;
    while (FakeSocket.instances.length === before) { clock.advance(10); waited += 10; }
    delays.push(waited);
    FakeSocket.last.serverClose(1006);
  }
  assert.deepEqual(delays, [250, 500, 1000, 2000, 4000, 8000, 8000]);
  clock.advance(8000);
  FakeSocket.last.open();
  FakeSocket.last.receive(welcome());
  assert.equal(t.attempt, 0);
});

test('a wrong token is final: no reconnect loop', () => {
  const { t, clock } = makeTransport();
  t.start();
  FakeSocket.last.open();
  FakeSocket.last.serverClose(CloseCode.UNAUTHORIZED, 'bad token');
  assert.equal(t.state, 'failed');
  clock.advance(60000);
  assert.equal(FakeSocket.instances.length, 1);
});

test('an unknown session on resume starts a fresh session and renumbers kept audio from 1', () => {
  const { t, clock } = makeTransport();
  t.start();
  let ws = FakeSocket.last;
  ws.open();
  ws.receive(welcome());
  t.sendAudio(pcm(), 0);
  t.sendVideo(jpeg(), 0);
  t.sendAudio(pcm(), 100000);
  ws.serverClose(1006);
  clock.advance(300);
  ws = FakeSocket.last;
  ws.open();
  ws.serverClose(CloseCode.UNKNOWN_SESSION);
  clock.advance(600);
  ws = FakeSocket.last;
  ws.open();
  assert.equal(JSON.parse(ws.sentText[0]).session_id, undefined);
  ws.receive(welcome({ session_id: 'S2' }));
  const sent = ws.sentBinary.map(decodeFrame);
  assert.deepEqual(sent.map((f) => [f.seq, f.kind, f.timestampUs]), [[1, 1, 0], [2, 1, 100000]]);
});

test('limits from welcome: video above max_video_fps is dropped, audio is not', () => {
  const { t } = makeTransport();
  t.start();
  const ws = FakeSocket.last;
  ws.open();
  ws.receive(welcome({ limits: { max_video_fps: 5 } }));
  const admitted = [];
  for (let i = 0; i < 10; i += 1) admitted.push(t.sendVideo(jpeg(), i * 100000));
  assert.deepEqual(admitted, [true, false, true, false, true, false, true, false, true, false]);
});

test('limits from welcome: a frame bigger than max_message_bytes is never sent', () => {
  const { t } = makeTransport();
  t.start();
  const ws = FakeSocket.last;
  ws.open();
  ws.receive(welcome({ limits: { max_message_bytes: 1000 } }));
  assert.equal(t.sendVideo(new Uint8Array(2000), 0), false);
  assert.equal(t.sendAudio(new Uint8Array(2000), 0), false);
  assert.equal(ws.sentBinary.length, 0);
});

test('when the network lags, video is dropped first and audio keeps flowing until the unacked limit', () => {
  const { t } = makeTransport();
  t.start();
  const ws = FakeSocket.last;
  ws.open();
  ws.receive(welcome({ limits: { max_unacked_frames: 10 } }));
  ws.bufferedAmount = 10 * 1024 * 1024; // the socket cannot drain
  assert.equal(t.sendVideo(jpeg(), 0), false);
  ws.bufferedAmount = 0;
  const results = [];
  for (let i = 0; i < 12; i += 1) {
    results.push(['a', t.sendAudio(pcm(), i * 100000)]);
    results.push(['v', t.sendVideo(jpeg(), i * 100000 + 50000)]);
  }
  const admittedVideo = results.filter(([k, ok]) => k === 'v' && ok).length;
  const admittedAudio = results.filter(([k, ok]) => k === 'a' && ok).length;
  assert.ok(admittedVideo < admittedAudio, `${admittedVideo} video vs ${admittedAudio} audio`);
  assert.equal(t.unacked.length, 10, 'never keeps more than max_unacked_frames');
  assert.equal(t.stats.dropped.audio, 12 - admittedAudio);
  assert.ok(t.stats.dropped.audio > 0);
  // once acks arrive, audio is admitted again
  ws.receive({ type: 'ack', seq: 10 });
  assert.equal(t.sendAudio(pcm(), 1300000), true);
});

test('bad_seq from the server makes the client resync by resuming', () => {
  const { t, clock } = makeTransport();
  t.start();
  let ws = FakeSocket.last;
  ws.open();
  ws.receive(welcome());
  t.sendAudio(pcm(), 0);
  ws.receive({ type: 'error', code: 'bad_seq', message: 'gap', seq: 1 });
  assert.equal(ws.closedByClient, true);
  clock.advance(300);
  ws = FakeSocket.last;
  ws.open();
  ws.receive(welcome({ resumed: true, acked_seq: 0 }));
  assert.deepEqual(seqsOf(ws.sentBinary), [1]);
});

test('stop sends bye, waits for the server bye, then closes', async () => {
  const { t } = makeTransport();
  t.start();
  const ws = FakeSocket.last;
  ws.open();
  ws.receive(welcome());
  const done = t.stop();
  assert.deepEqual(JSON.parse(ws.sentText.at(-1)), { type: 'bye' });
  assert.equal(t.state, 'live');
  ws.receive({ type: 'bye', acked_seq: 0 });
  await done;
  assert.equal(t.state, 'closed');
  assert.equal(ws.closedByClient, true);
});

test('end-to-end latency is measured from the capture of the audio that completed the tick', () => {
  const { t, clock } = makeTransport();
  t.start();
  const ws = FakeSocket.last;
  ws.open();
  ws.receive(welcome());
  t.sendAudio(pcm(3200), 0); // 100 ms at 16 kHz PCM16 mono, captured at clock 0
  clock.advance(100);
  t.sendAudio(pcm(3200), 100000); // captured at clock 100
  clock.advance(40);
  ws.receive({ type: 'overlay', t: 0.2, latency_ms: 12 });
  assert.equal(t.stats.lastLatencyMs, 40);
  assert.equal(t.stats.serverLatencyMs, 12);
});

test('default limits are the server defaults', () => {
  assert.equal(DEFAULT_LIMITS.max_unacked_frames, 600);
  assert.equal(DEFAULT_LIMITS.max_message_bytes, 4194304);
});

// --- store rollbacks, lost sessions, a full server (server/client.py PushClient's rules) ----------

/** A live transport with `n` audio frames sent and acknowledged (seq 1..n, 100 ms each). */
function liveWithAcked(n, opts = {}) {
  const m = makeTransport(opts);
  m.t.start();
  const ws = FakeSocket.last;
  ws.open();
  ws.receive(welcome());
  for (let i = 0; i < n; i += 1) m.t.sendAudio(pcm(), i * 100000);
  ws.receive({ type: 'ack', seq: n });
  return { ...m, ws };
}

function reconnect(clock) {
  clock.advance(10_000);
  const ws = FakeSocket.last;
  ws.open();
  return ws;
}

test('a resume says what the client saw acknowledged and up to when its burst is catch-up', () => {
  let due = 2.5;
  const { t, ws, clock } = liveWithAcked(3, { mediaNow: () => due });
  t.sendAudio(pcm(), 300000); // seq 4, not acknowledged
  ws.serverClose(1006);
  due = 7.25;
  const ws2 = reconnect(clock);
  const hello = JSON.parse(ws2.sentText[0]);
  assert.equal(hello.acked_seq, 3);
  assert.equal(hello.catch_up_until_t, 7.25);
  assert.equal(t.retained.length, 3, 'acknowledged frames are kept a while');
  // a fresh session's hello has neither
  const fresh = makeTransport();
  fresh.t.start();
  FakeSocket.last.open();
  const h0 = JSON.parse(FakeSocket.last.sentText[0]);
  assert.equal(h0.acked_seq, undefined);
  assert.equal(h0.catch_up_until_t, undefined);
});

test('welcome.lost with the frames still held: they are resent once, from the store\'s acked seq', () => {
  const lost = [];
  const { t, ws, clock } = liveWithAcked(10, { onLost: (r) => lost.push(r) });
  t.sendAudio(pcm(), 1000000); // seq 11, unacked
  ws.serverClose(1006);
  const ws2 = reconnect(clock);
  ws2.receive(welcome({ resumed: true, acked_seq: 7, lost: { from_seq: 8, to_seq: 10 } }));
  assert.deepEqual(seqsOf(ws2.sentBinary), [8, 9, 10, 11]);
  assert.equal(ws2.sentText.filter((m) => JSON.parse(m).type === 'skip').length, 0);
  assert.equal(t.ackedSeq, 7);
  assert.deepEqual(lost, []);
  assert.equal(t.stats.rollbacks, 1);
  ws2.receive({ type: 'ack', seq: 11 });
  assert.equal(t.unackedCount, 0);
});

test('welcome.lost without the frames: one skip past them, the range reported, the stream goes on', () => {
  const lost = [];
  const { t, ws, clock } = liveWithAcked(60, { retainSeconds: 1, onLost: (r) => lost.push(r) });
  assert.ok(t.retained.length <= 11, `${t.retained.length} kept`);
  t.sendAudio(pcm(), 6000000); // seq 61, unacked
  ws.serverClose(1006);
  const ws2 = reconnect(clock);
  ws2.receive(welcome({ resumed: true, acked_seq: 20, lost: { from_seq: 21, to_seq: 60 } }));
  const texts = ws2.sentText.map((m) => JSON.parse(m));
  assert.deepEqual(texts.filter((m) => m.type === 'skip'), [{ type: 'skip', to_seq: 61, to_t: 6 }]);
  assert.deepEqual(seqsOf(ws2.sentBinary), [61], 'the skip, then what was not acknowledged');
  assert.equal(lost.length, 1);
  assert.equal(lost[0].reason, 'store_rollback');
  assert.ok(Math.abs(lost[0].fromT - 2.0) < 1e-9 && lost[0].toT === 6, JSON.stringify(lost[0]));
  assert.deepEqual(t.lost, lost);
  assert.equal(t.ackedSeq, 60);
  t.sendAudio(pcm(), 6100000);
  assert.deepEqual(seqsOf(ws2.sentBinary), [61, 62]);
});

test('4004 on a resume: a new session from the frames held, renumbered from 1, the old range reported lost', () => {
  const lost = [];
  const { t, ws, clock } = liveWithAcked(10, { onLost: (r) => lost.push(r) });
  t.sendAudio(pcm(), 1000000);
  t.sendAudio(pcm(), 1100000);
  ws.serverClose(1006);
  let ws2 = reconnect(clock);
  assert.equal(JSON.parse(ws2.sentText[0]).session_id, 'S1');
  ws2.receive({ type: 'error', code: 'unknown_session', message: 'unknown or expired session' });
  ws2.serverClose(4004);
  assert.equal(t.state, 'reconnecting', 'not given up');
  ws2 = reconnect(clock);
  const hello = JSON.parse(ws2.sentText[0]);
  assert.equal(hello.session_id, undefined);
  assert.equal(hello.acked_seq, undefined);
  ws2.receive(welcome({ session_id: 'S2', resume_token: 'R2' }));
  assert.deepEqual(seqsOf(ws2.sentBinary), [1, 2]);
  assert.deepEqual(ws2.sentBinary.map((b) => decodeFrame(b).timestampUs), [1000000, 1100000], 'at their own media time');
  assert.equal(t.sessionId, 'S2');
  assert.equal(t.stats.newSessions, 1);
  assert.deepEqual(lost, [{ fromT: 0, toT: 1, reason: 'session_lost' }]);
});

test('server_full: the next attempt waits at least retry_after_s', () => {
  const { t, clock } = makeTransport();
  t.start();
  const ws = FakeSocket.last;
  ws.open();
  ws.receive({ type: 'error', code: 'server_full', message: 'full', retry_after_s: 10, seq: null });
  ws.serverClose(1013);
  clock.advance(9_990);
  assert.equal(FakeSocket.instances.length, 1, 'no attempt before the server said');
  clock.advance(20);
  assert.equal(FakeSocket.instances.length, 2);
  // and the hint is used once: the next failure waits the usual backoff
  FakeSocket.last.serverClose(1006);
  clock.advance(600);
  assert.equal(FakeSocket.instances.length, 3);
});
