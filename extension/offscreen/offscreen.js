// Offscreen document: turns the tab-capture stream id from the service worker into a MediaStream,
// keeps the tab audible, runs the capture path (lib/capture.js) and the connection
// (lib/protocol.js Transport), and reports events and state back to the service worker.
import { Transport } from '../lib/protocol.js';
import { startCapture } from '../lib/capture.js';

let current = null; // {tabId, stream, capture, transport}

function report(tabId, kind, payload) {
  chrome.runtime.sendMessage({ type: 'vibescope:offscreen', tabId, kind, payload }).catch(() => {});
}

async function start({ streamId, tabId, settings }) {
  if (current) await stop();
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { mandatory: { chromeMediaSource: 'tab', chromeMediaSourceId: streamId } },
    video: { mandatory: { chromeMediaSource: 'tab', chromeMediaSourceId: streamId, maxWidth: 1280, maxHeight: 720, maxFrameRate: 30 } },
  });
  const transport = new Transport({
    url: settings.server,
    token: settings.token || null,
    onEvent: (event) => report(tabId, 'event', { event, client: { e2eMs: transport.stats.lastLatencyMs, unacked: transport.unackedCount, dropped: transport.stats.dropped } }),
    onState: (state, detail) => report(tabId, 'connection', { state, detail: { attempt: detail.attempt, failure: detail.failure, resumed: detail.resumed ?? false } }),
    onWelcome: (welcome) => {
      const l = transport.limits;
      capture.update({ fps: Math.min(settings.fps, l.max_video_fps), maxWidth: l.max_video_width, maxHeight: l.max_video_height });
      report(tabId, 'welcome', { models: welcome.models ?? {}, limits: l, sessionId: welcome.session_id, resumed: Boolean(welcome.resumed) });
    },
    onError: (err) => report(tabId, 'error', err),
  });
  const capture = await startCapture(stream, {
    audible: true,
    fps: settings.fps,
    shortSide: settings.shortSide,
    onAudio: (pcm, ts) => transport.sendAudio(pcm, ts),
    onVideo: (jpeg, ts) => transport.sendVideo(jpeg, ts),
  });
  for (const track of stream.getTracks()) {
    // Chrome ends the tracks when the tab closes or its capture is taken away.
    track.addEventListener('ended', () => { if (current?.stream === stream) { stop(); report(tabId, 'ended', {}); } });
  }
  transport.start();
  current = { tabId, stream, capture, transport };
  return { ok: true };
}

async function stop() {
  const c = current;
  current = null;
  if (!c) return { ok: true };
  await c.transport.stop().catch(() => {});
  await c.capture.stop().catch(() => {});
  for (const t of c.stream.getTracks()) t.stop();
  return { ok: true };
}

function status() {
  if (!current) return { running: false };
  const { transport, capture } = current;
  return {
    running: true,
    tabId: current.tabId,
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
    capture: capture.stats(),
  };
}

chrome.runtime.onMessage.addListener((msg, _sender, sendResponse) => {
  if (msg?.target !== 'offscreen') return false;
  (async () => {
    switch (msg.type) {
      case 'start': return start(msg);
      case 'stop': return stop();
      case 'status': return status();
      case 'crop': current?.capture.update({ crop: msg.rect }); return { ok: true };
      default: return { ok: false, error: `unknown ${msg.type}` };
    }
  })().then(sendResponse, (err) => sendResponse({ ok: false, error: err?.message ?? String(err) }));
  return true;
});
