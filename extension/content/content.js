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
  let fallback = null; // {port, stream, video, capture, flow, posted}
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
      // The overlay's closed shadow root, reachable from this isolated world only (the page's
      // scripts see host.shadowRoot === null); the browser tests read the overlay through it.
      globalThis.__vibescopeOverlay = overlay;
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
    delete globalThis.__vibescopeOverlay;
  }

  // The <video> fallback: this script captures the page's video element and posts the frames to
  // the offscreen document over a port (lib/relay.js); the connection to the server is there.
  async function startFallback({ settings = {}, notice, noticeDetail }) {
    await stopFallback();
    await mount({ settings, notice, noticeDetail });
    const [{ startCapture }, relay] = await Promise.all([import(url('lib/capture.js')), import(url('lib/relay.js'))]);
    const video = overlayMod.findPrimaryVideo(document) ?? document.querySelector('video');
    if (!video) throw new Error('no <video> element on this page');
    // captureStream does not mute the element: the page stays audible by itself.
    const stream = video.captureStream();
    const port = chrome.runtime.connect({ name: relay.MEDIA_PORT });
    const flow = { live: false };
    const f = { port, stream, video, capture: null, flow, posted: { audio: 0, video: 0 } };
    const post = (msg) => { try { port.postMessage(msg); return true; } catch { return false; } };
    port.onMessage.addListener((msg) => {
      if (msg?.k !== 'flow') return;
      Object.assign(flow, msg);
      f.capture?.update({ fps: msg.fps, shortSide: msg.shortSide, maxWidth: msg.maxWidth, maxHeight: msg.maxHeight });
    });
    port.onDisconnect.addListener(() => { if (fallback === f) stopFallback(); });
    fallback = f;
    f.capture = await startCapture(stream, {
      audible: false,
      fps: settings.fps ?? 10,
      shortSide: settings.shortSide ?? 360,
      useWorker: false, // a page cannot start an extension worker; convertToBlob still encodes off-thread
      wanted: () => flow.live,
      libUrl: url('lib/'),
      onAudio: (pcm, meta) => { if (flow.live && post(relay.audioMessage(pcm, meta))) f.posted.audio += 1; },
      onVideo: (jpeg, meta) => { if (flow.live && post(relay.videoMessage(jpeg, meta))) f.posted.video += 1; },
    });
    post({ k: 'hello', audio: true, video: 'element' });
    return { ok: true };
  }

  async function stopFallback() {
    const f = fallback;
    fallback = null;
    if (!f) return;
    try { f.port.disconnect(); } catch { /* gone */ }
    await f.capture?.stop().catch(() => {});
    for (const t of f.stream.getTracks()) t.stop();
  }

  chrome.runtime.onMessage.addListener((msg, sender, sendResponse) => {
    // only this extension's service worker drives the overlay (tabs.sendMessage: no sender tab)
    if (sender?.id !== chrome.runtime.id || sender.tab || typeof msg?.type !== 'string') return false;
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
          return fallback ? { flow: fallback.flow, posted: fallback.posted, capture: fallback.capture?.stats() ?? null } : null;
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
