"""`voxtral live`: capture -> Session (which resamples) -> terminal view, stdout and a file."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.text import Text

from voxtral_mlx import TextDelta, Transcript, WordDone
from voxtral_mlx.formats import LiveWriter, TextStream

from .capture import FileSource, Source, overflow_warning

SILENCE_WARNING_SECONDS = 4.0
PERMISSION_HINT = (
    "the input has been digital silence for {s:.0f} s: is the microphone muted or blocked? "
    "On macOS, allow your terminal in System Settings > Privacy & Security > Microphone"
)


class LiveStatus:
    """Numbers for the view: level, real-time factor, backlog and latency."""

    def __init__(self, source: Source, session):
        self.source, self.session = source, session
        self.level_db = -120.0
        self.recent = deque(maxlen=40)  # (audio seconds, processing seconds) per block
        self.silent_for = 0.0
        self.warned = False

    def block(self, samples: np.ndarray, rate: int, processing: float) -> None:
        seconds = len(samples) / rate
        peak = float(np.max(np.abs(samples))) if len(samples) else 0.0
        rms = float(np.sqrt(np.mean(np.square(samples)))) if len(samples) else 0.0
        self.level_db = 20 * np.log10(max(rms, 1e-6))
        self.silent_for = self.silent_for + seconds if peak == 0.0 else 0.0
        self.recent.append((seconds, processing))

    def silence_warning(self) -> str | None:
        """The permission hint, once, after SILENCE_WARNING_SECONDS of digital silence from
        a microphone (silence in a replayed file is no permission issue)."""
        if self.warned or self.silent_for <= SILENCE_WARNING_SECONDS:
            return None
        if isinstance(self.source, FileSource):
            return None
        self.warned = True
        return PERMISSION_HINT.format(s=self.silent_for)

    @property
    def rtf(self) -> float:
        audio = sum(a for a, _ in self.recent)
        return sum(p for _, p in self.recent) / audio if audio else 0.0

    @property
    def backlog(self) -> float:
        waiting = self.session.backlog_seconds  # (a remote session's is the server's: 0)
        if waiting:  # less one token: the session always waits for the rest of the token
            waiting = max(waiting - self.session.schedule.seconds_per_token, 0.0)
        return self.source.backlog_seconds() + waiting

    @property
    def latency_ms(self) -> float | None:
        """None while the delay is not known (a server that does not say which it uses)."""
        if self.session.delay_ms is None:
            return None
        token = self.session.schedule.seconds_per_token
        return self.session.delay_ms + 1000 * (self.backlog + token * self.rtf)


def level_meter(level_db: float) -> tuple[str, str]:
    """The input level as a 20-cell bar, with its style: green once there is sound."""
    level = int(max(min((level_db + 60) / 60, 1.0), 0.0) * 20)
    bar = "█" * level + "░" * (20 - level)
    return f"{bar} {level_db:5.0f} dB  ", "green" if level_db > -50 else "dim"


@contextmanager
def stop_on_ctrl_c(stop: threading.Event) -> Iterator[None]:
    """The first Ctrl+C sets `stop` (the caller flushes the last words and ends); a second
    one gives up at once."""

    def interrupt(signum, frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def source_line(status: LiveStatus, label: str = "", style: str = "red") -> Text:
    """A source's line under the transcript: its name and rate, level, latency, real-time
    factor and backlog (`label`: whose source it is)."""
    latency = "?" if status.latency_ms is None else f"{status.latency_ms:.0f}"
    return Text.assemble(
        ("● ", style),
        (f"{label}: " if label else "", f"bold {style}"),
        (f"{status.source.name} @ {status.source.rate} Hz  ", "bold"),
        level_meter(status.level_db),
        f"latency {latency:>5} ms  RTF {status.rtf:4.2f}  backlog {status.backlog:4.1f} s",
    )


def view(title: str, body: Text, lines: list[Text]) -> Group:
    """The live view: the transcript in a panel, the sources' lines under it."""
    shown = body if body.plain else Text("listening…", style="dim")
    return Group(Panel(shown, title=title), *lines)


def render(status: LiveStatus, text: str, width: int) -> Group:
    lines = max(width - 4, 20)
    shown = text[-lines * 6 :]  # the rolling transcript: the last few lines
    return view("voxtral live", Text(shown), [source_line(status)])


def run_live(
    session,
    source: Source,
    output: Path | None,
    console: Console,
    word_timestamps: bool = False,
) -> Transcript:
    """Stream `source` into `session` (a local Session, or a RemoteSession, opened at the
    source's rate) until the source ends or Ctrl+C; the last words are flushed either way."""
    status = LiveStatus(source, session)
    writer = LiveWriter(output, word_timestamps) if output else None
    stop = threading.Event()
    on_terminal = sys.stdout.isatty()
    transcript: list[str] = []
    shown = TextStream()
    err = Console(stderr=True)

    def handle(events) -> None:
        for event in events:
            if isinstance(event, TextDelta) and (text := shown.push(event.text)):
                transcript.append(text)
                if not on_terminal:
                    sys.stdout.write(text)
                    sys.stdout.flush()
                if writer:
                    writer.text(text, event.start, event.end)
            elif isinstance(event, WordDone) and writer:
                writer.word(event.word)

    final: Transcript | None = None
    live = Live(console=console, auto_refresh=False, transient=False) if on_terminal else None
    with stop_on_ctrl_c(stop):
        try:
            if live:
                live.start()
            else:
                delay = "unknown" if session.delay_ms is None else f"{session.delay_ms} ms"
                err.print(
                    f"listening: {source.name} @ {source.rate} Hz, delay {delay} (Ctrl+C to stop)",
                    highlight=False,
                    markup=False,
                )
            last_draw = 0.0
            for block in source.blocks(stop):
                tic = time.perf_counter()
                handle(session.feed(block))
                status.block(block, source.rate, time.perf_counter() - tic)
                if warning := status.silence_warning():
                    (live.console if live else err).print(
                        f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True
                    )
                if live and time.perf_counter() - last_draw > 0.1:
                    live.update(
                        render(status, "".join(transcript).strip(), console.width), refresh=True
                    )
                    last_draw = time.perf_counter()
            handle(session.finish())
            final = session.result
            if source.overflows:
                err.print(f"[yellow]warning:[/yellow] {overflow_warning(source)}", highlight=False)
            if live:
                live.update(render(status, final.text, console.width), refresh=True)
            elif final.text or transcript:
                sys.stdout.write("\n")
                sys.stdout.flush()
            return final
        finally:
            source.close()
            if live:
                live.stop()
            if writer:
                writer.close(final)
