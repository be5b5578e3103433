// extension/lib/senders.js: which context may send which message; everything else is ignored.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  fromThisExtension, fromExtensionPage, fromOffscreen, fromContentScript, fromServiceWorker, serviceWorkerAccepts,
  SERVICE_WORKER_SENDERS,
} from '../../extension/lib/senders.js';

const ID = 'jamlkphlcjmegmfpkeonmglpoklggpcb';
const BASE = `chrome-extension://${ID}/`;
const OFFSCREEN = `${BASE}offscreen/offscreen.html`;
const ctx = { runtimeId: ID, offscreenUrl: OFFSCREEN, activeTabId: 7 };

// what Chromium puts in MessageSender for each kind of context
const offscreen = { id: ID, url: OFFSCREEN, origin: BASE.slice(0, -1) };
const worker = { id: ID, url: `${BASE}background.js`, origin: BASE.slice(0, -1) };
const options = { id: ID, url: `${BASE}options/options.html`, origin: BASE.slice(0, -1) };
const content = (tabId, frameId = 0) => ({ id: ID, url: 'https://video.example/watch', origin: 'https://video.example', tab: { id: tabId }, frameId });
const otherExtension = { id: 'b'.repeat(32), url: `chrome-extension://${'b'.repeat(32)}/x.html` };

test('the offscreen document is recognised by its id and URL, never from a tab', () => {
  assert.equal(fromOffscreen(offscreen, ID, OFFSCREEN), true);
  assert.equal(fromOffscreen({ ...offscreen, url: `${OFFSCREEN}#x` }, ID, OFFSCREEN), true);
  assert.equal(fromOffscreen(options, ID, OFFSCREEN), false);
  assert.equal(fromOffscreen({ ...offscreen, tab: { id: 1 } }, ID, OFFSCREEN), false);
  assert.equal(fromOffscreen({ ...offscreen, id: 'x' }, ID, OFFSCREEN), false);
  assert.equal(fromOffscreen(otherExtension, ID, OFFSCREEN), false);
  assert.equal(fromOffscreen({ id: ID, url: `https://evil.example/offscreen/offscreen.html` }, ID, OFFSCREEN), false);
});

test('a content script is this extension in a tab; tab-bound messages only from that tab\'s top frame', () => {
  assert.equal(fromContentScript(content(7), ID), true);
  assert.equal(fromContentScript(content(7), ID, 7), true);
  assert.equal(fromContentScript(content(8), ID, 7), false);
  assert.equal(fromContentScript(content(7, 3), ID, 7), false, 'an iframe of the analysed tab');
  assert.equal(fromContentScript(worker, ID), false);
  assert.equal(fromContentScript({ ...content(7), id: 'x' }, ID), false);
  assert.equal(fromContentScript(undefined, ID), false);
});

test('extension pages and the service worker are this extension without a tab', () => {
  assert.equal(fromExtensionPage(options, ID), true);
  assert.equal(fromExtensionPage(worker, ID), true);
  assert.equal(fromExtensionPage(content(7), ID), false);
  assert.equal(fromExtensionPage({ id: ID, url: 'https://x.example/' }, ID), false);
  assert.equal(fromThisExtension(otherExtension, ID), false);
  assert.equal(fromThisExtension({ id: ID }, ''), false);
  assert.equal(fromServiceWorker(worker, ID, `${BASE}background.js`), true);
  assert.equal(fromServiceWorker(options, ID, `${BASE}background.js`), false);
  assert.equal(fromServiceWorker(content(7), ID, `${BASE}background.js`), false);
});

test('the service worker takes each message from its one kind of sender', () => {
  // offscreen reports: only from the offscreen document, never from a page's content script
  assert.equal(serviceWorkerAccepts('vibescope:offscreen', offscreen, ctx), true);
  assert.equal(serviceWorkerAccepts('vibescope:offscreen', content(7), ctx), false);
  assert.equal(serviceWorkerAccepts('vibescope:offscreen', options, ctx), false);
  // tab-ready: any tab's content script (the answer says whether that tab is analysed)
  assert.equal(serviceWorkerAccepts('vibescope:tab-ready', content(99), ctx), true);
  assert.equal(serviceWorkerAccepts('vibescope:tab-ready', offscreen, ctx), false);
  // about the analysed video: only the analysed tab
  for (const type of ['vibescope:video-rect', 'vibescope:video-state', 'vibescope:fallback-ended']) {
    assert.equal(serviceWorkerAccepts(type, content(7), ctx), true, type);
    assert.equal(serviceWorkerAccepts(type, content(8), ctx), false, type);
    assert.equal(serviceWorkerAccepts(type, content(7), { ...ctx, activeTabId: null }), false, type);
    assert.equal(serviceWorkerAccepts(type, offscreen, ctx), false, type);
  }
  // unknown types and other extensions: never
  assert.equal(serviceWorkerAccepts('vibescope:toggle-from-page', content(7), ctx), false);
  assert.equal(serviceWorkerAccepts('anything', offscreen, ctx), false);
  for (const type of Object.keys(SERVICE_WORKER_SENDERS)) assert.equal(serviceWorkerAccepts(type, otherExtension, ctx), false, type);
});
