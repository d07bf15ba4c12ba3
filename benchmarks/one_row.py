"""One stream against an older checkout: `voxtral bench` of this checkout and of another
(issue 27: commit 09fc601, the code before the batched core), alternating in one run,
`--rounds` rounds, medians of each figure and their ratio new / old.

    git worktree add /work/wt-09fc601 09fc601   # with its own .venv, `pip install -e .`
    python benchmarks/one_row.py --old /work/wt-09fc601 --model tiny --rounds 7
    python benchmarks/one_row.py --old /work/wt-09fc601 --model real-depth --rounds 3

`tiny`: the trained test model (compute is negligible: the figures are overhead).
`real-depth`: a random checkpoint written here, fp32 (the CPU BLAS), decoder 26 layers of
768 (12/3 heads of 64, vocabulary 131072), encoder 4 layers of 256. Any other value is a
model directory. Each checkout runs its own `voxtral` (its .venv/bin); the peak resident
memory of every run is printed.

`--time-every-layout`: this checkout times the CPU layout of every float matrix
(LAYOUT_MIN_BYTES = 0) instead of only those of 4 MiB and more. 09fc601 held every float
matrix column-major; since then matrices under 4 MiB keep the checkpoint's row-major layout
(deterministic small models), which at dim 768 includes every attention matrix. With the
flag both checkouts lay out the same matrices alike where column-major wins, so the table
compares the code, not the layout policy.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = {  # bench's JSON key: what the table calls it
    "decoder_ms_per_step": "decoder step (ms)",
    "decoder_prefill_ms": "prefill (ms)",
    "encoder_ms_per_step_streamed": "encoder step, streamed (ms)",
    "encoder_ms_per_step_batched": "encoder step, batched (ms)",
    "first_token_latency_ms": "first-token latency (ms)",
    "real_time_factor": "real-time factor",
}


EVERY_LAYOUT = (
    "import sys, voxtral_mlx.model as m; m.LAYOUT_MIN_BYTES = 0; "
    "from voxtral_cli.app import main; sys.argv[0] = 'voxtral'; main()"
)


def bench(checkout: Path, model: Path, every_layout: bool = False) -> tuple[dict, float]:
    """One `voxtral bench --json` of `checkout` (its own venv, run from its directory):
    the figures, and the peak resident memory in GB of the largest run so far."""
    command = [str(checkout / ".venv/bin/voxtral")]
    if every_layout:
        command = [str(checkout / ".venv/bin/python"), "-c", EVERY_LAYOUT]
    command += ["bench", "--model", str(model)]
    done = subprocess.run(
        [*command, "--delay", "480", "--json"], cwd=checkout, capture_output=True, text=True
    )
    if done.returncode:
        sys.exit(f"{checkout}: {done.stderr.strip()}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KB: the largest run so far
    return json.loads(done.stdout), peak / 2**20


def real_depth(path: Path) -> Path:
    from voxtral_mlx.bench import architecture
    from voxtral_mlx.testing import save_random

    args = architecture((256, 4, 4, 1024), (768, 26, 12, 3, 3 * 768), 131072, 64)
    return save_random(path, args)


def compare(old: Path, model: Path, rounds: int, every_layout: bool) -> None:
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    peak = 0.0
    for r in range(rounds):
        order = [("old", old), ("new", ROOT)] if r % 2 == 0 else [("new", ROOT), ("old", old)]
        for name, checkout in order:
            figures, rss = bench(checkout, model, every_layout and name == "new")
            runs[name].append(figures)
            peak = max(peak, rss)
            print(f"round {r + 1} {name}: " + ", ".join(f"{k} {figures[k]:.3f}" for k in FIGURES))
    first = runs["new"][0]
    print(f"\n{first['chip']}, MLX {first['mlx_version']} ({first['backend']}), {first['dtype']}")
    layout = "; this checkout timing every layout" if every_layout else ""
    print(f"model {model}; medians of {rounds} rounds{layout}; largest resident set {peak:.2f} GB")
    print()
    print(f"| figure | {old.name} | this checkout | new / old |")
    print("|---|---|---|---|")
    for key, label in FIGURES.items():
        a = statistics.median(run[key] for run in runs["old"])
        b = statistics.median(run[key] for run in runs["new"])
        print(f"| {label} | {a:.3f} | {b:.3f} | {b / a:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="the older checkout")
    parser.add_argument("--model", default="tiny", help="tiny, real-depth or a directory")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--time-every-layout", action="store_true", help="see above")
    a = parser.parse_args()
    old, every = a.old.resolve(), a.time_every_layout
    if a.model == "tiny":
        compare(old, ROOT / "tests/assets/tiny-voxtral", a.rounds, every)
    elif a.model == "real-depth":
        with tempfile.TemporaryDirectory() as tmp:
            compare(old, real_depth(Path(tmp)), a.rounds, every)
    else:
        compare(old, Path(a.model).resolve(), a.rounds, every)


if __name__ == "__main__":
    main()
