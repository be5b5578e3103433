// The vibescope wire protocol, version 1: the JavaScript twin of server/protocol.py.
//
// docs/protocol.md is the prose; tests/vectors/protocol.json holds byte vectors that this module
// and the Python module must decode identically (tests/js/protocol.test.mjs and
// tests/test_protocol_vectors.py). Used by the extension (offscreen document, content-script
// fallback, options page) and by the server's demo page (served at /lib/protocol.js).
//
// Binary media frame, little-endian, 16-byte header then payload:
//   offset 0 magic "VS" | 2 version u8 | 3 kind u8 | 4 seq u32 | 8 timestamp_us i64

export const PROTOCOL_VERSION = 1;
export const HEADER_SIZE = 16;
export const CLIENT_NAME = 'vibescope-extension/0.1';

export const Kind = Object.freeze({ AUDIO: 1, VIDEO: 2, CONTAINER: 3 });
const KIND_NAMES = { 1: 'audio', 2: 'video', 3: 'container' };

export const ErrorCode = Object.freeze({
  BAD_JSON: 'bad_json',
  UNKNOWN_TYPE: 'unknown_type',
  HELLO_REQUIRED: 'hello_required',
  HELLO_TWICE: 'hello_twice',
  BAD_HELLO: 'bad_hello',
  UNSUPPORTED_VERSION: 'unsupported_version',
  UNAUTHORIZED: 'unauthorized',
  UNKNOWN_SESSION: 'unknown_session',
  SESSION_BUSY: 'session_busy',
  BAD_HEADER: 'bad_header',
  BAD_SEQ: 'bad_seq',
  TOO_BIG: 'too_big',
  RATE_LIMITED: 'rate_limited',
  BAD_MEDIA: 'bad_media',
  BAD_TIMESTAMP: 'bad_timestamp',
  SERVER_FULL: 'server_full',
  INTERNAL: 'internal',
});

export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  POLICY: 1008,
  TOO_BIG: 1009,
  INTERNAL: 1011,
  TRY_AGAIN: 1013,
  UNSUPPORTED_VERSION: 4000,
  UNAUTHORIZED: 4001,
  HELLO_REQUIRED: 4002,
  UNKNOWN_SESSION: 4004,
  SESSION_BUSY: 4009,
});

// What a server promises when its welcome says nothing (server/protocol.py Limits()).
export const DEFAULT_LIMITS = Object.freeze({
  max_message_bytes: 4 * 1024 * 1024,
  max_video_fps: 30,
  max_video_width: 1920,
  max_video_height: 1080,
  max_audio_seconds_per_frame: 1.0,
  max_unacked_frames: 600,
  idle_timeout_s: 30,
  session_ttl_s: 3600,
});

export class ProtocolError extends Error {
  constructor(code, message, seq = null) {
    super(message);
    this.name = 'ProtocolError';
    this.code = code;
    this.seq = seq;
  }
}

const MAGIC0 = 0x56; // 'V'
const MAGIC1 = 0x53; // 'S'
const UINT32_MAX = 0xffffffff;

function asBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError('expected an ArrayBuffer or a typed array');
}

/**
 * One binary media frame: header + payload.
 * @param {number} kind Kind.AUDIO | Kind.VIDEO | Kind.CONTAINER
 * @param {number} seq 1 .. 2**32-1
 * @param {number|bigint} timestampUs capture media time, microseconds, >= 0
 * @param {Uint8Array|ArrayBuffer} payload
 * @returns {Uint8Array}
 */
export function encodeFrame(kind, seq, timestampUs, payload) {
  if (!KIND_NAMES[kind]) throw new RangeError(`unknown frame kind ${kind}`);
  if (!Number.isInteger(seq) || seq < 1 || seq > UINT32_MAX) throw new RangeError(`seq ${seq} outside 1..2^32-1`);
  const ts = typeof timestampUs === 'bigint' ? timestampUs : BigInt(Math.round(timestampUs));
  if (ts < 0n) throw new RangeError('negative timestamp');
  const body = asBytes(payload);
  const out = new Uint8Array(HEADER_SIZE + body.byteLength);
  const view = new DataView(out.buffer);
  out[0] = MAGIC0;
  out[1] = MAGIC1;
  out[2] = PROTOCOL_VERSION;
  out[3] = kind;
  view.setUint32(4, seq, true);
  view.setBigInt64(8, ts, true);
  out.set(body, HEADER_SIZE);
  return out;
}

/** Rewrite the seq of an encoded frame in place (used when a fresh session renumbers). */
export function setFrameSeq(frame, seq) {
  new DataView(frame.buffer, frame.byteOffset, frame.byteLength).setUint32(4, seq, true);
}

/**
 * Parse one binary frame; throws ProtocolError with the same codes, in the same order of checks,
 * as server/protocol.py decode_frame.
 * @returns {{kind: number, seq: number, timestampUs: number, timestampUsBig: bigint, payload: Uint8Array}}
 */
export function decodeFrame(data) {
  const bytes = asBytes(data);
  if (bytes.byteLength < HEADER_SIZE) {
    throw new ProtocolError(ErrorCode.BAD_HEADER,
      `binary frame of ${bytes.byteLength} bytes is shorter than the ${HEADER_SIZE}-byte header`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const seq = view.getUint32(4, true);
  const ts = view.getBigInt64(8, true);
  if (bytes[0] !== MAGIC0 || bytes[1] !== MAGIC1) {
    throw new ProtocolError(ErrorCode.BAD_HEADER, "binary frame does not start with b'VS'");
  }
  const version = bytes[2];
  if (version !== PROTOCOL_VERSION) {
    throw new ProtocolError(ErrorCode.UNSUPPORTED_VERSION,
      `frame version ${version}, client speaks ${PROTOCOL_VERSION}`, seq);
  }
  const kind = bytes[3];
  if (!KIND_NAMES[kind]) throw new ProtocolError(ErrorCode.BAD_HEADER, `unknown frame kind ${kind}`, seq);
  if (seq === 0) throw new ProtocolError(ErrorCode.BAD_SEQ, 'seq starts at 1', seq);
  if (ts < 0n) throw new ProtocolError(ErrorCode.BAD_HEADER, 'negative timestamp', seq);
  return {
    kind,
    seq,
    timestampUs: Number(ts),
    timestampUsBig: ts,
    payload: bytes.subarray(HEADER_SIZE),
  };
}

export function kindName(kind) {
  return KIND_NAMES[kind] ?? null;
}

/** 'jpeg', 'webp' or null from an image's magic bytes (server/protocol.py sniff_image). */
export function sniffImage(data) {
  const b = asBytes(data);
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'jpeg';
  const ascii = (i, n) => String.fromCharCode(...b.subarray(i, i + n));
  if (b.length >= 12 && ascii(0, 4) === 'RIFF' && ascii(8, 4) === 'WEBP') return 'webp';
  return null;
}

/** Parse a JSON text frame into an object with a string `type` (server/protocol.py parse_control). */
export function parseControl(text) {
  let msg;
  try {
    msg = JSON.parse(text);
  } catch {
    throw new ProtocolError(ErrorCode.BAD_JSON, 'text frame is not valid JSON');
  }
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg) || typeof msg.type !== 'string') {
    throw new ProtocolError(ErrorCode.BAD_JSON, "control message must be a JSON object with a string 'type'");
  }
  return msg;
}

/**
 * The `hello` message, with the keys of server/protocol.py Hello.to_json (null fields omitted,
 * `catch_up_until_t` and `acked_seq` only on a resume,
 * except `audio`: `audio: null` announces a stream without audio, while an absent `audio` means
 * the default PCM16 16 kHz mono). `container` is a MIME type for container chunks.
 */
export function buildHello({
  token = null,
  sessionId = null,
  resumeToken = null,
  lastEventT = null,
  catchUpUntilT = null,
  ackedSeq = null,
  audio = { encoding: 'pcm16', sample_rate: 16000, channels: 1 },
  video = 'jpeg',
  container = null,
  want = [],
  client = CLIENT_NAME,
} = {}) {
  const msg = {
    protocol: PROTOCOL_VERSION,
    token,
    session_id: sessionId,
    resume_token: resumeToken,
    last_event_t: lastEventT,
    catch_up_until_t: catchUpUntilT,
    acked_seq: ackedSeq,
    audio: audio && { encoding: audio.encoding ?? 'pcm16', sample_rate: audio.sample_rate ?? 16000, channels: audio.channels ?? 1 },
    video,
    container,
    want: [...want],
    client,
    type: 'hello',
  };
  for (const k of Object.keys(msg)) if ((msg[k] === null && k !== 'audio') || msg[k] === undefined) delete msg[k];
  return msg;
}

export function buildBye() {
  return { type: 'bye' };
}

/**
 * Reconnect delay in ms: 0.25 s doubling to 8 s (docs/protocol.md), with jitter in [d/2, d].
 * @param {number} attempt 0 for the first retry
 * @param {() => number} random uniform in [0, 1)
 */
export function backoffDelayMs(attempt, random = Math.random) {
  const d = Math.min(8000, 250 * 2 ** Math.max(0, attempt));
  return d * (0.5 + 0.5 * random());
}

/**
 * Normalise what a user types as the server address to the stream endpoint:
 * "127.0.0.1:8765", "http://host:8765", "https://host/", "ws://host:8765/v1/stream" →
 * "ws(s)://host[:port]/v1/stream". Throws TypeError on garbage. A token in the URL is refused:
 * it belongs in hello (docs/protocol.md).
 */
export function streamUrl(address) {
  let a = String(address ?? '').trim();
  if (!a) throw new TypeError('empty server address');
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(a)) a = `http://${a}`;
  const u = new URL(a);
  const scheme = { 'http:': 'ws:', 'ws:': 'ws:', 'https:': 'wss:', 'wss:': 'wss:' }[u.protocol];
  if (!scheme) throw new TypeError(`unsupported scheme ${u.protocol}`);
  if (u.search || u.username || u.password) throw new TypeError('the server address must not carry credentials or a query; put the token in the token field');
  let path = u.pathname.replace(/\/+$/, '');
  if (!path.endsWith('/v1/stream')) path = `${path}/v1/stream`;
  return `${scheme}//${u.host}${path}`;
}

/** The HTTP base (for /healthz, /metrics) of a stream URL. */
export function httpBase(wsUrl) {
  const u = new URL(streamUrl(wsUrl));
  const scheme = u.protocol === 'wss:' ? 'https:' : 'http:';
  return `${scheme}//${u.host}${u.pathname.replace(/\/v1\/stream$/, '')}`;
}

/**
 * One media stream to a vibescope server over a WebSocket, per docs/protocol.md:
 * hello/welcome, seq on every media frame, unacknowledged frames kept (at most
 * limits.max_unacked_frames) and resent after a reconnect with backoff and resume, limits from
 * welcome respected, video dropped before audio when the network lags.
 *
 * States: 'idle' → 'connecting' → 'live' ⇄ 'reconnecting' → 'closed' | 'failed'.
 *
 * Frames get their seq when they are admitted; an admitted frame is never dropped (the server
 * rejects gaps). Admission is where dropping happens:
 *  - video is refused while not live, above the welcome's max_video_fps (media time), when the
 *    socket's send buffer holds more than `videoLagBytes`, or when half of max_unacked_frames
 *    are waiting for an ack;
 *  - audio is refused only when max_unacked_frames are waiting (nothing else can be kept).
 *
 * What survives a failure (as server/client.py PushClient):
 *  - a dropped connection: reconnect with backoff (at least the `retry_after_s` a full server
 *    gave), resume with `acked_seq` and `catch_up_until_t`, resend what was not acknowledged;
 *  - a store that lost acknowledged writes (`welcome.lost`): resend them from the last
 *    `retainSeconds` of acknowledged frames kept for that, or send `skip` past them and report the
 *    range (`onLost`, `lost`) — one message either way, never a loop;
 *  - a server that no longer has the session (4004 on a resume): a new session takes what was not
 *    acknowledged, renumbered from seq 1, at the media time where the stream is; the range the
 *    old session had analysed is reported lost.
 */
export class Transport {
  constructor({
    url,
    token = null,
    client = CLIENT_NAME,
    audio = { encoding: 'pcm16', sample_rate: 16000, channels: 1 },
    video = 'jpeg',
    want = [],
    WebSocketImpl = globalThis.WebSocket,
    timers = { setTimeout: (f, ms) => setTimeout(f, ms), clearTimeout: (h) => clearTimeout(h) },
    now = () => Date.now(),
    random = Math.random,
    videoLagBytes = 256 * 1024,
    welcomeTimeoutMs = 10000,
    retainSeconds = 5,
    retainFrames = 200,
    mediaNow = null,
    onEvent = () => {},
    onState = () => {},
    onWelcome = () => {},
    onError = () => {},
    onLost = () => {},
  }) {
    this.url = streamUrl(url);
    this.token = token;
    this.client = client;
    this.audio = audio;
    this.video = video;
    this.want = want;
    this.WebSocketImpl = WebSocketImpl;
    this.timers = timers;
    this.now = now;
    this.random = random;
    this.videoLagBytes = videoLagBytes;
    this.welcomeTimeoutMs = welcomeTimeoutMs;
    this.retainSeconds = retainSeconds;
    this.retainFrames = retainFrames;
    this.mediaNow = mediaNow; // () => media seconds due now (the capture's clock), for catch_up_until_t
    this.onEvent = onEvent;
    this.onState = onState;
    this.onWelcome = onWelcome;
    this.onError = onError;
    this.onLost = onLost;

    this.state = 'idle';
    this.limits = { ...DEFAULT_LIMITS };
    this.models = {};
    this.sessionId = null;
    this.resumeToken = null;
    this.lastEventT = null;
    this.lastEvent = null;
    this.ackedSeq = 0;
    this.nextSeq = 1;
    /** @type {{seq: number, kind: number, bytes: Uint8Array, tsUs: number}[]} */
    this.unacked = [];
    /** acknowledged frames kept to resend after a store rollback (the last retainSeconds) */
    this.retained = [];
    /** media ranges no server will analyse: [{fromT, toT, reason}] */
    this.lost = [];
    this.attempt = 0;
    this.failure = null;
    this.opened = false; // has any connection of this transport ever opened?
    this.lastClose = null; // {code, reason, opened} of the last connection
    this.stats = {
      sent: { audio: 0, video: 0 },
      resent: 0,
      dropped: { audio: 0, video: 0 },
      acked: 0,
      events: 0,
      duplicateEvents: 0,
      connects: 0,
      reconnects: 0,
      resumed: 0,
      newSessions: 0, // sessions started over because the server no longer had ours
      rollbacks: 0, // resumes whose welcome said `lost`
      skips: 0,
      lastLatencyMs: null, // capture of the media → its event arriving here, wall ms
      serverLatencyMs: null, // the server's own latency_ms
    };
    this._ws = null;
    this._retryTimer = null;
    this._welcomeTimer = null;
    this._stopping = null;
    this._lastVideoTsUs = null;
    this._lastAdmittedEndT = null; // media seconds: the end of the newest frame admitted
    this._sessionStartT = null; // media seconds: the first frame of the current session
    this._retryAfterMs = 0; // what the server said to wait before the next attempt
    this._captureWall = []; // [{endT seconds, wallMs}] of admitted audio frames, for latency
    this._ackedTimes = []; // [{seq, t}] of acknowledged frames of this session
    this._hadSession = false; // a welcome came before: a fresh one now means the server lost ours
  }

  start() {
    if (this.state !== 'idle') return;
    this._connect();
  }

  /**
   * The URL of the next connection: with `?session=<id>` when resuming, a routing hint for a proxy
   * in front of several replicas (docker/nginx.conf hashes on it); the server ignores it. The
   * session id is not a credential (resuming needs the resume token, sent in hello).
   */
  connectUrl() {
    return this.sessionId ? `${this.url}?session=${encodeURIComponent(this.sessionId)}` : this.url;
  }

  get connected() {
    return this.state === 'live';
  }

  get unackedCount() {
    return this.unacked.length;
  }

  /**
   * Queue one audio frame (PCM as announced in hello). Returns false if it was dropped.
   * `wallMs`: when the frame's last sample was captured (epoch ms; default now), for the delay.
   */
  sendAudio(payload, timestampUs, durationS = null, wallMs = null) {
    if (this.state === 'closed' || this.state === 'failed') return false;
    const bytes = asBytes(payload);
    if (this.unacked.length >= this.limits.max_unacked_frames || bytes.byteLength + HEADER_SIZE > this.limits.max_message_bytes) {
      this.stats.dropped.audio += 1;
      return false;
    }
    if (durationS === null && this.audio) {
      const bytesPerSample = (this.audio.encoding === 'f32' ? 4 : 2) * (this.audio.channels ?? 1);
      durationS = bytes.byteLength / bytesPerSample / (this.audio.sample_rate ?? 16000);
    }
    this._captureWall.push({ endT: timestampUs / 1e6 + (durationS ?? 0), wallMs: wallMs ?? this.now() });
    if (this._captureWall.length > 2000) this._captureWall.splice(0, 1000);
    this._admit(Kind.AUDIO, bytes, timestampUs, durationS ?? 0);
    this.stats.sent.audio += 1;
    return true;
  }

  /** Queue one video frame (JPEG/WebP). Returns false if it was dropped (see class comment). */
  sendVideo(payload, timestampUs) {
    if (!this.videoWanted(timestampUs)) {
      this.stats.dropped.video += 1;
      return false;
    }
    const bytes = asBytes(payload);
    if (bytes.byteLength + HEADER_SIZE > this.limits.max_message_bytes) {
      this.stats.dropped.video += 1;
      return false;
    }
    this._lastVideoTsUs = timestampUs;
    this._admit(Kind.VIDEO, bytes, timestampUs, 0);
    this.stats.sent.video += 1;
    return true;
  }

  /** Whether a video frame at this media time would be admitted now (lets capture skip encoding). */
  videoWanted(timestampUs) {
    if (this.state !== 'live') return false;
    const minGapUs = 1e6 / this.limits.max_video_fps;
    if (this._lastVideoTsUs !== null && timestampUs - this._lastVideoTsUs < minGapUs * 0.98) return false;
    if (this.unacked.length >= this.limits.max_unacked_frames / 2) return false;
    if (this._ws && this._ws.bufferedAmount > this.videoLagBytes) return false;
    return true;
  }

  /**
   * End of media: send bye, wait for the server's bye (flushes the last events) or the close,
   * at most `timeoutMs`, then close. Resolves when closed.
   */
  stop({ timeoutMs = 3000 } = {}) {
    if (this._stopping) return this._stopping;
    this._clearTimers();
    const ws = this._ws;
    this._stopping = new Promise((resolve) => {
      const finish = () => {
        this._ws = null;
        this._setState('closed');
        resolve();
      };
      if (!ws || this.state !== 'live' || ws.readyState !== 1) {
        if (ws) try { ws.close(1000); } catch { /* already closing */ }
        finish();
        return;
      }
      this._onStopped = finish;
      const timer = this.timers.setTimeout(() => { try { ws.close(1000); } catch { /* closed */ } finish(); }, timeoutMs);
      this._onStoppedTimer = timer;
      ws.send(JSON.stringify(buildBye()));
    });
    return this._stopping;
  }

  // --- internals --------------------------------------------------------------------------------

  _admit(kind, bytes, tsUs, durationS) {
    const seq = this.nextSeq++;
    const frame = { seq, kind, tsUs, bytes: encodeFrame(kind, seq, tsUs, bytes) };
    this.unacked.push(frame);
    const endT = tsUs / 1e6 + durationS;
    if (this._lastAdmittedEndT === null || endT > this._lastAdmittedEndT) this._lastAdmittedEndT = endT;
    if (this._sessionStartT === null) this._sessionStartT = tsUs / 1e6;
    if (this.state === 'live' && this._ws && this._ws.readyState === 1) this._ws.send(frame.bytes);
  }

  _setState(state, detail = {}) {
    if (this.state === state && !detail.force) return;
    this.state = state;
    this.onState(state, {
      ...detail, attempt: this.attempt, unacked: this.unacked.length, failure: this.failure,
      opened: this.opened, lastClose: this.lastClose, url: this.url,
    });
  }

  _clearTimers() {
    if (this._retryTimer !== null) this.timers.clearTimeout(this._retryTimer);
    if (this._welcomeTimer !== null) this.timers.clearTimeout(this._welcomeTimer);
    this._retryTimer = null;
    this._welcomeTimer = null;
  }

  /** Media time due now (seconds): the capture's clock when known, else the newest frame's end. */
  _catchUpUntilT() {
    const t = this.mediaNow ? this.mediaNow() : this._lastAdmittedEndT;
    return typeof t === 'number' && Number.isFinite(t) ? Math.round(t * 1000) / 1000 : null;
  }

  _connect() {
    this._clearTimers();
    this._setState(this.stats.connects === 0 ? 'connecting' : 'reconnecting');
    this.stats.connects += 1;
    let ws;
    try {
      ws = new this.WebSocketImpl(this.connectUrl());
    } catch (err) {
      this.onError({ code: 'connect', message: String(err) });
      this._scheduleReconnect();
      return;
    }
    ws.binaryType = 'arraybuffer';
    this._ws = ws;
    ws._vsOpened = false;
    ws.onopen = () => {
      if (this._ws !== ws) return;
      ws._vsOpened = true;
      this.opened = true;
      const resuming = Boolean(this.sessionId);
      const hello = buildHello({
        token: this.token,
        sessionId: this.sessionId,
        resumeToken: this.resumeToken,
        lastEventT: resuming ? this.lastEventT : null,
        // what the client saw acknowledged (a store that lost writes says so in welcome.lost), and
        // the media time up to which what it now sends in a burst is catch-up, not lateness
        ackedSeq: resuming ? this.ackedSeq : null,
        catchUpUntilT: resuming ? this._catchUpUntilT() : null,
        audio: this.audio,
        video: this.video,
        want: this.want,
        client: this.client,
      });
      ws.send(JSON.stringify(hello));
      this._welcomeTimer = this.timers.setTimeout(() => {
        this._welcomeTimer = null;
        if (this._ws === ws && this.state !== 'live') try { ws.close(1000, 'no welcome'); } catch { /* closed */ }
      }, this.welcomeTimeoutMs);
    };
    ws.onmessage = (ev) => {
      if (this._ws !== ws) return;
      if (typeof ev.data !== 'string') return; // OST audio frames: not used by this client
      let msg;
      try {
        msg = parseControl(ev.data);
      } catch (err) {
        this.onError({ code: err.code ?? 'bad_json', message: err.message });
        return;
      }
      this._onControl(ws, msg);
    };
    ws.onerror = () => { /* a close event follows */ };
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this.lastClose = { code: ev.code ?? 1006, reason: ev.reason ?? '', opened: ws._vsOpened };
      this._onClose(ev.code ?? 1006, ev.reason ?? '');
    };
  }

  _onControl(ws, msg) {
    switch (msg.type) {
      case 'welcome':
        this._onWelcome(ws, msg);
        break;
      case 'ack':
        this._onAck(msg.seq);
        break;
      case 'overlay': {
        if (this.lastEventT !== null && typeof msg.t === 'number' && msg.t <= this.lastEventT) {
          this.stats.duplicateEvents += 1; // replayed after a resume, already shown
          return;
        }
        if (typeof msg.t === 'number') this.lastEventT = msg.t;
        this.lastEvent = msg;
        this.stats.events += 1;
        this.stats.serverLatencyMs = typeof msg.latency_ms === 'number' ? msg.latency_ms : null;
        const captured = this._capturedAt(msg.t);
        this.stats.lastLatencyMs = captured === null ? null : this.now() - captured;
        this.lastEventCaptureWallMs = captured;
        this.onEvent(msg);
        break;
      }
      case 'error':
        if (msg.code === ErrorCode.BAD_SEQ) {
          // The server saw a gap: resync by resuming, which resends from its acked seq.
          try { ws.close(1000, 'resync'); } catch { /* closed */ }
        }
        if (typeof msg.retry_after_s === 'number' && msg.retry_after_s > 0) {
          // server_full (1013 follows): the next attempt waits at least this long
          this._retryAfterMs = Math.min(300_000, msg.retry_after_s * 1000);
        }
        this.onError(msg);
        break;
      case 'bye':
        if (typeof msg.acked_seq === 'number') this._onAck(msg.acked_seq);
        if (this._onStopped) {
          const f = this._onStopped;
          this._onStopped = null;
          this.timers.clearTimeout(this._onStoppedTimer);
          try { ws.close(1000); } catch { /* closed */ }
          f();
        }
        break;
      default:
        break; // unknown server messages are ignored (forward compatibility)
    }
  }

  _lose(fromT, toT, reason) {
    if (!(typeof fromT === 'number' && typeof toT === 'number' && toT > fromT)) return;
    const range = { fromT, toT, reason };
    this.lost.push(range);
    if (this.lost.length > 50) this.lost.shift();
    this.onLost(range);
  }

  /**
   * The store holds less than it acknowledged (`welcome.lost`, or a welcome acked_seq behind ours):
   * the frames after its acked seq are resent when still held, else skipped — one message.
   */
  _rolledBack(ws, serverAcked) {
    this.stats.rollbacks += 1;
    const from = serverAcked + 1;
    const keep = this.retained.filter((f) => f.seq >= from);
    // acknowledged frames are kept in order and dropped from the front: holding `from` means
    // holding everything from there to the unacknowledged ones
    if (from > this.ackedSeq || (keep.length && keep[0].seq === from)) {
      this.unacked = [...keep, ...this.unacked];
      this.retained = [];
      this.ackedSeq = serverAcked;
      return;
    }
    const toSeq = this.unacked.length ? this.unacked[0].seq : this.nextSeq;
    const toT = this.unacked.length ? this.unacked[0].tsUs / 1e6 : (this._lastAdmittedEndT ?? 0);
    this._lose(this._lostFromT(serverAcked, toT), toT, 'store_rollback');
    ws.send(JSON.stringify({ type: 'skip', to_seq: toSeq, to_t: toT }));
    this.stats.skips += 1;
    this.retained = [];
    this.ackedSeq = toSeq - 1;
  }

  /** The media time of frame `seq` of this session, from the light record of acknowledged frames. */
  _lostFromT(serverAcked, toT) {
    const rec = this._ackedTimes.find((r) => r.seq > serverAcked);
    return rec ? rec.t : toT;
  }

  _onWelcome(ws, msg) {
    if (this._welcomeTimer !== null) this.timers.clearTimeout(this._welcomeTimer);
    this._welcomeTimer = null;
    this.limits = { ...DEFAULT_LIMITS, ...(msg.limits ?? {}) };
    this.models = msg.models ?? {};
    const resumed = Boolean(msg.resumed) && msg.session_id === this.sessionId;
    if (resumed) {
      this.stats.resumed += 1;
      const serverAcked = typeof msg.acked_seq === 'number' ? msg.acked_seq : 0;
      if (msg.lost || serverAcked < this.ackedSeq) this._rolledBack(ws, serverAcked);
      else this._onAck(serverAcked);
    } else {
      // A fresh session: seq restarts at 1 for what is still waiting; video is not worth keeping.
      if (this._hadSession) this._startOver();
      this.lastEventT = null;
      this.ackedSeq = 0;
      this._lastVideoTsUs = null;
      const dropped = this.unacked.filter((f) => f.kind === Kind.VIDEO).length;
      this.stats.dropped.video += dropped;
      this.unacked = this.unacked.filter((f) => f.kind !== Kind.VIDEO);
      this.unacked.forEach((f, i) => { f.seq = i + 1; setFrameSeq(f.bytes, f.seq); });
      this.nextSeq = this.unacked.length + 1;
      this._sessionStartT = this.unacked.length ? this.unacked[0].tsUs / 1e6 : null;
    }
    if (this.stats.connects > 1) this.stats.reconnects += 1;
    this.sessionId = msg.session_id ?? null;
    this.resumeToken = msg.resume_token ?? null;
    this._hadSession = true;
    this.attempt = 0;
    this._retryAfterMs = 0;
    this._setState('live', { resumed, force: true });
    for (const f of this.unacked) {
      ws.send(f.bytes);
      if (resumed) this.stats.resent += 1;
    }
    this.onWelcome(msg, { resumed });
  }

  /** The server no longer has the session: what it had analysed will not come back. */
  _startOver() {
    this.stats.newSessions += 1;
    this._ackedTimes = [];
    const firstHeldT = this.unacked.length ? this.unacked[0].tsUs / 1e6 : this._lastAdmittedEndT;
    if (this._sessionStartT !== null && firstHeldT !== null) this._lose(this._sessionStartT, firstHeldT, 'session_lost');
    this.retained = [];
  }

  _onAck(seq) {
    if (typeof seq !== 'number' || seq <= this.ackedSeq) return;
    this.ackedSeq = seq;
    this.stats.acked = seq;
    let n = 0;
    while (n < this.unacked.length && this.unacked[n].seq <= seq) n += 1;
    if (n) {
      const done = this.unacked.splice(0, n);
      this.retained.push(...done);
      // seq → media time of acknowledged frames, long after their bytes are gone (a lost range's start)
      for (const f of done) this._ackedTimes.push({ seq: f.seq, t: f.tsUs / 1e6 });
      if (this._ackedTimes.length > 12000) this._ackedTimes.splice(0, 6000);
    }
    // keep the last retainSeconds of acknowledged media (and at most retainFrames frames)
    const newest = this.retained.length ? this.retained[this.retained.length - 1].tsUs : 0;
    let drop = Math.max(0, this.retained.length - this.retainFrames);
    while (drop < this.retained.length && newest - this.retained[drop].tsUs > this.retainSeconds * 1e6) drop += 1;
    if (drop) this.retained.splice(0, drop);
  }

  /** Wall time (epoch ms) when the media up to `t` had been captured, or null. */
  _capturedAt(t) {
    if (typeof t !== 'number') return null;
    const recs = this._captureWall;
    let i = 0;
    while (i < recs.length && recs[i].endT < t - 1e-6) i += 1;
    if (i >= recs.length) return null;
    const wallMs = recs[i].wallMs;
    if (i > 0) recs.splice(0, i);
    return wallMs;
  }

  _onClose(code, reason) {
    this._clearTimers();
    if (this._onStopped) {
      const f = this._onStopped;
      this._onStopped = null;
      this.timers.clearTimeout(this._onStoppedTimer);
      f();
      return;
    }
    if (this.state === 'closed') return;
    if (code === CloseCode.UNAUTHORIZED || code === CloseCode.UNSUPPORTED_VERSION) {
      this.failure = { code, reason: reason || (code === CloseCode.UNAUTHORIZED ? 'missing or wrong token' : 'unsupported protocol version') };
      this._setState('failed');
      return;
    }
    if (code === CloseCode.UNKNOWN_SESSION && this.sessionId) {
      // The server no longer knows the session (expired, or its store was lost): a new session
      // goes on from the frames still held (the welcome renumbers them).
      this.sessionId = null;
      this.resumeToken = null;
    }
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    this._setState('reconnecting');
    const delay = Math.max(backoffDelayMs(this.attempt, this.random), this._retryAfterMs);
    this._retryAfterMs = 0;
    this.attempt += 1;
    this._retryTimer = this.timers.setTimeout(() => {
      this._retryTimer = null;
      this._connect();
    }, delay);
  }
}
