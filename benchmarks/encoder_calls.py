"""The encoder, two ways of calling it: how many tokens a file-mode call takes (each call's
queries attend over the 750-frame window plus the call's own frames), and several streams'
one-token calls one at a time against one stacked call.

    python benchmarks/encoder_calls.py chunks --seconds 60
    python benchmarks/encoder_calls.py streams --dim 1280 --layers 4

`chunks`: `encode_audio` of `--seconds` of noise at 375, 188, 94 and 47 tokens a call, on
the tiny trained model's encoder and a random 4-layer, 256-wide one, rotating, best of 3;
every output compared with the first. `streams`: B streams, each with its ring full at 750
frames, give one token (4 frames) each: B calls of one row against one call of B rows
(same fill, so one cache holds them), median of 6 after 2 warm-ups, 3 rounds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import RotatingKVCache

import voxtral_mlx
from voxtral_mlx.bench import architecture, backend_name, chip_name
from voxtral_mlx.encoder import AudioEncoder
from voxtral_mlx.offline import encode_audio, pad_audio
from voxtral_mlx.testing import save_random

ROOT = Path(__file__).resolve().parents[1]


def chunks(a) -> None:
    audio = (0.1 * np.random.default_rng(0).standard_normal(16000 * a.seconds)).astype(np.float32)
    models = {"tiny trained (3 x 128)": voxtral_mlx.load(ROOT / "tests/assets/tiny-voxtral")}
    with tempfile.TemporaryDirectory() as tmp:
        save_random(Path(tmp), architecture((256, 4, 4, 1024), (256, 2, 4, 1, 768), 8192, 64))
        models["random 4 x 256"] = voxtral_mlx.load(tmp)
    print(f"{chip_name()}, MLX {mx.__version__} ({backend_name()}), fp32; {a.seconds} s of audio")
    for name, model in models.items():
        padded = pad_audio(audio, model.args.schedule())
        first, times = None, {n: [] for n in (375, 188, 94, 47)}
        for _ in range(3):
            for n in times:
                tic = time.perf_counter()
                out = encode_audio(model, padded, n)
                mx.eval(out)
                times[n].append(time.perf_counter() - tic)
                first = out if first is None else first
                if not mx.allclose(out, first, atol=1e-4).item():
                    raise SystemExit(f"{name}: {n} tokens a call gave other outputs")
        row = ", ".join(f"{n}: {1000 * min(t):.0f} ms" for n, t in times.items())
        print(f"{name}: tokens a call -> wall: {row}; outputs equal")


def streams(a) -> None:
    heads = a.dim // 64
    args = architecture((a.dim, a.layers, heads, 4 * a.dim), (256, 1, 4, 1, 768), 8192, 64)
    encoder = AudioEncoder(args.encoder, 128)
    mx.eval(encoder.parameters())

    def filled(B: int) -> list:
        caches = [RotatingKVCache(max_size=750) for _ in encoder.layers]
        encoder.transformer(mx.random.normal((B, 748, a.dim)), caches)
        mx.eval([c.state for c in caches])
        return caches

    def run(B: int, stacked: bool) -> float:
        groups = [filled(B)] if stacked else [filled(1) for _ in range(B)]
        rows = B if stacked else 1
        times = []
        for _ in range(8):
            xs = [mx.random.normal((rows, 4, a.dim)) for _ in groups]
            mx.eval(xs)
            tic = time.perf_counter()
            for x, caches in zip(xs, groups, strict=True):
                mx.eval(encoder.transformer(x, caches))
            times.append(time.perf_counter() - tic)
        return statistics.median(times[2:])

    print(
        f"{chip_name()}, MLX {mx.__version__} ({backend_name()}), fp32; encoder {a.layers} "
        f"layers of {a.dim} ({heads} heads of 64), one token (4 frames) a stream, rings full"
    )
    for B in (1, 2, 4, 8):
        separate, stacked = [], []
        for _ in range(3):
            separate.append(run(B, False))
            stacked.append(run(B, True))
        s, t = statistics.median(separate), statistics.median(stacked)
        stacked_ms = f"one stacked call {1000 * t:.1f} ms"
        print(f"B={B}: {B} calls {1000 * s:.1f} ms, {stacked_ms}: {s / t:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["chunks", "streams"])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--layers", type=int, default=4)
    a = parser.parse_args()
    {"chunks": chunks, "streams": streams}[a.what](a)


if __name__ == "__main__":
    main()
