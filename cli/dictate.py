"""`voxtral dictate`: capture -> Session -> DictationText -> keystrokes into the focused
window. A hotkey pauses and resumes listening (with --hold: listens while it is held); each
pause, the end of the input and Ctrl+C flush the last words first."""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.text import Text

from voxtral_mlx import TextDelta, VoxtralError
from voxtral_mlx.dictation import DictationText

from .capture import Source, sounddevice
from .keyboard import Hotkey, Keyboard
from .live import LiveStatus, level_meter, stop_on_ctrl_c

PHRASE_PAUSE = 0.6  # --paste: this long without new text ends a phrase
PHRASE_ENDS = (".", "?", "!", "\n")
# why text waits (and, when a dictation ends, why it goes to stdout instead)
OWN_TERMINAL = "the focus is on this terminal"
NO_FOCUS = "no window has the keyboard focus"
HOTKEY_HELD = "the hotkey is held"


@dataclass(frozen=True)
class DictateOptions:
    hotkey: Hotkey
    hold: bool = False  # push-to-talk: listen while the hotkey is held
    paste: bool = False  # through the clipboard, a phrase at a time
    commands: bool = False  # spoken "new line", "new paragraph" become line breaks
    cue: bool = True  # a sound when listening starts and stops
    dry_run: bool = False  # print what would be typed


class Typist:
    """Types the dictated text when nothing stands in the way: never while a modifier of the
    hotkey is held (the keys typed would become shortcuts), never into `own` (the terminal
    dictate runs in), never into no window; with --paste, a phrase at a time.

    `keyboard` None (--dry-run): the text goes to `write`. Text that cannot be typed when a
    dictation ends goes to stdout, and `say` says so."""

    def __init__(
        self,
        text: DictationText,
        keyboard: Keyboard | None,
        paste: bool,
        own,
        write: Callable[[str], None],
        say: Callable[[str], None],
    ):
        self.text, self.keyboard, self.paste, self.own = text, keyboard, paste, own
        self.write, self.say = write, say
        self.typed = 0  # characters
        self.waiting: str | None = None  # why the pending text is not typed yet
        self._ending = False  # the dictation stopped: its last text goes out now
        self._target = None  # the window typed into last
        self._changed_at = 0.0

    def push(self, delta: str, now: float) -> None:
        before = self.text.pending
        self.text.push(delta)
        if self.text.pending != before:
            self._changed_at = now

    def end(self) -> None:
        """The dictation stopped: held text is decided and its last phrase is complete."""
        self.text.flush()
        self._ending = True

    def poll(self, now: float, hotkey_held: bool = False) -> None:
        """Type what is pending, if it can be typed now."""
        self.waiting = None
        if not self.text.pending:
            self._ending = False
            return
        if self.keyboard is None:
            self._out(self.text.take(), self.write)
            return
        if hotkey_held:
            self.waiting = HOTKEY_HELD
            return
        if self.paste and not self._ending and not self._phrase_done(now):
            return
        window = self.keyboard.focus()
        if window in (self.own, 0):
            self.waiting = OWN_TERMINAL if window == self.own else NO_FOCUS
            if self._ending:
                self.spill(self.waiting)
            return
        if window != self._target:
            self.text.new_target()
            self._target = window
        send = self.keyboard.paste if self.paste else self.keyboard.type
        self._out(self.text.take(), send)

    def spill(self, why: str) -> None:
        """What is still pending goes to stdout instead."""
        self.waiting = None
        self._ending = False
        if text := self.text.take():
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
            self.say(f"not typed ({why}): {len(text)} characters printed on stdout")

    def _out(self, text: str, send: Callable[[str], None]) -> None:
        if text:
            send(text)
            self.typed += len(text)
        self._ending = False

    def _phrase_done(self, now: float) -> bool:
        pending = self.text.pending.rstrip(" ")
        return pending.endswith(PHRASE_ENDS) or now - self._changed_at >= PHRASE_PAUSE


def cue_tones(start: bool, rate: int) -> np.ndarray:
    """Two 70 ms tones, rising (listening) or falling (paused), faded in and out."""
    t = np.arange(int(0.07 * rate)) / rate
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)
    notes = (660.0, 880.0) if start else (880.0, 660.0)
    return np.concatenate([0.2 * fade * np.sin(2 * np.pi * f * t) for f in notes]).astype(
        np.float32
    )


class Cue:
    """The sounds when listening starts and stops, on the default output; silence where
    there is none."""

    def __init__(self):
        self._sd = None
        try:
            sd = sounddevice()
        except VoxtralError:  # no PortAudio
            return
        try:
            self._rate = int(sd.query_devices(kind="output")["default_samplerate"])
        except (sd.PortAudioError, ValueError):  # no output device
            return
        self._sd = sd

    def play(self, start: bool) -> None:
        if self._sd is None:
            return
        try:
            self._sd.play(cue_tones(start, self._rate), self._rate)
        except self._sd.PortAudioError:
            self._sd = None


class Dictation:
    """One `voxtral dictate` run: listening or paused, the hotkey, the text on its way."""

    def __init__(self, session, source: Source, keyboard: Keyboard | None, options: DictateOptions):
        self.session, self.source, self.keyboard, self.options = session, source, keyboard, options
        self.status = LiveStatus(source, session)
        self.wrote = False  # text went to stdout
        err = Console(stderr=True)
        # --dry-run's text above the status when both go to the one terminal, else on stdout
        shown = options.dry_run and sys.stdout.isatty() and err.is_terminal
        self.view = StatusView(err, shows_text=shown)
        self.hotkey = keyboard.hotkey if keyboard else None
        # started from a terminal, that terminal had the focus: never type into it
        typing = keyboard if not options.dry_run else None
        own = (typing.first_focus or None) if typing and sys.stdin.isatty() else None
        self.typist = Typist(
            DictationText(options.commands),
            typing,
            options.paste,
            own,
            write=self.view.add_text if self.view.shows_text else self._stdout,
            say=self.view.warn,
        )
        self.cue = Cue() if options.cue else None
        self.listening = False
        self.heard = 0.0  # seconds of input taken from the source
        self.since = 0.0  # when the input was at the last change of state

    def run(self, stop: threading.Event) -> None:
        self.view.start(self)
        if not self.options.hold:
            self.resume()
        for block in self.source.blocks(stop):
            self._take(block)  # heard before the hotkey events seen below
            now = time.monotonic()
            self._hotkey(now)
            if warning := self.status.silence_warning():
                self.view.warn(warning)
            self.typist.poll(now, self._hotkey_held())
            self.view.update(self)
        if self.listening:
            self.pause()
        self.typist.spill(HOTKEY_HELD)

    def resume(self) -> None:
        if self.session.result is not None:  # finished by a pause
            for block in self.source.queued():  # heard while paused
                self._take(block)
            self.session.reset()
        self.listening = True
        self.since = self.heard
        self._cue(True)
        self.view.update(self)

    def pause(self) -> None:
        """Stop listening; the words heard so far are flushed and typed first."""
        for block in self.source.queued():  # heard before the hotkey was pressed
            self._take(block)
        self._handle(self.session.finish())
        self.typist.end()
        self.listening = False
        self.since = self.heard
        self._cue(False)
        self.typist.poll(time.monotonic(), self._hotkey_held())
        self.view.update(self)

    def close(self) -> None:
        if self.keyboard is not None:
            self.keyboard.close()
        if self.wrote:  # text on stdout ends its line before the status's last line
            _stdout("\n")
        self.view.stop(self)

    def _stdout(self, text: str) -> None:
        self.wrote = self.wrote or bool(text)
        _stdout(text)

    def _hotkey(self, now: float) -> None:
        if self.hotkey is None:
            return
        while True:
            try:
                key, pressed = self.keyboard.events.get_nowait()
            except queue.Empty:
                break
            if self.hotkey.update(key, pressed, now):
                if not self.listening:
                    self.resume()
                elif not self.options.hold:
                    self.pause()
        if self.hotkey.released(now) and self.options.hold and self.listening:
            self.pause()

    def _hotkey_held(self) -> bool:
        return self.hotkey is not None and self.hotkey.modifiers_held

    def _take(self, block: np.ndarray) -> None:
        """A block from the source: transcribed while listening, only measured otherwise."""
        tic = time.perf_counter()
        if self.listening:
            self._handle(self.session.feed(block))
        self.status.block(block, self.source.rate, time.perf_counter() - tic)
        self.heard += len(block) / self.source.rate

    def _handle(self, events) -> None:
        now = time.monotonic()
        for event in events:
            if isinstance(event, TextDelta):
                self.typist.push(event.text, now)

    def _cue(self, start: bool) -> None:
        if self.cue is not None:
            self.cue.play(start)

    def hint(self) -> str:
        key = self.options.hotkey
        if self.options.hold:
            return f"hold {key} to talk"
        return f"{key} {'pauses' if self.listening else 'listens'}"

    def state(self) -> str:
        """The state in words, for the log lines when stderr is no terminal."""
        state = f"{'listening' if self.listening else 'paused'} at {self.since:.2f} s of input"
        return f"{state}; waiting: {self.typist.waiting}" if self.typist.waiting else state


class StatusView:
    """The one-line status on stderr: redrawn in place on a terminal (with --dry-run's text
    above it when stdout is that terminal too); elsewhere, a line for each change."""

    def __init__(self, console: Console, shows_text: bool):
        self.console = console
        self.shows_text = shows_text
        self.live = Live(console=console, auto_refresh=False) if console.is_terminal else None
        self._text: list[str] = []
        self._last = ""
        self._drawn = 0.0

    def start(self, d: Dictation) -> None:
        keys = "no hotkey"
        if d.hotkey is not None:
            keys = f"hotkey {d.options.hotkey}" + (" (hold to talk)" if d.options.hold else "")
        self.line(
            f"dictating from {d.source.name} @ {d.source.rate} Hz, delay {d.session.delay_ms} "
            f"ms; {keys}; Ctrl+C stops"
        )
        if self.live:
            self.live.start()

    def update(self, d: Dictation) -> None:
        if self.live is None:
            if (state := d.state()) != self._last:
                self.line(state)
                self._last = state
        elif time.monotonic() - self._drawn > 0.1:
            self.live.update(self._render(d), refresh=True)
            self._drawn = time.monotonic()

    def stop(self, d: Dictation) -> None:
        if self.live:
            self.live.update(self._render(d), refresh=True)
            self.live.stop()
        typed = f": {d.typist.typed} characters typed" if d.typist.keyboard else ""
        self.line(f"stopped at {d.heard:.2f} s of input{typed}")

    def add_text(self, text: str) -> None:
        self._text.append(text)

    def line(self, message: str) -> None:
        self.console.print(message, highlight=False, soft_wrap=True, markup=False)

    def warn(self, message: str) -> None:
        self.console.print(Text.assemble(("warning:", "yellow"), f" {message}"), soft_wrap=True)

    def _render(self, d: Dictation):
        status = d.status
        head = ("● listening  ", "bold red") if d.listening else ("‖ paused  ", "bold")
        latency = f"latency {status.latency_ms:5.0f} ms  " if d.listening else ""
        line = Text.assemble(head)
        if waiting := d.typist.waiting:  # first: a narrow terminal cuts the end of the line
            hint = " (switch to the window to type into)" if waiting == OWN_TERMINAL else ""
            line.append(f"waiting: {waiting}{hint}  ", "yellow")
        line.append_text(Text.assemble(level_meter(status.level_db), latency, (d.hint(), "dim")))
        line.truncate(self.console.width, overflow="ellipsis")
        if not self.shows_text:
            return line
        shown = "".join(self._text)[-6 * self.console.width :]
        return Group(Panel(Text(shown), title="would type (--dry-run)"), line)


def _stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def run_dictate(session, source: Source, keyboard: Keyboard | None, options: DictateOptions):
    """Dictate from `source` (through `session`, opened at its rate) until it ends or Ctrl+C."""
    stop = threading.Event()
    with stop_on_ctrl_c(stop):
        try:
            dictation = Dictation(session, source, keyboard, options)
        except BaseException:
            source.close()
            raise
        try:
            dictation.run(stop)
        finally:
            source.close()
            dictation.close()
