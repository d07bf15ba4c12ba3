"""Stage-by-stage timings of the real pipeline (what `voxtral bench` prints).

Every figure is measured on this machine with the model given; nothing is estimated.
"""

from __future__ import annotations

import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import mlx.core as mx
import numpy as np

from .config import BENCH_SIZES, AudioArgs, DecoderArgs, EncoderArgs, ModelArgs
from .errors import VoxtralError
from .transcribe import transcribe

if TYPE_CHECKING:  # the model code is imported when a model is built: `bench` checks first
    from .model import VoxtralRealtime

BUNDLED_SPEECH = Path(__file__).parent / "assets" / "jfk.wav"


def architecture(
    enc: tuple[int, int, int, int],
    dec: tuple[int, int, int, int, int],
    vocab_size: int = 131072,
    dec_head_dim: int = 128,
) -> ModelArgs:
    """The real structure (head_dim 64 encoder, windows 750 / 8192) at the widths given:
    enc = (dim, layers, heads, hidden), dec = (dim, layers, heads, kv_heads, hidden)."""
    enc_dim, enc_layers, enc_heads, enc_hidden = enc
    dim, layers, heads, kv_heads, hidden = dec
    common = dict(rope_theta=1e6, norm_eps=1e-5)
    return ModelArgs(
        encoder=EncoderArgs(
            dim=enc_dim,
            n_layers=enc_layers,
            head_dim=64,
            hidden_dim=enc_hidden,
            n_heads=enc_heads,
            n_kv_heads=enc_heads,
            sliding_window=750,
            **common,
        ),
        decoder=DecoderArgs(
            dim=dim,
            n_layers=layers,
            head_dim=dec_head_dim,
            hidden_dim=hidden,
            n_heads=heads,
            n_kv_heads=kv_heads,
            sliding_window=8192,
            vocab_size=vocab_size,
            **common,
        ),
        audio=AudioArgs(),
    )


def narrow(dim: int, layers: int, vocab_size: int) -> ModelArgs:
    """A narrow, shallow stand-in with the real structure for benchmarks: 64-wide heads,
    GQA 4:1, FFN widths 4x (encoder) and 3x (decoder) as in the real model."""
    heads = max(dim // 64, 2)
    return architecture(
        (dim, layers, heads, 4 * dim),
        (dim, layers, heads, max(heads // 4, 1), 3 * dim),
        vocab_size=vocab_size,
        dec_head_dim=64,
    )


def random_model(size: str = "full", dtype: mx.Dtype = mx.bfloat16) -> VoxtralRealtime:
    """The architecture with random weights (no download), and the bundled real vocabulary."""
    import mistral_common

    from .model import VoxtralRealtime
    from .tokenizer import Tokenizer

    dec = BENCH_SIZES[size]["dec"]
    model = VoxtralRealtime(
        architecture(
            BENCH_SIZES[size]["enc"], dec, dec_head_dim=128 if size == "full" else dec[0] // dec[2]
        )
    )
    model.set_dtype(dtype)
    mx.eval(model.parameters())
    model.use_backend_layout()
    tekken = Path(mistral_common.__file__).parent / "data" / "tekken_240911.json"
    model.tokenizer = Tokenizer.from_file(tekken)
    return model


@dataclass(frozen=True)
class BenchResult:
    audio_seconds: float
    delay_ms: int
    dtype: str
    quantization: str
    mel_ms_per_step: float
    encoder_ms_per_step_streamed: float
    encoder_ms_per_step_batched: float
    decoder_prefill_ms: float
    decoder_ms_per_step: float
    tokens_per_second: float
    tokens_per_pass: float  # of the file transcription: drafted pads verified per pass
    real_time_factor: float
    first_token_latency_ms: float
    peak_memory_gb: float
    chip: str
    os: str
    mlx_version: str
    backend: str

    def to_dict(self) -> dict:
        return asdict(self)


def chip_name() -> str:
    if platform.system() == "Darwin":
        out = subprocess.run(
            ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True
        )
        return out.stdout.strip() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def backend_name() -> str:
    device = mx.default_device()
    if device.type == mx.cpu:
        return "cpu"
    if mx.metal.is_available():
        return "metal"
    return "cuda" if getattr(mx, "cuda", None) and mx.cuda.is_available() else str(device)


def _timed(fn, repeat: int = 1) -> float:
    """Seconds per call, after one warm-up call."""
    fn()
    tic = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - tic) / repeat


def check_length(audio: np.ndarray, args: AudioArgs | None = None) -> None:
    """Raise VoxtralError for 16 kHz audio shorter than one token: there would be nothing
    to time, and every figure would be noise."""
    args = args or AudioArgs()
    if len(audio) < args.samples_per_token:
        rate, token_ms = args.sampling_rate, 1000 * args.samples_per_token / args.sampling_rate
        raise VoxtralError(
            f"the audio is {len(audio) / rate * 1000:.1f} ms long: bench needs at least one "
            f"token of it ({token_ms:.0f} ms)"
        )


def run(model: VoxtralRealtime, audio: np.ndarray, delay_ms: int | None = None) -> BenchResult:
    """Time every stage on 16 kHz `audio` (delay None: the checkpoint's). It measures the
    whole process: MLX's peak-memory counter is reset before the transcription it reports."""
    from .config import ENCODER_BATCH_TOKENS
    from .decoder import DecoderBatch, Row
    from .encoder import EncoderBatch
    from .mel import log_mel_spectrogram
    from .offline import encode_audio, pad_audio
    from .session import Session

    check_length(audio, model.args.audio)
    schedule = model.args.schedule(delay_ms)
    padded = pad_audio(audio, schedule)
    n_tokens = len(padded) // schedule.samples_per_token

    mel_s = _timed(lambda: log_mel_spectrogram(padded, schedule.audio))
    per_token = schedule.audio.mel_frames_per_token
    mel = log_mel_spectrogram(padded, schedule.audio)[: n_tokens * per_token]

    def encode(tokens: int) -> None:
        """A Session's encoder: one row of an EncoderBatch, `tokens` tokens a call (1: the
        live stream), and the adapter."""
        batch = EncoderBatch(model.encoder, tokens)
        row = batch.add()
        step = tokens * per_token
        for lo in range(0, len(mel), step):
            frames = batch.run({row: mx.array(mel[lo : lo + step], model.dtype)})[row]
            mx.eval(model.adapter(frames[None]))

    batched_s = _timed(lambda: encode(ENCODER_BATCH_TOKENS))
    streamed_s = _timed(lambda: encode(1))
    embeds = encode_audio(model, padded)

    L = schedule.prompt_length
    prompt = model.tokenizer.prompt(L)

    def prefill(row: Row | None = None) -> tuple[DecoderBatch, Row, int]:
        """What a Session's first pass does: the prompt of a new row (`row`: one made
        before, as a session makes its row when it starts, not at its first pass)."""
        batch = DecoderBatch(model.decoder)
        row = row or batch.add(schedule.n_delay_tokens)
        return batch, row, batch.prefill(row, embeds[:L], prompt).item()

    def prompt_pass() -> float:
        row = DecoderBatch(model.decoder).add(schedule.n_delay_tokens)
        mx.eval(row.ffn_norms)
        tic = time.perf_counter()
        prefill(row)
        return time.perf_counter() - tic

    prompt_pass()  # traces the pass
    prefill_s = sum(prompt_pass() for _ in range(3)) / 3
    steps = n_tokens - L

    def decode(count: int) -> float:
        """A lone Session's one-position passes: each built from the last one's output before
        that output is read back, and started (SessionPool's pass ahead): seconds."""
        batch, row, first = prefill()
        token = mx.array([first])
        tic = time.perf_counter()
        for p in range(L, L + count):
            following = batch.run({row: (embeds[p : p + 1], token)})[0, :1]
            mx.async_eval(following)
            token.item()
            token = following
        token.item()
        return time.perf_counter() - tic

    decode(min(steps, 8))  # trace the pass once
    step_s = decode(steps) / steps

    mx.reset_peak_memory()
    tic = time.perf_counter()
    result = transcribe(model, audio, delay_ms=schedule.delay_ms)
    wall = time.perf_counter() - tic
    peak = mx.get_peak_memory()

    # live: 80 ms chunks as fast as they can be processed; the feed call that yields the
    # first text after the prompt is ready measures the first-token latency
    session = Session(model, schedule.delay_ms)
    chunk = schedule.samples_per_token
    first = None
    for lo in range(0, len(audio), chunk):
        tic = time.perf_counter()
        events = session.feed(audio[lo : lo + chunk])
        elapsed = time.perf_counter() - tic
        if session.tokens:
            first = elapsed
            break
        del events
    if first is None:
        raise VoxtralError(
            f"the audio is {len(audio) / schedule.sample_rate * 1000:.0f} ms long: at a delay "
            f"of {schedule.delay_ms} ms a live stream has no first token before it ends, so "
            f"bench has no first-token latency to report; give it longer audio"
        )
    quant = _quantization(model)
    return BenchResult(
        audio_seconds=result.audio_seconds,
        delay_ms=schedule.delay_ms,
        dtype=str(model.dtype).replace("mlx.core.", ""),
        quantization=quant,
        mel_ms_per_step=1000 * mel_s / n_tokens,
        encoder_ms_per_step_streamed=1000 * streamed_s / n_tokens,
        encoder_ms_per_step_batched=1000 * batched_s / n_tokens,
        decoder_prefill_ms=1000 * prefill_s,
        decoder_ms_per_step=1000 * step_s,
        tokens_per_second=result.stats.decoder_steps / wall,
        tokens_per_pass=result.stats.decoder_steps / max(result.stats.decoder_passes, 1),
        real_time_factor=wall / result.audio_seconds,
        first_token_latency_ms=1000 * first,
        peak_memory_gb=peak / 2**30,
        chip=chip_name(),
        os=platform.platform(),
        mlx_version=mx.__version__,
        backend=backend_name(),
    )


def _quantization(model: VoxtralRealtime) -> str:
    layer = model.decoder.layers[0].feed_forward.w1
    bits = getattr(layer, "bits", None)
    return f"{bits}-bit, group {layer.group_size}" if bits else "none"


__all__ = ["BUNDLED_SPEECH", "BenchResult", "random_model", "run"]
