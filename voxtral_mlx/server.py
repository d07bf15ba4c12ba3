"""`voxtral serve`: the realtime WebSocket endpoint (realtime.py: vLLM's dialect, and OpenAI's
Realtime transcription dialect), an OpenAI-style upload endpoint, /health and the browser
page. Imported only when serving.

Concurrency: every utterance is a Session of a SessionPool (one pool for the realtime
connections, one for uploads), decoded together: each pass of the decoder advances every
stream of its pool with audio waiting and reads the weights once for all of them. One
worker thread does all model work, in jobs that take at most `SLICE_SECONDS` of each live
stream's audio and decode for at most `JOB_SECONDS`, so the event loop never blocks and
events go out after every job.
Live first (Server): uploads get the passes live sessions leave. Backpressure: a
connection whose unprocessed audio exceeds `max_backlog_seconds` gets an
`error {code: "buffer_full"}` for each further append, which is dropped (or, if it asked
for backpressure "wait", is not read until there is room).

Limits (ServerConfig): events a client leaves unread (MAX_UNSENT_EVENTS), idle realtime
connections (`idle_timeout`), request headers and upload reads (`read_timeout`), open
connections (`max_connections`), upload size (`max_upload_bytes`, checked while reading,
after the key).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import secrets
import threading
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

import mlx.core as mx
import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import FormData
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from .audio import check_finite, decode_audio_bytes, resample
from .biasing import DEFAULT_STRENGTH, ContextBias, parse_context_bias
from .config import ENCODER_BATCH_TOKENS, SAMPLE_RATE, VALID_DELAYS_MS, check_delay
from .errors import VoxtralError
from .formats import StrippedStream, cues, render
from .model import VoxtralRealtime
from .realtime import (
    INSECURE_KEY_PROTOCOL,
    MAX_ENCODED_AHEAD,
    TRANSPORT_KEY,
    Connection,
    realtime,
    shorten,
    take_audio,
)
from .session import Session, SessionPool, TextDelta, Transcript, streams_that_fit
from .words import words_with_tokens

WEB_DIR = Path(__file__).parent / "web"
JOB_SECONDS = 0.2  # a job decodes this long at most, then the events go out
# an upload's audio per job while live sessions run (about 1 s): its encoder call is what a
# live session may wait for (a 94-token call took 560 ms with the test model on a 2-core CPU)
UPLOAD_TOKENS_BESIDE_LIVE = 12
SHUTDOWN_SECONDS = 5  # Ctrl+C: requests in flight get this long, then are cut off
RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
STREAM_FORMATS = ("json", "text")  # stream=true: text events, as OpenAI streams these
LANGUAGE_CODE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*")  # en, yue, pt-BR
UNKNOWN_LANGUAGE = "und"  # ISO 639's "undetermined": Voxtral Realtime detects no language


@dataclass
class ServerConfig:
    model_name: str  # what was loaded: a hub repo id or a local folder
    delay_ms: int | None = None  # None: the model's own
    api_key: str | None = None
    max_sessions: int | None = None  # None: default_max_sessions(model)
    max_message_bytes: int = 4 * 2**20
    max_backlog_seconds: float = 30.0
    max_upload_bytes: int = 200 * 2**20
    cors_origins: tuple[str, ...] = ()
    served_model_name: str | None = None  # None: the repo id, or the local folder's name
    idle_timeout: float = 60.0  # seconds a realtime connection may idle (Connection.idle_seconds)
    read_timeout: float = 20.0  # seconds for a request's headers, and between upload reads
    max_connections: int | None = None  # open connections, at most; None: from the file limit
    # the custom vocabulary of every request and session that sends none of its own
    context_bias: tuple[tuple[str, float], ...] = ()
    context_bias_strength: float = DEFAULT_STRENGTH  # of the phrases clients send unweighted

    @property
    def model_id(self) -> str:
        """The name /v1/models announces (never a path on this machine)."""
        if self.served_model_name:
            return self.served_model_name
        return Path(self.model_name).name if _is_local(self.model_name) else self.model_name

    @property
    def model_names(self) -> tuple[str, ...]:
        """The names a client may ask for: the served name (and the repo id it stands for)."""
        names = [self.model_id]
        if not _is_local(self.model_name) and self.model_name not in names:
            names.append(self.model_name)
        return tuple(names)


def _is_local(name: str) -> bool:
    return Path(name).expanduser().exists() or name.startswith(("/", ".", "~"))


def default_max_connections() -> int:
    """Open connections the process's file limit leaves room for (some files stay for the
    model, the libraries and the sockets being closed), 16 to 1000."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = 4096 if soft == resource.RLIM_INFINITY else soft
    return max(16, min(1000, soft - 128))


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
    every stream's audio to one SessionPool on the worker thread.

    Policy: live first, uploads fill the rest. Realtime sessions and uploads are two pools
    (each batched within itself): while any realtime session has audio waiting, passes are
    for the live pool; uploads get the passes in between, and a job of upload passes ends
    as soon as live audio arrives, so an upload delays a live session by at most one upload
    pass. Apart, a long upload's decoder ring (every row of a pool has the longest row's
    length) does not make every live pass attend over it (benchmarks/RESULTS.md, "Serving
    soak")."""

    model: VoxtralRealtime
    config: ServerConfig
    delay_ms: int  # the default delay of new sessions
    default_bias: ContextBias | None = None  # the list of sessions that send none
    worker: Worker = field(default_factory=Worker)
    connections: set[Connection] = field(default_factory=set)
    streams: set = field(default_factory=set)  # the dialects and Uploads with a session
    started: float = field(default_factory=time.time)
    # made on the worker thread, where their arrays live: realtime sessions, and uploads
    pool: SessionPool | None = None
    uploads: SessionPool | None = None
    wakeup: asyncio.Event | None = None
    scheduler: asyncio.Task | None = None
    watcher: asyncio.Task | None = None
    decoding: bool = False  # the pool had positions waiting after the last job
    # set (from the event loop) when a live session gets audio or its final commit: a job of
    # upload passes on the worker thread then ends at once
    live_waiting: threading.Event = field(default_factory=threading.Event)

    async def open_session(self, stream, delay_ms: int, context_bias: ContextBias | None) -> None:
        """Give `stream` a session (of the upload pool for an Upload); the scheduler takes
        it from there."""
        upload = isinstance(stream, Upload)
        stream.session = await self.worker.run(self._add, delay_ms, upload, context_bias)
        self.streams.add(stream)
        self.wake()

    async def close_session(self, stream, session: Session | None = None) -> None:
        """`stream` is done with its session (the given one, or its current one)."""
        session = session or stream.session
        if session is stream.session:
            self.streams.discard(stream)
            stream.session = None
        if session is not None:
            await self.worker.run(session.pool.remove, session)

    def wake(self) -> None:
        if self.scheduler is None:
            self.wakeup = asyncio.Event()
            self.scheduler = asyncio.create_task(self.schedule())
        self.wakeup.set()

    def context_bias(self, value: object = None) -> ContextBias | None:
        """The list a request or session sent (checked: VoxtralError), or the server's
        default when it sent none (None)."""
        if value is None:
            return self.default_bias
        phrases = parse_context_bias(value, self.config.context_bias_strength)
        return ContextBias.build(self.model.tokenizer, phrases)

    def check_model(self, name) -> str | None:
        """Why `name` is not a model this server serves (None: it is, or names none)."""
        if name in (None, "", *self.config.model_names):
            return None
        return f"The model `{shorten(str(name))}` does not exist."

    def live_audio(self) -> None:
        self.live_waiting.set()
        self.wake()

    def watch(self) -> None:
        """Start the watch over idle connections (once, from the event loop)."""
        if self.watcher is None:
            self.watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        """Every second: a realtime connection idle for `idle_timeout` (Connection.
        idle_seconds) is told why and closed, and its slot is free for the next one."""
        limit = self.config.idle_timeout
        while True:
            await asyncio.sleep(min(1.0, limit / 4))
            now = time.monotonic()
            for conn in [c for c in self.connections if c.idle_seconds(now) >= limit]:
                reason = f"idle for {limit:g} s: no audio and no commit"
                await conn.error(reason, "idle_timeout")
                await conn.flush(1.0)
                await conn.drop(reason, 1000)

    def _add(self, delay_ms: int, upload: bool, context_bias: ContextBias | None) -> Session:
        if self.pool is None:
            self.pool, self.uploads = SessionPool(self.model), SessionPool(self.model)
        pool = self.uploads if upload else self.pool
        # files stop at EOS, live runs on
        return pool.add(delay_ms, stop_at_eos=upload, context_bias=context_bias)

    async def schedule(self) -> None:
        """Forever: take what each stream has ready, run a job, hand out the events."""
        while True:
            self.live_waiting.clear()  # what is there now goes into this job
            work = {}
            for stream in list(self.streams):
                try:
                    if (taken := stream.intake()) is not None:
                        work[stream] = taken
                except Exception as e:  # that stream ends; the others go on
                    await stream.failed(e)
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
        passes for at most JOB_SECONDS: live sessions' passes first; once they have nothing
        left, their events go out (the job ends), and only then upload passes, until live
        audio arrives."""
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
                if events:
                    return events, True  # the live sessions' events go out now
                step = self.uploads.step()
                if not step:
                    return events, False
            for session, out in step.items():
                events.setdefault(session, []).extend(out)
            if self.live_waiting.is_set():
                return events, True
        return events, True


class Upload:
    """A file posted to /v1/audio/transcriptions, decoded as one more stream of the pool.

    `done` gets its Transcript, the exception it failed with, or None once its client is
    gone. With `stream`, `texts` gets the text of each TextDelta as it is decoded, then None
    once `done` is set."""

    def __init__(self, samples: np.ndarray, server: Server, stream: bool = False):
        self.server = server
        self.audio = deque([samples])
        self.session: Session | None = None
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()
        self.texts: asyncio.Queue[str | None] | None = asyncio.Queue() if stream else None
        self.decoding: asyncio.Task | None = None  # stream: _decode, beside the response

    def intake(self) -> tuple[np.ndarray | None, bool] | None:
        if self.session.decodable_positions >= MAX_ENCODED_AHEAD or self.session._ended:
            return None
        # alone, a whole encoder call's worth (small slices make 12-token encoder calls, 1.7x
        # the cost per token, and cap drafts below 16 positions); beside live sessions, small
        # ones: a live session waits for the upload's encoder call in progress
        live = any(not isinstance(s, Upload) for s in self.server.streams)
        tokens = UPLOAD_TOKENS_BESIDE_LIVE if live else ENCODER_BATCH_TOKENS
        samples = take_audio(self.audio, tokens * self.session.schedule.samples_per_token)
        return samples, not self.audio

    async def deliver(self, events) -> None:
        if self.texts is not None:
            for event in events:
                if isinstance(event, TextDelta) and event.text:
                    self.texts.put_nowait(event.text)
        if self.session.result is not None:
            self.end(self.session.result)

    async def failed(self, error: Exception) -> None:
        self.end(error=error)

    def end(self, result: Transcript | None = None, error: Exception | None = None) -> None:
        """Set `done` (once): the transcript, None (the client is gone), or the error."""
        if self.done.done():
            return
        if error is not None:
            self.done.set_exception(error)
        else:
            self.done.set_result(result)
        if self.texts is not None:
            self.texts.put_nowait(None)


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


ERROR_TYPES = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}


def _error(message: str, status: int, code: str | None = None) -> JSONResponse:
    """Every error reply has OpenAI's shape, so its clients show the message."""
    return JSONResponse(_error_body(message, status, code), status_code=status)


def _error_body(message: str, status: int, code: str | None = None) -> dict:
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return _error(message, exc.status_code)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query"))
    return _error(f"{where or 'request'}: {first.get('msg', 'invalid')}", 400)


async def page() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html")


async def health(request: Request) -> dict:
    server = _server(request)
    return {
        "status": "ok",
        "model": server.config.model_id,
        "delay_ms": server.delay_ms,
        "valid_delays_ms": list(VALID_DELAYS_MS),
        "sessions": len(server.connections),
        "max_sessions": server.config.max_sessions,
        "uploads": sum(isinstance(s, Upload) for s in server.streams),
        "uptime_s": round(time.time() - server.started, 1),
    }


async def models(request: Request) -> dict:
    server = _server(request)
    entry = {
        "id": server.config.model_id,
        "object": "model",
        "created": int(server.started),
        "owned_by": "voxtral-mlx",
    }
    return {"object": "list", "data": [entry]}


async def openapi(request: Request) -> JSONResponse:
    """The API schema, behind the key like the API itself."""
    _server(request)
    return JSONResponse(request.app.openapi())


async def _body(request: Request, limit: int, timeout: float):
    """The request body as it arrives: at most `limit` bytes (then 413), each read within
    `timeout` seconds (then 408)."""
    received = 0
    chunks = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), timeout)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise UploadRefused(f"the upload stalled: no data for {timeout:g} s", 408) from None
        received += len(chunk)
        if received > limit:
            raise UploadRefused(_too_large(limit), 413)
        yield chunk


class UploadRefused(Exception):
    def __init__(self, message: str, status: int, code: str | None = None):
        super().__init__(message)
        self.status, self.code = status, code


def _too_large(limit: int) -> str:
    return f"the file is larger than this server's limit of {limit / 2**20:g} MB (--max-upload-mb)"


async def _read_upload(request: Request, config: ServerConfig):
    """The form of an upload, its file part spooled in memory and then in an anonymous
    temporary file (removed when the form is closed), never beyond the size limit."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > config.max_upload_bytes:
        raise UploadRefused(_too_large(config.max_upload_bytes), 413)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UploadRefused("send the file as multipart/form-data (field `file`)", 400)
    body = _body(request, config.max_upload_bytes, config.read_timeout)
    # OpenAI's clients send a field per list item and per chunking_strategy key
    parser = MultiPartParser(request.headers, body, max_files=1, max_fields=32)
    try:
        return await parser.parse()
    except MultiPartException as e:
        raise UploadRefused(f"bad multipart form: {e.message}", 400) from None


@dataclass(frozen=True)
class UploadForm:
    """What an upload's form asks of this server, checked. OpenAI's other fields (prompt,
    temperature, timestamp_granularities[], chunking_strategy) are accepted and change
    nothing: README, "Uploads". `context_bias` is Mistral's field (custom vocabulary):
    repeated fields of one phrase each, or a JSON list; absent: the server's list."""

    response_format: str
    stream: bool
    delay_ms: int
    language: str | None
    context_bias: ContextBias | None

    @classmethod
    def read(cls, form: FormData, server: Server) -> UploadForm:
        """UploadRefused for a field this server cannot honour."""
        # absent or empty: the served model, as vLLM does; the same check as the WebSocket's
        if (message := server.check_model(form.get("model"))) is not None:
            raise UploadRefused(message, 404, "model_not_found")
        response_format = form.get("response_format") or "json"
        if response_format not in RESPONSE_FORMATS:
            raise UploadRefused(
                f"response_format must be one of {', '.join(RESPONSE_FORMATS)}", 400
            )
        stream = (form.get("stream") or "false").lower()
        if stream not in ("true", "false"):
            raise UploadRefused("stream must be true or false", 400)
        if stream == "true" and response_format not in STREAM_FORMATS:
            message = (
                f"stream=true streams text: response_format json or text, not {response_format}"
            )
            raise UploadRefused(message, 400, "unsupported_value")
        try:  # our extension: the delay of this upload
            delay = form.get("delay_ms")
            delay_ms = check_delay(_integer(delay)) if delay else server.delay_ms
        except VoxtralError as e:
            raise UploadRefused(str(e), 400, "invalid_delay") from None
        language = form.get("language") or None
        if language is not None and not LANGUAGE_CODE.fullmatch(language):
            message = "language must be a language code such as en (ISO-639-1)"
            raise UploadRefused(message, 400, "invalid_language")
        phrases = form.getlist("context_bias") + form.getlist("context_bias[]")
        phrases = [p for p in phrases if p]  # an empty field is no field, as delay_ms's
        try:
            context_bias = server.context_bias(phrases or None)
        except VoxtralError as e:
            raise UploadRefused(str(e), 400, "invalid_context_bias") from None
        include = form.getlist("include[]") + form.getlist("include")
        if "logprobs" in include:
            message = "include[]=logprobs is not available: this server keeps no log probabilities"
            raise UploadRefused(message, 400, "unsupported_value")
        if include:
            raise UploadRefused(f"include[]: unknown value {shorten(str(include[0]))!r}", 400)
        granularities = form.getlist("timestamp_granularities[]")
        granularities += form.getlist("timestamp_granularities")
        if unknown := [g for g in granularities if g not in ("word", "segment")]:
            message = (
                f"timestamp_granularities[]: word or segment, not {shorten(str(unknown[0]))!r}"
            )
            raise UploadRefused(message, 400)
        if (temperature := form.get("temperature")) not in (None, ""):
            try:
                ok = 0.0 <= float(temperature) <= 2.0
            except ValueError:
                ok = False
            if not ok:
                raise UploadRefused("temperature must be a number from 0 to 2", 400)
        return cls(response_format, stream == "true", delay_ms, language, context_bias)


def _integer(text: str) -> int | str:
    """`text` as an int, or else shortened, for the error that quotes it."""
    try:
        return int(text)
    except ValueError:
        return shorten(text)


async def _audio_file(form: FormData) -> tuple[str, bytes]:
    """The name the file was sent with, and its bytes."""
    file = form.get("file")
    if not isinstance(file, StarletteUploadFile):
        raise UploadRefused(
            "the form needs the audio file as the field `file`", 400, "missing_file"
        )
    return Path(file.filename or "").name or "the upload", await file.read()


async def transcriptions(request: Request):
    server = _server(request)  # the key first, before a byte of the body is read
    try:
        form = await _read_upload(request, server.config)
        try:
            name, data = await _audio_file(form)
            asked = UploadForm.read(form, server)
        finally:
            await form.close()
    except UploadRefused as e:
        return _error(str(e), e.status, e.code)
    try:
        # decoded beside the model's thread, not on it: a long file takes seconds to decode
        # and resample, and live sessions would wait for it
        upload = Upload(await asyncio.to_thread(_decode_bytes, data, name), server, asked.stream)
        del data
        await server.open_session(upload, asked.delay_ms, asked.context_bias)
    except VoxtralError as e:
        return _error(str(e), 400)
    if asked.stream:
        upload.decoding = asyncio.create_task(_decode(request, server, upload))
        return StreamingResponse(_text_events(upload, server.model), media_type="text/event-stream")
    await _decode(request, server, upload)
    try:
        result = upload.done.result()
    except VoxtralError as e:
        return _error(str(e), 400)
    if result is None:
        return _error("the client closed the connection", 499)
    return _reply(result, asked, name, server.model)


async def _decode(request: Request, server: Server, upload: Upload) -> None:
    """Wait for the upload's `done`, or set it to None once its client is gone (checked
    every half second); then close its session: a client gone stops its decoding."""
    try:
        while not upload.done.done():
            await asyncio.wait({upload.done}, timeout=0.5)
            if not upload.done.done() and await request.is_disconnected():
                upload.end(None)
    finally:
        await server.close_session(upload)


def _reply(result: Transcript, asked: UploadForm, name: str, model: VoxtralRealtime):
    usage = {"type": "duration", "seconds": result.audio_seconds}
    if asked.response_format == "text":
        return PlainTextResponse(result.text + "\n")
    if asked.response_format in ("srt", "vtt"):
        return PlainTextResponse(render(result, asked.response_format, name))
    if asked.response_format == "json":
        return {"text": result.text, "usage": usage}
    return {
        "task": "transcribe",
        "language": asked.language or UNKNOWN_LANGUAGE,
        "duration": result.audio_seconds,
        "text": result.text,
        "words": [{"word": w.text, "start": w.start, "end": w.end} for w in result.words],
        "segments": _segments(result, model),
        "usage": usage,
        "delay_ms": result.delay_ms,  # our extension: the delay it was transcribed at
    }


def _segments(result: Transcript, model: VoxtralRealtime) -> list[dict]:
    """verbose_json's segments: the transcript's subtitle cues, each with the text token ids
    of its words. Decoding is greedy (temperature 0.0); avg_logprob and no_speech_prob
    have no value here and are 0.0, as README "Uploads" says."""
    schedule = model.args.schedule(result.delay_ms)
    first = schedule.prompt_length - 1  # the decoder position of the first generated token
    words = iter(words_with_tokens(result.tokens, first, model.tokenizer, schedule))
    segments = []
    for i, cue in enumerate(cues(result.words)):
        texts, tokens = [], []
        while " ".join(texts) != cue.text:  # a cue is its words' texts, joined by spaces
            word, ids = next(words)
            texts.append(word.text)
            tokens += ids
        segments.append(
            {
                "id": i,
                "seek": round(cue.start * 100),  # its start in 10 ms frames
                "start": cue.start,
                "end": cue.end,
                "text": cue.text,
                "tokens": tokens,
                "temperature": 0.0,
                "avg_logprob": 0.0,
                "compression_ratio": _compression_ratio(cue.text),
                "no_speech_prob": 0.0,
            }
        )
    return segments


def _compression_ratio(text: str) -> float:
    """Whisper's: the text's UTF-8 bytes over their zlib-compressed size."""
    data = text.encode()
    return len(data) / len(zlib.compress(data))


async def _text_events(upload: Upload, model: VoxtralRealtime) -> AsyncIterator[str]:
    """The upload's server-sent events as OpenAI sends them: `transcript.text.delta` for
    each piece of text as the file is decoded, then `transcript.text.done`. The deltas add
    up to the done text, the transcript's (StrippedStream); a failure is an error event in
    OpenAI's shape."""
    stripped = StrippedStream()
    while (text := await upload.texts.get()) is not None:
        if delta := stripped.push(text):
            yield _event({"type": "transcript.text.delta", "delta": delta})
    try:
        result = upload.done.result()
    except Exception as e:  # (sent, not raised: the response has started)
        yield _event(_error_body(f"transcription failed: {e}", 500, "processing_error"))
        return
    if result is not None:  # (None: the client is gone)
        usage = _token_usage(result, model)
        yield _event({"type": "transcript.text.done", "text": result.text, "usage": usage})


def _event(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _token_usage(result: Transcript, model: VoxtralRealtime) -> dict:
    """Usage in tokens, the only kind OpenAI's done event has: the decoder's prompt in,
    every generated id out (pads included), as transcription.done counts them."""
    prompt = model.args.schedule(result.delay_ms).prompt_length
    out = len(result.tokens)
    return {
        "type": "tokens",
        "input_tokens": prompt,
        "output_tokens": out,
        "total_tokens": prompt + out,
    }


def _decode_bytes(data: bytes, name: str) -> np.ndarray:
    """An uploaded file's audio at 16 kHz (non-finite samples are an error, as for files;
    errors name the file by the name it was sent with)."""
    samples, rate = decode_audio_bytes(data, name)
    try:
        check_finite(samples, rate)
    except VoxtralError as e:
        raise VoxtralError(f"{name}: {e}") from None
    return resample(samples, rate, SAMPLE_RATE)


def default_max_sessions(model: VoxtralRealtime) -> int:
    """As many streams as half the memory the weights leave free holds, each at its most,
    from 1 to 64."""
    return streams_that_fit(model)


UPLOAD_FORM = {  # the upload's form in the API schema (the handler reads the body itself)
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "model": {"type": "string", "description": "absent: the served model"},
                        "response_format": {"type": "string", "enum": list(RESPONSE_FORMATS)},
                        "stream": {
                            "type": "boolean",
                            "description": "server-sent text events (json and text only)",
                        },
                        "delay_ms": {
                            "type": "integer",
                            "enum": list(VALID_DELAYS_MS),
                            "description": "our extension: the transcription delay",
                        },
                        "language": {
                            "type": "string",
                            "description": "verbose_json's language; not detected, not used",
                        },
                        "prompt": {"type": "string", "description": "accepted, not used"},
                        "context_bias": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "custom vocabulary: phrases to prefer (a field "
                            "each, or a JSON list; [phrase, weight] pairs are our extension)",
                        },
                        "temperature": {"type": "number", "description": "decoding is greedy"},
                        "timestamp_granularities[]": {
                            "type": "array",
                            "items": {"type": "string", "enum": ["word", "segment"]},
                            "description": "verbose_json always has both",
                        },
                        "include[]": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "logprobs are not available",
                        },
                        "chunking_strategy": {"description": "accepted, not used"},
                    },
                }
            }
        },
    }
}


def create_app(model: VoxtralRealtime, config: ServerConfig) -> FastAPI:
    # no docs pages; the schema is behind the key (openapi())
    app = FastAPI(title="voxtral-mlx", docs_url=None, redoc_url=None, openapi_url=None)
    delay_ms = model.args.schedule(config.delay_ms).delay_ms
    if config.max_sessions is None:
        config = dataclasses.replace(config, max_sessions=default_max_sessions(model))
    if config.max_connections is None:
        config = dataclasses.replace(config, max_connections=default_max_connections())
    default_bias = ContextBias.build(model.tokenizer, list(config.context_bias))
    app.state.server = Server(model, config, delay_ms, default_bias)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    # the browser page: public (it holds no secret); its API calls carry the key
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    app.add_api_route("/", page, include_in_schema=False)
    app.add_api_route("/openapi.json", openapi, include_in_schema=False)
    app.add_api_route("/health", health)
    app.add_api_route("/v1/models", models)
    app.add_api_route(
        "/v1/audio/transcriptions", transcriptions, methods=["POST"], openapi_extra=UPLOAD_FORM
    )
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


def _protocols(config: ServerConfig) -> tuple[type, type]:
    """uvicorn's HTTP and WebSocket protocols with the guards it lacks: at most
    `max_connections` open connections (one more is closed as it opens, before it holds
    anything), and a connection's first request must have sent its headers within
    `read_timeout` (uvicorn closes idle keep-alive connections after 5 s by itself). The
    WebSocket protocol puts its transport in the scope, for Connection.drop."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as HTTP
    except ImportError:  # uvicorn without httptools
        from uvicorn.protocols.http.h11_impl import H11Protocol as HTTP

    class GuardedHTTP(HTTP):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._late = None
            if len(self.connections) > config.max_connections:
                transport.abort()
                return
            self._late = self.loop.call_later(config.read_timeout, self._headers_late)

        def _headers_late(self) -> None:
            transport = self.transport
            if self.cycle is None and transport.get_protocol() is self:
                transport.close()

        def connection_lost(self, exc) -> None:
            if self._late is not None:
                self._late.cancel()
            super().connection_lost(exc)

    class WebSocketWithTransport(WebSocketsSansIOProtocol):
        async def run_asgi(self) -> None:
            self.scope[TRANSPORT_KEY] = self.transport
            await super().run_asgi()

    return GuardedHTTP, WebSocketWithTransport


def serve(model: VoxtralRealtime, config: ServerConfig, host: str, port: int, ready=None) -> None:
    """Run until interrupted (Ctrl+C: a graceful shutdown, then return). `ready(server)` is
    called from the server thread once it listens."""
    import uvicorn

    app = create_app(model, config)
    http, ws = _protocols(app.state.server.config)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            ws_max_size=config.max_message_bytes,
            timeout_graceful_shutdown=SHUTDOWN_SECONDS,
            http=http,
            ws=ws,
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
