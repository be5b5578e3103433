// Options stored by the options page (extension/lib/settings.js).
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { DEFAULT_SETTINGS, normalizeSettings, loadSettings, saveSettings } from '../../extension/lib/settings.js';

class MemoryStorage {
  constructor() { this.data = {}; }
  async get(key) { return key in this.data ? { [key]: structuredClone(this.data[key]) } : {}; }
  async set(items) { Object.assign(this.data, structuredClone(items)); }
}

test('defaults: local server, 10 fps, short side 360, everything shown', async () => {
  const s = await loadSettings(new MemoryStorage());
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

test('saved settings load back', async () => {
  const st = new MemoryStorage();
  await saveSettings({ server: 'https://vs.example', token: 't0k', fps: 5 }, st);
  const s = await loadSettings(st);
  assert.equal(s.server, 'https://vs.example');
  assert.equal(s.token, 't0k');
  assert.equal(s.fps, 5);
});
