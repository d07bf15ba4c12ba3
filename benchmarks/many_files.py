"""Many files through one pool (`transcribe_many`, `voxtral transcribe A B C ...`): the time
for held-out clips of the tiny trained model, one at a time and `--batch` at a time.

    python benchmarks/many_files.py --files 24 --batch 8

The clips (espeak-ng, seeded, 2 to 6 s) end at different times, so most calls of the
encoder have some rows with nothing to encode: what the pool does with them shows here.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import voxtral_mlx
from voxtral_mlx.bench import backend_name, chip_name

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    a = parser.parse_args()
    from data import write_set

    model = voxtral_mlx.load(ROOT / "tests" / "assets" / "tiny-voxtral")
    clips = [u.audio for u in write_set(Path(tempfile.mkdtemp()), a.files, 987654)]
    seconds = sum(len(c) for c in clips) / 16000
    print(f"{chip_name()}, {backend_name()}; {a.files} clips, {seconds:.0f} s of audio")
    voxtral_mlx.transcribe(model, clips[0])  # warm-up
    for _ in range(a.repeats):  # alternating
        for batch in (1, a.batch):
            tic = time.perf_counter()
            results = list(voxtral_mlx.transcribe_many(model, clips, batch=batch))
            assert len(results) == len(clips)
            print(f"batch {batch}: {time.perf_counter() - tic:.2f} s")


if __name__ == "__main__":
    main()
