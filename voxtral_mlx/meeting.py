"""Two speakers, one transcript: the words of a meeting's two streams in time order.

`voxtral meeting` transcribes the microphone (you) and the computer's own output (the
others, what the call plays) as two streams of one SessionPool. `Conversation` takes each
stream's words (WordDone) and how far each stream is settled (`Session.settled_seconds`:
every word starting before it is out) and hands the words back in the order they were
said, append-only: a word goes out once no stream can still bring an earlier one.

Echo: without headphones the microphone hears the call, and its stream writes the call's
words a little later. A word of the microphone's stream is dropped when the system stream
has the same word (compared without case and surrounding punctuation) at most
`echo_window` seconds away: the gap between the two words' spans, 0 where they overlap. So
a microphone word waits until the system stream is settled `echo_window` past its end.
The window is measured (benchmarks/RESULTS.md, "Echo window"): the echo's delay less the
word's length, plus the models' timing error.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from .words import Word

# A microphone word and the system stream's same word this close (seconds between their
# spans) are one word said by the call: with echoes 0 to 400 ms late the gap measured
# 0.32 s at most (benchmarks/RESULTS.md "Echo window"), plus one 80 ms step
ECHO_WINDOW = 0.40
# A word is complete after this much audio without new text (Session.settle_seconds): a
# speaker's last word is shown before they speak again. Eight 80 ms steps: a pause inside a
# word (between its pieces) is shorter
SETTLE_SECONDS = 0.64
PUNCTUATION = ".,;:!?\"'()[]{}«»“”‘’…-"


@dataclass(frozen=True)
class Said:
    """A word in the meeting's transcript."""

    speaker: str
    word: Word


@dataclass(frozen=True)
class Echo:
    """A word of the microphone's stream dropped as the echo of the call's `heard`."""

    speaker: str
    word: Word
    heard: Word


def same_word(a: str, b: str) -> bool:
    return a.strip(PUNCTUATION).casefold() == b.strip(PUNCTUATION).casefold()


def gap(a: Word, b: Word) -> float:
    """The time between two words' spans; 0 where they overlap. To the millisecond, as
    word times are."""
    return round(max(a.start - b.end, b.start - a.end, 0.0), 3)


class Conversation:
    """The words of `you` (the microphone's stream) and `others` (the system stream) in one
    time order, with the microphone's echoes of the call dropped.

        conversation.add("you", word)         # each stream's words, as they come
        conversation.advance("you", seconds)  # that stream's settled time (inf: it ended)
        for item in conversation.take(): ...  # Said or Echo, in time order, once settled

    Words of one stream must come in the order of their starts (a Session's do)."""

    def __init__(self, you: str, others: str, echo_window: float = ECHO_WINDOW):
        if you == others:
            raise ValueError(f"the two speakers need two names, got {you!r} twice")
        self.you, self.others = you, others
        self.echo_window = echo_window
        self._waiting: dict[str, deque[Word]] = {you: deque(), others: deque()}
        self._settled = {you: 0.0, others: 0.0}
        self._heard: deque[Word] = deque()  # the system stream's words an echo may repeat
        self._said: dict[str, list[str]] = {you: [], others: []}

    @property
    def speakers(self) -> tuple[str, str]:
        return self.you, self.others

    def add(self, speaker: str, word: Word) -> None:
        self._waiting[speaker].append(word)
        if speaker == self.others:
            self._heard.append(word)

    def advance(self, speaker: str, settled: float) -> None:
        """Every word of `speaker` starting before `settled` has been added."""
        self._settled[speaker] = max(self._settled[speaker], settled)

    def text(self, speaker: str) -> str:
        """What `speaker` said so far (the words taken), echoes left out."""
        return " ".join(self._said[speaker])

    def take(self) -> list[Said | Echo]:
        """The words whose place is settled, in time order (ties: `you` first)."""
        out: list[Said | Echo] = []
        while (item := self._next()) is not None:
            out.append(item)
        self._forget_heard()
        return out

    def _next(self) -> Said | Echo | None:
        heads = [(w[0].start, s != self.you, s) for s, w in self._waiting.items() if w]
        if not heads:
            return None
        start, _, speaker = min(heads)
        other = self.others if speaker == self.you else self.you
        if self._settled[other] < start:  # the other stream may still say something earlier
            return None
        head = self._waiting[speaker][0]
        if speaker == self.you and self._settled[self.others] < head.end + self.echo_window:
            return None  # the call's word this one may echo can still come
        word = self._waiting[speaker].popleft()
        if speaker == self.you and (heard := self._echoed(word)) is not None:
            return Echo(speaker, word, heard)
        self._said[speaker].append(word.text)
        return Said(speaker, word)

    def _echoed(self, word: Word) -> Word | None:
        for heard in self._heard:
            if gap(heard, word) <= self.echo_window and same_word(heard.text, word.text):
                return heard
        return None

    def _forget_heard(self) -> None:
        """The system stream's words no microphone word to come can echo any more."""
        waiting = self._waiting[self.you]
        upcoming = waiting[0].start if waiting else self._settled[self.you]
        if math.isinf(upcoming):
            self._heard.clear()
            return
        while self._heard and self._heard[0].end < upcoming - self.echo_window:
            self._heard.popleft()
