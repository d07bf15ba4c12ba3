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

`WordBuilder` does the grouping on pieces of text with their times, so that a client of a
server, which sees the text deltas and their times but no token ids, makes words the same way.
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


class WordBuilder:
    """Groups pieces of text, each with the audio span it speaks about, into words as they
    stream in: a piece that begins with white space, or a marker, starts a new word.

    Without a marker, a word spans [its first piece's start, its last piece's end]. A
    marker before a word's text is taken as the word's start and the text as its end: the
    word spans [the marker's time, its first piece's start]. Times are clamped to
    [0, duration] and rounded to the millisecond."""

    def __init__(self, duration: float | None = None):
        self.duration = duration
        self._bytes = b""
        self._first = self._end = 0.0  # the first piece's start, the last piece's end
        self._marker: float | None = None  # a marker's time, awaiting its text
        self._start: float | None = None  # the marker of the word in progress, if it had one

    def add(self, piece: bytes, start: float, end: float) -> Word | None:
        """Feed one piece (UTF-8 bytes) and its span; returns the word it completed, if any."""
        if not piece:
            return None
        done = None
        if piece[:1].isspace() and self._bytes.strip():
            done = self._word()
        if not self._bytes:
            self._first = start
            self._start, self._marker = self._marker, None
        self._bytes += piece
        self._end = end
        return done

    def mark(self, time: float) -> Word | None:
        """A word starts at `time` (its text comes later); returns the word it completed."""
        done = self._word() if self._bytes.strip() else None
        self._marker = time
        return done

    def flush(self) -> Word | None:
        """The word in progress, if any (at the end of the audio)."""
        return self._word() if self._bytes.strip() else None

    def settle(self, before: float) -> Word | None:
        """The word in progress, if its text has had nothing added since `before` (a pause
        after it): complete without waiting for the next word. Text that continues it later
        starts a word of its own."""
        return self._word() if self._bytes.strip() and self._end <= before else None

    @property
    def open_since(self) -> float | None:
        """The earliest time a word not returned yet can start (its marker's or its first
        piece's, before clamping); None when no word is in progress."""
        times = [self._marker] + ([self._start, self._first] if self._bytes else [])
        return min((t for t in times if t is not None), default=None)

    @property
    def marker(self) -> float | None:
        """The time of a marker whose word's text has not come yet."""
        return self._marker

    def unmark(self) -> None:
        """Give up the marker whose text has not come: the next piece starts a word of its own."""
        self._marker = None

    @property
    def word_start(self) -> float | None:
        """Where the word in progress began (unclamped): its marker, else its first piece."""
        if not self._bytes:
            return None
        return self._start if self._start is not None else self._first

    def _word(self) -> Word:
        text = self._bytes.decode("utf-8", errors="replace").strip()
        if self._start is not None:  # marked at its start, written at its end
            start, end = self._start, self._first
        else:
            start, end = self._first, self._end
        self._bytes = b""
        return Word(text, *self._clamp(start, end))

    def _clamp(self, start: float, end: float) -> tuple[float, float]:
        hi = self.duration if self.duration is not None else max(end, 0.0)
        start = min(max(start, 0.0), hi)
        return round(start, 3), round(min(max(end, start), hi), 3)


class WordTracker:
    """Groups (position, token id) pairs into words as they stream in: the token at
    position p is the piece `vocab[id]` over [t(p), t(p + 1)]; [STREAMING_WORD] a marker."""

    def __init__(self, tokenizer: Tokenizer, schedule: Schedule, duration: float | None = None):
        self.tokenizer = tokenizer
        self.step_time = schedule.step_time
        self.words = WordBuilder(duration)

    @property
    def duration(self) -> float | None:
        return self.words.duration

    @duration.setter
    def duration(self, seconds: float | None) -> None:
        self.words.duration = seconds

    def add(self, position: int, token_id: int) -> Word | None:
        """Feed one generated token; returns the word this token completed, if any."""
        if token_id == self.tokenizer.streaming_word_id:
            return self.words.mark(self.step_time(position))
        piece = self.tokenizer.byte_piece(token_id)
        return self.words.add(piece, self.step_time(position), self.step_time(position + 1))

    def flush(self) -> Word | None:
        """The word in progress, if any (at the end of the audio)."""
        return self.words.flush()

    @property
    def open_since(self) -> float | None:
        return self.words.open_since

    def settle(self, position: int, pause: float) -> Word | None:
        """The word in progress, if no text has been added to it for `pause` seconds of
        audio by the output at `position` (WordBuilder.settle)."""
        return self.words.settle(self.step_time(position + 1) - pause)


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
