// Service worker: starts/stops the capture of a tab from the toolbar action (or Alt+Shift+V),
// owns no media itself. It gets a tab-capture stream id and hands it to the offscreen document
// (offscreen/offscreen.js), which owns the MediaStream and the connection and therefore survives
// SPA navigations and Shorts/TikTok swipes. Overlay events flow offscreen → here → the tab's
// content script. Where tab capture is refused, the content script captures the page's <video>
// element itself (fallback) and says so in the overlay.
import { loadSettings, forPage } from './lib/settings.js';
import { serviceWorkerAccepts } from './lib/senders.js';

const OFFSCREEN_URL = 'offscreen/offscreen.html';

// The capture in progress; kept in storage.session so a restarted worker still knows it.
// {tabId, mode: 'tab' | 'video', startedAt, models, connection, notice}
async function getActive() {
  const { active } = await chrome.storage.session.get('active');
  return active ?? null;
}

// Every change goes through one queue: the relay of offscreen reports and start/stop run
// concurrently, and a read-modify-write must not put back a field another one just changed.
let writes = Promise.resolve();
function mutateActive(fn) {
  const next = writes.then(async () => {
    const updated = fn(await getActive());
    if (updated) await chrome.storage.session.set({ active: updated });
    else await chrome.storage.session.remove('active');
    return updated;
  });
  writes = next.catch(() => {});
  return next;
}

function setActive(active) {
  return mutateActive(() => active);
}

function patchActive(patch) {
  return mutateActive((active) => (active ? { ...active, ...patch } : null));
}

async function hasOffscreen() {
  const contexts = await chrome.runtime.getContexts({
    contextTypes: ['OFFSCREEN_DOCUMENT'],
    documentUrls: [chrome.runtime.getURL(OFFSCREEN_URL)],
  });
  return contexts.length > 0;
}

let creatingOffscreen = null;
async function ensureOffscreen() {
  if (await hasOffscreen()) return;
  creatingOffscreen ??= chrome.offscreen.createDocument({
    url: OFFSCREEN_URL,
    reasons: ['USER_MEDIA'],
    justification: 'Capture the tab audio and video and stream them to the vibescope server.',
  }).finally(() => { creatingOffscreen = null; });
  await creatingOffscreen;
}

function toOffscreen(msg) {
  return chrome.runtime.sendMessage({ target: 'offscreen', ...msg });
}

async function toTab(tabId, msg) {
  try {
    return await chrome.tabs.sendMessage(tabId, msg);
  } catch {
    return undefined; // no content script (yet): it asks for the state when it loads
  }
}

/** Make sure the content script runs in the tab (tabs opened before the extension was loaded). */
async function ensureContentScript(tabId) {
  const pong = await toTab(tabId, { type: 'vibescope:ping' });
  if (pong?.ok) return true;
  try {
    await chrome.scripting.executeScript({ target: { tabId }, files: ['content/content.js'] });
    return true;
  } catch {
    return false; // chrome:// pages and the like
  }
}

/** The offscreen document gets the settings without the token: it reads that itself. */
function forOffscreen(settings) {
  return { ...forPage(settings), server: settings.server };
}

async function setBadge(text, color = '#3fcf6e') {
  await chrome.action.setBadgeText({ text });
  if (text) await chrome.action.setBadgeBackgroundColor({ color });
}

export async function start(tabId) {
  const settings = await loadSettings();
  await ensureContentScript(tabId);
  await setActive({ tabId, mode: 'starting', startedAt: Date.now(), models: {}, connection: { state: 'connecting' }, notice: '' });
  await setBadge('…', '#f0b429');
  // The overlay first, so that no early event or the welcome's model list arrives before it.
  await toTab(tabId, { type: 'vibescope:mount', settings: { show: settings.show }, notice: '', connection: { state: 'connecting' } });
  let streamId = null;
  let refusal = null;
  try {
    streamId = await chrome.tabCapture.getMediaStreamId({ targetTabId: tabId });
  } catch (err) {
    refusal = err?.message ?? String(err);
  }
  if (streamId) {
    await ensureOffscreen();
    const res = await toOffscreen({ type: 'start', streamId, tabId, settings: forOffscreen(settings) });
    if (res?.ok) {
      await patchActive({ mode: 'tab' });
      await setBadge('ON');
      return { ok: true, mode: 'tab' };
    }
    refusal = res?.error ?? 'the offscreen document could not open the tab stream';
  }
  // Fallback: the content script captures the page's playing <video> element and posts its
  // frames to the offscreen document, which holds the connection (the page never opens it).
  // Short in the overlay; Chromium's reason in the tooltip.
  const notice = "Tab capture refused: analysing this page's <video> element instead.";
  await patchActive({ mode: 'video', notice, noticeDetail: refusal });
  await ensureOffscreen();
  const relay = await toOffscreen({ type: 'start', mode: 'relay', tabId, settings: forOffscreen(settings) });
  const res = relay?.ok
    ? await toTab(tabId, { type: 'vibescope:start-fallback', settings: forPage(settings), notice, noticeDetail: refusal })
    : relay;
  if (res?.ok) {
    await setBadge('VID', '#5aa9e6');
    return { ok: true, mode: 'video', refusal };
  }
  await stop();
  return { ok: false, error: res?.error ?? refusal };
}

export async function stop() {
  const active = await getActive();
  await setActive(null); // first: late reports from the offscreen document are no longer relayed
  if (await hasOffscreen()) {
    await toOffscreen({ type: 'stop' }).catch(() => {});
    await chrome.offscreen.closeDocument().catch(() => {});
  }
  if (active) await toTab(active.tabId, { type: 'vibescope:unmount' });
  await setBadge('');
  return { ok: true };
}

export async function toggle(tabId) {
  const active = await getActive();
  if (active && active.tabId === tabId) return stop();
  if (active) await stop(); // one captured tab at a time
  return start(tabId);
}

/** Everything a test or the options page may want to know about the running capture. */
export async function status() {
  const active = await getActive();
  let offscreen = null;
  if (await hasOffscreen()) offscreen = await toOffscreen({ type: 'status' }).catch((e) => ({ error: String(e) }));
  let page = null;
  if (active?.mode === 'video') page = await toTab(active.tabId, { type: 'vibescope:status' });
  return { active, offscreen, page };
}

chrome.action.onClicked.addListener((tab) => {
  if (tab?.id !== undefined) toggle(tab.id).catch((err) => console.error('vibescope toggle', err));
});

chrome.tabs.onRemoved.addListener(async (tabId) => {
  const active = await getActive();
  if (active?.tabId === tabId) await stop();
});

chrome.runtime.onMessage.addListener((msg, sender, sendResponse) => {
  if (msg?.target === 'offscreen') return false;
  if (typeof msg?.type !== 'string') return false;
  (async () => {
    const active = await getActive();
    // every message is checked against who may send it (lib/senders.js); others are ignored
    const ok = serviceWorkerAccepts(msg.type, sender, {
      runtimeId: chrome.runtime.id,
      offscreenUrl: chrome.runtime.getURL(OFFSCREEN_URL),
      activeTabId: active?.tabId ?? null,
    });
    if (!ok) return undefined;
    switch (msg.type) {
      // from the offscreen document
      case 'vibescope:offscreen': {
        if (!active || active.tabId !== msg.tabId) return { ok: false };
        if (msg.kind === 'welcome') await patchActive({ models: msg.payload.models ?? {} });
        if (msg.kind === 'connection') await patchActive({ connection: msg.payload });
        if (msg.kind === 'ended') { await stop(); return { ok: true }; }
        await toTab(msg.tabId, { type: 'vibescope:update', kind: msg.kind, payload: msg.payload });
        return { ok: true };
      }
      // from a content script
      case 'vibescope:tab-ready':
        if (active && sender.tab.id === active.tabId) {
          const settings = await loadSettings();
          if (active.mode === 'video') {
            // a new document: the <video> fallback capture must start again in it
            return { active: true, mode: 'video', restartFallback: true, settings: forPage(settings), notice: active.notice, noticeDetail: active.noticeDetail };
          }
          return { active: true, mode: active.mode, models: active.models, connection: active.connection, notice: active.notice, settings: { show: settings.show } };
        }
        return { active: false };
      case 'vibescope:video-rect':
        if (active?.mode === 'tab') await toOffscreen({ type: 'crop', rect: msg.rect }).catch(() => {});
        return { ok: true };
      case 'vibescope:fallback-ended':
        await setActive(null);
        await setBadge('');
        return { ok: true };
      default:
        return undefined;
    }
  })().then(sendResponse, (err) => sendResponse({ ok: false, error: String(err) }));
  return true;
});

// For the end-to-end test and the console: the same entry points the action uses.
globalThis.vibescope = { start, stop, toggle, status };
