"""voxtral-mlx against its MLX peers, voxmlx and mlx-audio (voxtral_realtime), in one run.

One random-weight checkpoint is written once in the official layout (params.json +
consolidated.safetensors + tekken.json); each implementation loads it with its own loader
(mlx-audio needs its config.json beside the same weights) and runs the same audio.

Measured per implementation, each with its own model code:
  decoder ms/step  its decoder step (embedding + layers + tied head + argmax), a
                   double-buffered loop of N steps after its prefill
  encoder ms/step  its whole-file encoder (conv stem + transformer + adapter) per 80 ms token
  RTF              its own top-level file transcription, wall time / audio time
  peak memory      MLX's peak allocation during that transcription

Needs `pip install voxmlx==0.0.2 mlx-audio==0.6.2` beside voxtral-mlx (a separate virtual
environment is wise: mlx-audio brings many dependencies).

    python benchmarks/compare_peers.py --dim 1024 --layers 8 --steps 200
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

import voxtral_mlx
from voxtral_mlx.bench import BUNDLED_SPEECH, backend_name, chip_name, narrow
from voxtral_mlx.config import ModelArgs
from voxtral_mlx.decoder import DecoderBatch
from voxtral_mlx.model import VoxtralRealtime
from voxtral_mlx.testing import mlx_audio_config, save_random

DELAY_MS = 480


def write_checkpoint(path: Path, dim: int, layers: int, vocab: int) -> ModelArgs:
    """Random weights of the real structure (windows 750/8192, GQA 4:1), official names."""
    args = narrow(dim, layers, vocab)
    save_random(path, args, delay_ms=DELAY_MS)
    return args


def mlx_audio_dir(official: Path, args: ModelArgs) -> Path:
    """mlx-audio reads config.json in its own format; its sanitize maps the official names."""
    path = official.parent / "mlx-audio"
    path.mkdir()
    config = mlx_audio_config(args.to_params(), DELAY_MS)
    (path / "config.json").write_text(json.dumps(config))
    os.symlink(official / "consolidated.safetensors", path / "model.safetensors")
    shutil.copy(official / "tekken.json", path / "tekken.json")
    return path


WARMUP_STEPS = 5


def decode_loop(step, first_token, steps: int) -> float:
    """Seconds per step of a double-buffered greedy loop over `step(token, i)`."""
    token = first_token
    mx.eval(token)
    tic = time.perf_counter()
    for i in range(steps):
        nxt = step(token, WARMUP_STEPS + i)
        mx.async_eval(nxt)
        token.item()
        token = nxt
    token.item()
    return (time.perf_counter() - tic) / steps


def timed(fn) -> float:
    fn()  # warm-up
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


def transcription(fn) -> tuple[float, float]:
    fn()  # warm-up
    mx.reset_peak_memory()
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic, mx.get_peak_memory() / 2**20


def bench_ours(path: Path, audio: np.ndarray, steps: int) -> dict:
    from voxtral_mlx.config import ENCODER_BATCH_TOKENS
    from voxtral_mlx.mel import log_mel_spectrogram
    from voxtral_mlx.offline import pad_audio

    model = voxtral_mlx.load(path)
    args = model.args.schedule(DELAY_MS)
    mel = mx.array(log_mel_spectrogram(pad_audio(audio, args)))  # like the peers: mel excluded
    n_tokens = mel.shape[0] // 8

    def encode():
        state = model.encoder.make_state()  # the file path: ENCODER_BATCH_TOKENS a call
        step = 8 * ENCODER_BATCH_TOKENS
        out = [
            model.adapter(model.encoder(mel[None, i : i + step], state))[0]
            for i in range(0, mel.shape[0], step)
        ]
        mx.eval(out)
        return mx.concatenate(out)

    enc = timed(encode) / n_tokens
    embeds = encode()
    L = args.prompt_length
    batch = DecoderBatch(model.decoder)  # what a Session decodes through: its first pass
    row = batch.add(args.n_delay_tokens)
    first = batch.run({row: (embeds[:L], model.tokenizer.prompt(L))})[0, L - 1 :]

    def step(token, i):
        p = L + i % (n_tokens - L)
        return batch.run({row: (embeds[p : p + 1], token)})[0]

    step_s = decode_loop(step, first, steps)
    wall, peak = transcription(lambda: voxtral_mlx.transcribe(model, audio, DELAY_MS))
    return {"decoder_ms": 1000 * step_s, "encoder_ms": 1000 * enc, "wall": wall, "peak_mb": peak}


def bench_voxmlx(path: Path, audio: np.ndarray, wav: Path, steps: int) -> dict:
    import voxmlx
    from voxmlx.audio import log_mel_spectrogram, pad_audio
    from voxmlx.cache import RotatingKVCache
    from voxmlx.generate import generate

    model, sp, _ = voxmlx.load_model(str(path))
    prompt, n_delay = voxmlx._build_prompt_tokens(sp)
    mel = log_mel_spectrogram(pad_audio(audio))
    n_tokens = mel.shape[1] // 8
    enc = timed(lambda: mx.eval(model.encode(mel))) / n_tokens
    embeds = model.encode(mel)
    t_cond = model.time_embedding(mx.array([n_delay], dtype=mx.float32))
    cache = [RotatingKVCache(8192) for _ in model.language_model.layers]
    L = len(prompt)
    x = model.language_model.embed(mx.array([prompt]))[0] + embeds[:L]
    first = mx.argmax(model.decode(x[None], t_cond, "causal", cache)[0, -1])

    def step(token, i):
        e = model.language_model.embed(token.reshape(1, 1))[0, 0]
        logits = model.decode((embeds[L + i % (n_tokens - L)] + e)[None, None], t_cond, None, cache)
        return mx.argmax(logits[0, -1])

    step_s = decode_loop(step, first, steps)
    wall, peak = transcription(
        lambda: generate(model, str(wav), prompt, n_delay_tokens=n_delay, eos_token_id=sp.eos_id)
    )
    return {"decoder_ms": 1000 * step_s, "encoder_ms": 1000 * enc, "wall": wall, "peak_mb": peak}


def bench_mlx_audio(path: Path, audio: np.ndarray, steps: int) -> dict:
    from mlx_audio.stt.utils import load

    model = load(str(path))
    out = model._encode_and_prefill(audio)
    adapter_out, n_tokens, L, logits, cache = out[:5]

    def encode():
        mel, _ = model._prepare_mel(audio)
        conv = model.encoder.conv_stem(mel)
        if conv.shape[0] <= model.encoder.config.sliding_window:
            mx.eval(model.encoder.encode_full(conv))
        else:
            for chunk in model.encoder.encode_chunks(conv):
                mx.eval(model.encoder.downsample_and_project(chunk))

    enc = timed(encode) / n_tokens
    embeds = adapter_out
    n_avail = embeds.shape[0]
    first = mx.argmax(logits)

    def step(token, i):
        pos = L + i % (n_avail - L)
        e = embeds[pos] + model.decoder.embed_token(token)
        h, _ = model.decoder.forward(e[None, :], start_pos=L + i, cache=cache)
        return mx.argmax(model.decoder.logits(h.squeeze(0)))

    step_s = decode_loop(step, first, steps)
    wall, peak = transcription(lambda: model.generate(audio))
    return {"decoder_ms": 1000 * step_s, "encoder_ms": 1000 * enc, "wall": wall, "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=131072)
    parser.add_argument("--steps", type=int, default=200, help="decoder steps timed")
    parser.add_argument("--audio", type=Path, default=BUNDLED_SPEECH)
    parser.add_argument("--only", nargs="*", default=["voxtral-mlx", "voxmlx", "mlx-audio"])
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="run every implementation this many times, in rotating order; report medians",
    )
    opts = parser.parse_args()

    audio = voxtral_mlx.load_audio(opts.audio)
    seconds = len(audio) / 16000
    with tempfile.TemporaryDirectory() as tmp:
        official = Path(tmp) / "official"
        args = write_checkpoint(official, opts.dim, opts.layers, opts.vocab)
        wav = Path(tmp) / "audio.wav"
        import soundfile as sf

        sf.write(wav, audio, 16000)
        mlx_audio_path = mlx_audio_dir(official, args) if "mlx-audio" in opts.only else None
        runs = {
            "voxtral-mlx": lambda: bench_ours(official, audio, opts.steps),
            "voxmlx": lambda: bench_voxmlx(official, audio, wav, opts.steps),
            "mlx-audio": lambda: bench_mlx_audio(mlx_audio_path, audio, opts.steps),
        }
        rounds: dict[str, list[dict]] = {}
        names = list(opts.only)
        for r in range(opts.rounds):  # rotating order: a slow spell of the machine hits all
            for name in names[r % len(names) :] + names[: r % len(names)]:
                try:
                    rounds.setdefault(name, []).append(runs[name]())
                except ImportError as e:
                    print(f"{name}: not installed ({e})")
                    names.remove(name)
        results = {
            name: {k: float(np.median([x[k] for x in runs_])) for k in runs_[0]}
            for name, runs_ in rounds.items()
            if name in names
        }
    n_params = sum(v.size for _, v in tree_flatten(VoxtralRealtime(args).parameters()))
    print(
        f"checkpoint: random fp32, dim {opts.dim}, {opts.layers}+{opts.layers} layers "
        f"(encoder {opts.dim // 64} heads, decoder {opts.dim // 64}/{max(opts.dim // 256, 1)} "
        f"GQA), vocab {opts.vocab}, windows 750/8192, {n_params / 1e6:.0f} M parameters"
    )
    print(
        f"audio: {opts.audio.name}, {seconds:.1f} s; delay {DELAY_MS} ms; "
        f"{chip_name()}, MLX {mx.__version__} ({backend_name()})"
    )
    print(f"medians of {opts.rounds} rounds")
    print(f"{'':12} {'decoder ms/step':>16} {'encoder ms/step':>16} {'RTF':>7} {'peak MB':>9}")
    for name, r in results.items():
        print(
            f"{name:12} {r['decoder_ms']:16.2f} {r['encoder_ms']:16.2f} "
            f"{r['wall'] / seconds:7.3f} {r['peak_mb']:9.0f}"
        )
    if "voxtral-mlx" in results:
        ours = results["voxtral-mlx"]
        for name, r in results.items():
            if name != "voxtral-mlx":
                print(
                    f"voxtral-mlx vs {name}: decoder {r['decoder_ms'] / ours['decoder_ms']:.2f}x, "
                    f"encoder {r['encoder_ms'] / ours['encoder_ms']:.2f}x, "
                    f"end to end {r['wall'] / ours['wall']:.2f}x faster"
                )


if __name__ == "__main__":
    main()
