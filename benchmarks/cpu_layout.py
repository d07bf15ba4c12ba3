"""The CPU weight layout on this machine: row-major (the checkpoint's) against column-major
float matrices, for the tied-head product alone and for whole decoder steps, alternating.

`voxtral_mlx.load` picks the faster layout per matrix shape at load time
(`VoxtralRealtime.use_backend_layout`); this prints what each costs, so the choice can be
checked against a full measurement.

    python benchmarks/cpu_layout.py --dim 768 --layers 26 --vocab 131072 --rounds 2
"""

from __future__ import annotations

import argparse
import time

import mlx.core as mx
import mlx.nn as nn

from voxtral_mlx.bench import architecture, chip_name
from voxtral_mlx.decoder import DecoderBatch, TextDecoder


def layout(w: mx.array, column_major: bool) -> mx.array:
    held = mx.contiguous(w.T).T if column_major else mx.contiguous(w)
    mx.eval(held)
    return held


def head_ms(vocab: int, dim: int, column_major: bool, reps: int = 20) -> float:
    w = layout(mx.random.normal((vocab, dim)), column_major)
    x = mx.random.normal((1, dim))
    for _ in range(3):
        mx.eval(x @ w.T)
    tic = time.perf_counter()
    for _ in range(reps):
        mx.eval(x @ w.T)
    return 1000 * (time.perf_counter() - tic) / reps


def step_ms(dim: int, layers: int, vocab: int, column_major: bool, steps: int = 30) -> float:
    """Decoder steps (26 layers at the real structure, 64-wide heads, GQA 4:1)."""
    heads = dim // 64
    args = architecture((256, 1, 4, 1024), (dim, layers, heads, heads // 4, 3 * dim), vocab, 64)
    mx.random.seed(0)
    decoder = TextDecoder(args.decoder)
    for _, module in decoder.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight = layout(module.weight, column_major)
    batch = DecoderBatch(decoder)
    row = batch.add(6)
    audio = mx.random.normal((39, dim))
    token = batch.run({row: (audio, [1] + [32] * 38)})[0, -1].item()
    for i in range(3 + steps):
        if i == 3:
            tic = time.perf_counter()
        token = batch.run({row: (audio[:1], [token])})[0, 0].item()
    return 1000 * (time.perf_counter() - tic) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--layers", type=int, default=26)
    parser.add_argument("--vocab", type=int, default=131072)
    parser.add_argument("--rounds", type=int, default=2)
    a = parser.parse_args()
    print(f"{chip_name()}, MLX {mx.__version__}; dim {a.dim}, {a.layers} layers, vocab {a.vocab}")
    for name, measure in (
        ("head product", lambda cm: head_ms(a.vocab, a.dim, cm)),
        ("decoder step", lambda cm: step_ms(a.dim, a.layers, a.vocab, cm)),
    ):
        runs: dict[str, list[float]] = {"row-major": [], "column-major": []}
        for _ in range(a.rounds):
            for label, column_major in (("row-major", False), ("column-major", True)):
                runs[label].append(measure(column_major))
        row, col = min(runs["row-major"]), min(runs["column-major"])
        every = {k: [round(v, 1) for v in vs] for k, vs in runs.items()}
        print(
            f"{name}: row-major {row:.1f} ms, column-major {col:.1f} ms (best of {a.rounds}; "
            f"every run {every}); column-major / row-major = {col / row:.2f}"
        )


if __name__ == "__main__":
    main()
