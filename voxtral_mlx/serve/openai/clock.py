"""The times of an OpenAI connection's stream (`StreamClock`), and the resampler between the
client's audio and the model's."""

from __future__ import annotations

import numpy as np

from ...audio import StreamResampler
from ...config import SAMPLE_RATE

# how far back a time of the stream may be turned into the client's (VAD reports times the
# delay after the audio)
SHIFTS_KEPT_SECONDS = 60.0


class StreamClock:
    """Three clocks. The client's audio (`client_seconds` of it, at its rate) goes through a
    streaming resampler (`fed` seconds in, `released` out: it holds back its filter's
    look-ahead) into the model's stream (`received`: seconds at 16 kHz given to the model or
    waiting for it), less what `clear` dropped, plus the silence padded after a push-to-talk
    turn. `shifts` turn the stream's times back into the client's (`client_ms`)."""

    def __init__(self, rate: int):
        self.received = 0.0
        self.client_seconds = 0.0
        self.shifts: list[tuple[float, float]] = []  # (stream s, client s - stream s) from there
        self.restart(rate)

    def restart(self, rate: int | None = None) -> None:
        """A new resampler (at `rate`, or the same one), holding nothing back."""
        self.rate = rate or self.rate
        self.resampler = StreamResampler(self.rate)
        self.fed = self.released = 0.0  # seconds into and out of this resampler

    @property
    def held_seconds(self) -> float:
        """Audio the resampler holds back (its filter's look-ahead)."""
        return max(self.fed - self.released, 0.0)

    @property
    def stream_end(self) -> float:
        """Where the client's audio so far ends in the stream (the resampler's held-back
        samples counted)."""
        return self.received + self.held_seconds

    def resample(self, samples: np.ndarray) -> np.ndarray:
        """The client's samples (at its rate) as the stream's next 16 kHz samples."""
        seconds = len(samples) / self.rate
        self.client_seconds += seconds
        self.fed += seconds
        out = self.resampler(samples)
        self.received += len(out) / SAMPLE_RATE
        self.released += len(out) / SAMPLE_RATE
        return out

    def drop(self, seconds: float) -> None:
        """The stream's last `seconds`, not yet heard, are dropped, and what the resampler
        holds back (`clear`): from here the client's time runs that much ahead."""
        dropped = seconds + self.held_seconds
        self.received -= seconds
        self.restart()
        if dropped:
            self.shift_from(self.received, dropped)

    def pad_to(self, need: float) -> np.ndarray:
        """What the resampler holds back, then silence up to `need` seconds of the stream:
        the silence is the stream's alone (the client's time stays behind by it)."""
        tail = self.resampler(np.zeros(0, np.float32), last=True)
        self.restart()
        seconds = max(need - self.received - len(tail) / SAMPLE_RATE, 0.0)
        silence = np.zeros(round(seconds * SAMPLE_RATE), np.float32)
        self.received += len(tail) / SAMPLE_RATE
        if len(silence):
            self.shift_from(self.received, -len(silence) / SAMPLE_RATE)
            self.received += len(silence) / SAMPLE_RATE
        return np.concatenate([tail, silence])

    def shift_from(self, seconds: float, change: float) -> None:
        """The client's time runs `change` s ahead of the stream's from `seconds` on (audio it
        sent was dropped, or silence it did not send was added). Times more than a minute
        old are no longer asked for: their entries go, so the list stays short."""
        self.shifts.append((seconds, self._shift(seconds) + change))
        while len(self.shifts) > 1 and self.shifts[1][0] < seconds - SHIFTS_KEPT_SECONDS:
            self.shifts.pop(0)

    def _shift(self, seconds: float) -> float:
        shift = 0.0
        for at, value in self.shifts:
            if at <= seconds:
                shift = value
        return shift

    def client_ms(self, seconds: float) -> int:
        """A time of the model's stream as the client counts its audio (ms)."""
        return max(0, round((seconds + self._shift(seconds)) * 1000))
