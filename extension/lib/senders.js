// Who may send what to the extension's contexts (chrome.runtime.onMessage / onConnect senders).
//
// Only this extension's own contexts can reach runtime.onMessage (the manifest declares no
// externally_connectable), but a content script runs inside pages an attacker may control, and a
// compromised renderer can forge what its content script sends. So every handler checks that a
// message comes from the context that is meant to send it, and ignores the rest:
//  - from the offscreen document: this extension, its offscreen page URL, no tab;
//  - from a content script: this extension, a tab (and for tab-bound messages, the tab being
//    analysed, top frame only);
//  - from an extension page (the options page) or the service worker: this extension, an
//    extension URL, no tab.

/** The sender is a context of this extension (any kind). */
export function fromThisExtension(sender, runtimeId) {
  return Boolean(sender && runtimeId && sender.id === runtimeId);
}

/** The sender is one of this extension's own pages or its service worker (not a content script). */
export function fromExtensionPage(sender, runtimeId) {
  if (!fromThisExtension(sender, runtimeId) || sender.tab) return false;
  return typeof sender.url === 'string' && sender.url.startsWith(`chrome-extension://${runtimeId}/`);
}

/** The sender is the offscreen document at `offscreenUrl` (chrome.runtime.getURL of it). */
export function fromOffscreen(sender, runtimeId, offscreenUrl) {
  if (!fromExtensionPage(sender, runtimeId)) return false;
  return sender.url.split('#')[0].split('?')[0] === offscreenUrl;
}

/**
 * The sender is this extension's content script in a tab: any tab when `tabId` is null, else
 * that tab's top frame.
 */
export function fromContentScript(sender, runtimeId, tabId = null) {
  if (!fromThisExtension(sender, runtimeId) || !sender.tab || typeof sender.tab.id !== 'number') return false;
  if (tabId === null) return true;
  return sender.tab.id === tabId && (sender.frameId ?? 0) === 0;
}

// Service worker messages and who may send them.
export const SERVICE_WORKER_SENDERS = Object.freeze({
  'vibescope:offscreen': 'offscreen',
  'vibescope:tab-ready': 'content', // any tab: the answer says whether that tab is analysed
  'vibescope:video-rect': 'active-content',
  'vibescope:video-state': 'active-content',
  'vibescope:fallback-ended': 'active-content',
});

/**
 * May `sender` send the service worker a message of `type`? `ctx`: {runtimeId, offscreenUrl,
 * activeTabId}. Unknown types are refused.
 */
export function serviceWorkerAccepts(type, sender, { runtimeId, offscreenUrl, activeTabId = null }) {
  switch (SERVICE_WORKER_SENDERS[type]) {
    case 'offscreen':
      return fromOffscreen(sender, runtimeId, offscreenUrl);
    case 'content':
      return fromContentScript(sender, runtimeId);
    case 'active-content':
      return activeTabId !== null && fromContentScript(sender, runtimeId, activeTabId);
    default:
      return false;
  }
}

/** Messages to the offscreen document and the content script come from the service worker only. */
export function fromServiceWorker(sender, runtimeId, workerUrl) {
  if (!fromExtensionPage(sender, runtimeId)) return false;
  return workerUrl ? sender.url === workerUrl : true;
}
