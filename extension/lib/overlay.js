// The overlay drawn over the page's video: a closed shadow root (page CSS and scripts cannot reach it) holding a
// small draggable, collapsible panel that follows the main <video> element. Used by the content
// script (extension) and by the server's demo page. What it shows comes from OverlayModel.

import { OverlayModel } from './overlay-model.js';

const SVG_NS = 'http://www.w3.org/2000/svg';
const SIZE = 112; // circumplex, px

const CSS = `
:host { all: initial; }
.panel { position: fixed; z-index: 2147483647; width: 232px; box-sizing: border-box;
  font: 12px/1.35 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #eef1f5;
  background: rgba(18, 22, 30, 0.82); border: 1px solid rgba(255,255,255,0.18); border-radius: 10px;
  box-shadow: 0 4px 18px rgba(0,0,0,0.35); pointer-events: auto; user-select: none;
  backdrop-filter: blur(4px); }
.head { display: flex; align-items: center; gap: 6px; padding: 5px 8px; cursor: grab;
  border-bottom: 1px solid rgba(255,255,255,0.12); touch-action: none; }
.head:active { cursor: grabbing; }
.title { font-weight: 600; flex: 1; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.title small { font-weight: 400; opacity: 0.7; }
.dot { width: 8px; height: 8px; border-radius: 50%; background: #888; flex: none; }
.dot[data-state="live"] { background: #3fcf6e; }
.dot[data-state="connecting"], .dot[data-state="reconnecting"] { background: #f0b429; }
.dot[data-state="failed"] { background: #e5484d; }
button { all: unset; cursor: pointer; padding: 0 5px; border-radius: 4px; font-size: 14px; line-height: 18px; }
button:hover { background: rgba(255,255,255,0.15); }
.body { padding: 6px 8px 8px; }
.panel.collapsed .body { display: none; }
.panel.collapsed { width: auto; min-width: 120px; }
.row { display: flex; justify-content: space-between; gap: 6px; margin-top: 3px; }
.muted { opacity: 0.72; }
.small { font-size: 10.5px; }
.va { display: flex; gap: 8px; align-items: center; }
.va svg { flex: none; }
.va .nums { display: grid; gap: 1px; font-variant-numeric: tabular-nums; }
.bar { height: 6px; background: rgba(255,255,255,0.15); border-radius: 3px; overflow: hidden; margin-top: 2px; }
.bar > i { display: block; height: 100%; width: 0; background: #5aa9e6; transition: width 120ms linear; }
.bgm[data-on="true"] { color: #ffd166; font-weight: 600; }
.speech-dot { display: inline-block; width: 7px; height: 7px; border-radius: 50%; background: #555; margin-right: 4px; vertical-align: middle; }
.speech-dot[data-on="true"] { background: #7bdff2; }
.prov { margin-top: 6px; border-top: 1px solid rgba(255,255,255,0.12); padding-top: 4px; }
.prov div { overflow-wrap: anywhere; }
.prov .no { color: #ffb3a7; }
.prov .yes { color: #a7f3c0; }
.notice { margin-top: 5px; padding: 3px 5px; border-radius: 4px; background: rgba(240,180,41,0.2); color: #ffe08a; }
.notice:empty { display: none; }
.hidden { display: none !important; }
`;

function el(doc, tag, attrs = {}, text = null) {
  const e = doc.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== null) e.textContent = text;
  return e;
}

function svgEl(doc, tag, attrs = {}) {
  const e = doc.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

/**
 * The main video of the page: the largest visible <video>, playing ones first. Shorts and TikTok
 * keep several <video> elements around while swiping; the visible playing one is the clip.
 */
export function findPrimaryVideo(doc) {
  const win = doc.defaultView;
  let best = null;
  let bestScore = 0;
  for (const v of doc.querySelectorAll('video')) {
    const r = v.getBoundingClientRect();
    const w = Math.min(r.right, win.innerWidth) - Math.max(r.left, 0);
    const h = Math.min(r.bottom, win.innerHeight) - Math.max(r.top, 0);
    if (w < 64 || h < 64) continue;
    const style = win.getComputedStyle(v);
    if (style.visibility === 'hidden' || style.display === 'none' || Number(style.opacity) === 0) continue;
    const playing = !v.paused && !v.ended && v.readyState > 2;
    const score = w * h * (playing ? 4 : 1);
    if (score > bestScore) { best = v; bestScore = score; }
  }
  return best;
}

/**
 * Mount the overlay into `doc`. Options:
 *   loadPosition(): Promise<{fx, fy, collapsed}|null>, savePosition(pos): remembered place
 *   show: {circumplex, music, speech, provenance} booleans
 *   onVideoRect(rect): called with the main video's rect as fractions of the viewport
 * Returns {update(event, client), setConnection(state, detail), setModels(models),
 *          setNotice(text), setShow(show), destroy(), root, model}.
 * The shadow root is closed: page scripts cannot reach into it (host.shadowRoot is null for them);
 * `root` is held only by whoever created the overlay (the content script, in its isolated world).
 */
export function createOverlay(doc, { loadPosition = async () => null, savePosition = () => {}, show = {}, onVideoRect = null } = {}) {
  const win = doc.defaultView;
  const model = new OverlayModel();
  const host = el(doc, 'div', { id: 'vibescope-overlay-host' });
  // The host takes no space and no clicks; only the panel itself is interactive.
  host.style.cssText = 'all: initial; position: fixed; left: 0; top: 0; width: 0; height: 0; z-index: 2147483647; pointer-events: none;';
  const root = host.attachShadow({ mode: 'closed' });
  // A constructed style sheet: a <style> element would fall under the page's CSP style-src.
  try {
    const sheet = new win.CSSStyleSheet();
    sheet.replaceSync(CSS);
    root.adoptedStyleSheets = [sheet];
  } catch {
    root.append(el(doc, 'style', {}, CSS));
  }

  const panel = el(doc, 'div', { class: 'panel', id: 'vs-panel', role: 'status', 'aria-live': 'off' });
  const head = el(doc, 'div', { class: 'head', id: 'vs-head', title: 'drag to move' });
  const dot = el(doc, 'span', { class: 'dot', id: 'vs-dot', 'data-state': 'idle' });
  const title = el(doc, 'span', { class: 'title' });
  title.append('vibescope ', el(doc, 'small', {}, '· machine estimate'));
  const collapseBtn = el(doc, 'button', { id: 'vs-collapse', title: 'collapse', 'aria-label': 'collapse overlay' }, '–');
  head.append(dot, title, collapseBtn);

  const body = el(doc, 'div', { class: 'body' });

  // valence/arousal circumplex
  const vaBox = el(doc, 'div', { class: 'va', id: 'vs-va' });
  const svg = svgEl(doc, 'svg', { width: SIZE, height: SIZE, viewBox: `0 0 ${SIZE} ${SIZE}`, id: 'vs-circumplex', 'aria-label': 'valence/arousal circumplex' });
  const c = SIZE / 2;
  svg.append(
    svgEl(doc, 'circle', { cx: c, cy: c, r: c - 2, fill: 'rgba(255,255,255,0.05)', stroke: 'rgba(255,255,255,0.25)' }),
    svgEl(doc, 'line', { x1: 4, y1: c, x2: SIZE - 4, y2: c, stroke: 'rgba(255,255,255,0.25)' }),
    svgEl(doc, 'line', { x1: c, y1: 4, x2: c, y2: SIZE - 4, stroke: 'rgba(255,255,255,0.25)' }),
  );
  for (const [x, y, t, anchor] of [[c, 11, 'excited', 'middle'], [c, SIZE - 4, 'calm', 'middle'], [4, c - 3, 'unpleasant', 'start'], [SIZE - 4, c - 3, 'pleasant', 'end']]) {
    const tx = svgEl(doc, 'text', { x, y, fill: 'rgba(255,255,255,0.6)', 'font-size': 8.5, 'text-anchor': anchor });
    tx.textContent = t;
    svg.append(tx);
  }
  const trailG = svgEl(doc, 'g', { id: 'vs-trail' });
  const point = svgEl(doc, 'circle', { id: 'vs-va-point', r: 5.5, fill: '#ff7eb6', stroke: '#fff', 'stroke-width': 1, visibility: 'hidden' });
  const naText = svgEl(doc, 'text', { id: 'vs-va-na', x: c, y: c + 16, fill: 'rgba(255,255,255,0.85)', 'font-size': 10, 'text-anchor': 'middle' });
  naText.textContent = '—';
  svg.append(trailG, point, naText);
  const nums = el(doc, 'div', { class: 'nums' });
  const vText = el(doc, 'div', { id: 'vs-valence' }, 'V —');
  const aText = el(doc, 'div', { id: 'vs-arousal' }, 'A —');
  const confText = el(doc, 'div', { id: 'vs-confidence', class: 'muted' }, 'confidence —');
  const words = el(doc, 'div', { id: 'vs-va-words', class: 'muted small' }, 'not available');
  nums.append(vText, aText, confText, words);
  vaBox.append(svg, nums);

  // music meter
  const musicBox = el(doc, 'div', { id: 'vs-music' });
  const musicRow = el(doc, 'div', { class: 'row' });
  const musicLabel = el(doc, 'span', { id: 'vs-music-state', class: 'bgm', 'data-on': 'false' }, 'music: not available');
  const musicNums = el(doc, 'span', { class: 'muted' });
  const musicProb = el(doc, 'span', { id: 'vs-music-prob' }, '—');
  const musicLevel = el(doc, 'span', { id: 'vs-music-level' }, '—');
  musicNums.append(musicProb, ' · ', musicLevel);
  musicRow.append(musicLabel, musicNums);
  const musicBar = el(doc, 'div', { class: 'bar' });
  const musicFill = el(doc, 'i', { id: 'vs-music-bar' });
  musicBar.append(musicFill);
  musicBox.append(musicRow, musicBar);

  // speech + face
  const speechRow = el(doc, 'div', { class: 'row', id: 'vs-speech-row' });
  const speech = el(doc, 'span', { id: 'vs-speech' });
  const speechDot = el(doc, 'span', { class: 'speech-dot', 'data-on': 'false' });
  const speechText = el(doc, 'span', {}, 'speech —');
  speech.append(speechDot, speechText);
  const face = el(doc, 'span', { id: 'vs-face', class: 'muted' }, 'face: not available');
  speechRow.append(speech, face);

  // connection + latency
  const connRow = el(doc, 'div', { class: 'row small' });
  const conn = el(doc, 'span', { id: 'vs-conn' }, 'idle');
  const latency = el(doc, 'span', { id: 'vs-latency', class: 'muted', title: 'capture → overlay (server processing)' }, '');
  connRow.append(conn, latency);

  const prov = el(doc, 'div', { class: 'prov small', id: 'vs-models' });
  const notice = el(doc, 'div', { class: 'notice small', id: 'vs-notice' });
  const tline = el(doc, 'div', { class: 'small muted', id: 'vs-time', 'data-events': '0' }, '');

  body.append(vaBox, musicBox, speechRow, connRow, prov, notice, tline);
  panel.append(head, body);
  root.append(panel);
  (doc.body ?? doc.documentElement).append(host);

  // --- what to show ------------------------------------------------------------------------------
  let shown = { circumplex: true, music: true, speech: true, provenance: true, ...show };
  function applyShow() {
    vaBox.classList.toggle('hidden', !shown.circumplex);
    musicBox.classList.toggle('hidden', !shown.music);
    speechRow.classList.toggle('hidden', !shown.speech);
    prov.classList.toggle('hidden', !shown.provenance);
  }
  applyShow();

  // --- rendering ---------------------------------------------------------------------------------
  function render() {
    const v = model.view();
    const inner = SIZE - 12;
    if (v.va.available) {
      point.setAttribute('cx', String(6 + v.va.x * inner));
      point.setAttribute('cy', String(6 + v.va.y * inner));
      point.setAttribute('fill-opacity', v.va.opacity.toFixed(2));
      point.setAttribute('stroke-opacity', v.va.opacity.toFixed(2));
      point.setAttribute('visibility', 'visible');
      naText.textContent = '';
    } else {
      point.setAttribute('visibility', 'hidden');
      naText.textContent = '— not available';
    }
    point.dataset.opacity = v.va.opacity.toFixed(2);
    trailG.replaceChildren(...v.trail.map((p) => svgEl(doc, 'circle', {
      cx: 6 + p.x * inner, cy: 6 + p.y * inner, r: 3, fill: '#ff7eb6', 'fill-opacity': p.opacity.toFixed(3),
    })));
    vText.textContent = `V ${v.va.valence}`;
    aText.textContent = `A ${v.va.arousal}`;
    confText.textContent = `confidence ${v.va.confidence}`;
    words.textContent = v.va.words;

    musicLabel.textContent = v.music.stateText;
    musicLabel.dataset.on = String(v.music.bgm);
    musicProb.textContent = v.music.probabilityText;
    musicLevel.textContent = v.music.level;
    musicFill.style.width = `${(v.music.probability * 100).toFixed(1)}%`;

    speechDot.dataset.on = String(v.speech.active);
    speechText.textContent = `speech ${v.speech.text}`;
    face.textContent = v.face;

    const st = v.connection.state;
    dot.dataset.state = st;
    conn.textContent = {
      idle: 'idle', connecting: 'connecting…', live: 'live', reconnecting: 'reconnecting…',
      closed: 'stopped', failed: `failed: ${v.connection.detail?.failure?.reason ?? 'error'}`,
    }[st] ?? st;
    conn.dataset.state = st;
    latency.textContent = v.t === null ? ''
      : `delay ${v.latency.endToEnd} (server ${v.latency.server})${v.latency.busy ? ' · server busy: fewer video frames analysed' : ''}`;

    // one line per model: "speech: silero-vad-6 — yes" under a heading that asks the question
    const lines = v.provenance.map((p) => {
      const d = el(doc, 'div', { 'data-validated': String(p.validated), title: `${p.validatedText}${p.card ? `\nmodel card: ${p.card}` : ''}` });
      const answer = p.validated === true ? 'yes' : p.validated === false ? 'no' : 'unknown';
      d.append(`${p.label}: ${p.model} — `, el(doc, 'span', { class: p.validated === true ? 'yes' : 'no' }, answer));
      return d;
    });
    if (lines.length) lines.unshift(el(doc, 'div', { class: 'muted' }, 'model — validated on human ratings?'));
    else lines.push(el(doc, 'div', { class: 'muted' }, v.t === null ? 'models: waiting for the server' : 'models: none reported'));
    prov.replaceChildren(...lines);
    tline.textContent = v.t === null ? '' : `media t = ${v.t.toFixed(1)} s · ${v.events} updates`;
    tline.dataset.events = String(v.events);
    tline.dataset.t = v.t === null ? '' : String(v.t);
  }
  render();

  // --- placement: follow the main video, remember the place --------------------------------------
  let pos = { fx: 0.02, fy: 0.04, collapsed: false }; // fractions of the free space in the anchor
  let anchorVideo = null;
  let lastRectKey = '';
  loadPosition().then((p) => {
    if (p && Number.isFinite(p.fx) && Number.isFinite(p.fy)) pos = { ...pos, ...p };
    panel.classList.toggle('collapsed', Boolean(pos.collapsed));
    collapseBtn.textContent = pos.collapsed ? '+' : '–';
    place();
  }).catch(() => {});

  function anchorRect() {
    if (!anchorVideo || !anchorVideo.isConnected) anchorVideo = findPrimaryVideo(doc);
    const vw = win.innerWidth;
    const vh = win.innerHeight;
    if (anchorVideo) {
      const r = anchorVideo.getBoundingClientRect();
      const left = Math.max(0, r.left);
      const top = Math.max(0, r.top);
      const right = Math.min(vw, r.right);
      const bottom = Math.min(vh, r.bottom);
      if (right - left > 64 && bottom - top > 64) return { left, top, width: right - left, height: bottom - top, video: true };
    }
    return { left: 0, top: 0, width: vw, height: vh, video: false };
  }

  function place() {
    const a = anchorRect();
    const pw = panel.offsetWidth || 232;
    const ph = panel.offsetHeight || 200;
    // inside the video where it fits; a video smaller than the panel gets it at its corner;
    // never outside the viewport
    const x = a.left + Math.max(0, a.width - pw) * Math.min(1, Math.max(0, pos.fx));
    const y = a.top + Math.max(0, a.height - ph) * Math.min(1, Math.max(0, pos.fy));
    panel.style.left = `${Math.round(Math.max(0, Math.min(win.innerWidth - pw, x)))}px`;
    panel.style.top = `${Math.round(Math.max(0, Math.min(win.innerHeight - ph, y)))}px`;
    panel.dataset.anchor = a.video ? 'video' : 'viewport';
    if (onVideoRect && a.video) {
      const rect = { x: a.left / win.innerWidth, y: a.top / win.innerHeight, w: a.width / win.innerWidth, h: a.height / win.innerHeight };
      const key = [rect.x, rect.y, rect.w, rect.h].map((n) => n.toFixed(3)).join(',');
      if (key !== lastRectKey) { lastRectKey = key; onVideoRect(rect); }
    }
  }

  const refind = () => { anchorVideo = findPrimaryVideo(doc); place(); };
  const timer = win.setInterval(place, 250);
  const refindTimer = win.setInterval(refind, 1000); // Shorts/TikTok swap the <video> on swipe
  win.addEventListener('resize', place, { passive: true });
  win.addEventListener('scroll', place, { passive: true, capture: true });
  // In fullscreen only the fullscreen element's subtree is painted: move the host into it.
  const onFullscreen = () => {
    const fs = doc.fullscreenElement;
    const target = fs && fs.tagName !== 'VIDEO' ? fs : (doc.body ?? doc.documentElement);
    if (host.parentNode !== target) target.append(host);
    refind();
  };
  doc.addEventListener('fullscreenchange', onFullscreen);

  // dragging
  let drag = null;
  head.addEventListener('pointerdown', (ev) => {
    if (ev.target === collapseBtn) return;
    const r = panel.getBoundingClientRect();
    drag = { dx: ev.clientX - r.left, dy: ev.clientY - r.top };
    head.setPointerCapture(ev.pointerId);
    ev.preventDefault();
    ev.stopPropagation();
  });
  head.addEventListener('pointermove', (ev) => {
    if (!drag) return;
    const a = anchorRect();
    const pw = panel.offsetWidth;
    const ph = panel.offsetHeight;
    const fx = (ev.clientX - drag.dx - a.left) / Math.max(1, a.width - pw);
    const fy = (ev.clientY - drag.dy - a.top) / Math.max(1, a.height - ph);
    pos = { ...pos, fx: Math.min(1, Math.max(0, fx)), fy: Math.min(1, Math.max(0, fy)) };
    place();
  });
  const endDrag = (ev) => {
    if (!drag) return;
    drag = null;
    try { head.releasePointerCapture(ev.pointerId); } catch { /* not captured */ }
    savePosition(pos);
  };
  head.addEventListener('pointerup', endDrag);
  head.addEventListener('pointercancel', endDrag);
  collapseBtn.addEventListener('click', (ev) => {
    ev.stopPropagation();
    pos = { ...pos, collapsed: !pos.collapsed };
    panel.classList.toggle('collapsed', pos.collapsed);
    collapseBtn.textContent = pos.collapsed ? '+' : '–';
    collapseBtn.title = pos.collapsed ? 'expand' : 'collapse';
    savePosition(pos);
    place();
  });
  // keep clicks and keys on the panel from reaching the page's own handlers
  for (const type of ['click', 'dblclick', 'mousedown', 'mouseup', 'keydown', 'wheel']) {
    panel.addEventListener(type, (ev) => ev.stopPropagation());
  }

  place();

  return {
    root,
    model,
    update(event, client = {}) { model.update(event, client); render(); },
    setConnection(state, detail = {}) { model.setConnection(state, detail); render(); },
    setModels(models) { model.setComponents(models); render(); },
    setNotice(text, detail = '') { notice.textContent = text ?? ''; notice.title = detail ?? ''; },
    setShow(next) { shown = { ...shown, ...next }; applyShow(); },
    destroy() {
      win.clearInterval(timer);
      win.clearInterval(refindTimer);
      win.removeEventListener('resize', place);
      win.removeEventListener('scroll', place, { capture: true });
      doc.removeEventListener('fullscreenchange', onFullscreen);
      host.remove();
    },
  };
}
