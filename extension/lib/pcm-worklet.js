// AudioWorklet processor: downmix the captured audio, resample to 16 kHz and post PCM16 frames of
// 100 ms (1600 samples) to the main thread, which sends them as protocol kind-1 frames.
// Loaded with audioWorklet.addModule(new URL('./pcm-worklet.js', import.meta.url)).
import { Resampler, Framer, downmix } from './resample.js';

const OUT_RATE = 16000;

class Pcm16Processor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const frameSamples = options?.processorOptions?.frameSamples ?? OUT_RATE / 10;
    this.resampler = new Resampler(sampleRate, OUT_RATE); // `sampleRate`: the context's rate
    this.framer = new Framer(frameSamples);
    this.sumSquares = 0;
    this.count = 0;
    this.running = true;
    this.port.onmessage = (ev) => {
      if (ev.data?.type === 'stop') this.running = false;
    };
  }

  process(inputs) {
    if (!this.running) return false;
    const input = inputs[0];
    // No connected channel (track ended or muted): the render quantum is silence.
    const mono = input && input.length ? downmix(input) : new Float32Array(128);
    for (let i = 0; i < mono.length; i += 1) this.sumSquares += mono[i] * mono[i];
    this.count += mono.length;
    const frames = this.framer.push(this.resampler.push(mono));
    for (const f of frames) {
      const rms = Math.sqrt(this.sumSquares / Math.max(1, this.count));
      this.sumSquares = 0;
      this.count = 0;
      this.port.postMessage({ type: 'pcm', pcm: f.pcm.buffer, startSample: f.startSample, rate: OUT_RATE, inputRms: rms }, [f.pcm.buffer]);
    }
    return true;
  }
}

registerProcessor('vibescope-pcm16', Pcm16Processor);
