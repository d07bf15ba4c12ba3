"""What a two-stream `voxtral meeting` costs against one `voxtral live` stream.

Both run through the commands' own code (cli.live.run_live; cli.meeting.open_streams and
run_meeting) on files replayed through the capture path (FileSource), the text going to
/dev/null: live on the microphone's track, the meeting on the microphone's and the call's
tracks of one conversation (held-out espeak speech, training/data.py). Counted: decoder
passes (calls of the batched decoder, prompts included) and the time spent in the pool's
passes (encoder and decoder), per second of audio; and the wall time. Each mode and model
alternates live and meeting, `--rounds` times; medians.

- real time (`--pace real`): the files at a microphone's pace, as a meeting runs: the wall
  time is the audio's, so the cost is the model's busy time per audio second.
- fast (`--pace fast`): `--fast`, as fast as it can be processed: wall time per audio second.

    python benchmarks/meeting_cost.py --model tiny small --pace real fast --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))

from rich.console import Console  # noqa: E402

import voxtral_mlx  # noqa: E402
from voxtral_mlx import Session, SessionPool  # noqa: E402
from voxtral_mlx.decoder import DecoderBatch  # noqa: E402

RATE = 16000
TINY = Path(__file__).parents[1] / "tests" / "assets" / "tiny-voxtral"


class Counter:
    """Decoder calls and the time inside the pool's passes, counted by wrapping them."""

    def __init__(self):
        self.passes = 0
        self.busy = 0.0
        for cls, name in ((DecoderBatch, "run"), (DecoderBatch, "prefill")):
            self._count(cls, name)
        original = SessionPool._pass

        def timed(pool, sessions):
            tic = time.perf_counter()
            try:
                return original(pool, sessions)
            finally:
                self.busy += time.perf_counter() - tic

        SessionPool._pass = timed

    def _count(self, cls, name: str) -> None:
        original = getattr(cls, name)

        def counted(*args, **kwargs):
            self.passes += 1
            return original(*args, **kwargs)

        setattr(cls, name, counted)

    def reset(self) -> None:
        self.passes, self.busy = 0, 0.0


def talk(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three turns (the call, you, the call): the microphone's track and the call's."""
    from data import conversation, make_utterance

    rng = np.random.default_rng(seed)
    u = [make_utterance(rng, max_words=4) for _ in range(3)]
    mic, call, _ = conversation([(1, u[0].audio), (0, u[1].audio), (1, u[2].audio)])
    return mic, call


def load(name: str):
    if name == "tiny":
        return voxtral_mlx.load(TINY), "the tiny trained test model (fp32, 6 MB)"
    import mlx.core as mx

    from voxtral_mlx.bench import random_model

    return random_model("small", mx.float32), "bench's small random model (fp32, 0.17 GB)"


def live_once(model, mic: np.ndarray, fast: bool) -> float:
    from voxtral_cli.capture import FileSource
    from voxtral_cli.live import run_live

    source = FileSource(Path("mic.wav"), (mic, RATE), fast)
    tic = time.perf_counter()
    run_live(Session(model, sample_rate=RATE), source, None, quiet())
    return time.perf_counter() - tic


def meeting_once(model, mic: np.ndarray, call: np.ndarray, fast: bool) -> float:
    from voxtral_cli.capture import FileSource
    from voxtral_cli.meeting import open_streams, run_meeting

    sides = [
        ("You", FileSource(Path("mic.wav"), (mic, RATE), fast)),
        ("Others", FileSource(Path("call.wav"), (call, RATE), fast)),
    ]
    tic = time.perf_counter()
    run_meeting(open_streams(model, None, sides), [], quiet())
    return time.perf_counter() - tic


def blas() -> str:
    """OpenBLAS when LD_PRELOAD loaded it into this process, else the BLAS MLX's wheel
    carries (numpy's own OpenBLAS is not MLX's)."""
    maps = Path("/proc/self/maps")
    mapped = maps.read_text() if maps.is_file() else ""
    preloaded = [p for p in os.environ.get("LD_PRELOAD", "").split(":") if "openblas" in p]
    return "OpenBLAS preloaded" if any(p in mapped for p in preloaded) else "the wheel's own BLAS"


@contextlib.contextmanager
def quiet_output():
    """The commands' text (stdout) and state lines (stderr) go nowhere."""
    with open(os.devnull, "w") as null:
        with contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
            yield


def quiet() -> Console:
    return Console(file=open(os.devnull, "w"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", default=["tiny"], choices=["tiny", "small"])
    parser.add_argument("--pace", nargs="+", default=["real", "fast"], choices=["real", "fast"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1357)
    args = parser.parse_args()

    from voxtral_mlx.bench import backend_name, chip_name

    counter = Counter()
    mic, call = talk(args.seed)
    seconds = len(mic) / RATE
    print(
        f"{chip_name()}, {os.cpu_count()} cores, MLX {backend_name()}, {blas()}; "
        f"{seconds:.1f} s of audio"
    )
    print("| model | pace | run | passes / audio s | busy / audio s | wall / audio s |")
    print("|---|---|---|---|---|---|")
    for name in args.model:
        model, label = load(name)
        for pace in args.pace:
            fast = pace == "fast"
            figures: dict[str, list[tuple[float, float, float]]] = {"live": [], "meeting": []}
            for _ in range(args.rounds):
                for run in ("live", "meeting"):
                    counter.reset()
                    with quiet_output():
                        wall = (
                            live_once(model, mic, fast)
                            if run == "live"
                            else meeting_once(model, mic, call, fast)
                        )
                    figures[run].append((counter.passes, counter.busy, wall))
            for run, rows in figures.items():
                passes, busy, wall = (
                    statistics.median(column) for column in zip(*rows, strict=True)
                )
                print(
                    f"| {name} | {pace} | {run} | {passes / seconds:.2f} | {busy / seconds:.3f} "
                    f"| {wall / seconds:.3f} |",
                    flush=True,
                )
        print(f"({name}: {label})")


if __name__ == "__main__":
    main()
