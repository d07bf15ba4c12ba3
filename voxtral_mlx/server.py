"""`voxtral serve`: a realtime WebSocket endpoint compatible with vLLM's /v1/realtime, an
OpenAI-style upload endpoint, /health and the browser page. Imported only when serving.

Protocol (the same event names as vLLM, so its clients work unchanged):
  server -> session.created {id, created}
  client -> session.update {model}            start the session (and check the model name)
  client -> input_audio_buffer.commit         start transcribing (audio appended so far too)
  client -> input_audio_buffer.append {audio} base64 PCM16 little-endian, mono, 16 kHz
  server -> transcription.delta {delta}       text, append-only, as soon as it is decided
  client -> input_audio_buffer.commit {final: true}   end of input: flush the last words
  server -> transcription.done {text, usage}  then the connection is ready for another one
  server -> error {error, code}               the connection stays usable

Concurrency: every utterance (a realtime connection's, or an upload's) is a Session of one
SessionPool, decoded together: each pass of the decoder advances every stream with audio
waiting by one position and reads the weights once for all of them. One worker thread does
all model work, in jobs that take at most `SLICE_SECONDS` of each stream's audio and decode
for at most `JOB_SECONDS`, so the event loop never blocks, events go out after every job,
and a stream with a backlog cannot starve the others. Backpressure: a connection whose
unprocessed audio exceeds `max_backlog_seconds` gets an `error {code: "buffer_full"}` for
each further append, which is dropped; it can slow down and resend.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import enum
import io
import json
import secrets
import tempfile
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import mlx.core as mx
import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile, WebSocket
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from starlette.websockets import WebSocketDisconnect

from .audio import check_finite, decode_audio, resample
from .config import SAMPLE_RATE, VALID_DELAYS_MS, check_delay
from .errors import VoxtralError
from .formats import cues, render
from .model import VoxtralRealtime
from .session import Session, SessionPool, TextDelta, streams_that_fit

WEB_DIR = Path(__file__).parent / "web"
SLICE_SECONDS = 1.0  # the most audio of one stream a worker job encodes
JOB_SECONDS = 0.2  # a job decodes this long at most, then the events go out
# A stream's audio waits in its queue (where backpressure sees it) while this many encoded
# positions are still waiting for the decoder.
MAX_ENCODED_AHEAD = 25
INSECURE_KEY_PROTOCOL = "openai-insecure-api-key."  # browsers cannot set WebSocket headers
RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


@dataclass
class ServerConfig:
    model_name: str
    delay_ms: int | None = None  # None: the model's own
    api_key: str | None = None
    max_sessions: int | None = None  # None: default_max_sessions(model)
    max_message_bytes: int = 4 * 2**20
    max_backlog_seconds: float = 30.0
    max_upload_bytes: int = 200 * 2**20
    cors_origins: tuple[str, ...] = ()


class Worker:
    """One thread for all model work, fed round-robin by the connections.

    The thread's MLX state (its stream, its mx.compile cache of the decoder step, which
    holds Python objects) must be cleared on it by `close()` before the interpreter exits:
    otherwise a C++ thread-local destructor frees the cache at thread exit and takes the
    GIL; racing interpreter finalization, it aborts the process ("terminate called
    without an active exception")."""

    def __init__(self):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voxtral-model")
        self._closing = False

    async def run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._call, fn, args
        )

    def _call(self, fn, args):
        if self._closing:  # queued before close(): nobody waits for it any more
            raise RuntimeError("the server is shutting down")
        return fn(*args)

    def close(self) -> None:
        """Let the job in progress finish, skip queued ones, then wait for the thread's
        MLX work and clear its streams and compile cache on it, and join the thread."""
        if self._closing:
            return
        self._closing = True
        try:
            self._executor.submit(_release_thread_mlx_state).result()
        finally:
            self._executor.shutdown(wait=True)


def _release_thread_mlx_state() -> None:
    mx.synchronize()
    mx.clear_streams()


@dataclass
class Server:
    """What every handler shares, kept on `app.state.server`; and the scheduler that feeds
    every stream's audio to one SessionPool on the worker thread."""

    model: VoxtralRealtime
    config: ServerConfig
    delay_ms: int  # the default delay of new sessions
    worker: Worker = field(default_factory=Worker)
    connections: set[RealtimeConnection] = field(default_factory=set)
    streams: set = field(default_factory=set)  # RealtimeConnection | Upload with a session
    started: float = field(default_factory=time.time)
    pool: SessionPool | None = None  # made on the worker thread, where its arrays live
    wakeup: asyncio.Event | None = None
    scheduler: asyncio.Task | None = None
    decoding: bool = False  # the pool had positions waiting after the last job

    async def open_session(self, stream, delay_ms: int, stop_at_eos: bool = False) -> None:
        """Give `stream` a session of the pool; the scheduler takes it from there."""
        stream.session = await self.worker.run(self._add, delay_ms, stop_at_eos)
        self.streams.add(stream)
        self.wake()

    async def close_session(self, stream, session: Session | None = None) -> None:
        """`stream` is done with its session (the given one, or its current one)."""
        session = session or stream.session
        if session is stream.session:
            self.streams.discard(stream)
            stream.session = None
        if session is not None:
            await self.worker.run(self.pool.remove, session)

    def wake(self) -> None:
        if self.scheduler is None:
            self.wakeup = asyncio.Event()
            self.scheduler = asyncio.create_task(self.schedule())
        self.wakeup.set()

    def _add(self, delay_ms: int, stop_at_eos: bool) -> Session:
        if self.pool is None:
            self.pool = SessionPool(self.model)
        return self.pool.add(delay_ms, stop_at_eos=stop_at_eos)

    async def schedule(self) -> None:
        """Forever: take what each stream has ready, run a job, hand out the events."""
        while True:
            work = {stream: stream.intake() for stream in list(self.streams)}
            work = {stream: w for stream, w in work.items() if w is not None}
            if not work and not self.decoding:
                self.wakeup.clear()  # no await since intake(): no lost wakeup
                await self.wakeup.wait()
                continue
            try:
                events, self.decoding = await self.worker.run(self._job, work)
            except Exception as e:  # every stream of the job is told; the server goes on
                for stream in work:
                    await stream.failed(e)
                self.decoding = False
                continue
            owners = {stream.session: stream for stream in self.streams}
            for session, out in events.items():
                if session in owners:  # (a stream closed meanwhile is not told)
                    try:
                        await owners[session].deliver(out)
                    except Exception:  # its client is gone: the others go on
                        await self.close_session(owners[session])

    def _job(self, work: dict) -> tuple[dict[Session, list], bool]:
        """On the worker: encode the audio taken, end the streams that ended, then decode
        passes of the whole pool for at most JOB_SECONDS."""
        for stream, (samples, end) in work.items():
            if samples is not None:
                stream.session.push(samples)
            if end:
                stream.session.end()
        events: dict[Session, list] = {}
        deadline = time.perf_counter() + JOB_SECONDS
        while time.perf_counter() < deadline:
            step = self.pool.step()
            if not step:
                return events, False
            for session, out in step.items():
                events.setdefault(session, []).extend(out)
        return events, True


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


class Upload:
    """A file posted to /v1/audio/transcriptions, decoded as one more stream of the pool."""

    def __init__(self, samples: np.ndarray):
        self.audio = deque([samples])
        self.session: Session | None = None
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()

    def intake(self) -> tuple[np.ndarray | None, bool] | None:
        if self.session.decodable_positions >= MAX_ENCODED_AHEAD or self.session._ended:
            return None
        samples = take_audio(self.audio, int(SLICE_SECONDS * SAMPLE_RATE))
        return samples, not self.audio

    async def deliver(self, events) -> None:
        if self.session.result is not None and not self.done.done():
            self.done.set_result(self.session.result)

    async def failed(self, error: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(error)


class State(enum.Enum):
    """Where a realtime connection is in the protocol."""

    OPEN = "open"  # session.created sent; waiting for session.update
    READY = "ready"  # session.update received: audio is queued, a commit starts transcribing
    TRANSCRIBING = "transcribing"  # audio goes to the model as it comes
    FINISHING = "finishing"  # the final commit came: the last words are flushed, then done
    CLOSED = "closed"


TRANSITIONS = {
    State.OPEN: {State.READY, State.CLOSED},
    State.READY: {State.READY, State.TRANSCRIBING, State.CLOSED},
    # READY from TRANSCRIBING: a processing error ended the utterance
    State.TRANSCRIBING: {State.TRANSCRIBING, State.FINISHING, State.READY, State.CLOSED},
    State.FINISHING: {State.FINISHING, State.READY, State.CLOSED},  # READY: after done
    State.CLOSED: set(),
}


class RealtimeConnection:
    def __init__(self, websocket: WebSocket, server: Server):
        self.ws, self.server = websocket, server
        self.id = f"sess-{uuid.uuid4().hex}"
        self.state = State.OPEN
        self.delay_ms = server.delay_ms  # of the next utterance (session.update may change it)
        self.session: Session | None = None
        self.pending: deque[np.ndarray] = deque()  # audio not yet given to the model
        self.pending_seconds = 0.0
        self.send_lock = asyncio.Lock()

    def move(self, state: State) -> None:
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"realtime connection: {self.state.value} -> {state.value}")
        self.state = state

    async def send(self, event: dict) -> None:
        if self.state is State.CLOSED:
            return
        async with self.send_lock:
            await self.ws.send_text(json.dumps(event, ensure_ascii=False))

    async def error(self, message: str, code: str) -> None:
        await self.send({"type": "error", "error": message, "code": code})

    async def handle(self, message: str) -> None:
        try:
            event = json.loads(message)
        except json.JSONDecodeError:
            return await self.error("Invalid JSON", "invalid_json")
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return await self.error(
                "An event is a JSON object with a string 'type'", "invalid_event"
            )
        handler = {
            "session.update": self.session_update,
            "input_audio_buffer.append": self.append,
            "input_audio_buffer.commit": self.commit,
        }.get(event["type"])
        if handler is None:
            return await self.error(f"Unknown event type: {event['type']}", "unknown_event")
        await handler(event)

    async def session_update(self, event: dict) -> None:
        config = self.server.config
        model = event.get("model")
        if model not in (None, "", config.model_name, Path(config.model_name).name):
            return await self.error(f"The model `{model}` does not exist.", "model_not_found")
        if event.get("delay_ms") is not None:  # our extension: the delay of this session
            try:
                self.delay_ms = check_delay(event["delay_ms"])
            except VoxtralError as e:
                return await self.error(str(e), "invalid_delay")
        if self.state is State.OPEN:
            self.move(State.READY)

    async def append(self, event: dict) -> None:
        if self.state is State.OPEN:
            return await self.error(
                "Audio before the session started: send session.update first", "session_not_started"
            )
        audio = event.get("audio")
        if not isinstance(audio, str):
            return await self.error("'audio' must be a base64 string", "invalid_audio")
        try:
            raw = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            return await self.error("Invalid audio data: not base64", "invalid_audio")
        if len(raw) == 0 or len(raw) % 2:
            return await self.error(
                f"Invalid audio data: PCM16 needs a positive, even number of bytes, got {len(raw)}",
                "invalid_audio",
            )
        seconds = len(raw) / 2 / SAMPLE_RATE
        limit = self.server.config.max_backlog_seconds
        if self.pending_seconds + seconds > limit:
            return await self.error(
                f"Audio arrives faster than it is transcribed: more than {limit:g} s are "
                "waiting; this chunk was dropped",
                "buffer_full",
            )
        self.pending.append(np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0)
        self.pending_seconds += seconds
        self.server.wake()

    async def commit(self, event: dict) -> None:
        if self.state is State.OPEN:
            return await self.error(
                "Send session.update before input_audio_buffer.commit", "model_not_validated"
            )
        if event.get("final"):
            if self.state is not State.TRANSCRIBING:
                return await self.error(
                    "Nothing to finish: no transcription started", "not_started"
                )
            self.move(State.FINISHING)
            self.server.wake()
        elif self.state is State.READY:
            self.move(State.TRANSCRIBING)
            await self.server.open_session(self, self.delay_ms)

    def intake(self) -> tuple[np.ndarray | None, bool] | None:
        """For the scheduler: audio for the next job (while the decoder keeps up) and
        whether the utterance ends with it; None when there is nothing to do."""
        if self.session is None or self.session._ended:
            return None
        samples = None
        if self.pending and self.session.decodable_positions < MAX_ENCODED_AHEAD:
            samples = take_audio(self.pending, int(SLICE_SECONDS * SAMPLE_RATE))
            self.pending_seconds = sum(len(p) for p in self.pending) / SAMPLE_RATE
        end = self.state is State.FINISHING and not self.pending
        return (samples, end) if samples is not None or end else None

    async def deliver(self, events) -> None:
        """The session's events from a job; once it has its result, transcription.done."""
        await self._send_events(events)
        session = self.session
        if session is None or session.result is None:
            return
        # ready for the next utterance before the client hears done: a commit right after
        # it starts the next one
        if self.state is not State.CLOSED:
            self.move(State.READY)
        prompt, completion = session.schedule.prompt_length, len(session.result.tokens)
        await self.send(
            {
                "type": "transcription.done",
                "text": session.result.text,
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            }
        )
        await self.server.close_session(self, session)

    async def failed(self, error: Exception) -> None:
        """This connection's transcription ends; the server goes on."""
        await self.error(f"transcription failed: {error}", "processing_error")
        await self.server.close_session(self)
        if self.state is not State.CLOSED:
            self.move(State.READY)  # a new commit starts over

    async def _send_events(self, events) -> None:
        for event in events:
            if isinstance(event, TextDelta) and event.text:
                # start/end (audio seconds the text speaks about) and rtf are our extension
                rtf = self.session.elapsed_seconds / max(self.session.audio_seconds, 1e-9)
                await self.send(
                    {
                        "type": "transcription.delta",
                        "delta": event.text,
                        "start": round(event.start, 3),
                        "end": round(event.end, 3),
                        "rtf": round(rtf, 3),
                    }
                )

    async def close(self) -> None:
        self.move(State.CLOSED)
        self.pending.clear()
        await self.server.close_session(self)


# --- HTTP and WebSocket handlers: module level, sharing `request.app.state.server` ---


def _authorized(config: ServerConfig, headers, protocols: list[str] | None = None) -> bool:
    if config.api_key is None:
        return True
    supplied = []
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        supplied.append(auth[7:].strip())
    for p in protocols or []:
        if p.startswith(INSECURE_KEY_PROTOCOL):
            supplied.append(p[len(INSECURE_KEY_PROTOCOL) :])
    return any(secrets.compare_digest(s.encode(), config.api_key.encode()) for s in supplied)


def _server(request: Request) -> Server:
    """The shared state, once the request's key is checked."""
    server = request.app.state.server
    if not _authorized(server.config, request.headers):
        raise HTTPException(401, "missing or wrong API key (Authorization: Bearer KEY)")
    return server


def _invalid_request(message: str, status: int) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error"}}, status_code=status
    )


async def page() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html")


async def health(request: Request) -> dict:
    server = _server(request)
    return {
        "status": "ok",
        "model": server.config.model_name,
        "delay_ms": server.delay_ms,
        "valid_delays_ms": list(VALID_DELAYS_MS),
        "sessions": len(server.connections),
        "max_sessions": server.config.max_sessions,
        "uptime_s": round(time.time() - server.started, 1),
    }


async def models(request: Request) -> dict:
    server = _server(request)
    entry = {
        "id": server.config.model_name,
        "object": "model",
        "created": int(server.started),
        "owned_by": "voxtral-mlx",
    }
    return {"object": "list", "data": [entry]}


async def realtime(websocket: WebSocket) -> None:
    server: Server = websocket.app.state.server
    protocols = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",")]
    if not _authorized(server.config, websocket.headers, protocols):
        await websocket.close(code=1008, reason="missing or wrong API key")
        return
    await websocket.accept(subprotocol="realtime" if "realtime" in protocols else None)
    limit = server.config.max_sessions
    if len(server.connections) >= limit:
        message = f"the server is at its limit of {limit} sessions"
        error = {"type": "error", "code": "too_many_sessions", "error": message}
        await websocket.send_text(json.dumps(error))
        await websocket.close(code=1013, reason="too many sessions")
        return
    conn = RealtimeConnection(websocket, server)
    server.connections.add(conn)
    try:
        await conn.send({"type": "session.created", "id": conn.id, "created": int(time.time())})
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("text") is None:
                await conn.error(
                    "Binary frames are not part of the protocol: send JSON text", "invalid_event"
                )
                continue
            await conn.handle(message["text"])
    except WebSocketDisconnect:
        pass
    finally:
        await conn.close()
        server.connections.discard(conn)


async def transcriptions(
    request: Request,
    file: Annotated[UploadFile, File()],
    model_name: Annotated[str | None, Form(alias="model")] = None,
    response_format: Annotated[str, Form()] = "json",
):
    server = _server(request)
    if response_format not in RESPONSE_FORMATS:
        return _invalid_request(
            f"response_format must be one of {', '.join(RESPONSE_FORMATS)}", 400
        )
    data = await file.read(server.config.max_upload_bytes + 1)
    if len(data) > server.config.max_upload_bytes:
        return _invalid_request("file too large", 413)
    name = file.filename or ""
    try:
        upload = Upload(await server.worker.run(_decode_bytes, data, name))
        await server.open_session(upload, server.delay_ms, stop_at_eos=True)
        try:
            result = await upload.done
        finally:
            await server.close_session(upload)
    except VoxtralError as e:
        return _invalid_request(str(e), 400)
    if response_format == "text":
        return PlainTextResponse(result.text + "\n")
    if response_format in ("srt", "vtt"):
        return PlainTextResponse(render(result, response_format, name or "upload"))
    if response_format == "json":
        return {"text": result.text}
    return {
        "task": "transcribe",
        "duration": result.audio_seconds,
        "text": result.text,
        "words": [{"word": w.text, "start": w.start, "end": w.end} for w in result.words],
        "segments": [
            {"id": i, "start": c.start, "end": c.end, "text": c.text}
            for i, c in enumerate(cues(result.words))
        ],
        "usage": {"type": "duration", "seconds": result.audio_seconds},
    }


def _decode_bytes(data: bytes, filename: str) -> np.ndarray:
    """An uploaded file's audio at 16 kHz (non-finite samples are an error, as for files)."""
    try:
        samples, rate = decode_audio(io.BytesIO(data))
    except VoxtralError:
        # containers soundfile cannot read go through ffmpeg, which needs a file
        suffix = Path(filename).suffix or ".bin"
        with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
            tmp.write(data)
            tmp.flush()
            samples, rate = decode_audio(tmp.name)
    return resample(check_finite(samples, rate), rate, SAMPLE_RATE)


def default_max_sessions(model: VoxtralRealtime) -> int:
    """As many streams as half the memory the weights leave free holds, each at its most,
    from 1 to 64."""
    return streams_that_fit(model)


def create_app(model: VoxtralRealtime, config: ServerConfig) -> FastAPI:
    app = FastAPI(title="voxtral-mlx", docs_url=None, redoc_url=None)
    delay_ms = model.args.schedule(config.delay_ms).delay_ms
    if config.max_sessions is None:
        config = dataclasses.replace(config, max_sessions=default_max_sessions(model))
    app.state.server = Server(model, config, delay_ms)
    # the browser page: public (it holds no secret); its API calls carry the key
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    app.add_api_route("/", page, include_in_schema=False)
    app.add_api_route("/health", health)
    app.add_api_route("/v1/models", models)
    app.add_api_route("/v1/audio/transcriptions", transcriptions, methods=["POST"])
    app.add_api_websocket_route("/v1/realtime", realtime)
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
        )
    return app


def serve(model: VoxtralRealtime, config: ServerConfig, host: str, port: int, ready=None) -> None:
    """Run until interrupted (Ctrl+C: a graceful shutdown, then return). `ready(server)` is
    called from the server thread once it listens."""
    import uvicorn

    app = create_app(model, config)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            ws_max_size=config.max_message_bytes,
            ws="websockets-sansio",
        )
    )
    if ready is not None:
        threading.Thread(target=_notify_when_started, args=(server, ready), daemon=True).start()
    try:
        server.run()
    except KeyboardInterrupt:
        # after its graceful shutdown uvicorn re-raises the signal it caught; the
        # interruption has been handled: return normally (exit status 0)
        if not server.should_exit:
            raise
    finally:
        app.state.server.worker.close()


def _notify_when_started(server, ready) -> None:
    while not server.started:
        time.sleep(0.02)
    ready(server)


__all__ = ["ServerConfig", "create_app", "serve"]
