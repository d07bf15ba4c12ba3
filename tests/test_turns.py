"""Turn detection from the model's output (voxtral_mlx/turns.py), on token sequences whose
turns are known."""

import numpy as np

from voxtral_mlx.turns import SlotEnergy, SpeechStarted, SpeechStopped, TurnDetector

PAD, WORD, TEXT = 32, 33, 1000  # [STREAMING_PAD], [STREAMING_WORD], a word piece


class Tokens:
    streaming_word_id = WORD

    def byte_piece(self, token: int) -> bytes:
        return b" yes" if token == TEXT else b""


def outputs(tokens: list[int], first: float = 0.0) -> list[tuple[int, float]]:
    return [(t, round(first + 0.08 * i, 3)) for i, t in enumerate(tokens)]


def test_a_turn_starts_at_its_first_word_and_stops_after_the_silence():
    # pads to 0.88 s, a word (marker at 0.96, text at 1.12), pads, text at 2.0 s, pads
    tokens = [PAD] * 12 + [WORD, PAD, TEXT] + [PAD] * 10 + [TEXT] + [PAD] * 10
    detector = TurnDetector(Tokens(), silence_seconds=0.5, prefix_seconds=0.3)
    events = detector.update(outputs(tokens))
    assert events == [
        SpeechStarted(0.66),  # 0.96 s, less the prefix
        SpeechStopped(1.7, 1.2),  # the text's slot ends at 1.2 s; + 0.5 s
        SpeechStarted(1.7),  # 2.0 - 0.3: not before the last turn's end
        SpeechStopped(2.58, 2.08),
    ]


def test_the_same_turns_however_the_outputs_are_cut():
    tokens = [PAD] * 5 + [TEXT] + [PAD] * 3 + [TEXT] + [PAD] * 9 + [WORD, TEXT] + [PAD] * 8
    whole = TurnDetector(Tokens()).update(outputs(tokens))
    detector, pieces = TurnDetector(Tokens()), outputs(tokens)
    cut = [e for i in range(0, len(pieces), 3) for e in detector.update(pieces[i : i + 3])]
    assert cut == whole and len(whole) == 4


def test_loud_audio_holds_a_turn_open_but_never_starts_one():
    energy = SlotEnergy()
    quiet = np.random.default_rng(0).standard_normal(1280 * 10).astype(np.float32) * 1e-3
    loud = np.sin(np.arange(1280 * 10) / 5).astype(np.float32) * 0.3
    energy.push(np.concatenate([quiet, loud, quiet, loud, quiet]))  # loud at 0.8-1.6, 2.4-3.2
    tokens = [PAD] * 10 + [TEXT] + [PAD] * 30  # one word at 0.8 s, then pads to 3.28 s
    held = TurnDetector(Tokens(), energy=energy).update(outputs(tokens))
    plain = TurnDetector(Tokens()).update(outputs(tokens))
    assert plain[1] == SpeechStopped(1.38, 0.88)
    assert held[1] == SpeechStopped(2.1, 1.6)  # held to the end of the loud part
    assert len(held) == 2  # the second loud part, without a word, starts nothing
