// The capture path shared by the extension's offscreen document (tab capture), its content script
// (the page's <video>.captureStream()) and the server's demo page:
//   MediaStream ─ audio → AudioContext → AudioWorklet (downmix, 16 kHz, PCM16, 100 ms frames)
//               │          └→ destination (only for tab capture: capturing a tab mutes it)
//               └ video → MediaStreamTrackProcessor → worker: fps gate, scale, JPEG
// Frames are not stamped here: audio frames carry their sample position in this capture and the
// wall time they arrived, video frames the wall time they were taken, and whoever owns the
// connection stamps both from one media clock (lib/media-clock.js), which outlives a capture.

import { encodeVideoFrames } from './video-encoder.js';

const AUDIO_RATE = 16000;
const FRAME_SAMPLES = 1600; // 100 ms

/**
 * @param {MediaStream} stream
 * @param {object} o
 * @param {(pcm: Uint8Array, meta: {startSample: number, samples: number, wallMs: number}) => void} o.onAudio
 *   PCM16 16 kHz mono, 100 ms; wallMs: epoch ms when the frame was complete
 * @param {(jpeg: Uint8Array, meta: {wallMs: number, width: number, height: number}) => void} o.onVideo
 *   wallMs: epoch ms when the picture was taken
 * @param {boolean} [o.audible] route the audio to the speakers (tab capture mutes the tab)
 * @param {number} [o.fps] video frames per second (default 10)
 * @param {number} [o.shortSide] output short side in px (default 360)
 * @param {boolean} [o.useWorker] encode video in a worker (default true; falls back to inline)
 * @param {(wallMs: number) => boolean} [o.wanted] inline encoder only: skip frames nobody takes
 */
export async function startCapture(stream, {
  onAudio,
  onVideo,
  audible = false,
  fps = 10,
  shortSide = 360,
  maxWidth = 1920,
  maxHeight = 1080,
  quality = 0.75,
  crop = null,
  useWorker = true,
  wanted = null,
  libUrl = new URL('./', import.meta.url).href,
} = {}) {
  const epochNow = () => performance.timeOrigin + performance.now();
  const stats = {
    audioFrames: 0,
    videoFrames: 0,
    inputRms: 0,
    playbackRms: null,
    audioContextState: null,
    audioContextRate: null,
    routedToDestination: false,
    videoEncoder: null,
    videoSize: null,
    firstVideoSizes: [], // the sizes of the first frames encoded (the crop applies from the first)
  };
  const cleanups = [];

  // --- audio ---------------------------------------------------------------------------------
  let ctx = null;
  let analyser = null;
  const audioTracks = stream.getAudioTracks();
  if (audioTracks.length) {
    ctx = new AudioContext();
    await ctx.audioWorklet.addModule(new URL('pcm-worklet.js', libUrl).href);
    const source = ctx.createMediaStreamSource(new MediaStream(audioTracks));
    const node = new AudioWorkletNode(ctx, 'vibescope-pcm16', {
      numberOfInputs: 1,
      numberOfOutputs: 0,
      processorOptions: { frameSamples: FRAME_SAMPLES },
    });
    node.port.onmessage = (ev) => {
      const m = ev.data;
      if (m.type !== 'pcm') return;
      stats.audioFrames += 1;
      stats.inputRms = m.inputRms;
      onAudio(new Uint8Array(m.pcm), { startSample: m.startSample, samples: m.pcm.byteLength / 2, wallMs: epochNow(), rate: AUDIO_RATE });
    };
    source.connect(node);
    if (audible) {
      // Keep the tab audible: tab capture diverts its sound into the stream.
      const playback = ctx.createGain();
      analyser = ctx.createAnalyser();
      analyser.fftSize = 2048;
      source.connect(playback);
      playback.connect(ctx.destination);
      playback.connect(analyser);
      stats.routedToDestination = true;
    }
    await ctx.resume().catch(() => {});
    stats.audioContextRate = ctx.sampleRate;
    cleanups.push(() => {
      node.port.postMessage({ type: 'stop' });
      source.disconnect();
      return ctx.close();
    });
  }

  // --- video ---------------------------------------------------------------------------------
  const videoTrack = stream.getVideoTracks()[0];
  const settings = { fps, shortSide, maxWidth, maxHeight, quality, crop };
  let worker = null;
  const signal = { stopped: false };
  const emitted = ({ jpeg, epochMs, width, height }) => {
    stats.videoFrames += 1;
    stats.videoSize = { width, height };
    if (stats.firstVideoSizes.length < 5) stats.firstVideoSizes.push({ width, height });
    onVideo(new Uint8Array(jpeg), { wallMs: epochMs, width, height });
  };
  if (videoTrack) {
    const processor = new MediaStreamTrackProcessor({ track: videoTrack });
    if (useWorker) {
      try {
        worker = new Worker(new URL('video-worker.js', libUrl).href, { type: 'module' });
        worker.onmessage = (ev) => { if (ev.data.type === 'frame') emitted(ev.data); };
        worker.postMessage({ type: 'start', readable: processor.readable, settings }, [processor.readable]);
        stats.videoEncoder = 'worker';
      } catch {
        worker = null;
      }
    }
    if (!worker) {
      stats.videoEncoder = 'inline';
      settings.wanted = wanted; // a function: never posted to a worker
      encodeVideoFrames(processor.readable, settings, emitted, signal).catch(() => {});
    }
    cleanups.push(() => {
      signal.stopped = true;
      if (worker) { worker.postMessage({ type: 'stop' }); worker.terminate(); }
    });
  }

  return {
    stats() {
      if (ctx) stats.audioContextState = ctx.state;
      if (analyser) {
        const buf = new Float32Array(analyser.fftSize);
        analyser.getFloatTimeDomainData(buf);
        let s = 0;
        for (const v of buf) s += v * v;
        stats.playbackRms = Math.sqrt(s / buf.length);
      }
      return { ...stats };
    },
    /** Change video settings while running (fps, shortSide, maxWidth, maxHeight, crop). */
    update(next) {
      Object.assign(settings, next);
      if (worker) worker.postMessage({ type: 'settings', settings: next });
    },
    async stop() {
      for (const f of cleanups.reverse()) await f();
    },
  };
}
