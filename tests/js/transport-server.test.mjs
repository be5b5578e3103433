// extension/lib/protocol.js's Transport against a real `vibescope serve --pipeline base` over node's
// own WebSocket (node 20: `node --experimental-websocket`, as `make test-js` runs it): the wire
// protocol as the two real implementations speak it, not as fakes.mjs plays it.
//
// The server is the .venv's (`make install-test`); VIBESCOPE_TEST_PYTHON overrides the interpreter.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

import { Transport, decodeFrame } from '../../extension/lib/protocol.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const PYTHON = process.env.VIBESCOPE_TEST_PYTHON ?? `${ROOT}.venv/bin/python`;
const START_TIMEOUT_MS = 90_000;
const RATE = 16000;
const FRAME_S = 0.1;

// A 32×24 grey baseline JPEG (PIL, quality 50): small, valid, no face in it.
const JPEG = Uint8Array.from(Buffer.from(
  '/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERXRTc4UG1RV19iZ2hnPk1xeXBkeFxlZ2P/'
  + '2wBDARESEhgVGC8aGi9jQjhCY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2P/wAARCAAYACADASIAAhEBAxEB/8QA'
  + 'HwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkK'
  + 'FhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXG'
  + 'x8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAEC'
  + 'AxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOE'
  + 'hYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwCCiiiuk5wo'
  + 'oooAKKKKACiiigD/2Q==',
  'base64',
));

let server = null;
let serverLog = '';
let address = null;

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function accepts(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    sock.once('connect', () => { sock.destroy(); resolve(true); });
    sock.once('error', () => { sock.destroy(); resolve(false); });
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(what, predicate, timeoutMs = 20_000) {
  const end = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

before(async () => {
  assert.ok(existsSync(PYTHON), `${PYTHON} is missing: run make install-test (or set VIBESCOPE_TEST_PYTHON)`);
  const port = await freePort();
  const env = { ...process.env };
  for (const k of ['VIBESCOPE_TOKEN', 'VIBESCOPE_REDIS_URL', 'VIBESCOPE_PIPELINE', 'VIBESCOPE_HOST', 'VIBESCOPE_PORT']) delete env[k];
  server = spawn(PYTHON, ['-m', 'vibescope', 'serve', '--pipeline', 'base', '--host', '127.0.0.1', '--port', String(port)], {
    cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'],
  });
  const keep = (chunk) => { serverLog = (serverLog + chunk).slice(-8000); };
  server.stdout.on('data', keep);
  server.stderr.on('data', keep);
  const exited = new Promise((resolve) => server.once('exit', (code, signal) => resolve({ code, signal })));
  const end = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (await accepts(port)) break;
    const gone = await Promise.race([exited, sleep(100).then(() => null)]);
    if (gone) throw new Error(`vibescope serve exited (${JSON.stringify(gone)}) before listening:\n${serverLog}`);
    if (Date.now() > end) throw new Error(`vibescope serve did not listen on ${port} within ${START_TIMEOUT_MS} ms:\n${serverLog}`);
  }
  address = `127.0.0.1:${port}`;
}, { timeout: START_TIMEOUT_MS + 10_000 });

after(async () => {
  if (!server || server.exitCode !== null || server.signalCode !== null) return;
  const exited = new Promise((resolve) => server.once('exit', resolve));
  server.kill('SIGTERM');
  const timer = setTimeout(() => server.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
});

/** 100 ms of PCM16 mono at 16 kHz: a 440 Hz sine of `amplitude` (full scale 1), continuous in phase. */
function pcmFrame(index, amplitude) {
  const n = RATE * FRAME_S;
  const view = new DataView(new ArrayBuffer(n * 2));
  for (let i = 0; i < n; i += 1) {
    const t = (index * n + i) / RATE;
    view.setInt16(i * 2, Math.round(32767 * amplitude * Math.sin(2 * Math.PI * 440 * t)), true);
  }
  return new Uint8Array(view.buffer);
}

/** The dBFS that server-side rms_dbfs gives a sine of this amplitude (RMS = A/√2). */
const sineDbfs = (amplitude) => 20 * Math.log10(amplitude / Math.SQRT2);

/**
 * A WebSocket class for the Transport that records, per connection, the seq of every binary frame
 * the client sends; while `blackhole` is set, frames are recorded but never reach the network
 * (a link that silently loses what is in flight).
 */
function recordingSocket() {
  const sockets = [];
  const ctl = { sockets, blackhole: false };
  ctl.WebSocketImpl = class extends WebSocket {
    constructor(url) {
      super(url);
      this.sentSeqs = [];
      this.closeEvent = null;
      this.addEventListener('close', (ev) => { this.closeEvent = { code: ev.code, wasClean: ev.wasClean }; });
      sockets.push(this);
    }

    /** A control message as if the server had sent it (to make the client believe an ack). */
    fake(msg) {
      this.onmessage?.({ data: JSON.stringify(msg) });
    }

    send(data) {
      if (typeof data === 'string') (this.sentText ??= []).push(JSON.parse(data));
      if (typeof data !== 'string') {
        const f = decodeFrame(data);
        this.sentSeqs.push(f.seq);
        if (ctl.blackhole) return;
      }
      super.send(data);
    }
  };
  return ctl;
}

function newTransport(ctl, events, welcomes, states, errors, opts = {}) {
  return new Transport({
    url: address,
    client: 'vibescope-node-test/0.1',
    WebSocketImpl: ctl.WebSocketImpl,
    onEvent: (ev) => events.push(ev),
    onWelcome: (msg, info) => welcomes.push({ msg, ...info }),
    onState: (state) => states.push(state),
    onError: (err) => errors.push(err),
    ...opts,
  });
}

function assertTicks(events, firstT, lastT) {
  const ts = events.map((e) => e.t);
  const n = Math.round((lastT - firstT) / FRAME_S) + 1;
  const want = Array.from({ length: n }, (_, i) => Number((firstT + i * FRAME_S).toFixed(3)));
  assert.deepEqual(ts.map((t) => Number(t.toFixed(3))), want, `overlay t: ${JSON.stringify(ts)}`);
}

test('a session against the real server: welcome, overlay events for the audio sent, acks, bye', { timeout: 60_000 }, async () => {
  const ctl = recordingSocket();
  const events = [];
  const welcomes = [];
  const states = [];
  const errors = [];
  const tr = newTransport(ctl, events, welcomes, states, errors);
  tr.start();
  await waitFor('welcome', () => welcomes.length === 1);
  const { msg: welcome, resumed } = welcomes[0];
  assert.equal(welcome.type, 'welcome');
  assert.equal(welcome.protocol, 1);
  assert.equal(resumed, false);
  assert.equal(welcome.resumed, false);
  assert.equal(welcome.acked_seq, 0);
  assert.match(welcome.session_id, /^[\w-]{8,}$/);
  assert.equal(typeof welcome.resume_token, 'string');
  assert.ok(welcome.resume_token.length >= 16);
  assert.ok(Number.isInteger(welcome.limits.max_unacked_frames) && welcome.limits.max_unacked_frames > 0);
  assert.ok(welcome.limits.max_audio_seconds_per_frame >= FRAME_S);
  assert.equal(tr.limits.max_message_bytes, welcome.limits.max_message_bytes);
  assert.equal(tr.sessionId, welcome.session_id);
  assert.equal(tr.state, 'live');

  // 1 s of audio: 0.5 s of a loud sine, then 0.5 s of a quiet one; three tiny JPEGs on the way.
  const loud = 0.5;
  const quiet = 0.05;
  let seq = 0;
  // In capture order: a picture taken at T goes out before the audio frame that starts at T (that
  // one is complete only 100 ms later), so it belongs to the tick ending at T + 0.1 s.
  const videoTicks = [];
  for (let i = 0; i < 10; i += 1) {
    if (i % 3 === 0) {
      assert.equal(tr.sendVideo(JPEG, i * 100_000), true, `video frame at ${i * 100} ms refused`);
      videoTicks.push(Number(((i + 1) * FRAME_S).toFixed(3)));
      seq += 1;
    }
    assert.equal(tr.sendAudio(pcmFrame(i, i < 5 ? loud : quiet), i * 100_000), true);
    seq += 1;
  }
  assert.equal(tr.stats.sent.audio, 10);
  assert.equal(tr.stats.sent.video, 4);
  assert.deepEqual(ctl.sockets[0].sentSeqs, Array.from({ length: seq }, (_, i) => i + 1));

  await waitFor(`ack of seq ${seq}`, () => tr.ackedSeq === seq);
  assert.equal(tr.unackedCount, 0);
  await tr.stop();
  assert.equal(tr.state, 'closed');
  assert.equal(ctl.sockets.length, 1, 'no reconnect');
  await waitFor('the close of the socket', () => ctl.sockets[0].readyState === WebSocket.CLOSED, 5000);
  assert.deepEqual(ctl.sockets[0].closeEvent, { code: 1000, wasClean: true });

  // After bye every 100 ms tick of the second of media has its event, in order, exactly once.
  assertTicks(events, 0.1, 1.0);
  for (const ev of events) {
    assert.equal(ev.type, 'overlay');
    assert.equal(typeof ev.speech.probability, 'number');
    assert.ok(ev.speech.probability >= 0 && ev.speech.probability <= 1, `speech ${ev.speech.probability}`);
    assert.equal(typeof ev.loudness.dbfs, 'number');
    assert.equal(typeof ev.latency_ms, 'number');
  }
  // The level the server measured is the level sent (the ticks away from the step).
  for (const ev of events.filter((e) => e.t <= 0.45)) assert.ok(Math.abs(ev.loudness.dbfs - sineDbfs(loud)) < 0.5, `t=${ev.t}: ${ev.loudness.dbfs} dBFS`);
  for (const ev of events.filter((e) => e.t >= 0.65)) assert.ok(Math.abs(ev.loudness.dbfs - sineDbfs(quiet)) < 0.5, `t=${ev.t}: ${ev.loudness.dbfs} dBFS`);
  // The JPEGs were decoded and searched for a face, in the ticks they belong to: a grey picture has
  // none; the ticks without a picture say nothing about the face.
  const faceTicks = events.filter((e) => e.face.present !== null).map((e) => Number(e.t.toFixed(3)));
  assert.deepEqual(faceTicks, videoTicks);
  for (const ev of events) if (ev.face.present !== null) assert.equal(ev.face.present, false);
  assert.equal(tr.stats.events, events.length);
  assert.equal(tr.stats.duplicateEvents, 0);
  assert.deepEqual(errors, []);
});

test('resume after a lost connection: resumed welcome, only unacknowledged frames resent, no event lost or repeated', { timeout: 60_000 }, async () => {
  const ctl = recordingSocket();
  const events = [];
  const welcomes = [];
  const states = [];
  const errors = [];
  const tr = newTransport(ctl, events, welcomes, states, errors);
  tr.start();
  await waitFor('welcome', () => welcomes.length === 1);
  const sessionId = welcomes[0].msg.session_id;

  for (let i = 0; i < 5; i += 1) tr.sendAudio(pcmFrame(i, 0.3), i * 100_000);
  await waitFor('ack of seq 5', () => tr.ackedSeq === 5);
  await waitFor('the event of t=0.5', () => events.length > 0 && events.at(-1).t >= 0.5 - 1e-6);

  // Three more frames go into a link that loses them, then the connection drops.
  ctl.blackhole = true;
  for (let i = 5; i < 8; i += 1) tr.sendAudio(pcmFrame(i, 0.3), i * 100_000);
  assert.deepEqual(ctl.sockets[0].sentSeqs, [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.equal(tr.unackedCount, 3);
  ctl.blackhole = false;
  const eventsBefore = events.length;
  const lastTBefore = tr.lastEventT;
  ctl.sockets[0].close(4999, 'test: connection lost');

  await waitFor('the resumed welcome', () => welcomes.length === 2);
  const { msg: again, resumed } = welcomes[1];
  assert.equal(resumed, true);
  assert.equal(again.resumed, true);
  assert.equal(again.session_id, sessionId);
  assert.equal(again.acked_seq, 5, 'the server holds what it acknowledged, nothing of the lost frames');
  assert.ok(states.includes('reconnecting'));
  assert.equal(ctl.sockets.length, 2);
  assert.ok(ctl.sockets[1].url.endsWith(`?session=${encodeURIComponent(sessionId)}`), ctl.sockets[1].url);
  // Exactly the unacknowledged frames are resent, in order; nothing the server acknowledged.
  assert.deepEqual(ctl.sockets[1].sentSeqs, [6, 7, 8]);
  assert.equal(tr.stats.resent, 3);

  for (let i = 8; i < 10; i += 1) tr.sendAudio(pcmFrame(i, 0.3), i * 100_000);
  assert.deepEqual(ctl.sockets[1].sentSeqs, [6, 7, 8, 9, 10]);
  await waitFor('ack of seq 10', () => tr.ackedSeq === 10);
  await tr.stop();
  assert.equal(tr.state, 'closed');

  // The events across both connections: every tick once, none replayed twice into onEvent.
  assert.ok(eventsBefore >= 5);
  assert.ok(events.slice(eventsBefore).every((e) => e.t > lastTBefore));
  assertTicks(events, 0.1, 1.0);
  assert.equal(tr.stats.resumed, 1);
  assert.equal(tr.stats.duplicateEvents, 0, 'the server replayed events the client held (hello.last_event_t)');
  assert.deepEqual(errors, []);
});

/**
 * A store that lost acknowledged writes, faked from the client's side: frames 11..13 go into a link
 * that loses them, and the client is made to believe the server acknowledged them (an ack it never
 * sent). Its resume then says acked_seq 13 while the server's store holds 10, so the server's
 * welcome says `lost` — what a Redis restored from an older snapshot makes it say.
 */
async function rolledBack(opts) {
  const ctl = recordingSocket();
  const events = [];
  const welcomes = [];
  const errors = [];
  const lost = [];
  const tr = newTransport(ctl, events, welcomes, [], errors, { onLost: (r) => lost.push(r), ...opts });
  tr.start();
  await waitFor('welcome', () => welcomes.length === 1);
  for (let i = 0; i < 10; i += 1) tr.sendAudio(pcmFrame(i, 0.3), i * 100_000);
  await waitFor('ack of seq 10', () => tr.ackedSeq === 10);
  await waitFor('the event of t=1.0', () => events.length > 0 && events.at(-1).t >= 1.0 - 1e-6);
  ctl.blackhole = true;
  for (let i = 10; i < 13; i += 1) tr.sendAudio(pcmFrame(i, 0.3), i * 100_000);
  ctl.blackhole = false;
  ctl.sockets[0].fake({ type: 'ack', seq: 13 });
  assert.equal(tr.ackedSeq, 13);
  ctl.sockets[0].close(4999, 'test: connection lost');
  await waitFor('the resumed welcome', () => welcomes.length === 2);
  return { ctl, tr, events, welcomes, errors, lost };
}

test('a resume the store cannot honour (welcome.lost) with the frames still held: resent once, the stream goes on', { timeout: 60_000 }, async () => {
  const { ctl, tr, events, welcomes, errors, lost } = await rolledBack({});
  assert.equal(welcomes[1].resumed, true);
  assert.deepEqual(welcomes[1].msg.lost, { from_seq: 11, to_seq: 13 });
  assert.equal(welcomes[1].msg.acked_seq, 10);
  assert.deepEqual(ctl.sockets[1].sentSeqs, [11, 12, 13], 'the lost frames, from the acknowledged ones kept');
  assert.deepEqual((ctl.sockets[1].sentText ?? []).filter((m) => m.type === 'skip'), []);
  for (let i = 13; i < 15; i += 1) tr.sendAudio(pcmFrame(i, 0.3), i * 100_000);
  await waitFor('ack of seq 15', () => tr.ackedSeq === 15);
  await tr.stop();
  assertTicks(events, 0.1, 1.5); // nothing lost: every tick once
  assert.deepEqual(lost, []);
  assert.equal(tr.stats.rollbacks, 1);
  assert.equal(ctl.sockets.length, 2, 'one resume, no loop');
  assert.deepEqual(errors.filter((e) => e.code === 'bad_seq'), []);
});

test('a resume the store cannot honour without the frames: one skip, the range reported, the stream goes on', { timeout: 60_000 }, async () => {
  const { ctl, tr, events, welcomes, errors, lost } = await rolledBack({ retainSeconds: 0, retainFrames: 0 });
  assert.deepEqual(welcomes[1].msg.lost, { from_seq: 11, to_seq: 13 });
  const skips = (ctl.sockets[1].sentText ?? []).filter((m) => m.type === 'skip');
  assert.equal(skips.length, 1);
  assert.equal(skips[0].to_seq, 14);
  assert.ok(Math.abs(skips[0].to_t - 1.3) < 1e-9, JSON.stringify(skips[0]));
  assert.equal(lost.length, 1);
  assert.equal(lost[0].reason, 'store_rollback');
  assert.ok(Math.abs(lost[0].fromT - 1.0) < 1e-9 && Math.abs(lost[0].toT - 1.3) < 1e-9, JSON.stringify(lost[0]));
  for (let i = 13; i < 16; i += 1) tr.sendAudio(pcmFrame(i, 0.3), i * 100_000);
  await waitFor('ack of seq 16', () => tr.ackedSeq === 16);
  await tr.stop();
  assert.deepEqual(ctl.sockets[1].sentSeqs, [14, 15, 16]);
  assert.equal(ctl.sockets.length, 2, 'one resume, no loop');
  assert.deepEqual(errors.filter((e) => e.code === 'bad_seq'), []);
  // the media after the skipped range is analysed: events go on past 1.3 s, the first one says the gap
  const after = events.filter((e) => e.t > 1.3 + 1e-6);
  assert.ok(after.length >= 2, JSON.stringify(events.map((e) => e.t)));
  assert.ok(events.some((e) => e.gap), 'the server marks the gap');
});

test('a resume of a session the server no longer has (4004): a new session at the stream\'s media time', { timeout: 60_000 }, async () => {
  const ctl = recordingSocket();
  const events = [];
  const welcomes = [];
  const errors = [];
  const lost = [];
  const tr = newTransport(ctl, events, welcomes, [], errors, { onLost: (r) => lost.push(r) });
  tr.start();
  await waitFor('welcome', () => welcomes.length === 1);
  for (let i = 0; i < 10; i += 1) tr.sendAudio(pcmFrame(i, 0.3), i * 100_000);
  await waitFor('ack of seq 10', () => tr.ackedSeq === 10);
  ctl.blackhole = true;
  for (let i = 10; i < 13; i += 1) tr.sendAudio(pcmFrame(i, 0.3), i * 100_000);
  ctl.blackhole = false;
  tr.resumeToken = 'not-the-token'; // the server cannot continue it: as if it had expired
  ctl.sockets[0].close(4999, 'test: connection lost');
  await waitFor('a fresh welcome', () => welcomes.length === 2, 30_000);
  assert.equal(welcomes[1].resumed, false);
  assert.notEqual(welcomes[1].msg.session_id, welcomes[0].msg.session_id);
  assert.deepEqual(ctl.sockets.at(-1).sentSeqs, [1, 2, 3], 'what was not acknowledged, renumbered from 1');
  assert.ok(errors.some((e) => e.code === 'unknown_session'));
  assert.deepEqual(lost, [{ fromT: 0, toT: 1, reason: 'session_lost' }]);
  for (let i = 13; i < 15; i += 1) tr.sendAudio(pcmFrame(i, 0.3), i * 100_000);
  await waitFor('ack of seq 5', () => tr.ackedSeq === 5);
  await tr.stop();
  // the new session's clock starts at the first frame it got: its events are at the stream's media time
  const fresh = events.filter((e) => e.t > 1.0 + 1e-6);
  assert.deepEqual(fresh.map((e) => Number(e.t.toFixed(3))), [1.1, 1.2, 1.3, 1.4, 1.5]);
  assert.equal(tr.stats.newSessions, 1);
  assert.deepEqual(errors.filter((e) => e.code === 'bad_seq' || e.code === 'bad_timestamp'), []);
});
