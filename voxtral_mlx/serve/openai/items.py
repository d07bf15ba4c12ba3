"""An OpenAI connection's turns: the items (`Turns`), and how a turn ends: server VAD reading
the model's output (`ServerVad`), or the client's commit and the silence padded after it
once its audio stops (`PadTimer`)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ...config import AudioArgs
from ...turns import SlotEnergy, SpeechStarted, SpeechStopped, TurnDetector

# after a commit, audio that stops for this long is taken as the end of the turn: silence is
# appended so its last words come out
PAD_AFTER_SECONDS = 0.2


@dataclass(eq=False)
class Turn:
    """One item: the stream's audio from `start` to `end` (seconds of the model's stream),
    and the text spoken in it."""

    item_id: str = field(default_factory=lambda: f"item_{uuid.uuid4().hex[:20]}")
    start: float = 0.0
    end: float | None = None  # set when it is committed
    client_start: float = 0.0  # the client's audio (s) before it, for the smallest commit
    text: list[str] = field(default_factory=list)

    @property
    def transcript(self) -> str:
        return "".join(self.text)


class Turns:
    """The connection's items: committed turns whose text may still come, then the open
    one."""

    def __init__(self):
        self._turns: deque[Turn] = deque([Turn()])
        self.previous_item: str | None = None  # the last committed turn's

    @property
    def open(self) -> Turn:
        return self._turns[-1]

    @property
    def waiting(self) -> bool:
        """Committed turns are not completed yet."""
        return len(self._turns) > 1

    @property
    def last_committed(self) -> Turn:
        return self._turns[-2]

    @property
    def first_start(self) -> float:
        """Where the oldest turn starts: text before it is a cleared turn's."""
        return self._turns[0].start

    def commit(self, end: float, client_start: float) -> tuple[Turn, str | None]:
        """The open turn ends at `end` and the next one opens there; returns the committed
        turn and the item before it."""
        turn, previous = self.open, self.previous_item
        turn.end = end
        self.previous_item = turn.item_id
        self._turns.append(Turn(start=end, client_start=client_start))
        return turn, previous

    def reopen(self, start: float, client_start: float) -> None:
        """The open turn is cleared: a new one starts at `start`."""
        self._turns[-1] = Turn(start=start, client_start=client_start)

    def add_text(self, text: str, began: float) -> tuple[Turn, str] | None:
        """Text whose word began at `began` (stream seconds) goes to that turn (a turn's
        text starts without white space); a cleared turn's is dropped (None)."""
        if began < self.first_start:
            return None
        turn = next(t for t in self._turns if t.end is None or began < t.end)
        text = text if turn.text else text.lstrip()
        if not text:
            return None
        turn.text.append(text)
        return turn, text

    def complete(self, transcribed: float, unwritten: float | None) -> list[Turn]:
        """The committed turns the decoder has spoken for all of (up to `transcribed`
        seconds), oldest first, unless a word begun in one (at `unwritten`) is still being
        spoken: its text comes at its end."""
        done = []
        while self.waiting and self._turns[0].end <= transcribed:
            if unwritten is not None and unwritten < self._turns[0].end:
                break
            done.append(self._turns.popleft())
        return done


class ServerVad:
    """Server VAD on the connection's stream: the signal's energy (`hear` every sample given
    to the model) and a TurnDetector with the session's settings (None: off, the client
    commits), started again from the open turn's start when the client commits or clears."""

    def __init__(self, tokenizer, audio: AudioArgs):
        self.tokenizer, self.audio = tokenizer, audio
        self.energy = SlotEnergy(audio)
        self.settings: dict | None = None
        self.detector: TurnDetector | None = None

    def configure(self, settings: dict | None, turn_start: float) -> None:
        self.settings = settings
        self.restart(turn_start)

    def restart(self, turn_start: float) -> None:
        if self.settings is None:
            self.detector = None
            return
        self.detector = TurnDetector(
            self.tokenizer,
            silence_seconds=self.settings["silence_duration_ms"] / 1000,
            prefix_seconds=self.settings["prefix_padding_ms"] / 1000,
            energy=self.energy,
            loud_db=6.0 + 24.0 * self.settings["threshold"],  # 0.5: 18 dB over the noise floor
            audio=self.audio,
        )
        self.detector.turn_start = turn_start

    def hear(self, samples: np.ndarray) -> None:
        self.energy.push(samples)

    def update(self, outputs: list[tuple[int, float]]) -> list[SpeechStarted | SpeechStopped]:
        return self.detector.update(outputs) if self.detector is not None else []


class PadTimer:
    """After a commit (push to talk), audio that stops for PAD_AFTER_SECONDS ends the turn:
    silence is padded after it, as a file's end is, so its last words come out. The timer
    wakes the scheduler when that time comes (the dialect's intake then pads)."""

    def __init__(self, wake: Callable[[], None]):
        self.wake = wake
        self.last_audio = time.monotonic()
        self._handle: asyncio.TimerHandle | None = None

    def heard(self, now: float) -> None:
        """The client's audio came at `now` (time.monotonic())."""
        self.last_audio = now

    def start(self) -> None:
        """The client committed: wake the scheduler once the audio may have stopped."""
        self._arm(PAD_AFTER_SECONDS)

    def due(self) -> bool:
        """Whether the audio has stopped long enough (if not, wake the scheduler then)."""
        quiet = time.monotonic() - self.last_audio
        if quiet < PAD_AFTER_SECONDS:
            self._arm(PAD_AFTER_SECONDS - quiet)  # (more audio may still come)
            return False
        return True

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()

    def _arm(self, after: float) -> None:
        self.cancel()
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(after + 0.01, self.wake)
