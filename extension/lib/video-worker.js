// Dedicated worker around lib/video-encoder.js: receives the transferred
// MediaStreamTrackProcessor.readable and posts JPEG frames back (transferred, not copied).
import { encodeVideoFrames } from './video-encoder.js';

const settings = { fps: 10, shortSide: 360, maxWidth: 1920, maxHeight: 1080, quality: 0.75, crop: null };
const signal = { stopped: false };

self.onmessage = (ev) => {
  const msg = ev.data;
  if (msg.type === 'start') {
    Object.assign(settings, msg.settings ?? {});
    encodeVideoFrames(msg.readable, settings, (f) => self.postMessage({ type: 'frame', ...f }, [f.jpeg]), signal)
      .then(() => self.postMessage({ type: 'ended' }))
      .catch((err) => self.postMessage({ type: 'error', message: String(err) }));
  } else if (msg.type === 'settings') {
    Object.assign(settings, msg.settings ?? {});
  } else if (msg.type === 'stop') {
    signal.stopped = true;
  }
};
