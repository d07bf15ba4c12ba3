"""The realtime endpoint, /v1/realtime: one `Connection` per WebSocket client, speaking the
client's dialect. Imported only when serving.

vLLM's dialect (`VllmDialect`, the default; vLLM's own clients work unchanged):
  server -> session.created {id, created, delay_ms}
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
`context_bias` of created (the server's) and done (the utterance's) are our extensions (vLLM's
clients ignore them). A commit sent while the previous utterance is still
flushing starts the next one after it: every utterance gets its own done, in order.

OpenAI's Realtime transcription dialect (realtime_openai.py): chosen by `?intent=transcription`
in the URL, by a `session.update` whose `session` is an object, or by the beta
`transcription_session.update`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import json
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect

from .biasing import ContextBias
from .config import SAMPLE_RATE, check_delay
from .errors import VoxtralError
from .session import Session, TextDelta, WordDone

if TYPE_CHECKING:  # (realtime_openai imports this module)
    from .realtime_openai import OpenAIDialect

SLICE_SECONDS = 1.0  # the most audio of one stream a worker job encodes
# A stream's audio waits in its queue (where backpressure sees it) while this many encoded
# positions are still waiting for the decoder.
MAX_ENCODED_AHEAD = 25
# events queued for a client that does not read them, at most: then it is dropped
MAX_UNSENT_EVENTS = 1000
TRANSPORT_KEY = "voxtral.transport"  # the connection's socket, in the ASGI scope (serve())
INSECURE_KEY_PROTOCOL = "openai-insecure-api-key."  # browsers cannot set WebSocket headers

log = logging.getLogger("voxtral_mlx.server")


def phrases(bias: ContextBias | None) -> list[list]:
    """A list as our events report it: [phrase, weight] pairs ([] for none)."""
    return [list(item) for item in bias.phrases] if bias else []


def take_audio(queue: deque[np.ndarray], n: int) -> np.ndarray:
    """Up to n samples from the front of a queue of chunks."""
    parts, taken = [], 0
    while queue and taken < n:
        head = queue.popleft()
        if taken + len(head) > n:
            queue.appendleft(head[n - taken :])
            head = head[: n - taken]
        parts.append(head)
        taken += len(head)
    return np.concatenate(parts)


def decode_base64(audio) -> bytes:
    """The bytes of a client's base64 audio string (ValueError: why not)."""
    if not isinstance(audio, str):
        raise ValueError("'audio' must be a base64 string")
    try:
        return base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("Invalid audio data: not base64") from None


def decode_pcm16(audio) -> np.ndarray:
    """The samples of a base64 PCM16 little-endian string, in [-1, 1) (ValueError: why not)."""
    raw = decode_base64(audio)
    if len(raw) == 0 or len(raw) % 2:
        raise ValueError(
            f"Invalid audio data: PCM16 needs a positive, even number of bytes, got {len(raw)}"
        )
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


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


def shorten(text: str, most: int = 64) -> str:
    """Client text quoted back in an error: a short prefix, never the whole of it."""
    return text if len(text) <= most else text[:most] + f"... ({len(text)} characters)"


class Connection:
    """One client of /v1/realtime: its events out (through a bounded queue), its idle time,
    its end. What its events mean is its dialect's."""

    def __init__(self, websocket: WebSocket, server, openai: bool):
        self.ws, self.server = websocket, server
        self.closed = False
        self.outbox: deque[str] = deque()  # events not yet sent (a client may read slowly)
        self.outbox_ready = asyncio.Event()
        self.sender = asyncio.create_task(self._send_loop())
        # the client's last audio or commit, or the last transcription event it was sent
        self.last_activity = time.monotonic()
        self.handling = False
        self.dropping: asyncio.Task | None = None
        self.dialect: VllmDialect | OpenAIDialect
        if openai:
            from .realtime_openai import OpenAIDialect

            self.dialect = OpenAIDialect(self)
        else:
            self.dialect = VllmDialect(self)

    async def start(self) -> None:
        await self.dialect.start()

    # --- events out, through a bounded queue ---
    async def send(self, event: dict, activity: bool = False) -> None:
        """Queue an event (`activity`: a transcription event, which keeps the connection from
        idling); a client that leaves MAX_UNSENT_EVENTS unread is dropped (its slot freed at
        once): it must not hold events, memory or the scheduler."""
        if self.closed:
            return
        if len(self.outbox) >= MAX_UNSENT_EVENTS:  # (in a task: the caller never waits)
            reason = f"the client did not read its events ({MAX_UNSENT_EVENTS} unsent)"
            self.dropping = asyncio.create_task(self.drop(reason, 1008))
            await asyncio.sleep(0)  # the drop starts: the slot is free when this returns
            return
        self.outbox.append(json.dumps(event, ensure_ascii=False))
        self.outbox_ready.set()
        if activity:
            self.last_activity = time.monotonic()

    async def _send_loop(self) -> None:
        try:
            while True:
                await self.outbox_ready.wait()
                while self.outbox:
                    await self.ws.send_text(self.outbox[0])
                    self.outbox.popleft()
                self.outbox_ready.clear()
        except Exception:  # the client is gone: the receiving side ends the connection
            self.outbox.clear()

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait (a little) for the queued events to go out."""
        deadline = time.monotonic() + timeout
        while self.outbox and not self.sender.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def error(self, message: str, code: str) -> None:
        await self.dialect.error(message, code)

    # --- events in ---
    async def handle(self, message: str | None) -> None:
        self.handling = True  # (a commit may wait for the worker: the client is not idle)
        activity = self.last_activity
        try:
            if message is None:
                await self.error(
                    "Binary frames are not part of the protocol: send JSON text", "invalid_event"
                )
                return
            try:
                event = json.loads(message)
            except json.JSONDecodeError:
                return await self.error("Invalid JSON", "invalid_json")
            if not isinstance(event, dict):
                return await self.error("An event is a JSON object", "invalid_event")
            try:
                await self.dialect.handle(event)
            except Exception as e:  # a bug of ours: the client is told, the connection goes on
                log.error(
                    "realtime event %s: %s: %s",
                    shorten(str(event.get("type"))),
                    type(e).__name__,
                    e,
                )
                await self.error(
                    f"the server could not handle this event ({type(e).__name__})",
                    "processing_error",
                )
        finally:
            self.handling = False
            if self.last_activity != activity:  # audio or a commit: idle from its end
                self.last_activity = time.monotonic()

    def switch_to_openai(self) -> OpenAIDialect:
        """The client speaks OpenAI's dialect (its first session.update said so)."""
        from .realtime_openai import OpenAIDialect

        old, self.dialect = self.dialect, OpenAIDialect(self)
        self.dialect.adopt(old.early_audio())
        return self.dialect

    def idle_seconds(self, now: float) -> float:
        """How long neither side had anything for the other: no audio or commit from the
        client, no event to it, no message of it being handled, and no audio of it waiting
        for the model."""
        return 0.0 if self.handling or self.dialect.busy else now - self.last_activity

    async def wait_for_room(self) -> None:
        """Before reading the next message: a client that asked for backpressure is not read
        while its backlog is over the limit (TCP slows it down; nothing is dropped)."""
        await self.dialect.room.wait()

    # --- the end ---
    async def drop(self, reason: str, code: int) -> None:
        """Close the connection from the server's side and free its slot now. A client
        that reads gets `reason` as the close reason; one that does not is cut off."""
        if self.closed:
            return
        await self.close()
        transport = self.ws.scope.get(TRANSPORT_KEY)
        try:
            await asyncio.wait_for(self.ws.close(code=code, reason=reason[:120]), 2.0)
        except Exception:  # the client does not read: its socket buffers are full
            if transport is not None:
                transport.abort()

    async def close(self) -> None:
        """The connection is over (either side): its slot, session and queues are freed."""
        if self.closed:
            return
        self.closed = True
        self.server.connections.discard(self)
        self.sender.cancel()
        self.outbox.clear()
        await self.dialect.close()


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

    audio: deque = field(default_factory=deque)  # audio not yet given to the model
    seconds: float = 0.0
    committed: bool = False  # a commit started it: its audio goes to the model
    final: bool = False  # the final commit came: no more audio; flush, then done


class VllmDialect:
    """vLLM's realtime protocol (the module's docstring), one utterance after another. As a
    stream of the Server's scheduler: `session`, `intake`, `deliver`, `failed`."""

    def __init__(self, conn: Connection):
        self.conn, self.server = conn, conn.server
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

    async def start(self) -> None:
        created = {"type": "session.created", "id": f"sess-{uuid.uuid4().hex}"}
        created |= {"created": int(time.time()), "delay_ms": self.delay_ms}
        created |= {"context_bias": phrases(self.context_bias)}
        await self.conn.send(created)

    async def error(self, message: str, code: str) -> None:
        await self.conn.send({"type": "error", "error": message, "code": code})

    async def handle(self, event: dict) -> None:
        kind = event.get("type")
        if self.state is State.OPEN and _speaks_openai(event):
            return await self.conn.switch_to_openai().handle(event)
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
            return await self.error(f"Unknown event type: {kind}", "unknown_event")
        await handler(event)

    async def session_update(self, event: dict) -> None:
        if "model" not in event:  # vLLM requires the field (null: the served model)
            return await self.error("Missing required field: model", "invalid_event")
        if (message := self.server.check_model(event["model"])) is not None:
            return await self.error(message, "model_not_found")
        if event.get("delay_ms") is not None:  # our extension: from the next utterance on
            try:
                self.delay_ms = check_delay(event["delay_ms"])
            except VoxtralError as e:
                return await self.error(str(e), "invalid_delay")
        if event.get("context_bias") is not None:  # our extension: from the next utterance on
            try:
                self.context_bias = self.server.context_bias(event["context_bias"])
            except VoxtralError as e:
                return await self.error(str(e), "invalid_context_bias")
        if (mode := event.get("backpressure")) is not None:  # our extension
            if mode not in ("drop", "wait"):
                return await self.error(
                    "backpressure must be 'drop' (the default) or 'wait'", "invalid_event"
                )
            self.wait_when_full = mode == "wait"
        if self.state is State.OPEN:
            self.move(State.READY)

    @property
    def waiting_seconds(self) -> float:
        """Audio received and not yet given to the model, in every utterance."""
        return sum(u.seconds for u in self.utterances)

    @property
    def busy(self) -> bool:
        """Audio of it waits for the model, or its final commit does."""
        return any(u.audio or u.final for u in self.utterances)

    def _open_utterance(self) -> Utterance:
        """The utterance new audio and commits go to: the last one, unless it is final."""
        if not self.utterances or self.utterances[-1].final:
            self.utterances.append(Utterance())
        return self.utterances[-1]

    def early_audio(self) -> list[np.ndarray]:
        """Audio sent before the first session.update (vLLM queues it for the first
        utterance)."""
        return [chunk for u in self.utterances for chunk in u.audio]

    async def append(self, event: dict) -> None:
        try:
            samples = decode_pcm16(event.get("audio"))
        except ValueError as e:
            return await self.error(str(e), "invalid_audio")
        seconds = len(samples) / SAMPLE_RATE
        limit = self.server.config.max_backlog_seconds
        # backpressure "wait" holds the reading only while an utterance drains the backlog
        wait = self.wait_when_full and self.session is not None
        if self.waiting_seconds + seconds > limit and not wait:
            return await self.error(
                f"Audio arrives faster than it is transcribed: more than {limit:g} s are "
                "waiting; this chunk was dropped",
                "buffer_full",
            )
        self.conn.last_activity = time.monotonic()
        utterance = self._open_utterance()
        utterance.audio.append(samples)
        utterance.seconds += seconds
        if wait and self.waiting_seconds > limit:  # read no more until there is room
            self.room.clear()
        if utterance.committed:
            self.server.live_audio()

    async def commit(self, event: dict) -> None:
        if self.state is State.OPEN:
            return await self.error(
                "Model not validated: send session.update before input_audio_buffer.commit",
                "model_not_validated",
            )
        try:
            final = lax_bool(event.get("final", False))
        except ValueError as e:
            return await self.error(f"'final': {e}", "invalid_event")
        self.conn.last_activity = time.monotonic()
        if final:
            last = self.utterances[-1] if self.utterances else None
            if last is None or not last.committed or last.final:
                return  # nothing started: nothing to finish (vLLM says nothing either)
            last.final = True
            self.server.live_audio()
            return
        utterance = self._open_utterance()
        if not utterance.committed:  # a commit while it is transcribed changes nothing
            utterance.committed = True
            await self._start_next()

    async def _start_next(self) -> None:
        """The first utterance goes to the model once it is committed (the ones behind it
        wait for its done)."""
        if self.session is None and self.utterances and self.utterances[0].committed:
            await self.server.open_session(self, self.delay_ms, self.context_bias)

    def intake(self) -> tuple[np.ndarray | None, bool] | None:
        """For the scheduler: audio for the next job (while the decoder keeps up) and
        whether the utterance ends with it; None when there is nothing to do."""
        if self.session is None or self.session._ended:
            return None
        utterance, samples = self.utterances[0], None
        if utterance.audio and self.session.decodable_positions < MAX_ENCODED_AHEAD:
            samples = take_audio(utterance.audio, int(SLICE_SECONDS * SAMPLE_RATE))
            utterance.seconds = sum(len(p) for p in utterance.audio) / SAMPLE_RATE
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
        await self.server.close_session(self, session)
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
        self.server.streams.discard(self)  # the scheduler takes nothing more from it
        session, self.session = self.session, None
        self.utterances.clear()
        self.room.set()
        if session is not None:
            await self.server.close_session(self, session)


def _speaks_openai(event: dict) -> bool:
    """An event only OpenAI's transcription dialect sends (to a connection not yet started)."""
    kind = event.get("type")
    nested = kind == "session.update" and isinstance(event.get("session"), dict)
    return nested or kind == "transcription_session.update"


def subprotocol(offered: list[str]) -> str | None:
    """The one the handshake answers with: a browser fails a connection that offered
    subprotocols and got none back. `realtime` when offered, else the first offered (the
    key's own, for a client that offers only that)."""
    offered = [p for p in offered if p]
    if "realtime" in offered:
        return "realtime"
    return offered[0] if offered else None


async def realtime(websocket: WebSocket) -> None:
    """The /v1/realtime handler: key, slot, then the client's events until either side
    closes."""
    from .server import _authorized, _error

    server = websocket.app.state.server
    protocols = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",")]
    if not _authorized(server.config, websocket.headers, protocols):
        # an HTTP 401 in OpenAI's shape, as for every other endpoint (where the server
        # cannot send a response to a handshake, a plain refusal: 403)
        message = "missing or wrong API key (Authorization: Bearer KEY)"
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(_error(message, 401))
        else:
            await websocket.close(code=1008, reason="missing or wrong API key")
        return
    await websocket.accept(subprotocol=subprotocol(protocols))
    openai = websocket.query_params.get("intent") == "transcription"
    limit = server.config.max_sessions
    if len(server.connections) >= limit:
        message = f"the server is at its limit of {limit} session{'s' if limit != 1 else ''}"
        if openai:
            error = {"type": "error", "event_id": f"event_{uuid.uuid4().hex[:20]}"}
            error["error"] = {"type": "server_error", "code": "too_many_sessions"}
            error["error"] |= {"message": message, "param": None, "event_id": None}
        else:
            error = {"type": "error", "code": "too_many_sessions", "error": message}
        await websocket.send_text(json.dumps(error))
        await websocket.close(code=1013, reason="too many sessions")
        return
    conn = Connection(websocket, server, openai)
    server.connections.add(conn)
    server.watch()
    try:
        await conn.start()
        while not conn.closed:
            await conn.wait_for_room()
            if conn.closed:
                break
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect" or conn.closed:
                break
            await conn.handle(message.get("text"))
    except (WebSocketDisconnect, RuntimeError):  # RuntimeError: it was closed meanwhile
        pass
    finally:
        await conn.close()
