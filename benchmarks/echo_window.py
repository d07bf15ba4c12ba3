"""The echo window of `voxtral meeting` (voxtral_mlx.meeting.ECHO_WINDOW), measured.

Without headphones the microphone hears the call. Each conversation here is three turns of
held-out espeak speech (training/data.py, a seed training never used): the call, you, the
call, 0.3 s apart. The microphone's track is your turn plus the call's audio attenuated
(`--gains`) and delayed (`--delays`); the system track is the call. Both go through one
SessionPool with the tiny trained model, as `voxtral meeting` runs them.

Reported per delay and gain: the words the microphone's stream writes outside your turn
(echo words), how many of them the call's stream did not write within 1 s (a recognition
difference no rule on words can catch), the largest gaps between the others and the call
stream's same word (what the window must cover), then, with the window given (`--window`,
default ECHO_WINDOW), the echo words left in "you" and your own words dropped.

    python benchmarks/echo_window.py --conversations 10
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))

import voxtral_mlx  # noqa: E402
from voxtral_mlx import SessionPool, WordDone  # noqa: E402
from voxtral_mlx.meeting import (  # noqa: E402
    ECHO_WINDOW,
    SETTLE_SECONDS,
    Conversation,
    Echo,
    Said,
    gap,
    same_word,
)

RATE = 16000
GAP = 0.3
MODEL = Path(__file__).parents[1] / "tests" / "assets" / "tiny-voxtral"


def run(model, mic: np.ndarray, call: np.ndarray, window: float):
    """Both tracks through one pool, 50 ms at a time: each stream's words, and what the
    Conversation keeps of yours and drops as echoes."""
    pool = SessionPool(model)
    sessions = [pool.add(sample_rate=RATE, settle_seconds=SETTLE_SECONDS) for _ in range(2)]
    talk = Conversation("you", "others", echo_window=window)
    words: list[list] = [[], []]
    items = []
    block = RATE // 20
    for lo in range(0, len(mic) + block, block):
        for session, audio in zip(sessions, (mic, call), strict=True):
            if lo < len(audio):
                session.push(audio[lo : lo + block])
            elif lo < len(audio) + block:
                session.end()
        while out := pool.step():
            for i, (session, name) in enumerate(zip(sessions, ("you", "others"), strict=True)):
                for event in out.get(session, []):
                    if isinstance(event, WordDone):
                        words[i].append(event.word)
                        talk.add(name, event.word)
        for session, name in zip(sessions, ("you", "others"), strict=True):
            talk.advance(name, session.settled_seconds)
        items += talk.take()
    assert all(s.result is not None for s in sessions)
    return words, items


def main() -> None:
    from data import conversation, make_utterance

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=10)
    parser.add_argument("--delays", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.4])
    parser.add_argument("--gains", type=float, nargs="+", default=[0.1, 0.3, 0.6])
    parser.add_argument("--window", type=float, default=ECHO_WINDOW)
    parser.add_argument("--seed", type=int, default=2468)
    args = parser.parse_args()

    model = voxtral_mlx.load(MODEL)
    rng = np.random.default_rng(args.seed)
    talks = []
    while len(talks) < args.conversations:  # under 9 s: the tiny model's clips were ~12 s
        u = [make_utterance(rng, max_words=4) for _ in range(3)]
        if sum(len(x.audio) for x in u) < 8.5 * RATE:
            turns = [(1, u[0].audio), (0, u[1].audio), (1, u[2].audio)]
            talks.append(conversation(turns, GAP, floor=0.0))
    print(f"{args.conversations} conversations, window {args.window:.2f} s")
    print(
        "| delay | gain | echo words | not in the call's stream | largest gaps (s) "
        "| left in you | yours dropped |"
    )
    print("|---|---|---|---|---|---|---|")
    for delay in args.delays:
        for gain in args.gains:
            gaps, echoes, unmatched, leaked, mine, dropped = [], 0, 0, 0, 0, 0
            for clean, call, spans in talks:
                shift = int(delay * RATE)
                heard = (
                    clean + gain * np.concatenate([np.zeros(shift, np.float32), call])[: len(clean)]
                )
                (you, others), items = run(model, heard, call, args.window)
                yours = [(s, e) for side, s, e in spans if side == 0]
                for word in you:
                    if any(s - 0.2 <= word.start <= e + 0.2 for s, e in yours):
                        continue  # a word of your turn
                    echoes += 1
                    near = [gap(o, word) for o in others if same_word(o.text, word.text)]
                    if near and min(near) <= 1.0:
                        gaps.append(min(near))
                    else:  # the call's stream wrote no such word near it
                        unmatched += 1
                for item in items:
                    in_yours = any(s - 0.2 <= item.word.start <= e + 0.2 for s, e in yours)
                    if isinstance(item, Said) and item.speaker == "you":
                        leaked += not in_yours
                        mine += in_yours
                    elif isinstance(item, Echo):
                        dropped += in_yours
            top = sorted(gaps)[-3:] if gaps else []
            print(
                f"| {1000 * delay:.0f} ms | {20 * math.log10(gain):.0f} dB | {echoes} "
                f"| {unmatched} | {' '.join(f'{g:.2f}' for g in top)} | {leaked} "
                f"| {dropped} of {dropped + mine} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
