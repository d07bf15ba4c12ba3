"""Where an upload's time goes: 5 minutes of 96 kHz FLAC (silence by default, or speech)
posted to `voxtral serve` from this tree and from another checkout, alternating, in one run;
and the library path (`voxtral_mlx.transcribe`) split into decoding + resampling, encoder
and decoder time.

Silence is not slow in itself: its decoder passes carry the most drafted pads. The time is
the model's (encoder and decoder); what the server added on top was its slicing of uploads
into 1 s pieces (12-token encoder calls, drafts capped at 12 positions).

    git worktree add /tmp/before <commit>
    python benchmarks/upload_silence.py --baseline /tmp/before --rounds 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
import soundfile as sf
from serve_capacity import start

import voxtral_mlx
from voxtral_mlx.bench import chip_name
from voxtral_mlx.testing import shared_audio

ROOT = Path(__file__).resolve().parents[1]
RATE = 96000


def make_file(folder: Path, minutes: float, speech: bool) -> Path:
    n = int(minutes * 60 * RATE)
    if speech:
        clip = voxtral_mlx.load_audio(shared_audio("jfk.wav"), RATE)
        audio = np.tile(clip, n // len(clip) + 1)[:n]
    else:
        audio = np.zeros(n, np.float32)
    path = folder / ("speech.flac" if speech else "silence.flac")
    sf.write(path, audio, RATE, subtype="PCM_16")
    return path


def post(port: int, path: Path) -> float:
    tic = time.perf_counter()
    with path.open("rb") as f:
        reply = requests.post(
            f"http://127.0.0.1:{port}/v1/audio/transcriptions",
            files={"file": (path.name, f)},
            timeout=3600,
        )
    reply.raise_for_status()
    return time.perf_counter() - tic


def library_split(model_dir: Path, path: Path) -> dict:
    """The library path, timed by stage (the encoder's share from the sessions' pool)."""
    from voxtral_mlx.audio import load_audio
    from voxtral_mlx.session import SessionPool

    model = voxtral_mlx.load(model_dir)
    encoder = {"s": 0.0}
    encode = SessionPool._encode

    def timed(self, sessions):
        tic = time.perf_counter()
        encode(self, sessions)
        encoder["s"] += time.perf_counter() - tic

    tic = time.perf_counter()
    samples = load_audio(path)
    loading = time.perf_counter() - tic
    SessionPool._encode = timed
    try:
        tic = time.perf_counter()
        result = voxtral_mlx.transcribe(model, samples)
        total = time.perf_counter() - tic
    finally:
        SessionPool._encode = encode
    stats = result.stats
    return {
        "decode and resample": loading,
        "encoder": encoder["s"],
        "decoder": total - encoder["s"],
        "tokens per pass": stats.decoder_steps / max(stats.decoder_passes, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "tests/assets/tiny-voxtral")
    parser.add_argument("--baseline", type=Path, help="another checkout's server, alternated")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--speech", action="store_true", help="speech instead of silence")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"CPU: {chip_name()}; model {args.model}")
    with tempfile.TemporaryDirectory() as tmp:
        path = make_file(Path(tmp), args.minutes, args.speech)
        kind = "speech" if args.speech else "silence"
        print(f"{args.minutes:g} min of {kind}, {RATE // 1000} kHz FLAC")
        split = library_split(args.model, path)
        print("library: " + ", ".join(f"{k} {v:.2f}" for k, v in split.items()))
        trees = {"this tree": ROOT}
        if args.baseline:
            trees["baseline"] = args.baseline
        servers = {name: start(tree, args.model, 4) for name, tree in trees.items()}
        times: dict[str, list[float]] = {name: [] for name in trees}
        try:
            for _ in range(args.rounds):
                for name, (_, port) in servers.items():
                    times[name].append(post(port, path))
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(10)
        for name, values in times.items():
            print(f"server, {name}: " + ", ".join(f"{v:.2f} s" for v in values))
        if args.baseline:
            ratio = np.mean(times["baseline"]) / np.mean(times["this tree"])
            print(f"baseline / this tree: {ratio:.2f}x")


if __name__ == "__main__":
    main()
