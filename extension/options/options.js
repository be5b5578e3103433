// Options page: server, token, frame rate, what the overlay shows; "Test connection" runs a real
// hello/welcome/bye exchange with the server and lists the models it would use.
import { loadSettings, saveSettings } from '../lib/settings.js';
import { buildHello, buildBye, parseControl, streamUrl, CloseCode } from '../lib/protocol.js';

const $ = (id) => document.getElementById(id);
const SHOW = ['circumplex', 'music', 'speech', 'provenance'];

function readForm() {
  return {
    server: $('server').value,
    token: $('token').value,
    fps: Number($('fps').value),
    show: Object.fromEntries(SHOW.map((k) => [k, $(`show-${k}`).checked])),
  };
}

function say(text, ok) {
  const out = $('result');
  out.textContent = text;
  out.className = ok ? 'ok' : 'bad';
}

/** hello → welcome → bye against the server; resolves with the welcome or rejects with a reason. */
export function testConnection(server, token, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    let url;
    try { url = streamUrl(server); } catch (err) { reject(new Error(err.message)); return; }
    const ws = new WebSocket(url);
    let welcome = null;
    const timer = setTimeout(() => { ws.close(); reject(new Error(`no answer from ${url} within ${timeoutMs / 1000} s`)); }, timeoutMs);
    ws.onopen = () => ws.send(JSON.stringify(buildHello({ token: token || null, client: 'vibescope-options/0.1' })));
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return;
      const msg = parseControl(ev.data);
      if (msg.type === 'welcome') { welcome = msg; ws.send(JSON.stringify(buildBye())); }
      if (msg.type === 'error' && !welcome) { clearTimeout(timer); ws.close(); reject(new Error(`${msg.code}: ${msg.message}`)); }
      if (msg.type === 'bye') { clearTimeout(timer); ws.close(1000); resolve(welcome); }
    };
    ws.onclose = (ev) => {
      clearTimeout(timer);
      if (welcome) { resolve(welcome); return; }
      const why = ev.code === CloseCode.UNAUTHORIZED ? 'the server refused the token' : `connection closed (code ${ev.code}${ev.reason ? `: ${ev.reason}` : ''})`;
      reject(new Error(why));
    };
  });
}

async function init() {
  const s = await loadSettings();
  $('server').value = s.server;
  $('token').value = s.token;
  $('fps').value = String(s.fps);
  for (const k of SHOW) $(`show-${k}`).checked = Boolean(s.show[k]);

  $('form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      streamUrl($('server').value);
    } catch (err) {
      say(`Not saved: ${err.message}`, false);
      return;
    }
    const saved = await saveSettings(readForm());
    $('fps').value = String(saved.fps);
    say('Saved. Applies the next time you start the overlay.', true);
  });

  $('test').addEventListener('click', async () => {
    const f = readForm();
    say('Connecting…', true);
    try {
      const w = await testConnection(f.server, f.token);
      const models = Object.entries(w.models ?? {}).map(([name, m]) => `  ${name}: ${m?.id ?? '?'} — ${m?.validated === true ? 'validated on human ratings' : m?.validated === false ? 'not validated on human ratings' : 'validation unknown'}`);
      say([`Connected to ${streamUrl(f.server)} (protocol ${w.protocol}).`, 'Models:', ...(models.length ? models : ['  none reported'])].join('\n'), true);
    } catch (err) {
      say(`Could not connect: ${err.message}`, false);
    }
  });
}

init();
