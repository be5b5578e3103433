// Streaming downmix + resampling to 16 kHz mono and framing into PCM16 frames of 100 ms.
// Runs inside the AudioWorklet (lib/pcm-worklet.js); plain functions so node can test them.

/**
 * Windowed-sinc (Blackman) resampler for any input rate to `outRate`, streaming: `push(x)` takes
 * any number of mono float samples and returns the output samples that became final. Feeding the
 * same signal in any chunking gives the same output. The low-pass cuts at 0.45 × outRate
 * (7.2 kHz for 16 kHz output), so content above the new Nyquist does not fold back.
 * Algorithmic lag: `halfWidth` input samples (≈ 0.8 ms at 48 kHz).
 */
export class Resampler {
  constructor(inRate, outRate = 16000, { zeroCrossings = 12, tableResolution = 256 } = {}) {
    if (!(inRate > 0 && outRate > 0)) throw new RangeError('rates must be positive');
    this.inRate = inRate;
    this.outRate = outRate;
    this.step = inRate / outRate; // input samples per output sample
    const cutoff = Math.min(0.45 * outRate, 0.5 * inRate) / inRate; // cycles per input sample
    this.halfWidth = Math.ceil(zeroCrossings / (2 * cutoff));
    this.res = tableResolution;
    // h(t) tabulated for t in [0, halfWidth] input samples at 1/res resolution (symmetric)
    const n = this.halfWidth * this.res + 2;
    this.table = new Float64Array(n);
    for (let i = 0; i < n; i += 1) {
      const t = i / this.res;
      const x = 2 * cutoff * t;
      const sinc = t === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
      const w = t >= this.halfWidth ? 0 : 0.42 + 0.5 * Math.cos(Math.PI * t / this.halfWidth) + 0.08 * Math.cos(2 * Math.PI * t / this.halfWidth);
      this.table[i] = 2 * cutoff * sinc * w;
    }
    // history: input samples; index 0 of `buf` is absolute input sample `bufStart`
    this.buf = new Float64Array(4096);
    this.len = this.halfWidth; // left zero padding: output 0 is centred on input sample 0
    this.bufStart = -this.halfWidth;
    this.outCount = 0; // outputs produced so far; output n is centred on input n × step
  }

  _kernel(d) {
    const a = Math.abs(d) * this.res;
    const i = Math.floor(a);
    if (i + 1 >= this.table.length) return 0;
    const f = a - i;
    return this.table[i] * (1 - f) + this.table[i + 1] * f;
  }

  /** @param {Float32Array|number[]} x mono input @returns {Float32Array} */
  push(x) {
    if (this.len + x.length > this.buf.length) {
      const grown = new Float64Array(Math.max(this.buf.length * 2, this.len + x.length));
      grown.set(this.buf.subarray(0, this.len));
      this.buf = grown;
    }
    this.buf.set(x, this.len);
    this.len += x.length;
    const out = [];
    const lastAbs = this.bufStart + this.len - 1; // last input sample we have
    for (;;) {
      // exact centre: integer arithmetic on the rates avoids drift over hours
      const centre = (this.outCount * this.inRate) / this.outRate;
      if (centre + this.halfWidth > lastAbs) break;
      const lo = Math.ceil(centre - this.halfWidth);
      const hi = Math.floor(centre + this.halfWidth);
      let acc = 0;
      for (let k = lo; k <= hi; k += 1) acc += this.buf[k - this.bufStart] * this._kernel(centre - k);
      out.push(acc);
      this.outCount += 1;
    }
    // forget input no future output needs
    const nextCentre = (this.outCount * this.inRate) / this.outRate;
    const keepFrom = Math.ceil(nextCentre - this.halfWidth) - this.bufStart;
    if (keepFrom > 0) {
      this.buf.copyWithin(0, keepFrom, this.len);
      this.len -= keepFrom;
      this.bufStart += keepFrom;
    }
    return Float32Array.from(out);
  }
}

/** Average of the channels (Float32Array each) into one mono Float32Array. */
export function downmix(channels) {
  if (!channels.length) return new Float32Array(0);
  if (channels.length === 1) return channels[0];
  const n = channels[0].length;
  const out = new Float32Array(n);
  for (const ch of channels) for (let i = 0; i < n; i += 1) out[i] += ch[i];
  const g = 1 / channels.length;
  for (let i = 0; i < n; i += 1) out[i] *= g;
  return out;
}

/** float [-1, 1] → int16, clipped. */
export function toPcm16(x) {
  const out = new Int16Array(x.length);
  for (let i = 0; i < x.length; i += 1) {
    const v = Math.round(x[i] * 32767);
    out[i] = v > 32767 ? 32767 : v < -32768 ? -32768 : v;
  }
  return out;
}

/**
 * Cuts a sample stream into frames of `frameSamples` (1600 = 100 ms at 16 kHz). `push` returns
 * the completed frames as {pcm: Int16Array, startSample} where startSample counts from 0, so the
 * frame's media time is startSample / rate.
 */
export class Framer {
  constructor(frameSamples = 1600) {
    this.frameSamples = frameSamples;
    this.pending = new Float32Array(frameSamples);
    this.fill = 0;
    this.emitted = 0; // samples in frames already returned
  }

  push(x) {
    const frames = [];
    let i = 0;
    while (i < x.length) {
      const n = Math.min(this.frameSamples - this.fill, x.length - i);
      this.pending.set(x.subarray(i, i + n), this.fill);
      this.fill += n;
      i += n;
      if (this.fill === this.frameSamples) {
        frames.push({ pcm: toPcm16(this.pending), startSample: this.emitted });
        this.emitted += this.frameSamples;
        this.fill = 0;
      }
    }
    return frames;
  }
}
