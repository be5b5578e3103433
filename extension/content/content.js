// Content script (classic script, every page; dormant until this tab is being analysed).
// Mounts the overlay (lib/overlay.js, in a shadow root) when the service worker says the tab is
// captured, shows the events it relays, reports where the main video sits (so the capture can
// crop to it), and runs the <video>.captureStream() fallback where tab capture was refused.
(() => {
  if (globalThis.__vibescopeContent) return;
  globalThis.__vibescopeContent = true;

  const url = (p) => chrome.runtime.getURL(p);
  let overlayMod = null;
  let overlay = null;
  let fallback = null; // {transport, capture, video}
  let mounting = null; // the mount in progress (the overlay module loads asynchronously)
  const posKey = `overlayPos:${location.host}`;

  async function mount({ settings = {}, notice = '', noticeDetail = '', models = null, connection = null } = {}) {
    overlayMod ??= await import(url('lib/overlay.js'));
    if (!overlay) {
      overlay = overlayMod.createOverlay(document, {
        show: settings.show ?? {},
        loadPosition: async () => (await chrome.storage.local.get(posKey))[posKey] ?? null,
        savePosition: (pos) => chrome.storage.local.set({ [posKey]: pos }),
        onVideoRect: (rect) => chrome.runtime.sendMessage({ type: 'vibescope:video-rect', rect }).catch(() => {}),
      });
    }
    if (settings.show) overlay.setShow(settings.show);
    overlay.setNotice(notice, noticeDetail);
    if (models) overlay.setModels(models);
    if (connection) overlay.setConnection(connection.state, connection.detail ?? {});
    return overlay;
  }

  function unmount() {
    overlay?.destroy();
    overlay = null;
  }

  async function startFallback({ settings, notice, noticeDetail }) {
    const ov = await mount({ settings, notice, noticeDetail });
    const [{ Transport }, { startCapture }, { findPrimaryVideo }] = await Promise.all([
      import(url('lib/protocol.js')), import(url('lib/capture.js')), import(url('lib/overlay.js')),
    ]);
    const video = findPrimaryVideo(document) ?? document.querySelector('video');
    if (!video) throw new Error('no <video> element on this page');
    // captureStream does not mute the element: the page stays audible by itself.
    const stream = video.captureStream();
    const transport = new Transport({
      url: settings.server,
      token: settings.token || null,
      onEvent: (event) => ov.update(event, { e2eMs: transport.stats.lastLatencyMs }),
      onState: (state, detail) => ov.setConnection(state, detail),
      onWelcome: (w) => {
        ov.setModels(w.models ?? {});
        const l = transport.limits;
        capture.update({ fps: Math.min(settings.fps, l.max_video_fps), maxWidth: l.max_video_width, maxHeight: l.max_video_height });
      },
    });
    const capture = await startCapture(stream, {
      audible: false,
      fps: settings.fps,
      shortSide: settings.shortSide,
      useWorker: false, // a page cannot start an extension worker; convertToBlob still encodes off-thread
      libUrl: url('lib/'),
      onAudio: (pcm, ts) => transport.sendAudio(pcm, ts),
      onVideo: (jpeg, ts) => transport.sendVideo(jpeg, ts),
    });
    transport.start();
    fallback = { transport, capture, video, stream };
    return { ok: true };
  }

  async function stopFallback() {
    const f = fallback;
    fallback = null;
    if (!f) return;
    await f.transport.stop().catch(() => {});
    await f.capture.stop().catch(() => {});
    for (const t of f.stream.getTracks()) t.stop();
  }

  chrome.runtime.onMessage.addListener((msg, _sender, sendResponse) => {
    (async () => {
      switch (msg?.type) {
        case 'vibescope:ping':
          return { ok: true };
        case 'vibescope:mount':
          mounting = mount(msg);
          await mounting;
          return { ok: true };
        case 'vibescope:update': {
          // mounted by vibescope:mount or the tab-ready handshake only, never by a stray update
          const ov = overlay ?? (mounting ? await mounting.catch(() => null) : null);
          if (!ov) return { ok: false };
          if (msg.kind === 'event') ov.update(msg.payload.event, msg.payload.client ?? {});
          else if (msg.kind === 'connection') ov.setConnection(msg.payload.state, msg.payload.detail ?? {});
          else if (msg.kind === 'welcome') ov.setModels(msg.payload.models ?? {});
          return { ok: true };
        }
        case 'vibescope:start-fallback':
          return startFallback(msg);
        case 'vibescope:status':
          return fallback ? { transport: { state: fallback.transport.state, stats: fallback.transport.stats, sessionId: fallback.transport.sessionId }, capture: fallback.capture.stats() } : null;
        case 'vibescope:unmount':
          mounting = null;
          await stopFallback();
          unmount();
          return { ok: true };
        default:
          return undefined;
      }
    })().then(sendResponse, (err) => sendResponse({ ok: false, error: err?.message ?? String(err) }));
    return true;
  });

  // A new document in a captured tab (navigation): put the overlay back.
  chrome.runtime.sendMessage({ type: 'vibescope:tab-ready' }).then((state) => {
    if (!state?.active) return;
    if (state.restartFallback) startFallback(state).catch(() => chrome.runtime.sendMessage({ type: 'vibescope:fallback-ended' }));
    else mounting = mount(state);
  }).catch(() => {});
})();
