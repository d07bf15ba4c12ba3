"""Turns of speech in a stream, from the model's own output (MODEL.md "Turns").

The token output at each decoder position speaks about one slot of audio, 80 ms
(`AudioArgs.seconds_per_token`, `Schedule.step_time`):
a [STREAMING_WORD] marker or a text token there means someone speaks, a [STREAMING_PAD] that
nothing new is said. A turn starts at the first such token after a silence and ends once
`silence_seconds` of decided audio carry none. A word's marker or its text comes once, so
inside a long word the model's output looks silent: the signal's energy (`SlotEnergy`)
holds a turn open while the audio is loud, but never starts one (noise is not speech). The
text of a word marked before a turn ended (it comes at the word's end) starts no new turn:
the word is the last turn's (`WordStarts` says which turn a text belongs to).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from .config import AudioArgs
from .words import WordBuilder

DIGITAL_SILENCE_DBFS = -90.0  # quieter slots (zeros, padding) do not count for the floor
MAX_WORD_SECONDS = 1.5  # a marked word whose text has not come after this is given up


@dataclass(frozen=True)
class SpeechStarted:
    seconds: float  # where the turn's audio starts: its first speech less the prefix padding


@dataclass(frozen=True)
class SpeechStopped:
    seconds: float  # where the turn's audio ends: its last speech plus the silence
    speech_end: float  # its last speech


class SlotEnergy:
    """The level (dBFS) of each slot of a stream at the model's rate, kept for the last
    `keep` seconds (the decoder reads them `delay` later), and the noise floor: the quietest
    tenth of those slots. `audio`: the checkpoint's (None: the usual 80 ms slots)."""

    def __init__(self, audio: AudioArgs | None = None, keep_seconds: float = 30.0):
        audio = audio or AudioArgs()
        self.samples_per_slot = audio.samples_per_token
        self.slot_seconds = audio.seconds_per_token
        self._partial = np.zeros(0, np.float32)
        self._levels: deque[float] = deque(maxlen=int(keep_seconds / self.slot_seconds))
        self._first = 0  # the slot index of _levels[0]
        self.floor = -120.0

    def push(self, samples: np.ndarray) -> None:
        samples = np.concatenate([self._partial, samples])
        whole = len(samples) // self.samples_per_slot * self.samples_per_slot
        slots = samples[:whole].reshape(-1, self.samples_per_slot)  # [n, samples per slot]
        for power in np.mean(np.square(slots, dtype=np.float64), axis=1):
            if len(self._levels) == self._levels.maxlen:
                self._first += 1
            self._levels.append(10 * math.log10(max(power, 1e-12)))
        self._partial = samples[whole:]
        heard = [level for level in self._levels if level > DIGITAL_SILENCE_DBFS]
        if heard:
            self.floor = float(np.percentile(heard, 10))

    def level(self, seconds: float) -> float | None:
        """The level of the slot at `seconds`, if it is known (and still kept)."""
        index = math.floor(seconds / self.slot_seconds + 1e-6) - self._first
        return self._levels[index] if 0 <= index < len(self._levels) else None


class TurnDetector:
    """Speech started / stopped, from (token id, audio time it speaks about) in output order.

    `energy` (optional) holds a turn open while the audio is `loud_db` above its noise floor.
    `audio`: the checkpoint's (None: the usual 80 ms slots)."""

    def __init__(
        self,
        tokenizer,
        silence_seconds: float = 0.5,
        prefix_seconds: float = 0.3,
        energy: SlotEnergy | None = None,
        loud_db: float = 18.0,
        audio: AudioArgs | None = None,
    ):
        self.tokenizer = tokenizer
        self.slot_seconds = (audio or AudioArgs()).seconds_per_token
        self.silence_seconds = silence_seconds
        self.prefix_seconds = prefix_seconds
        self.energy = energy
        self.loud_db = loud_db
        self.speaking = False
        self.turn_start = 0.0  # the end of the last turn: the next cannot start before it
        self.last_speech = 0.0  # the end of the last slot with speech
        self.words = WordStarts(tokenizer, give_up_seconds=None)  # of the outputs it reads

    def _said_something(self, token: int, seconds: float) -> bool:
        """A marker, or a word's text (at its end, when it was marked) whose word began in
        this turn: a word begun in the last one starts no new turn."""
        began = self.words.update([(token, seconds)]).get(seconds)
        if token == self.tokenizer.streaming_word_id:
            return True
        if not self.tokenizer.byte_piece(token).strip():
            return False
        return began >= self.turn_start

    def _loud(self, seconds: float) -> bool:
        level = self.energy.level(seconds) if self.energy is not None else None
        return level is not None and level > self.energy.floor + self.loud_db

    def update(self, outputs: list[tuple[int, float]]) -> list[SpeechStarted | SpeechStopped]:
        events: list[SpeechStarted | SpeechStopped] = []
        for token, seconds in outputs:
            if seconds < max(self.turn_start, 0.0):  # the left padding, or the last turn
                continue
            slot_end = seconds + self.slot_seconds
            if self._said_something(token, seconds):
                if not self.speaking:
                    self.speaking = True
                    start = max(seconds - self.prefix_seconds, self.turn_start, 0.0)
                    events.append(SpeechStarted(round(start, 3)))
                self.last_speech = slot_end
            elif self.speaking and self._loud(seconds):
                self.last_speech = slot_end
            elif self.speaking and slot_end >= self.last_speech + self.silence_seconds:
                self.speaking = False
                self.turn_start = self.last_speech + self.silence_seconds
                events.append(SpeechStopped(round(self.turn_start, 3), round(self.last_speech, 3)))
        return events


class WordStarts:
    """When each text output's word began, by the rule of words.WordBuilder: at its
    [STREAMING_WORD] marker when one came before the word's text (the text comes at the
    word's end), else at its first text. `open_since`: the start of a marked word whose text
    has not come yet, given up after `give_up_seconds` (None: never)."""

    def __init__(self, tokenizer, give_up_seconds: float | None = MAX_WORD_SECONDS):
        self.tokenizer = tokenizer
        self.give_up_seconds = give_up_seconds
        self._words = WordBuilder()

    @property
    def open_since(self) -> float | None:
        return self._words.marker

    def update(self, outputs: list[tuple[int, float]]) -> dict[float, float]:
        """The start of the word of each text output, by the output's time."""
        starts: dict[float, float] = {}
        for token, seconds in outputs:
            if token == self.tokenizer.streaming_word_id:
                self._words.mark(seconds)
            elif piece := self.tokenizer.byte_piece(token):
                self._words.add(piece, seconds, seconds)
                starts[seconds] = self._words.word_start
            elif self._given_up(seconds):
                self._words.unmark()
        return starts

    def _given_up(self, seconds: float) -> bool:
        marked, most = self.open_since, self.give_up_seconds
        return marked is not None and most is not None and seconds - marked > most
