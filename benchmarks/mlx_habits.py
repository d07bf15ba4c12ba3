"""mlx-lm's habits for long generation, measured on our schedule (MODEL.md "MLX habits").

`async`: one stream decoded one position a pass (the live step) through `DecoderBatch`,
as a pool of several sessions does it (build the pass, evaluate it, read the token on the
host, build the next) against mlx-lm's double buffering (the next pass built on the current
one's lazy token and started with `mx.async_eval` before the current token is read, as
SessionPool does for a lone session's one-position passes); the two
alternate, best of `--rounds`; the tokens must be the same. Also the share of a pass spent
building its graph (the call, lazy) against evaluating it.

`cache`: MLX's buffer cache (`mx.get_cache_memory()`, after every chunk) over a long
stream fed in 1 s chunks and a long file, with MLX's cache unbounded (Metal's default:
1.5x the GPU's working set) and with `settle_memory`'s bound; the narrow real-window model
of stream_memory.py.

    python benchmarks/mlx_habits.py async --model tests/assets/tiny-voxtral
    python benchmarks/mlx_habits.py cache --minutes 12
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

import voxtral_mlx
from voxtral_mlx.decoder import DecoderBatch
from voxtral_mlx.offline import encode_audio, pad_audio
from voxtral_mlx.testing import shared_audio

UNBOUNDED = 10**12


def positions(model, seconds: float) -> tuple[mx.array, list[int]]:
    """jfk.wav's adapter outputs (repeated up to `seconds`) and the prompt's ids."""
    audio = voxtral_mlx.load_audio(shared_audio("jfk.wav"))
    audio = np.tile(audio, int(np.ceil(seconds * 16000 / len(audio))))[: int(seconds * 16000)]
    schedule = model.args.schedule(480)
    embeds = encode_audio(model, pad_audio(audio, schedule))
    mx.eval(embeds)
    return embeds, model.tokenizer.prompt(schedule.prompt_length)


def prefilled(model, embeds, prompt) -> tuple[DecoderBatch, object, int]:
    batch = DecoderBatch(model.decoder)
    row = batch.add(model.args.schedule(480).n_delay_tokens)
    token = batch.prefill(row, embeds[: len(prompt)], prompt).item()
    return batch, row, token


def sequential(model, embeds, prompt) -> tuple[list[int], float, float]:
    """A pool's way: each token read before the next pass is built. Returns the
    tokens, the seconds spent building the passes and the seconds in all."""
    batch, row, token = prefilled(model, embeds, prompt)
    tokens, building = [token], 0.0
    tic = time.perf_counter()
    for p in range(len(prompt), embeds.shape[0]):
        start = time.perf_counter()
        out = batch.run({row: (embeds[p : p + 1], [token])})
        building += time.perf_counter() - start
        token = out[0, 0].item()
        tokens.append(token)
    return tokens, building, time.perf_counter() - tic


def double_buffered(model, embeds, prompt) -> tuple[list[int], float]:
    """mlx-lm's way: pass p + 1 built on pass p's lazy token and started before that token
    is read on the host."""
    batch, row, token = prefilled(model, embeds, prompt)
    tokens = [token]
    tic = time.perf_counter()
    ids = mx.array([token])
    current = batch.run({row: (embeds[len(prompt) : len(prompt) + 1], ids)})
    mx.async_eval(current)
    for p in range(len(prompt) + 1, embeds.shape[0] + 1):
        if p < embeds.shape[0]:
            following = batch.run({row: (embeds[p : p + 1], current[0])})
            mx.async_eval(following)
        tokens.append(current[0, 0].item())
        if p < embeds.shape[0]:
            current = following
    return tokens, time.perf_counter() - tic


def measure_async(model_dir: Path, seconds: float, rounds: int) -> None:
    model = voxtral_mlx.load(model_dir)
    embeds, prompt = positions(model, seconds)
    steps = embeds.shape[0] - len(prompt)
    best = {"sequential": float("inf"), "double-buffered": float("inf")}
    building = float("inf")
    for _ in range(rounds):
        reference, built, total = sequential(model, embeds, prompt)
        best["sequential"] = min(best["sequential"], total)
        building = min(building, built)
        tokens, total = double_buffered(model, embeds, prompt)
        best["double-buffered"] = min(best["double-buffered"], total)
        if tokens != reference:
            raise SystemExit("double buffering changed the tokens")
    base = best["sequential"]
    print(f"{model_dir}: {steps} one-position passes ({seconds:g} s of jfk.wav), best of {rounds}")
    for name, total in best.items():
        print(f"  {name:<16} {1000 * total / steps:6.3f} ms a pass ({total / base:.3f}x)")
    print(f"  building a pass (sequential): {1000 * building / steps:.3f} ms; tokens identical")


def measure_cache(minutes: float, dim: int, layers: int, vocab: int) -> None:
    from stream_memory import build_model, synthetic_chunk

    from voxtral_mlx.memory import settle_memory

    model = build_model(dim, layers, vocab)
    bound = settle_memory(model).cache
    chunk = 16000
    signal = np.concatenate([synthetic_chunk(i, chunk) for i in range(int(minutes * 60))])
    print(
        f"model: dim {dim}, {layers}+{layers} layers, vocab {vocab}, windows 750 / 8192, fp32; "
        f"{minutes:g} min of audio; the bound (stream_bytes): {bound / 2**20:.1f} MiB"
    )
    for limit, name in [(UNBOUNDED, "unbounded"), (bound, "bounded")]:
        mx.set_cache_limit(limit)
        mx.clear_cache()
        session = voxtral_mlx.Session(model, 480)
        most, tic = 0, time.perf_counter()
        for lo in range(0, len(signal), chunk):
            session.feed(signal[lo : lo + chunk])
            most = max(most, mx.get_cache_memory())
        session.finish()
        live = time.perf_counter() - tic
        ring = session.pool.batch.nbytes
        mx.clear_cache()
        tic = time.perf_counter()
        session = voxtral_mlx.Session(model, 480)
        file_most = 0
        for lo in range(0, len(signal), 60 * chunk):  # a file: a minute a feed
            session.feed(signal[lo : lo + 60 * chunk])
            file_most = max(file_most, mx.get_cache_memory())
        session.finish()
        print(
            f"  {name:<9} live: cache at most {most / 2**20:6.1f} MiB "
            f"(decoder ring {ring / 2**20:.1f} MiB), {live:.0f} s; file: cache at most "
            f"{file_most / 2**20:6.1f} MiB, {time.perf_counter() - tic:.0f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["async", "cache"])
    parser.add_argument("--model", type=Path, default=Path("tests/assets/tiny-voxtral"))
    parser.add_argument("--seconds", type=float, default=60, help="async: audio decoded")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=12, help="cache: audio streamed")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=8192)
    a = parser.parse_args()
    if a.what == "async":
        measure_async(a.model, a.seconds, a.rounds)
    else:
        measure_cache(a.minutes, a.dim, a.layers, a.vocab)


if __name__ == "__main__":
    main()
