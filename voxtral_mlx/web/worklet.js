// AudioWorklet: microphone frames (at the context's rate, usually 48 kHz) -> 16 kHz mono
// PCM16 chunks of 100 ms.
//
// Resampling is a Blackman-windowed sinc low-pass evaluated at each output instant, cutoff
// 7.6 kHz: a plain linear interpolation would fold everything between 8 and 24 kHz
// (sibilants, fans, keyboard clicks) back into the speech band; this keeps it 40 dB down
// from 8.8 kHz on. The read position and the last input samples carry over between blocks,
// so block edges are seamless.
// Also loadable outside a browser (module.exports) so the tests can run it under Node.
class PcmResampler {
  constructor(inputRate, outputRate = 16000) {
    this.ratio = inputRate / outputRate;  // input samples per output sample
    const down = Math.max(this.ratio, 1);
    this.cutoff = 0.475 / down;            // cycles per input sample (7.6 kHz at 16 kHz out)
    this.half = Math.ceil(24 * down);      // kernel half-width in input samples
    this.buf = new Float32Array(this.half);  // history: silence before the first block
    this.pos = this.half;                  // position of the next output sample in buf
  }

  tap(x) {
    if (x <= -this.half || x >= this.half) return 0;
    const a = 2 * this.cutoff * x;
    const sinc = a === 0 ? 1 : Math.sin(Math.PI * a) / (Math.PI * a);
    const w = (Math.PI * x) / this.half;  // Blackman window over (-half, half)
    return 2 * this.cutoff * sinc * (0.42 + 0.5 * Math.cos(w) + 0.08 * Math.cos(2 * w));
  }

  // Float32Array of input samples -> array of output samples (floats in [-1, 1]).
  push(samples) {
    if (this.ratio === 1) return Array.from(samples);  // already 16 kHz
    const merged = new Float32Array(this.buf.length + samples.length);
    merged.set(this.buf);
    merged.set(samples, this.buf.length);
    const out = [];
    while (Math.floor(this.pos) + this.half < merged.length) {
      const i = Math.floor(this.pos);
      let acc = 0;
      for (let j = i - this.half + 1; j <= i + this.half; j++) acc += merged[j] * this.tap(this.pos - j);
      out.push(acc);
      this.pos += this.ratio;
    }
    const keep = Math.max(0, Math.floor(this.pos) - this.half + 1);
    this.buf = merged.slice(keep);
    this.pos -= keep;
    return out;
  }
}

if (typeof AudioWorkletProcessor !== "undefined") {
  class PcmWorklet extends AudioWorkletProcessor {
    constructor() {
      super();
      this.resampler = new PcmResampler(sampleRate);
      this.out = [];
      this.level = 0;
    }

    process(inputs) {
      const input = inputs[0];
      if (!input || input.length === 0) return true;
      const frames = input[0].length;
      const mono = new Float32Array(frames);
      for (const channel of input) for (let i = 0; i < frames; i++) mono[i] += channel[i] / input.length;
      let peak = 0;
      for (const v of this.resampler.push(mono)) {
        peak = Math.max(peak, Math.abs(v));
        this.out.push(Math.max(-32768, Math.min(32767, Math.round(v * 32768))));
      }
      this.level = Math.max(peak, this.level * 0.9);
      if (this.out.length >= 1600) {
        const pcm = Int16Array.from(this.out);
        this.out = [];
        this.port.postMessage({ pcm: pcm.buffer, level: this.level }, [pcm.buffer]);
      }
      return true;
    }
  }
  registerProcessor("pcm-resampler", PcmWorklet);
}

if (typeof module !== "undefined") module.exports = { PcmResampler };
