// AudioWorklet: microphone frames (at the context's rate) -> 16 kHz mono PCM16 chunks.
// Linear interpolation with a running fractional position, so chunk edges stay seamless.
class PcmResampler extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / 16000;
    this.pos = 0;           // fractional read position into `this.buf`
    this.buf = new Float32Array(0);
    this.out = [];
    this.level = 0;
  }
  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const frames = input[0].length;
    const mono = new Float32Array(frames);
    for (const channel of input) for (let i = 0; i < frames; i++) mono[i] += channel[i] / input.length;
    const merged = new Float32Array(this.buf.length + frames);
    merged.set(this.buf); merged.set(mono, this.buf.length);
    let peak = 0;
    while (this.pos + 1 < merged.length) {
      const i = Math.floor(this.pos), f = this.pos - i;
      const v = merged[i] * (1 - f) + merged[i + 1] * f;
      peak = Math.max(peak, Math.abs(v));
      this.out.push(Math.max(-32768, Math.min(32767, Math.round(v * 32768))));
      this.pos += this.ratio;
    }
    const keep = Math.floor(this.pos);
    this.buf = merged.slice(keep);
    this.pos -= keep;
    this.level = Math.max(peak, this.level * 0.9);
    if (this.out.length >= 1600) {          // 100 ms per message
      const pcm = Int16Array.from(this.out);
      this.out = [];
      this.port.postMessage({ pcm: pcm.buffer, level: this.level }, [pcm.buffer]);
    }
    return true;
  }
}
registerProcessor("pcm-resampler", PcmResampler);
