"""Transcript files: txt, srt, vtt, json (whole files) and jsonl (a live event log); a
meeting's (two speakers) also md.

Subtitle cues are built from word timings. `CueBuilder` closes a cue as soon as it is full,
so the live mode can append cues to a file while it listens.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # annotations only: the CLI checks formats before loading the model
    from .events import Transcript
    from .meeting import Echo
    from .words import Word

FORMATS = ("txt", "srt", "vtt", "json")
LIVE_FORMATS = ("txt", "srt", "vtt", "jsonl")
MEETING_FORMATS = ("txt", "md", "srt", "vtt", "jsonl")
MAX_CUE_CHARS = 42  # one subtitle line, the usual broadcast limit
MAX_CUE_SECONDS = 6.0
MAX_GAP_SECONDS = 1.2  # a pause this long starts a new cue


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


class CueBuilder:
    """Groups words into cues: a cue closes at sentence ends, long pauses, or when full."""

    def __init__(self, one_word_per_cue: bool = False):
        self.one_word = one_word_per_cue
        self._words: list[Word] = []

    def add(self, word: Word) -> Cue | None:
        done = None
        if self._words and self._must_break(word):
            done = self.flush()
        self._words.append(word)
        if self.one_word or word.text.endswith((".", "?", "!")):
            done = done or self.flush()
        return done

    def flush(self) -> Cue | None:
        if not self._words:
            return None
        words, self._words = self._words, []
        return Cue(
            words[0].start, max(words[-1].end, words[0].start), " ".join(w.text for w in words)
        )

    def _must_break(self, word: Word) -> bool:
        text = " ".join(w.text for w in self._words) + " " + word.text
        return (
            len(text) > MAX_CUE_CHARS
            or word.end - self._words[0].start > MAX_CUE_SECONDS
            or word.start - self._words[-1].end > MAX_GAP_SECONDS
        )


def cues(words: Iterable[Word], one_word_per_cue: bool = False) -> list[Cue]:
    builder = CueBuilder(one_word_per_cue)
    out = [c for w in words if (c := builder.add(w))]
    last = builder.flush()
    return out + [last] if last else out


def timestamp(seconds: float, sep: str) -> str:
    ms = round(max(seconds, 0.0) * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def clock(seconds: float) -> str:
    """hh:mm:ss, the time of a speaker's turn."""
    s = int(max(seconds, 0.0))
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def srt_cue(index: int, cue: Cue) -> str:
    return f"{index}\n{timestamp(cue.start, ',')} --> {timestamp(cue.end, ',')}\n{cue.text}\n\n"


def vtt_cue(cue: Cue) -> str:
    return f"{timestamp(cue.start, '.')} --> {timestamp(cue.end, '.')}\n{cue.text}\n\n"


def to_json(result: Transcript, source: str) -> str:
    data = {
        "source": source,
        "text": result.text,
        "delay_ms": result.delay_ms,
        "words": [asdict(w) for w in result.words],
        "segments": [asdict(c) for c in cues(result.words)],
        "tokens": result.tokens,
        "stats": asdict(result.stats),
    }
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


def render(result: Transcript, fmt: str, source: str, word_timestamps: bool = False) -> str:
    if fmt == "txt":
        return result.text + "\n"
    if fmt == "json":
        return to_json(result, source)
    items = cues(result.words, one_word_per_cue=word_timestamps)
    if fmt == "srt":
        return "".join(srt_cue(i, c) for i, c in enumerate(items, 1))
    if fmt == "vtt":
        return "WEBVTT\n\n" + "".join(vtt_cue(c) for c in items)
    raise ValueError(f"unknown format {fmt}")


class TextStream:
    """Deltas as a reader should see them: the white space before the first word dropped
    (a transcript starts with its first word, as `Transcript.text` does)."""

    def __init__(self):
        self.started = False

    def push(self, delta: str) -> str:
        if not self.started:
            delta = delta.lstrip()
            self.started = bool(delta)
        return delta


class StrippedStream(TextStream):
    """Deltas that add up to the text stripped, as `Transcript.text` is: white space before
    the first word dropped, and white space at the end of a delta held back until text
    follows it."""

    def __init__(self):
        super().__init__()
        self._held = ""

    def push(self, delta: str) -> str:
        text = super().push(self._held + delta)
        kept = text.rstrip()
        self._held = text[len(kept) :]
        return kept


class TranscriptFile:
    """A transcript file written while listening, in one of `formats` (read from the path's
    suffix): what `LiveWriter` and `MeetingWriter` share. Its folder is made if missing.
    Subtitle cues are numbered as they are written; every jsonl event is one line."""

    formats: tuple[str, ...] = LIVE_FORMATS

    def __init__(self, path: Path, word_timestamps: bool = False, *, target: Path | None = None):
        """Writes into `target` (default: `path` itself)."""
        self.path = path
        self.format = path.suffix.lstrip(".").lower()
        if self.format not in self.formats:
            raise ValueError(
                f"cannot write {path.name}: the live output must end in "
                + ", ".join(f".{f}" for f in self.formats)
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = (target or path).open("w", encoding="utf-8", buffering=1)
        self._cues = CueBuilder(word_timestamps)
        self._count = 0
        if self.format == "vtt":
            self._file.write("WEBVTT\n\n")

    def _cue(self, cue: Cue) -> None:
        if self.format == "srt":
            self._count += 1
            self._file.write(srt_cue(self._count, cue))
        elif self.format == "vtt":
            self._file.write(vtt_cue(cue))

    def _line(self, data: dict) -> None:
        self._file.write(json.dumps(data, ensure_ascii=False) + "\n")


class LiveWriter(TranscriptFile):
    """Writes a transcript file while listening: every line is final once written. A run
    that fails before any text (`close(None)`) leaves no file behind."""

    def __init__(self, path: Path, word_timestamps: bool = False):
        super().__init__(path, word_timestamps)
        self._written = False  # any text or word

    def text(self, delta: str, start: float | None, end: float | None) -> None:
        """New text; `start`/`end` None (null in jsonl) when they are not known."""
        self._written = True
        if self.format == "txt":
            self._file.write(delta)
        elif self.format == "jsonl":
            self._line({"type": "text", "text": delta, "start": start, "end": end})
        self._file.flush()

    def word(self, word: Word) -> None:
        self._written = True
        if self.format == "jsonl":
            self._line({"type": "word", **asdict(word)})
        elif cue := self._cues.add(word):
            self._cue(cue)
        self._file.flush()

    def close(self, final: Transcript | None) -> None:
        """The end: `final`, the whole transcript, or None when the run failed."""
        if final is None and not self._written:
            self._file.close()
            self.path.unlink(missing_ok=True)
            return
        if (cue := self._cues.flush()) is not None:
            self._cue(cue)
        if self.format == "txt":
            self._file.write("\n")
        elif self.format == "jsonl" and final is not None:
            done = {"type": "done", "text": final.text, "delay_ms": final.delay_ms}
            self._line(done | {"stats": asdict(final.stats)})
        self._file.close()


class MeetingWriter(TranscriptFile):
    """A meeting's transcript, two speakers, written while listening into a hidden file
    beside `path` (`.NAME.part`) and renamed to `path` by `close`: `path` is whole or not
    there (`discard` removes the part file).

    txt and md: a paragraph per turn (one speaker's words until the other speaks), with the
    turn's start time; srt and vtt: cues of one speaker, the name before the text; jsonl: a
    `speaker` field on every event (word, echo, done)."""

    formats = MEETING_FORMATS

    def __init__(self, path: Path):
        self.part = path.with_name(f".{path.name}.part")
        super().__init__(path, target=self.part)
        self._speaker: str | None = None  # the speaker of the turn (or the cue) in progress

    def said(self, speaker: str, word: Word) -> None:
        turn = speaker != self._speaker
        if self.format in ("txt", "md"):
            if turn:
                self._file.write(self._turn(speaker, word.start))
            self._file.write(word.text if turn else " " + word.text)
        elif self.format == "jsonl":
            self._line({"type": "word", "speaker": speaker, **asdict(word)})
        else:
            if turn and (cue := self._cues.flush()) is not None:
                self._cue(cue)  # the other speaker's last cue
            self._speaker = speaker
            if cue := self._cues.add(word):
                self._cue(cue)
        self._speaker = speaker
        self._file.flush()

    def echo(self, echo: Echo) -> None:
        """A word dropped as the call's echo: jsonl keeps it, with the word it repeats."""
        if self.format == "jsonl":
            heard = {"heard_start": echo.heard.start, "heard_end": echo.heard.end}
            self._line({"type": "echo", "speaker": echo.speaker, **asdict(echo.word)} | heard)
            self._file.flush()

    def done(self, speaker: str, text: str, final: Transcript) -> None:
        """A speaker's stream is finished: `text` is what they said (echoes left out)."""
        if self.format == "jsonl":
            done = {"type": "done", "speaker": speaker, "text": text, "delay_ms": final.delay_ms}
            self._line(done | {"stats": asdict(final.stats)})

    def close(self) -> None:
        """The transcript is complete: the part file becomes `path`."""
        if (cue := self._cues.flush()) is not None:
            self._cue(cue)
        if self.format in ("txt", "md") and self._speaker is not None:
            self._file.write("\n")
        self._file.close()
        self.part.replace(self.path)

    def discard(self) -> None:
        self._file.close()
        self.part.unlink(missing_ok=True)

    def _turn(self, speaker: str, start: float) -> str:
        """The start of a turn: after the last one's end, its time and the speaker's name."""
        gap = "" if self._speaker is None else "\n\n" if self.format == "md" else "\n"
        if self.format == "md":
            return f"{gap}**{speaker}** ({clock(start)}): "
        return f"{gap}[{clock(start)}] {speaker}: "

    def _cue(self, cue: Cue) -> None:
        super()._cue(Cue(cue.start, cue.end, f"{self._speaker}: {cue.text}"))
