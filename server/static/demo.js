// The server's demo page: a local video file streamed like the extension streams a tab, through
// the same modules (served from extension/lib at /lib/): captureStream() on the <video> →
// lib/capture.js (AudioWorklet → PCM16 16 kHz 100 ms frames; worker → JPEG 10 fps, short side
// 360) → lib/protocol.js Transport → /v1/stream; events drawn by lib/overlay.js.
import { Transport } from '/lib/protocol.js';
import { startCapture } from '/lib/capture.js';
import { createOverlay } from '/lib/overlay.js';
import { MediaClock } from '/lib/media-clock.js';

const $ = (id) => document.getElementById(id);
const video = $('video');
let run = null; // {transport, capture, stream, overlay, timer}

$('file').addEventListener('change', () => {
  const f = $('file').files[0];
  if (!f) return;
  if (video.src) URL.revokeObjectURL(video.src);
  video.src = URL.createObjectURL(f);
  $('start').disabled = false;
});

async function start() {
  if (run) return;
  $('start').disabled = true;
  if (video.paused) await video.play();
  const stream = video.captureStream(); // the element stays audible: captureStream does not mute it
  const overlay = createOverlay(document, {
    loadPosition: async () => JSON.parse(localStorage.getItem('vibescope-overlay') ?? 'null'),
    savePosition: (p) => localStorage.setItem('vibescope-overlay', JSON.stringify(p)),
  });
  const fps = Number($('fps').value) || 10;
  const clock = new MediaClock(); // audio by its samples, video from the audio: one clock
  const transport = new Transport({
    url: location.origin, // → ws(s)://this-host/v1/stream
    token: $('token').value || null,
    client: 'vibescope-demo/0.1',
    mediaNow: () => clock.at(Date.now()),
    onEvent: (ev) => overlay.update(ev, { e2eMs: transport.stats.lastLatencyMs }),
    onState: (state, detail) => overlay.setConnection(state, detail),
    onWelcome: (w) => {
      overlay.setModels(w.models ?? {});
      const l = transport.limits;
      capture.update({ fps: Math.min(fps, l.max_video_fps), maxWidth: l.max_video_width, maxHeight: l.max_video_height });
    },
  });
  const capture = await startCapture(stream, {
    fps,
    libUrl: new URL('/lib/', location.href).href,
    onAudio: (pcm, m) => transport.sendAudio(pcm, clock.audio(m.startSample, m.samples, m.wallMs), m.samples / 16000, m.wallMs),
    onVideo: (jpeg, m) => transport.sendVideo(jpeg, clock.video(m.wallMs)),
  });
  transport.start();
  const timer = setInterval(() => {
    const s = transport.stats;
    const c = capture.stats();
    $('stats').textContent = `${transport.state} · session ${transport.sessionId ?? '—'} · sent audio ${s.sent.audio}, video ${s.sent.video}`
      + ` · acked seq ${transport.ackedSeq} · waiting ${transport.unackedCount} · dropped video ${s.dropped.video}, audio ${s.dropped.audio}`
      + ` · events ${s.events} · video ${c.videoSize ? `${c.videoSize.width}×${c.videoSize.height}` : '—'} (${c.videoEncoder ?? '—'})`;
  }, 500);
  run = { transport, capture, stream, overlay, timer };
  window.vibescopeDemo = run; // for the console and the browser test
  $('stop').disabled = false;
}

async function stop() {
  const r = run;
  run = null;
  if (!r) return;
  $('stop').disabled = true;
  clearInterval(r.timer);
  await r.transport.stop();
  await r.capture.stop();
  for (const t of r.stream.getTracks()) t.stop();
  r.overlay.destroy();
  $('start').disabled = !video.src;
}

$('start').addEventListener('click', () => start().catch((err) => { $('stats').textContent = `could not start: ${err.message}`; $('start').disabled = false; }));
$('stop').addEventListener('click', () => stop());
