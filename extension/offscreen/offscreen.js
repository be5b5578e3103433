// Offscreen document: the extension's one connection to the server. It owns the Transport
// (lib/protocol.js), the token and the media clock (lib/media-clock.js), and takes media from:
//  - tab capture (mode 'tab'): the stream id from the service worker becomes a MediaStream whose
//    audio it keeps audible and captures (lib/capture.js);
//  - the tab's content script (mode 'relay', where tab capture was refused): the page's <video>
//    element captured there, its frames posted over a chrome.runtime port (lib/relay.js). A page
//    never opens the socket itself, so the server sees only the extension's Origin.
// Events and state go back to the service worker, which relays them to the tab.
import { Transport } from '../lib/protocol.js';
import { startCapture } from '../lib/capture.js';
import { MediaClock } from '../lib/media-clock.js';
import { MEDIA_PORT, parseRelayMessage } from '../lib/relay.js';
import { fromContentScript, fromServiceWorker } from '../lib/senders.js';
import { loadToken } from '../lib/settings.js';

const RUNTIME_ID = chrome.runtime.id;
const WORKER_URL = chrome.runtime.getURL('background.js');

let current = null; // {tabId, mode, stream, capture, transport, clock, port, relay}

function report(tabId, kind, payload) {
  chrome.runtime.sendMessage({ type: 'vibescope:offscreen', tabId, kind, payload }).catch(() => {});
}

/** What the content script needs to capture for us: whether frames are taken now, and their size. */
function flow(c) {
  const l = c.transport.limits;
  return {
    k: 'flow',
    live: c.transport.state === 'live',
    fps: Math.min(c.settings.fps, l.max_video_fps),
    shortSide: c.settings.shortSide,
    maxWidth: l.max_video_width,
    maxHeight: l.max_video_height,
  };
}

function postFlow(c) {
  try { c.port?.postMessage(flow(c)); } catch { /* the port went away */ }
}

function sendAudio(c, pcm, { startSample, samples, wallMs }) {
  c.transport.sendAudio(pcm, c.clock.audio(startSample, samples, wallMs), samples / 16000, wallMs);
}

function sendVideo(c, jpeg, { wallMs }) {
  c.transport.sendVideo(jpeg, c.clock.video(wallMs));
}

async function start({ mode = 'tab', streamId, tabId, settings }) {
  if (current) await stop();
  const clock = new MediaClock();
  const c = {
    tabId, mode, settings, clock, stream: null, capture: null, port: null,
    relay: { ports: 0, audio: 0, video: 0, refused: 0, firstVideoSizes: [], videoSize: null },
  };
  // the token is read here, from the extension's own storage: no message ever carries it
  const token = await loadToken();
  c.transport = new Transport({
    url: settings.server,
    token: token || null,
    mediaNow: () => clock.at(Date.now()),
    onEvent: (event) => report(tabId, 'event', { event, client: { e2eMs: c.transport.stats.lastLatencyMs, unacked: c.transport.unackedCount, dropped: c.transport.stats.dropped } }),
    onState: (state, detail) => {
      report(tabId, 'connection', { state, detail: { attempt: detail.attempt, failure: detail.failure, resumed: detail.resumed ?? false } });
      postFlow(c);
    },
    onWelcome: (welcome) => {
      const l = c.transport.limits;
      c.capture?.update({ fps: Math.min(settings.fps, l.max_video_fps), maxWidth: l.max_video_width, maxHeight: l.max_video_height });
      postFlow(c);
      report(tabId, 'welcome', { models: welcome.models ?? {}, limits: l, sessionId: welcome.session_id, resumed: Boolean(welcome.resumed) });
    },
    onError: (err) => report(tabId, 'error', err),
  });
  if (mode === 'tab') {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { mandatory: { chromeMediaSource: 'tab', chromeMediaSourceId: streamId } },
      video: { mandatory: { chromeMediaSource: 'tab', chromeMediaSourceId: streamId, maxWidth: 1280, maxHeight: 720, maxFrameRate: 30 } },
    });
    c.stream = stream;
    c.capture = await startCapture(stream, {
      audible: true,
      fps: settings.fps,
      shortSide: settings.shortSide,
      onAudio: (pcm, meta) => sendAudio(c, pcm, meta),
      onVideo: (jpeg, meta) => sendVideo(c, jpeg, meta),
    });
    for (const track of stream.getTracks()) {
      // Chrome ends the tracks when the tab closes or its capture is taken away.
      track.addEventListener('ended', () => { if (current === c) { stop(); report(tabId, 'ended', {}); } });
    }
  }
  c.transport.start();
  current = c;
  return { ok: true };
}

async function stop() {
  const c = current;
  current = null;
  if (!c) return { ok: true };
  try { c.port?.disconnect(); } catch { /* gone */ }
  await c.transport.stop().catch(() => {});
  await c.capture?.stop().catch(() => {});
  for (const t of c.stream?.getTracks() ?? []) t.stop();
  return { ok: true };
}

// --- media from the content script -----------------------------------------------------------

function onRelayMessage(c, port, raw) {
  if (current !== c || c.port !== port) return;
  const msg = parseRelayMessage(raw);
  if (!msg) { c.relay.refused += 1; return; }
  switch (msg.kind) {
    case 'hello':
      c.relay.hello = msg;
      break;
    case 'audio':
      if (c.mode !== 'relay') { c.relay.refused += 1; return; } // tab capture has the audio
      c.relay.audio += 1;
      sendAudio(c, msg.bytes, msg);
      break;
    case 'video':
      c.relay.video += 1;
      c.relay.videoSize = { width: msg.width, height: msg.height };
      if (c.relay.firstVideoSizes.length < 5) c.relay.firstVideoSizes.push(c.relay.videoSize);
      sendVideo(c, msg.bytes, msg);
      break;
    default:
      break;
  }
}

chrome.runtime.onConnect.addListener((port) => {
  if (port.name !== MEDIA_PORT) return;
  const c = current;
  // only the content script of the tab being analysed, its top frame
  if (!c || !fromContentScript(port.sender, RUNTIME_ID, c.tabId)) {
    port.disconnect();
    return;
  }
  if (c.port) try { c.port.disconnect(); } catch { /* gone */ }
  c.port = port;
  c.relay.ports += 1;
  // a new document captures from sample 0 again: its audio continues the clock after the gap
  if (c.mode === 'relay') c.clock.rebase(Date.now(), { gap: true });
  port.onMessage.addListener((msg) => onRelayMessage(c, port, msg));
  port.onDisconnect.addListener(() => { if (c.port === port) c.port = null; });
  postFlow(c);
});

function status() {
  if (!current) return { running: false };
  const { transport, capture, relay, clock } = current;
  return {
    running: true,
    tabId: current.tabId,
    mode: current.mode,
    transport: {
      state: transport.state,
      sessionId: transport.sessionId,
      ackedSeq: transport.ackedSeq,
      nextSeq: transport.nextSeq,
      unacked: transport.unackedCount,
      limits: transport.limits,
      stats: transport.stats,
      lastEvent: transport.lastEvent,
    },
    capture: capture ? capture.stats() : null,
    relay: { ...relay, connected: Boolean(current.port) },
    clock: { endT: clock.endT, segments: clock.segments, paused: clock.paused },
  };
}

chrome.runtime.onMessage.addListener((msg, sender, sendResponse) => {
  if (msg?.target !== 'offscreen') return false;
  if (!fromServiceWorker(sender, RUNTIME_ID, WORKER_URL)) return false; // only the service worker drives this page
  (async () => {
    switch (msg.type) {
      case 'start': return start(msg);
      case 'stop': return stop();
      case 'status': return status();
      case 'crop': current?.capture?.update({ crop: msg.rect }); return { ok: true };
      default: return { ok: false, error: `unknown ${msg.type}` };
    }
  })().then(sendResponse, (err) => sendResponse({ ok: false, error: err?.message ?? String(err) }));
  return true;
});
