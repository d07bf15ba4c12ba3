"""Aggregate decoder throughput with B streams decoded together (DecoderBatch): every pass
gives each of B rows one position and reads the weights once for all of them.

A real-depth checkpoint (26 decoder layers, the real vocabulary 131072, the real windows),
narrow widths (stated in the output), random weights, or the decoder of a checkpoint
(`--model DIR`, e.g. benchmarks/full_size.py's); each row prefilled with its prompt, then
one-position passes; B = 1, 2, 4, 8, 16 measured in rotating order, `--rounds` times,
medians reported. Tokens/s counts every row's positions.

    python benchmarks/batch_scaling.py --dim 512 --rounds 3
    python benchmarks/batch_scaling.py --model /work/fullsize/q4 --batches 1 2 4 8 16 32 64
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import mlx.core as mx

import voxtral_mlx
from voxtral_mlx.bench import architecture, backend_name, chip_name
from voxtral_mlx.decoder import DecoderBatch, TextDecoder
from voxtral_mlx.model import VoxtralRealtime


def decoder(dim: int, layers: int, vocab: int, dtype: mx.Dtype) -> TextDecoder:
    """The real structure at width `dim`: 64-wide heads, GQA 4:1, FFN 3 x dim; its matrices
    in the memory layout `voxtral_mlx.load` picks on this machine."""
    heads = dim // 64
    args = architecture((256, 1, 4, 1024), (dim, layers, heads, heads // 4, 3 * dim), vocab, 64)
    mx.random.seed(0)
    model = TextDecoder(args.decoder)
    model.set_dtype(dtype)
    mx.eval(model.parameters())
    VoxtralRealtime.use_backend_layout(model)  # it only walks the modules
    return model


def tokens_per_second(model: TextDecoder, rows: int, passes: int, prompt: int = 39) -> float:
    dim = model.args.dim
    batch = DecoderBatch(model)
    members = [batch.add(6) for _ in range(rows)]
    audio = mx.random.normal((rows, prompt + passes + 3, dim)).astype(model.norm.weight.dtype)
    ids = [1] + [32] * (prompt - 1)
    tokens = batch.run({row: (audio[i, :prompt], ids) for i, row in enumerate(members)})
    last = [int(t) for t in tokens[:, prompt - 1].tolist()]
    for p in range(prompt, prompt + passes + 3):
        if p == prompt + 3:  # after warm-up passes (the trace of this shape)
            tic = time.perf_counter()
        step = {row: (audio[i, p : p + 1], [last[i]]) for i, row in enumerate(members)}
        last = [int(t) for t in batch.run(step)[:, 0].tolist()]
    return rows * passes / (time.perf_counter() - tic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a checkpoint whose decoder to run (not --dim/--dtype)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--layers", type=int, default=26)
    parser.add_argument("--vocab", type=int, default=131072)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--passes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--json", action="store_true")
    a = parser.parse_args()
    if a.model:
        model = voxtral_mlx.load(a.model).decoder
        quantized = getattr(model.layers[0].feed_forward.w1, "bits", None)
        what = f"{a.model} ({f'{quantized}-bit' if quantized else model.norm.weight.dtype})"
    else:
        model = decoder(a.dim, a.layers, a.vocab, getattr(mx, a.dtype))
        what = f"random weights, {a.dtype}"
    args = model.args
    runs: dict[int, list[float]] = {b: [] for b in a.batches}
    for r in range(a.rounds):
        order = a.batches[r % len(a.batches) :] + a.batches[: r % len(a.batches)]
        for b in order:
            runs[b].append(tokens_per_second(model, b, a.passes))
    median = {b: statistics.median(v) for b, v in runs.items()}
    base = median[a.batches[0]]
    if a.json:
        print(json.dumps({"model": what, "median_tokens_per_s": median, "runs": runs}, indent=2))
        return
    print(
        f"{chip_name()}, MLX {mx.__version__} ({backend_name()}), {what}; decoder "
        f"{args.n_layers} layers, dim {args.dim}, heads {args.n_heads}/{args.n_kv_heads} of "
        f"{args.head_dim}, FFN {args.hidden_dim}, vocabulary {args.vocab_size}; {a.passes} "
        f"passes, median of {a.rounds} rounds"
    )
    print(f"{'B':>3} {'tokens/s':>10} {'ms/pass':>8} {'x B=' + str(a.batches[0]):>8}")
    for b in a.batches:
        print(f"{b:>3} {median[b]:>10.1f} {1000 * b / median[b]:>8.1f} {median[b] / base:>8.2f}")


if __name__ == "__main__":
    main()
