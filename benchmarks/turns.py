"""How close server VAD's turn boundaries (voxtral_mlx/turns.py) come to the words' own times.

Clips are streamed back to back with a pause between them through one live Session, as
`voxtral serve` streams an OpenAI transcription session; every output goes to a
TurnDetector, with and without the signal's energy. The truth: the clips' word timings (a
pause of `silence` or more inside a clip also ends a turn). For each true turn matched to a
detected one (overlap): the error of its start (speech_started + prefix padding) against
the first word's start, and of its end (speech_stopped - silence) against the last word's end.

    python benchmarks/turns.py                       # the shared LibriVox clips
    python benchmarks/turns.py --held-out 12         # espeak sentences the test model knows
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

import voxtral_mlx
from voxtral_mlx.testing import shared_audio
from voxtral_mlx.turns import SlotEnergy, SpeechStarted, TurnDetector

ROOT = Path(__file__).resolve().parent.parent
CLIPS = ["librivox-0870", "librivox-0880", "librivox-0890", "librivox-0920", "librivox-0930"]


def shared_clips() -> list[tuple[np.ndarray, list[tuple[float, float]]]]:
    clips = []
    for name in CLIPS:
        audio = voxtral_mlx.load_audio(shared_audio(f"{name}.wav"))
        words = json.loads(shared_audio(f"{name}.align.json").read_text())["w"]
        spans = [(w["b"], w["b"] + w["d"]) for w in words if not w["t"].startswith("<")]
        clips.append((audio, spans))
    return clips


def held_out_clips(count: int) -> list[tuple[np.ndarray, list[tuple[float, float]]]]:
    sys.path.insert(0, str(ROOT / "training"))
    from data import write_set

    utterances = write_set(Path(tempfile.mkdtemp()), count, 4242)
    return [(u.audio, list(u.spans)) for u in utterances]


def true_turns(spans: list[tuple[float, float]], silence: float) -> list[tuple[float, float]]:
    turns = [list(spans[0])]
    for start, end in spans[1:]:
        if start - turns[-1][1] >= silence:
            turns.append([start, end])
        else:
            turns[-1][1] = end
    return [tuple(t) for t in turns]


def detect(model, audio: np.ndarray, delay_ms: int, silence: float, energy: bool):
    session = voxtral_mlx.Session(model, delay_ms)
    slots = SlotEnergy() if energy else None
    detector = TurnDetector(model.tokenizer, silence, prefix_seconds=0.0, energy=slots)
    found, seen, step = [], 0, 16000
    for lo in range(0, len(audio), step):
        chunk = audio[lo : lo + step]
        if slots is not None:
            slots.push(chunk)
        session.feed(chunk)
        outputs = session.outputs(seen)
        seen += len(outputs)
        found += detector.update(outputs)
    turns, start = [], None
    for event in found:
        if isinstance(event, SpeechStarted):
            start = event.seconds
        elif start is not None:
            turns.append((start, event.speech_end))
            start = None
    return turns


def match(truth, detected):
    """(start error, end error) for each true turn overlapping a detected one; misses and
    extra detections."""
    errors, used = [], set()
    for t0, t1 in truth:
        best = [(i, d) for i, d in enumerate(detected) if d[0] < t1 and d[1] > t0 and i not in used]
        if best:
            i, (d0, d1) = best[0]
            used.add(i)
            errors.append((d0 - t0, d1 - t1))
    return errors, len(truth) - len(errors), len(detected) - len(used)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "tests" / "assets" / "tiny-voxtral"))
    parser.add_argument("--delay", type=int, default=480)
    parser.add_argument("--silence", type=float, default=0.5)
    parser.add_argument("--pause", type=float, default=1.5, help="seconds between clips")
    parser.add_argument("--held-out", type=int, default=0, help="espeak sentences instead")
    args = parser.parse_args()
    model = voxtral_mlx.load(args.model)
    clips = held_out_clips(args.held_out) if args.held_out else shared_clips()
    pause = np.zeros(int(args.pause * 16000), np.float32)
    audio, truth, t = [], [], 0.0
    for samples, spans in clips:
        truth += [(t + a, t + b) for a, b in true_turns(spans, args.silence)]
        audio += [samples, pause]
        t += (len(samples) + len(pause)) / 16000
    audio = np.concatenate(audio)
    print(
        f"{platform.processor() or platform.machine()}; model {Path(args.model).name}, delay "
        f"{args.delay} ms, silence {args.silence} s; {len(clips)} clips, {t:.1f} s, "
        f"{len(truth)} true turns"
    )
    print(
        "| signal | turns found | missed | extra | start error mean / median / max | "
        "end error mean / median / max |"
    )
    print("|---|---|---|---|---|---|")
    for energy in (False, True):
        detected = detect(model, audio, args.delay, args.silence, energy)
        errors, missed, extra = match(truth, detected)
        starts = np.array([e[0] for e in errors]) if errors else np.zeros(1)
        ends = np.array([e[1] for e in errors]) if errors else np.zeros(1)

        def figures(x: np.ndarray) -> str:
            return f"{x.mean():+.2f} / {np.median(x):+.2f} / {np.abs(x).max():.2f} s"

        name = "model + energy" if energy else "model only"
        print(
            f"| {name} | {len(detected)} | {missed} | {extra} | {figures(starts)} | "
            f"{figures(ends)} |"
        )


if __name__ == "__main__":
    main()
