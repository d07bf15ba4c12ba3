"""`voxtral meeting`: the microphone (you) and the computer's output (the others: the call)
-> one SessionPool at one delay -> Conversation (time order, the call's echo dropped) -> the
terminal view or `NAME: text` lines on stdout, and the files."""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.live import Live
from rich.text import Text

from voxtral_mlx import Session, SessionPool, WordDone
from voxtral_mlx.formats import MeetingWriter
from voxtral_mlx.meeting import SETTLE_SECONDS, Conversation, Echo, Said
from voxtral_mlx.words import Word

from .capture import Source, overflow_warning
from .live import LiveStatus, source_line, stop_on_ctrl_c, view

STYLES = ("cyan", "magenta")  # you, the others
SHOWN_TURNS = 50  # the view keeps the last turns (the files keep everything)
# A stream with a position to decode waits this long (wall time) for the other's, so that
# one pass decodes both; past it (a source late or silent), it is decoded alone
STALL_SECONDS = 0.1


@dataclass
class Stream:
    """One speaker's side: the source, its session in the pool, the numbers for the view."""

    speaker: str
    source: Source
    session: Session
    style: str
    status: LiveStatus = field(init=False)
    ended: bool = False  # the source has ended: the session flushes, no more audio comes

    def __post_init__(self) -> None:
        self.status = LiveStatus(self.source, self.session)


def open_streams(
    model, delay_ms: int | None, sides: Sequence[tuple[str, Source]], context_bias=None
) -> list[Stream]:
    """A session per side, both in one SessionPool at the same delay and with the same
    custom vocabulary (`context_bias`): one decoder pass serves both. The one place the
    meeting's sessions are made: what applies to both streams is given to `pool.add` here."""
    pool = SessionPool(model)
    streams = []
    for (speaker, source), style in zip(sides, STYLES, strict=True):
        session = pool.add(
            delay_ms,
            sample_rate=source.rate,
            settle_seconds=SETTLE_SECONDS,
            context_bias=context_bias,
        )
        streams.append(Stream(speaker, source, session, style))
    return streams


class Captures:
    """The blocks of several sources as they come: (source index, block), and (index, None)
    once that source has ended (after Ctrl+C: once what it had captured is out). Each source
    has a queue of its own, so one that delivers fast (a file replayed with --fast) cannot
    crowd out the other."""

    def __init__(self, sources: Sequence[Source], stop: threading.Event):
        self._queues: list[queue.Queue[np.ndarray | None]] = [
            queue.Queue(maxsize=16) for _ in sources
        ]
        self._arrived = threading.Event()
        self.running = len(sources)
        self.last_block = [time.monotonic()] * len(sources)  # when each was last heard from
        for i, source in enumerate(sources):
            threading.Thread(target=self._forward, args=(i, source, stop), daemon=True).start()

    def _forward(self, index: int, source: Source, stop: threading.Event) -> None:
        try:
            for block in source.blocks(stop):
                self._queues[index].put(block)
                self._arrived.set()
        finally:
            self._queues[index].put(None)
            self._arrived.set()

    def take(self, timeout: float | None = None) -> list[tuple[int, np.ndarray | None]]:
        """Every block there is, from every source; waits for one first (up to `timeout`
        seconds: then none)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._arrived.clear()
            items = [(i, block) for i, q in enumerate(self._queues) for block in _queued(q)]
            if items:
                break
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not self._arrived.wait(left):
                return []
        now = time.monotonic()
        for i, block in items:
            self.last_block[i] = now
            self.running -= block is None
        return items


def _queued(q: queue.Queue) -> list:
    found = []
    while True:
        try:
            found.append(q.get_nowait())
        except queue.Empty:
            return found


class MeetingView:
    """On a terminal: the turns, interleaved, each speaker's name and text in its colour,
    a line per source under them. Piped: `NAME: text` lines on stdout, a word at a time
    (append-only), and the state on stderr."""

    def __init__(self, streams: list[Stream], console: Console):
        self.streams, self.console = streams, console
        self.err = Console(stderr=True)
        self.live = Live(console=console, auto_refresh=False) if console.is_terminal else None
        self.styles = {s.speaker: s.style for s in streams}
        self.turns: deque[tuple[str, list[str]]] = deque(maxlen=SHOWN_TURNS)
        self.echoes = 0
        self._printed = False  # piped: a line is on stdout
        self._drawn = 0.0

    def start(self) -> None:
        if self.live:
            self.live.start()
            return
        sides = "; ".join(
            f"{s.speaker}: {s.source.name} @ {s.source.rate} Hz" for s in self.streams
        )
        delay = self.streams[0].session.delay_ms
        self.err.print(
            f"listening: {sides}; delay {delay} ms (Ctrl+C to stop)", highlight=False, markup=False
        )

    def said(self, speaker: str, word: Word) -> None:
        turn = not self.turns or self.turns[-1][0] != speaker
        if turn:
            self.turns.append((speaker, [word.text]))
        else:
            self.turns[-1][1].append(word.text)
        if self.live is None:
            start = ("\n" if self._printed else "") + f"{speaker}: "
            sys.stdout.write((start if turn else " ") + word.text)
            sys.stdout.flush()
            self._printed = True

    def warn(self, message: str) -> None:
        console = self.live.console if self.live else self.err
        console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)

    def draw(self, now: bool = False) -> None:
        if self.live and (now or time.perf_counter() - self._drawn > 0.1):
            self.live.update(self._render(), refresh=True)
            self._drawn = time.perf_counter()

    def stop(self) -> None:
        if self.live:
            self.draw(now=True)
            self.live.stop()
        elif self._printed:
            sys.stdout.write("\n")
            sys.stdout.flush()

    def _render(self):
        body = Text()
        for speaker, words in self.turns:
            style = self.styles[speaker]
            body.append(f"{speaker}: ", f"bold {style}").append(" ".join(words) + "\n", style)
        body.rstrip()
        width = max(self.console.width - 4, 20)
        keep = max(self.console.height - 6, 4)  # the last lines that fit
        shown = Text("\n").join(body.wrap(self.console, width)[-keep:])
        lines = [source_line(s.status, s.speaker, s.style) for s in self.streams]
        if self.echoes:
            you = self.streams[0].speaker
            lines.append(Text(f"echo: {self.echoes} words of the call left out of {you}", "dim"))
        return view("voxtral meeting", shown, lines)


def run_meeting(streams: list[Stream], outputs: list[Path], console: Console) -> Conversation:
    """Transcribe both streams until both sources end or Ctrl+C (which flushes both
    streams' last words); the files are renamed into place once complete."""
    you, others = streams
    conversation = Conversation(you.speaker, others.speaker)
    meeting_view = MeetingView(streams, console)
    stop = threading.Event()
    writers: list[MeetingWriter] = []
    complete = False
    with stop_on_ctrl_c(stop):
        try:
            for path in outputs:
                writers.append(MeetingWriter(path))
            captures = Captures([s.source for s in streams], stop)
            meeting_view.start()
            held = False  # positions wait for the other stream's
            while captures.running or held:
                items = captures.take(STALL_SECONDS / 2 if held else None)
                events, held = _decode(streams, items, alone=_stalled(streams, captures))
                if warning := you.status.silence_warning():  # the call may well be silent
                    meeting_view.warn(warning)
                _transcribe(streams, events, conversation, meeting_view, writers)
                meeting_view.draw()
            for writer in writers:
                for s in streams:
                    writer.done(s.speaker, conversation.text(s.speaker), s.session.result)
            for s in streams:
                if s.source.overflows:
                    meeting_view.warn(overflow_warning(s.source))
            complete = True
            return conversation
        finally:
            for s in streams:
                s.source.close()
            meeting_view.stop()
            for writer in writers:
                if complete:
                    writer.close()
                else:
                    writer.discard()


def _stalled(streams: list[Stream], captures: Captures) -> bool:
    """Whether the streams with nothing to decode have had no audio for STALL_SECONDS (a
    source late or silent): the other is then decoded alone."""
    now = time.monotonic()
    return all(
        now - captures.last_block[i] >= STALL_SECONDS
        for i, s in enumerate(streams)
        if not s.ended and not s.session.decodable_positions
    )


def _decode(
    streams: list[Stream], items: list[tuple[int, np.ndarray | None]], alone: bool
) -> tuple[list[list], bool]:
    """The blocks into their sessions (a source that ended ends its session: its last words
    flush), then the pool's passes while every stream still listening has a position to
    decode, so each pass decodes both; with `alone`, every pass it can make. Returns each
    stream's events, and whether positions are held back for the other stream's."""
    fed: dict[int, list[np.ndarray]] = {}
    for index, block in items:
        s = streams[index]
        if block is None:
            s.session.end()
            s.ended = True
        else:
            s.session.push(block)
            fed.setdefault(index, []).append(block)
    tic = time.perf_counter()
    pool = streams[0].session.pool
    events: list[list] = [[] for _ in streams]
    while any(
        s.session.decodable_positions or (s.ended and s.session.result is None) for s in streams
    ):
        if not alone and not all(s.ended or s.session.decodable_positions for s in streams):
            break
        out = pool.step()
        if not out:
            break
        for i, s in enumerate(streams):
            events[i] += out.get(s.session, [])
    elapsed = time.perf_counter() - tic
    for index, blocks in fed.items():
        s = streams[index]
        s.status.block(np.concatenate(blocks), s.source.rate, elapsed)
    return events, any(s.session.decodable_positions for s in streams)


def _transcribe(
    streams: list[Stream],
    events: list[list],
    conversation: Conversation,
    meeting_view: MeetingView,
    writers: list[MeetingWriter],
) -> None:
    """The streams' new words into the conversation; what it settles to the view and files."""
    for s, stream_events in zip(streams, events, strict=True):
        for event in stream_events:
            if isinstance(event, WordDone):
                conversation.add(s.speaker, event.word)
        conversation.advance(s.speaker, s.session.settled_seconds)
    for item in conversation.take():
        if isinstance(item, Said):
            meeting_view.said(item.speaker, item.word)
            for writer in writers:
                writer.said(item.speaker, item.word)
        elif isinstance(item, Echo):
            meeting_view.echoes += 1
            for writer in writers:
                writer.echo(item)
