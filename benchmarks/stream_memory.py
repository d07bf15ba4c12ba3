"""Peak memory of a streaming Session over long audio: bounded, whatever the length.

Builds a model with the real sliding windows (encoder 750 frames, decoder 8192 positions),
the real vocabulary (131072, mistral-common's bundled Tekken) and small widths, random
weights, then streams synthetic audio in 1 s chunks, as a microphone would, for each
duration in its own process. Prints MLX's peak allocation and the process's peak RSS.

    python benchmarks/stream_memory.py                 # 5 min, 15 min and 3 h
    python benchmarks/stream_memory.py --minutes 5 180
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

CHUNK_SECONDS = 1.0


def build_model(dim: int, layers: int, vocab: int):
    import mistral_common

    from voxtral_mlx.bench import narrow
    from voxtral_mlx.model import VoxtralRealtime
    from voxtral_mlx.tokenizer import Tokenizer

    args = narrow(dim, layers, vocab)
    model = VoxtralRealtime(args)
    mx.eval(model.parameters())
    model.use_backend_layout()  # as voxtral_mlx.load does
    # the real Tekken vocabulary decodes the ids of a smaller random head just as well
    tekken = Path(mistral_common.__file__).parent / "data" / "tekken_240911.json"
    model.tokenizer = Tokenizer.from_file(tekken)
    return model


def synthetic_chunk(index: int, n: int) -> np.ndarray:
    """Speech-like noise bursts and tones; generated per chunk, never held whole."""
    rng = np.random.default_rng(index)
    t = np.arange(n) / 16000
    tone = 0.2 * np.sin(2 * np.pi * (200 + 50 * (index % 7)) * t)
    burst = 0.1 * rng.standard_normal(n) * (index % 3 != 0)
    return (tone + burst).astype(np.float32)


def run_one(minutes: float, dim: int, layers: int, vocab: int) -> dict:
    from voxtral_mlx import Session

    model = build_model(dim, layers, vocab)
    weights = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    session = Session(model, 480)
    n = int(CHUNK_SECONDS * 16000)
    chunks = int(minutes * 60 / CHUNK_SECONDS)
    tic = time.perf_counter()
    for i in range(chunks):
        session.feed(synthetic_chunk(i, n))
    session.finish()
    final = session.result
    wall = time.perf_counter() - tic
    enc = session.pool.encoders.nbytes  # the session's encoder row: its key/value ring
    dec = session.pool.batch.nbytes  # the session's decoder row: its key/value ring
    return {
        "minutes": minutes,
        "decoder_steps": final.stats.decoder_steps,
        "weights_mb": weights / 2**20,
        "encoder_kv_mb": enc / 2**20,
        "decoder_kv_mb": dec / 2**20,
        "mlx_peak_mb": mx.get_peak_memory() / 2**20,
        "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "wall_s": wall,
        "rtf": wall / (minutes * 60),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[5, 15, 180])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        print(json.dumps(run_one(opts.minutes[0], opts.dim, opts.layers, opts.vocab)))
        return
    print(
        f"model: dim {opts.dim}, {opts.layers}+{opts.layers} layers, vocab {opts.vocab}, "
        f"windows 750 / 8192, fp32; audio fed in {CHUNK_SECONDS:g} s chunks, delay 480 ms"
    )
    header = (
        f"{'audio':>8} {'steps':>8} {'weights':>9} {'enc KV':>8} {'dec KV':>8} "
        f"{'MLX peak':>9} {'RSS peak':>9} {'wall':>8} {'RTF':>6}"
    )
    print(header)
    rows = []
    for minutes in opts.minutes:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "--minutes",
            str(minutes),
            "--dim",
            str(opts.dim),
            "--layers",
            str(opts.layers),
            "--vocab",
            str(opts.vocab),
        ]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        rows.append(r)
        print(
            f"{r['minutes']:>6g}m {r['decoder_steps']:>8} {r['weights_mb']:>7.1f}MB "
            f"{r['encoder_kv_mb']:>6.1f}MB {r['decoder_kv_mb']:>6.1f}MB "
            f"{r['mlx_peak_mb']:>7.1f}MB {r['rss_peak_mb']:>7.1f}MB {r['wall_s']:>7.1f}s "
            f"{r['rtf']:>6.3f}",
            flush=True,
        )
    first, last = rows[0], rows[-1]
    print(
        f"peak MLX memory, {last['minutes']:g} min vs {first['minutes']:g} min: "
        f"{100 * (last['mlx_peak_mb'] / first['mlx_peak_mb'] - 1):+.1f} %"
    )


if __name__ == "__main__":
    main()
