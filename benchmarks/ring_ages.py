"""Pass time of one old stream among fresh ones (issue 27): a DecoderBatch of B rows, one of
them `--minutes` old (7,500 positions for 10 minutes), against B fresh rows.

A random checkpoint in the official layout (`voxtral_mlx.testing.save_random`: the real
structure and vocabulary 131072 at a narrow width, `--layers` encoder and decoder layers),
loaded with `voxtral_mlx.load`. Every row's prompt is prefilled; the old row is then moved
to its age (`Row.position`) without decoding the positions between: a pass's cost depends
on the rings' shapes, not on what they hold (empty slots are keys of zeros). Then
one-position passes, the two cases alternating in each of `--rounds` rounds (`--passes`
passes each, rows rewound after each so that the shapes never change); medians of the
rounds' ms per pass.

    python benchmarks/ring_ages.py --rounds 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import mlx.core as mx

import voxtral_mlx
from voxtral_mlx.bench import backend_name, chip_name, narrow
from voxtral_mlx.decoder import DecoderBatch, Row
from voxtral_mlx.testing import save_random

N_DELAY = 6  # 480 ms
PROMPT = 1 + 32 + N_DELAY


def aged_batch(model, fresh: int, old_positions: int) -> tuple[DecoderBatch, list[Row]]:
    """A batch of `fresh` rows after their prompt, plus one of `old_positions` (0: none)."""
    batch = DecoderBatch(model.decoder)
    dim = model.args.decoder.dim
    prompt = model.tokenizer.prompt(PROMPT)
    rows = []
    if old_positions:
        old = batch.add(N_DELAY)
        batch.prefill(old, mx.random.normal((PROMPT, dim)), prompt)
        old.position = old_positions  # its ring grows to this at the next pass
        rows.append(old)
    for _ in range(fresh):
        row = batch.add(N_DELAY)
        batch.prefill(row, mx.random.normal((PROMPT, dim)), prompt)
        rows.append(row)
    return batch, rows


def ms_per_pass(batch: DecoderBatch, rows: list[Row], passes: int, pad: int) -> float:
    """One-position passes of every row, timed to their tokens; then the rows rewound."""
    dim = batch.decoder.args.dim
    audio = mx.random.normal((passes, len(rows), dim))
    mx.eval(audio)
    tic = time.perf_counter()
    for p in range(passes):
        batch.run({row: (audio[p, b : b + 1], [pad]) for b, row in enumerate(rows)}).tolist()
    elapsed = time.perf_counter() - tic
    for row in rows:
        batch.rewind(row, passes)
    return 1000 * elapsed / passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=131072)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--passes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    a = parser.parse_args()
    mx.random.seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        save_random(Path(tmp), narrow(a.dim, a.layers, a.vocab))
        model = voxtral_mlx.load(tmp)
    old_positions = PROMPT + round(a.minutes * 60 / 0.08)
    pad = model.tokenizer.streaming_pad_id
    cases = {
        "fresh": aged_batch(model, a.rows, 0),
        "one old": aged_batch(model, a.rows - 1, old_positions),
    }
    for batch, rows in cases.values():
        ms_per_pass(batch, rows, 2, pad)  # the trace of this shape
    runs: dict[str, list[float]] = {name: [] for name in cases}
    for r in range(a.rounds):
        for name in list(cases)[:: 1 if r % 2 == 0 else -1]:
            runs[name].append(ms_per_pass(*cases[name], a.passes, pad))
    median = {name: statistics.median(v) for name, v in runs.items()}
    ratio = median["one old"] / median["fresh"]
    if a.json:
        print(json.dumps({"median_ms": median, "ratio": ratio, "runs": runs}, indent=2))
        return
    print(
        f"{chip_name()}, MLX {mx.__version__} ({backend_name()}), {model.dtype}; decoder "
        f"{a.layers} layers, dim {a.dim}, vocabulary {a.vocab}; {a.rows} rows, one of them "
        f"{old_positions} positions ({a.minutes:g} min) old; {a.passes} passes, median of "
        f"{a.rounds} rounds, alternating"
    )
    for name, ms in median.items():
        print(f"{name:>8}: {ms:7.1f} ms/pass")
    print(f"   ratio: {ratio:.2f}x")


if __name__ == "__main__":
    main()
