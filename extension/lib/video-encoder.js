// Video frames → JPEG at the configured rate, scaled so a face stays usable (short side 360 px by
// default), cropped to the video element when its place in the captured tab is known.
// Runs in a dedicated worker (lib/video-worker.js) where one can be started; the same code runs
// inline otherwise (a content script cannot start an extension worker). The JPEG encoding itself
// is OffscreenCanvas.convertToBlob, which Chromium does off the calling thread either way.

/**
 * Output size for a source of `w`×`h`: short side `shortSide` (never upscaled), within
 * maxWidth×maxHeight (the server's limits), even numbers (encoders like them).
 */
export function targetSize(w, h, { shortSide = 360, maxWidth = 1920, maxHeight = 1080 } = {}) {
  if (!(w > 0 && h > 0)) return { width: 0, height: 0 };
  const scale = Math.min(1, shortSide / Math.min(w, h), maxWidth / w, maxHeight / h);
  const even = (v) => Math.max(2, 2 * Math.round((v * scale) / 2));
  return { width: even(w), height: even(h) };
}

/**
 * Crop rectangle in source pixels from a fractional rect {x, y, w, h} (0..1 of the frame),
 * clamped to the frame; the whole frame when `crop` is null or degenerate.
 */
export function cropRect(frameW, frameH, crop) {
  if (!crop) return { sx: 0, sy: 0, sw: frameW, sh: frameH };
  const x0 = Math.max(0, Math.min(1, crop.x));
  const y0 = Math.max(0, Math.min(1, crop.y));
  const x1 = Math.max(0, Math.min(1, crop.x + crop.w));
  const y1 = Math.max(0, Math.min(1, crop.y + crop.h));
  const sw = Math.round((x1 - x0) * frameW);
  const sh = Math.round((y1 - y0) * frameH);
  if (sw < 16 || sh < 16) return { sx: 0, sy: 0, sw: frameW, sh: frameH };
  return { sx: Math.round(x0 * frameW), sy: Math.round(y0 * frameH), sw, sh };
}

/**
 * Decides which frames to keep for a target rate, from their arrival times (ms). A frame is kept
 * when it is due; the schedule does not accumulate debt after a stall.
 */
export class FrameGate {
  constructor(fps) { this.setFps(fps); this.nextDueMs = null; }
  setFps(fps) { this.intervalMs = 1000 / Math.max(0.1, fps); }
  accept(nowMs) {
    if (this.nextDueMs === null || nowMs >= this.nextDueMs - 1) {
      const base = this.nextDueMs === null ? nowMs : Math.max(this.nextDueMs, nowMs - this.intervalMs);
      this.nextDueMs = base + this.intervalMs;
      return true;
    }
    return false;
  }
}

/**
 * Read VideoFrames from `readable` (MediaStreamTrackProcessor.readable), keep `fps` of them, encode
 * each kept one to JPEG and call `emit({jpeg: ArrayBuffer, epochMs, width, height})`. Frames that
 * arrive while an encode is still running are skipped (never queued). `settings` may be changed
 * while running: {fps, shortSide, maxWidth, maxHeight, quality, crop}.
 * Resolves when the stream ends or `signal.stopped` becomes true.
 */
export async function encodeVideoFrames(readable, settings, emit, signal = { stopped: false }) {
  const reader = readable.getReader();
  const gate = new FrameGate(settings.fps ?? 10);
  let canvas = null;
  let ctx = null;
  let busy = false;
  let fps = settings.fps;
  const epochNow = () => performance.timeOrigin + performance.now();
  try {
    while (!signal.stopped) {
      const { value: frame, done } = await reader.read();
      if (done) break;
      if (settings.fps !== fps) { fps = settings.fps; gate.setFps(fps); }
      const now = epochNow();
      if (busy || !gate.accept(now) || (settings.wanted && !settings.wanted(now))) {
        frame.close();
        continue;
      }
      busy = true;
      try {
        const fw = frame.displayWidth;
        const fh = frame.displayHeight;
        const { sx, sy, sw, sh } = cropRect(fw, fh, settings.crop);
        const { width, height } = targetSize(sw, sh, settings);
        if (!canvas || canvas.width !== width || canvas.height !== height) {
          canvas = new OffscreenCanvas(width, height);
          ctx = canvas.getContext('2d', { alpha: false });
        }
        ctx.drawImage(frame, sx, sy, sw, sh, 0, 0, width, height);
        frame.close();
        // encode without blocking the read loop; the next frame is skipped while this runs
        canvas.convertToBlob({ type: 'image/jpeg', quality: settings.quality ?? 0.75 })
          .then((blob) => blob.arrayBuffer())
          .then((jpeg) => emit({ jpeg, epochMs: now, width, height }))
          .catch(() => {})
          .finally(() => { busy = false; });
      } catch {
        // a frame that cannot be drawn (closed, zero-sized) is skipped like a gated one
        try { frame.close(); } catch { /* already closed */ }
        busy = false;
      }
    }
  } finally {
    try { reader.releaseLock(); } catch { /* stream errored */ }
  }
}
