// Options stored by the options page (extension/lib/settings.js).
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { DEFAULT_SETTINGS, normalizeSettings, loadSettings, saveSettings, loadToken, forPage, defaultSecrets } from '../../extension/lib/settings.js';

class MemoryStorage {
  constructor() { this.data = {}; }
  async get(key) { return key in this.data ? { [key]: structuredClone(this.data[key]) } : {}; }
  async set(items) { Object.assign(this.data, structuredClone(items)); }
}

class MemorySecrets {
  constructor() { this.data = new Map(); }
  async get(key) { return this.data.get(key); }
  async set(key, value) { this.data.set(key, value); }
}

test('defaults: local server, 10 fps, short side 360, everything shown', async () => {
  const s = await loadSettings(new MemoryStorage(), new MemorySecrets());
  assert.deepEqual(s, { ...DEFAULT_SETTINGS, show: { ...DEFAULT_SETTINGS.show } });
  assert.equal(s.fps, 10);
  assert.equal(s.shortSide, 360);
});

test('out-of-range values are clamped, missing show flags keep their default', () => {
  const s = normalizeSettings({ fps: 500, shortSide: 10, server: '  ', show: { music: false } });
  assert.equal(s.fps, 30);
  assert.equal(s.shortSide, 144);
  assert.equal(s.server, DEFAULT_SETTINGS.server);
  assert.deepEqual(s.show, { circumplex: true, music: false, speech: true, provenance: true });
  assert.equal(normalizeSettings({ fps: 'x' }).fps, 10);
});

test('saved settings load back; the token is never in chrome.storage.local (content scripts read that)', async () => {
  const st = new MemoryStorage();
  const secrets = new MemorySecrets();
  await saveSettings({ server: 'https://vs.example', token: 't0k', fps: 5 }, st, secrets);
  assert.ok(!JSON.stringify(st.data).includes('t0k'), JSON.stringify(st.data));
  assert.equal(secrets.data.get('token'), 't0k');
  const s = await loadSettings(st, secrets);
  assert.equal(s.server, 'https://vs.example');
  assert.equal(s.token, 't0k');
  assert.equal(s.fps, 5);
  assert.equal(await loadToken(secrets), 't0k');
});

test('a token an older version kept in chrome.storage.local moves to the secret store', async () => {
  const st = new MemoryStorage();
  st.data.settings = { server: 'http://h:1', token: 'old-token', fps: 12 };
  const secrets = new MemorySecrets();
  const s = await loadSettings(st, secrets);
  assert.equal(s.token, 'old-token');
  assert.equal(s.fps, 12);
  assert.equal(secrets.data.get('token'), 'old-token');
  assert.deepEqual(st.data.settings, { server: 'http://h:1', fps: 12 });
});

test('what pages get has no token, and outside the extension there is no secret store', async () => {
  const page = forPage(normalizeSettings({ token: 'secret', fps: 7 }));
  assert.deepEqual(Object.keys(page).sort(), ['fps', 'shortSide', 'show']);
  assert.equal(defaultSecrets(), null); // node: no chrome-extension: origin
  await assert.rejects(saveSettings({ token: 'x' }, new MemoryStorage(), null), /extension's own pages/);
});
