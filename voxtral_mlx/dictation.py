"""What dictation types for the text a Session commits.

Voxtral never revises what it emitted, so each TextDelta can be typed as soon as it comes.
`DictationText` turns the deltas into the text to type:

- no white space before the first word typed into a window, nor after a line break (the
  model writes a space before every word); capitals are kept as the model writes them;
- with `commands`, the spoken "new line" and "new paragraph" become line breaks, with the
  spaces around them and the punctuation the model puts after them dropped. Text that may
  still turn out to be a command ("new", "new li") is held back until the next words tell,
  or until `flush()` (the end of the dictation).
"""

from __future__ import annotations

import re

COMMANDS = {"new line": "\n", "new paragraph": "\n\n"}
# "new line" as words of their own, the white space before them included (dropped with them)
COMMAND = re.compile(r"\s*\b(new\s+(?:line|paragraph))\b", re.IGNORECASE)
AFTER_COMMAND = " \t.,;:!?"  # what the model writes after a spoken command: dropped


class DictationText:
    """Deltas in (`push`), the text to type out (`take`): pure, no display needed."""

    def __init__(self, commands: bool = False):
        self.commands = commands
        self._pending = ""  # decided, not typed yet
        self._held = ""  # may be the start of a command
        self._after_command = False
        self._last_typed = ""  # the last character typed into this window ('': none yet)

    @property
    def pending(self) -> str:
        """The decided text not typed yet (what `take` returns, before its leading space
        is dropped)."""
        return self._pending

    def push(self, delta: str) -> None:
        """A TextDelta's text."""
        if self.commands:
            self._scan(self._held + delta, final=False)
        else:
            self._decide(delta)

    def flush(self) -> None:
        """The dictation ends: text held back as a possible command is decided."""
        if self._held:
            self._scan(self._held, final=True)

    def take(self) -> str:
        """The text to type now; from here on it counts as typed."""
        text, self._pending = self._pending, ""
        if self._last_typed in ("", "\n"):
            text = text.lstrip(" \t")
        if text:
            self._last_typed = text[-1]
        return text

    def new_target(self) -> None:
        """The next text goes into another window: it starts without a space."""
        self._last_typed = ""

    def _decide(self, piece: str) -> None:
        if self._after_command:
            piece = piece.lstrip(AFTER_COMMAND)
            if not piece:
                return
            self._after_command = False
        self._pending += piece

    def _scan(self, text: str, final: bool) -> None:
        self._held = ""
        start = 0
        while m := COMMAND.search(text, start):
            if not m.group()[:1].isspace() and not self._word_start(text, m.start()):
                start = m.start() + 1  # "re" + "new line": inside a word, not a command
                continue
            self._decide(text[: m.start()])
            if m.end() == len(text) and not final:  # "new line" may go on: "new lines"
                self._held = text[m.start() :]
                return
            self._pending += COMMANDS[" ".join(m.group(1).lower().split())]
            self._after_command = True
            text, start = text[m.end() :], 0
        cut = len(text) if final else self._possible_command(text)
        self._decide(text[:cut])
        self._held = text[cut:]

    def _possible_command(self, text: str) -> int:
        """Where the end of `text` may be the start of a command, or is only white space (which
        a command would drop): the index it starts at; len(text) where there is none."""
        for i, char in enumerate(text):
            run_start = char.isspace() and not text[i - 1 : i].isspace()
            if not run_start and not (i == 0 and self._word_start(text, 0)):
                continue
            words = " ".join(text[i:].lower().split()) + (" " if text[-1].isspace() else "")
            if not words.strip() or any(c.startswith(words) for c in COMMANDS):
                return i
        return len(text)

    def _word_start(self, text: str, i: int) -> bool:
        """Whether text[i] follows white space, or nothing at all."""
        before = text[i - 1] if i else (self._pending[-1:] or self._last_typed)
        return before == "" or before.isspace()
