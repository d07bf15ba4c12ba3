"""Word timings from decoder step positions (MODEL.md "Word timings").

Every decoder position is 80 ms of audio. The token output at position p has seen the
audio up to slot p, and the model emits text `n_delay` slots after the audio it
describes, behind `n_left` slots of left padding. So position p speaks about audio time
t(p) = (p - n_left - n_delay) * 80 ms: `Schedule.step_time`.

A word is a run of text tokens; a new word starts at a byte piece that begins with
white space, or at a [STREAMING_WORD] marker. Without a marker, a word spans
[t(first text position), t(last text position + 1)]. When a [STREAMING_WORD] marker comes
before its text, the marker is taken as the word's start and the text as its end: the word
spans [t(marker position), t(first text position)]. Times are clamped to the audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Schedule
    from .tokenizer import Tokenizer


@dataclass(frozen=True)
class Word:
    text: str
    start: float  # seconds from the start of the audio
    end: float


class WordTracker:
    """Groups (position, token id) pairs into words as they stream in."""

    def __init__(self, tokenizer: Tokenizer, schedule: Schedule, duration: float | None = None):
        self.tokenizer = tokenizer
        self.step_time = schedule.step_time
        self.duration = duration
        self._bytes = b""
        self._first = self._last = -1
        self._marker: int | None = None  # position of a [STREAMING_WORD] awaiting its text
        self._start: int | None = None  # the marker of the word in progress, if it had one

    def add(self, position: int, token_id: int) -> Word | None:
        """Feed one generated token; returns the word this token completed, if any."""
        if token_id == self.tokenizer.streaming_word_id:
            done = self._word() if self._bytes.strip() else None
            self._marker = position
            return done
        piece = self.tokenizer.byte_piece(token_id)
        if not piece:
            return None
        done = None
        if piece[:1].isspace() and self._bytes.strip():
            done = self._word()
        if not self._bytes:
            self._first = position
            self._start, self._marker = self._marker, None
        self._bytes += piece
        self._last = position
        return done

    def flush(self) -> Word | None:
        """The word in progress, if any (at the end of the audio)."""
        return self._word() if self._bytes.strip() else None

    def _word(self) -> Word:
        text = self._bytes.decode("utf-8", errors="replace").strip()
        if self._start is not None:  # marked at its start, written at its end
            start, end = self.step_time(self._start), self.step_time(self._first)
        else:
            start, end = self.step_time(self._first), self.step_time(self._last + 1)
        self._bytes = b""
        return Word(text, *self._clamp(start, end))

    def _clamp(self, start: float, end: float) -> tuple[float, float]:
        hi = self.duration if self.duration is not None else max(end, 0.0)
        start = min(max(start, 0.0), hi)
        return round(start, 3), round(min(max(end, start), hi), 3)


def words_from_tokens(
    tokens: list[int],
    first_position: int,
    tokenizer: Tokenizer,
    schedule: Schedule,
    duration: float | None = None,
) -> list[Word]:
    """Words of a whole generation whose first token was output at `first_position`."""
    return [
        word for word, _ in words_with_tokens(tokens, first_position, tokenizer, schedule, duration)
    ]


def words_with_tokens(
    tokens: list[int],
    first_position: int,
    tokenizer: Tokenizer,
    schedule: Schedule,
    duration: float | None = None,
) -> list[tuple[Word, list[int]]]:
    """`words_from_tokens`, each word with the ids of its text tokens: from the one that
    ended the word before it up to the one that ends it (control tokens carry no text; white
    space after the last word belongs to no word)."""
    tracker = WordTracker(tokenizer, schedule, duration)
    out: list[tuple[Word, list[int]]] = []
    ids: list[int] = []
    for i, token in enumerate(tokens):
        if word := tracker.add(first_position + i, token):
            out.append((word, ids))
            ids = []
        if not tokenizer.is_special(token):
            ids.append(token)
    if last := tracker.flush():
        out.append((last, ids))
    return out
