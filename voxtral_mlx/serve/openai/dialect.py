"""`OpenAIDialect`: an OpenAI Realtime transcription session on one connection (the
package's docstring): the client's events in, the session's events out in their order
(`Order`), and the connection's stream as the scheduler sees it."""

from __future__ import annotations

import asyncio
import enum
import time
import uuid

import numpy as np

from ...config import SAMPLE_RATE
from ...session import Session, TextDelta
from ...turns import SpeechStarted, SpeechStopped, WordStarts
from ..connection import Connection
from ..errors import ClientError, buffer_full, openai_error, shorten
from ..scheduler import SLICE_SECONDS, AudioQueue
from ..wire import decode_audio
from .clock import StreamClock
from .items import PadTimer, ServerVad, Turns
from .settings import Settings

# a commit shorter than this is refused (as OpenAI does)
MIN_COMMIT_SECONDS = 0.1


def event_id() -> str:
    return f"event_{uuid.uuid4().hex[:20]}"


class Order(enum.IntEnum):
    """Events about one time of the stream go out in this order: a turn starts before the
    text spoken in it, and its text before it stops."""

    SPEECH_STARTED = 0
    TEXT = 1
    SPEECH_STOPPED = 2


class OpenAIDialect:
    """OpenAI's Realtime transcription session: a Dialect of the connection, a Stream of the
    scheduler. Its audio waits in `audio` (16 kHz), its times are `clock`'s, its items
    `turns`'."""

    live = True
    undecided = False  # chosen by the URL or by its own first event

    def __init__(self, conn: Connection):
        self.conn, self.server = conn, conn.server
        self.scheduler = self.server.scheduler
        self.id = f"sess_{uuid.uuid4().hex[:20]}"
        self.settings = Settings(
            model=self.server.config.model_id,
            delay_ms=self.server.delay_ms,
            context_bias=self.server.context_bias(),  # the server's list, or none
        )
        self.session: Session | None = None
        self.audio = AudioQueue()  # not yet given to the model
        self.clock = StreamClock(self.settings.rate)
        self.turns = Turns()
        model = self.server.model
        self.vad = ServerVad(model.tokenizer, model.args.audio)
        self.vad.configure(self.settings.vad, self.turns.open.start)
        self.pad = PadTimer(self.scheduler.wake)
        self.seen = 0  # outputs of the session read so far
        self.word_starts = WordStarts(model.tokenizer)
        self.began: dict[float, float] = {}  # text output time -> its word's start
        self.early: list[np.ndarray] = []  # audio that came before the dialect was known
        self.room = asyncio.Event()  # (buffer_full drops audio: reading never waits)
        self.room.set()

    @staticmethod
    def speaks(event: dict) -> bool:
        """session.update with a `session` object, or the beta's transcription_session.update."""
        kind = event.get("type")
        nested = kind == "session.update" and isinstance(event.get("session"), dict)
        return nested or kind == "transcription_session.update"

    @staticmethod
    def refusal(message: str, code: str) -> dict:
        error = openai_error(message, code, kind="server_error")
        return {"type": "error", "event_id": event_id(), "error": error}

    def early_audio(self) -> list[np.ndarray]:
        return []

    def adopt(self, early: list[np.ndarray]) -> None:
        """Audio the connection received before it knew its dialect (PCM16 samples): it is
        the stream's start, at the rate the first session.update sets."""
        self.early = early

    # --- events out ---
    async def send(self, kind: str, activity: bool = False, **fields) -> None:
        await self.conn.send({"type": kind, "event_id": event_id(), **fields}, activity)

    async def error(self, message: str, code: str, param: str | None = None, client_event=None):
        client_event = client_event if isinstance(client_event, str) else None
        await self.send("error", error=openai_error(message, code, param, client_event))

    async def start(self) -> None:
        await self.send("session.created", session=self.settings.describe(self.id))

    # --- events in ---
    async def handle(self, event: dict) -> None:
        kind = event.get("type")
        handler = (
            {
                "session.update": self.session_update,
                "transcription_session.update": self.session_update,
                "input_audio_buffer.append": self.append,
                "input_audio_buffer.commit": self.commit,
                "input_audio_buffer.clear": self.clear,
            }.get(kind)
            if isinstance(kind, str)
            else None
        )
        if handler is None:
            kind = shorten(kind) if isinstance(kind, str) else shorten(repr(kind))
            message = f"Unknown event type: {kind} (a transcription session takes session."
            message += "update and input_audio_buffer.append / commit / clear)"
            raise ClientError(message, "unknown_event", "type")
        await handler(event)

    async def session_update(self, event: dict) -> None:
        started = self.session is not None or self.clock.client_seconds > 0
        old, self.settings = self.settings, self.settings.updated(event, self.server, started)
        if not started:
            self.clock.restart(self.settings.rate)
        if self.settings.vad != old.vad:
            self.vad.configure(self.settings.vad, self.turns.open.start)
        bias = self.settings.context_bias
        if self.session is not None and bias is not old.context_bias:  # from the next output
            await self.scheduler.worker.run(self.session.set_context_bias, bias)
        kind = "transcription_session.updated" if self.settings.legacy else "session.updated"
        await self.send(kind, session=self.settings.describe(self.id))
        early, self.early = self.early, []
        for samples in early:  # audio sent before this first session.update, at its rate
            await self._add_audio(samples)

    async def append(self, event: dict) -> None:
        try:
            samples = decode_audio(event.get("audio"), self.settings.format)
        except ValueError as e:
            raise ClientError(str(e), "invalid_audio", "audio") from None
        await self._add_audio(samples)

    async def _add_audio(self, samples: np.ndarray) -> None:
        """The client's samples (at its rate) into the stream."""
        seconds = len(samples) / self.settings.rate
        limit = self.server.config.max_backlog_seconds
        if self.audio.seconds + seconds > limit:
            raise buffer_full(limit, "audio")
        now = time.monotonic()
        self.conn.last_activity = now
        self.pad.heard(now)
        self.audio.append(self.clock.resample(samples))
        if self.session is None:
            await self.scheduler.open_session(
                self, self.settings.delay_ms, self.settings.context_bias
            )
        self.scheduler.live_audio()

    async def commit(self, event: dict) -> None:
        have = self.clock.client_seconds - self.turns.open.client_start
        if have < MIN_COMMIT_SECONDS - 1e-9:
            raise ClientError(
                f"Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_SECONDS * 1000:g}ms of audio, but buffer only has "
                f"{max(have, 0.0) * 1000:.2f}ms of audio.",
                "input_audio_buffer_commit_empty",
            )
        self.conn.last_activity = time.monotonic()
        await self._commit(self.clock.stream_end)
        self.vad.restart(self.turns.open.start)  # the client's commit ends the turn VAD was in
        self.pad.start()
        self.scheduler.live_audio()

    async def _commit(self, end: float) -> None:
        turn, previous = self.turns.commit(end, self.clock.client_seconds)
        await self.send(
            "input_audio_buffer.committed", previous_item_id=previous, item_id=turn.item_id
        )

    async def clear(self, event: dict) -> None:
        """The open turn's audio not yet heard is dropped, and its text (what the model
        heard of it is in its state, and the words it writes about it are dropped too)."""
        open_seconds = max(self.clock.received - self.turns.open.start, 0.0)
        dropped = self.audio.drop_tail(round(min(open_seconds, self.audio.seconds) * SAMPLE_RATE))
        self.clock.drop(dropped / SAMPLE_RATE)  # (the resampler's samples are the turn's too)
        self.turns.reopen(self.clock.received, self.clock.client_seconds)
        self.vad.restart(self.turns.open.start)
        await self.send("input_audio_buffer.cleared")

    # --- the scheduler's side ---
    @property
    def busy(self) -> bool:
        return bool(self.audio) or self.turns.waiting

    def intake(self) -> tuple[np.ndarray | None, bool] | None:
        """Audio for the next job; silence for a committed turn whose audio stopped."""
        if self.session is None:
            return None
        samples = None
        if self.audio and self.session.wants_audio:
            samples = self.audio.take(int(SLICE_SECONDS * SAMPLE_RATE))
        elif not self.audio and self.turns.waiting:
            samples = self._pad()
        if samples is None or not len(samples):
            return None
        self.vad.hear(samples)
        return samples, False

    def _pad(self) -> np.ndarray | None:
        """Silence after the last committed turn once its audio stopped (PadTimer): as much
        as a file's end gets (the delay, and the longest word), so its last words come out."""
        if not self.pad.due():
            return None
        schedule = self.session.schedule
        # (a turn's end needs no alignment to a whole token: the stream goes on after it)
        need = self.turns.last_committed.end + schedule.end_pad_samples(0) / SAMPLE_RATE
        if self.clock.received >= need:
            return None
        return self.clock.pad_to(need)

    async def deliver(self, events) -> None:
        """Deltas to the turns their words began in, VAD's turns, then every turn the
        decoder has spoken for all of (no word begun in it still unwritten) is completed."""
        session = self.session
        if session is None:
            return
        outputs = session.outputs(self.seen)
        self.seen += len(outputs)
        self.began |= self.word_starts.update(outputs)
        timeline: list[tuple[float, Order, object]] = []
        for found in self.vad.update(outputs):
            started = isinstance(found, SpeechStarted)
            order = Order.SPEECH_STARTED if started else Order.SPEECH_STOPPED
            timeline.append((found.seconds, order, found))
        for event in events:
            if isinstance(event, TextDelta) and event.text:
                timeline.append((self.began.get(event.start, event.start), Order.TEXT, event))
        for at, _, item in sorted(timeline, key=lambda x: (x[0], x[1])):
            if isinstance(item, TextDelta):
                await self._delta(item, at)
            elif isinstance(item, SpeechStarted):
                await self.send(
                    "input_audio_buffer.speech_started",
                    audio_start_ms=self.clock.client_ms(item.seconds),
                    item_id=self.turns.open.item_id,
                )
            elif isinstance(item, SpeechStopped):
                await self.send(
                    "input_audio_buffer.speech_stopped",
                    audio_end_ms=self.clock.client_ms(item.seconds),
                    item_id=self.turns.open.item_id,
                )
                await self._commit(item.seconds)
        await self._complete(session.transcribed_seconds)
        session.forget(self.seen)  # the connection may last for days: keep no history
        first = self.turns.first_start
        self.began = {t: w for t, w in self.began.items() if t >= first}

    async def _delta(self, delta: TextDelta, began: float) -> None:
        """Text whose word began at `began` (stream seconds) goes to that turn."""
        if (added := self.turns.add_text(delta.text, began)) is None:
            return
        turn, text = added
        await self.send(
            "conversation.item.input_audio_transcription.delta",
            activity=True,
            item_id=turn.item_id,
            content_index=0,
            delta=text,
        )

    async def _complete(self, transcribed: float) -> None:
        for turn in self.turns.complete(transcribed, self.word_starts.open_since):
            seconds = (self.clock.client_ms(turn.end) - self.clock.client_ms(turn.start)) / 1000
            await self.send(
                "conversation.item.input_audio_transcription.completed",
                activity=True,
                item_id=turn.item_id,
                content_index=0,
                transcript=turn.transcript,
                usage={"type": "duration", "seconds": max(seconds, 0.0)},
            )

    async def failed(self, error: Exception) -> None:
        await self.error(f"transcription failed: {error}", "processing_error")
        await self.close()
        await self.conn.drop("transcription failed", 1011)

    async def close(self) -> None:
        self.scheduler.streams.discard(self)
        session, self.session = self.session, None
        self.audio.clear()
        self.pad.cancel()
        if session is not None:
            await self.scheduler.close_session(self, session)
