"""vLLM's realtime dialect on /v1/realtime (`VllmDialect`, the default: vLLM's own clients
work unchanged).

The events:
  server -> session.created {id, created, delay_ms, context_bias}
  client -> session.update {model, delay_ms?, context_bias?, backpressure?}  start the session
  client -> input_audio_buffer.append {audio}  base64 PCM16 little-endian, mono, 16 kHz
  client -> input_audio_buffer.commit          start an utterance (audio appended so far too)
  server -> transcription.delta {delta, start, end, rtf, words}  text, append-only, once decided
  client -> input_audio_buffer.commit {final: true}   end of the utterance: flush its words
  server -> transcription.done {text, usage, delay_ms, context_bias, words}  text: the deltas
  server -> error {error, code}                the connection stays usable
`delay_ms`, `context_bias` (custom vocabulary: phrases or [phrase, weight] pairs; from the next
utterance on; [] for none), `backpressure`, `start`/`end`/`rtf`/`words` (the words completed
since the last delta, with their times, as the library's WordDone) and the `delay_ms` and
`context_bias` of created (the server's) and done (the utterance's) are our extensions
(vLLM's clients ignore them). A commit sent while the previous utterance is still
flushing starts the next one after it: every utterance gets its own done, in order.
"""

from __future__ import annotations

import asyncio
import enum
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..biasing import ContextBias
from ..config import SAMPLE_RATE, check_delay
from ..errors import VoxtralError
from ..session import Session, TextDelta, WordDone
from .connection import Connection
from .errors import ClientError, buffer_full, shorten, vllm_error
from .scheduler import SLICE_SECONDS, AudioQueue, waiting, waiting_seconds
from .wire import decode_pcm16


def phrases(bias: ContextBias | None) -> list[list]:
    """A list as our events report it: [phrase, weight] pairs ([] for none)."""
    return [list(item) for item in bias.phrases] if bias else []


def lax_bool(value) -> bool:
    """A boolean as vLLM's pydantic models read one: true/false, 0/1, and the strings
    pydantic accepts ("false", "no", "off", "0", ... are false). ValueError otherwise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("1", "on", "t", "true", "y", "yes"):
            return True
        if text in ("0", "off", "f", "false", "n", "no"):
            return False
    raise ValueError(f"not a boolean: {shorten(json.dumps(value))}")


class State(enum.Enum):
    """Where a vLLM-dialect connection is in the protocol."""

    OPEN = "open"  # session.created sent; waiting for session.update
    READY = "ready"  # session.update received: audio and commits make utterances
    CLOSED = "closed"


TRANSITIONS = {
    State.OPEN: {State.READY, State.CLOSED},
    State.READY: {State.READY, State.CLOSED},
    State.CLOSED: set(),
}


@dataclass(eq=False)
class Utterance:
    """One commit's worth of a connection's audio: from its commit (audio appended before
    it counts too) to its final commit, then transcription.done. A connection's utterances
    are transcribed one after another, in the order they were committed."""

    audio: AudioQueue = field(default_factory=AudioQueue)  # not yet given to the model
    committed: bool = False  # a commit started it: its audio goes to the model
    final: bool = False  # the final commit came: no more audio; flush, then done


class VllmDialect:
    """vLLM's realtime protocol (the module's docstring), one utterance after another: a
    Dialect of the connection, a Stream of the scheduler."""

    live = True

    def __init__(self, conn: Connection):
        self.conn, self.server = conn, conn.server
        self.scheduler = self.server.scheduler
        self.state = State.OPEN
        self.delay_ms = self.server.delay_ms  # of the next utterance (session.update may change it)
        self.context_bias = self.server.context_bias()  # the same: the server's list, or none
        self.session: Session | None = None  # the first utterance's, once it is transcribed
        self.utterances: deque[Utterance] = deque()
        self.words: list[dict] = []  # words of the utterance completed since the last delta
        self.wait_when_full = False  # backpressure "wait": stop reading instead of dropping
        self.room = asyncio.Event()
        self.room.set()

    def move(self, state: State) -> None:
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"realtime connection: {self.state.value} -> {state.value}")
        self.state = state

    @staticmethod
    def speaks(event: dict) -> bool:
        return False  # the default: no event hands a connection over to it

    @staticmethod
    def refusal(message: str, code: str) -> dict:
        return vllm_error(message, code)

    @property
    def undecided(self) -> bool:
        """Before session.update: another dialect's first event takes the connection over."""
        return self.state is State.OPEN

    async def start(self) -> None:
        created = {"type": "session.created", "id": f"sess-{uuid.uuid4().hex}"}
        created |= {"created": int(time.time()), "delay_ms": self.delay_ms}
        created |= {"context_bias": phrases(self.context_bias)}
        await self.conn.send(created)

    async def error(
        self, message: str, code: str, param: str | None = None, client_event=None
    ) -> None:
        await self.conn.send(vllm_error(message, code))  # (vLLM's errors have no param)

    async def handle(self, event: dict) -> None:
        kind = event.get("type")
        handler = (
            {
                "session.update": self.session_update,
                "input_audio_buffer.append": self.append,
                "input_audio_buffer.commit": self.commit,
            }.get(kind)
            if isinstance(kind, str)
            else None
        )
        if handler is None:  # (vLLM: `{}` is an unknown event too)
            kind = shorten(kind) if isinstance(kind, str) else json.dumps(kind)
            raise ClientError(f"Unknown event type: {kind}", "unknown_event", "type")
        await handler(event)

    async def session_update(self, event: dict) -> None:
        if "model" not in event:  # vLLM requires the field (null: the served model)
            raise ClientError("Missing required field: model", "invalid_event", "model")
        if (message := self.server.check_model(event["model"])) is not None:
            raise ClientError(message, "model_not_found", "model")
        if event.get("delay_ms") is not None:  # our extension: from the next utterance on
            try:
                self.delay_ms = check_delay(event["delay_ms"])
            except VoxtralError as e:
                raise ClientError(str(e), "invalid_delay", "delay_ms") from None
        if event.get("context_bias") is not None:  # our extension: from the next utterance on
            try:
                self.context_bias = self.server.context_bias(event["context_bias"])
            except VoxtralError as e:
                raise ClientError(str(e), "invalid_context_bias", "context_bias") from None
        if (mode := event.get("backpressure")) is not None:  # our extension
            if mode not in ("drop", "wait"):
                message = "backpressure must be 'drop' (the default) or 'wait'"
                raise ClientError(message, "invalid_event", "backpressure")
            self.wait_when_full = mode == "wait"
        if self.state is State.OPEN:
            self.move(State.READY)

    @property
    def waiting_seconds(self) -> float:
        return waiting_seconds(self.utterances)

    @property
    def busy(self) -> bool:
        return waiting(self.utterances)

    def _open_utterance(self) -> Utterance:
        """The utterance new audio and commits go to: the last one, unless it is final."""
        if not self.utterances or self.utterances[-1].final:
            self.utterances.append(Utterance())
        return self.utterances[-1]

    def early_audio(self) -> list[np.ndarray]:
        """Audio sent before the first session.update (vLLM queues it for the first
        utterance)."""
        return [chunk for u in self.utterances for chunk in u.audio]

    def adopt(self, early: list[np.ndarray]) -> None:
        utterance = self._open_utterance()
        for chunk in early:
            utterance.audio.append(chunk)

    async def append(self, event: dict) -> None:
        try:
            samples = decode_pcm16(event.get("audio"))
        except ValueError as e:
            raise ClientError(str(e), "invalid_audio", "audio") from None
        seconds = len(samples) / SAMPLE_RATE
        limit = self.server.config.max_backlog_seconds
        # backpressure "wait" holds the reading only while an utterance drains the backlog
        wait = self.wait_when_full and self.session is not None
        if self.waiting_seconds + seconds > limit and not wait:
            raise buffer_full(limit)
        self.conn.last_activity = time.monotonic()
        utterance = self._open_utterance()
        utterance.audio.append(samples)
        if wait and self.waiting_seconds > limit:  # read no more until there is room
            self.room.clear()
        if utterance.committed:
            self.scheduler.live_audio()

    async def commit(self, event: dict) -> None:
        if self.state is State.OPEN:
            message = "Model not validated: send session.update before input_audio_buffer.commit"
            raise ClientError(message, "model_not_validated")
        try:
            final = lax_bool(event.get("final", False))
        except ValueError as e:
            raise ClientError(f"'final': {e}", "invalid_event", "final") from None
        self.conn.last_activity = time.monotonic()
        if final:
            last = self.utterances[-1] if self.utterances else None
            if last is None or not last.committed or last.final:
                return  # nothing started: nothing to finish (vLLM says nothing either)
            last.final = True
            self.scheduler.live_audio()
            return
        utterance = self._open_utterance()
        if not utterance.committed:  # a commit while it is transcribed changes nothing
            utterance.committed = True
            await self._start_next()

    async def _start_next(self) -> None:
        """The first utterance goes to the model once it is committed (the ones behind it
        wait for its done)."""
        if self.session is None and self.utterances and self.utterances[0].committed:
            await self.scheduler.open_session(self, self.delay_ms, self.context_bias)

    def intake(self) -> tuple[np.ndarray | None, bool] | None:
        """For the scheduler: audio for the next job (while the decoder keeps up) and
        whether the utterance ends with it; None when there is nothing to do."""
        if self.session is None or self.session.ended:
            return None
        utterance, samples = self.utterances[0], None
        if utterance.audio and self.session.wants_audio:
            samples = utterance.audio.take(int(SLICE_SECONDS * SAMPLE_RATE))
            if self.waiting_seconds <= self.server.config.max_backlog_seconds:
                self.room.set()
        end = utterance.final and not utterance.audio
        return (samples, end) if samples is not None or end else None

    async def deliver(self, events) -> None:
        """The session's events from a job; once it has its result, transcription.done
        (its text is the concatenation of the deltas), and the next utterance starts."""
        session = self.session
        for event in events:
            if isinstance(event, WordDone):  # sent with the next delta (or the done)
                word = event.word
                self.words.append({"word": word.text, "start": word.start, "end": word.end})
            elif isinstance(event, TextDelta) and event.text:
                # start/end (audio seconds the text speaks about), rtf and the words
                # completed since the last delta are our extension
                rtf = session.elapsed_seconds / max(session.audio_seconds, 1e-9)
                delta = {"type": "transcription.delta", "delta": event.text}
                delta |= {"start": round(event.start, 3), "end": round(event.end, 3)}
                delta |= {"rtf": round(rtf, 3), "words": self.words}
                self.words = []
                await self.conn.send(delta, activity=True)
        if session is None or session.result is None:
            return
        # the session's own schedule: a delay changed meanwhile is the next utterance's
        prompt, completion = session.schedule.prompt_length, len(session.result.tokens)
        usage = {"prompt_tokens": prompt, "total_tokens": prompt + completion}
        usage |= {"completion_tokens": completion, "prompt_tokens_details": None}
        done = {"type": "transcription.done", "text": session.text, "usage": usage}
        done |= {"delay_ms": session.delay_ms, "context_bias": phrases(session.context_bias)}
        done |= {"words": self.words}
        self.words = []
        await self.conn.send(done, activity=True)
        await self._next_utterance(session)

    async def _next_utterance(self, session: Session) -> None:
        self.utterances.popleft()
        await self.scheduler.close_session(self, session)
        await self._start_next()
        if self.session is None:  # nothing drains the backlog: never hold the reading
            self.room.set()

    async def failed(self, error: Exception) -> None:
        """This connection's utterance ends; the next one (if committed) and the server
        go on."""
        await self.error(f"transcription failed: {error}", "processing_error")
        if self.session is not None:
            await self._next_utterance(self.session)

    async def close(self) -> None:
        self.move(State.CLOSED)
        self.scheduler.streams.discard(self)  # the scheduler takes nothing more from it
        session, self.session = self.session, None
        self.utterances.clear()
        self.room.set()
        if session is not None:
            await self.scheduler.close_session(self, session)
