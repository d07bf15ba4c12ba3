"""`voxtral serve`: the app (create_app) and its server (serve), and the small routes: the
page, /health, /v1/models, the API schema. The realtime endpoint is realtime.py's, uploads
uploads.py's; the scheduler (scheduler.py) feeds the model.

Limits (ServerConfig): events a client leaves unread (MAX_UNSENT_EVENTS), idle realtime
connections (`idle_timeout`), request headers and upload reads (`read_timeout`), open
connections (`max_connections`), upload size (`max_upload_bytes`, checked while reading,
after the key), audio waiting for the model (`max_backlog_seconds`: an append beyond it is
dropped with an `error {code: "buffer_full"}`, or, with backpressure "wait", not read until
there is room).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import threading
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import FormData
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from ..audio import check_finite, decode_audio_bytes, resample
from ..config import ENCODER_BATCH_TOKENS, SAMPLE_RATE, VALID_DELAYS_MS, check_delay
from ..errors import VoxtralError
from ..formats import StrippedStream, cues, render
from ..model import VoxtralRealtime
from ..session import Session, TextDelta, Transcript, streams_that_fit
from ..words import words_with_tokens
from .config import ServerConfig, default_max_connections
from .errors import KEY_REFUSED, authorized, error_body, error_response, shorten
from .realtime import TRANSPORT_KEY, realtime, take_audio
from .scheduler import Scheduler
from .server import Server

WEB_DIR = Path(__file__).parent.parent / "web"
# an upload's audio per job while live sessions run (about 1 s): its encoder call is what a
# live session may wait for (a 94-token call took 560 ms with the test model on a 2-core CPU)
UPLOAD_TOKENS_BESIDE_LIVE = 12
SHUTDOWN_SECONDS = 5  # Ctrl+C: requests in flight get this long, then are cut off
RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
STREAM_FORMATS = ("json", "text")  # stream=true: text events, as OpenAI streams these
LANGUAGE_CODE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*")  # en, yue, pt-BR
UNKNOWN_LANGUAGE = "und"  # ISO 639's "undetermined": Voxtral Realtime detects no language


class Upload:
    """A file posted to /v1/audio/transcriptions, decoded as one more stream of the pool.

    `done` gets its Transcript, the exception it failed with, or None once its client is
    gone. With `stream`, `texts` gets the text of each TextDelta as it is decoded, then None
    once `done` is set. A Stream of the scheduler."""

    live = False

    def __init__(self, samples: np.ndarray, server: Server, stream: bool = False):
        self.server = server
        self.audio = deque([samples])
        self.session: Session | None = None
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()
        self.texts: asyncio.Queue[str | None] | None = asyncio.Queue() if stream else None
        self.decoding: asyncio.Task | None = None  # stream: _decode, beside the response

    def intake(self) -> tuple[np.ndarray | None, bool] | None:
        if not self.session.wants_audio:
            return None
        # alone, a whole encoder call's worth (small slices make 12-token encoder calls, 1.7x
        # the cost per token, and cap drafts below 16 positions); beside live sessions, small
        # ones: a live session waits for the upload's encoder call in progress
        live = self.server.scheduler.serving_live
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


def _server(request: Request) -> Server:
    """The shared state, once the request's key is checked."""
    server = request.app.state.server
    if not authorized(server.config.api_key, request.headers):
        raise HTTPException(401, KEY_REFUSED)
    return server


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return error_response(message, exc.status_code)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query"))
    return error_response(f"{where or 'request'}: {first.get('msg', 'invalid')}", 400)


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
        "uploads": server.scheduler.uploads,
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
    nothing: README, "Uploads"."""

    response_format: str
    stream: bool
    delay_ms: int
    language: str | None

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
        return cls(response_format, stream == "true", delay_ms, language)


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
        return error_response(str(e), e.status, e.code)
    try:
        # decoded beside the model's thread, not on it: a long file takes seconds to decode
        # and resample, and live sessions would wait for it
        upload = Upload(await asyncio.to_thread(_decode_bytes, data, name), server, asked.stream)
        del data
        await server.scheduler.open_session(upload, asked.delay_ms)
    except VoxtralError as e:
        return error_response(str(e), 400)
    if asked.stream:
        upload.decoding = asyncio.create_task(_decode(request, server, upload))
        return StreamingResponse(_text_events(upload, server.model), media_type="text/event-stream")
    await _decode(request, server, upload)
    try:
        result = upload.done.result()
    except VoxtralError as e:
        return error_response(str(e), 400)
    if result is None:
        return error_response("the client closed the connection", 499)
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
        await server.scheduler.close_session(upload)


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
        yield _event(error_body(f"transcription failed: {e}", 500, "processing_error"))
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
        config = dataclasses.replace(config, max_sessions=streams_that_fit(model))
    if config.max_connections is None:
        config = dataclasses.replace(config, max_connections=default_max_connections())
    app.state.server = Server(model, config, delay_ms, Scheduler(model))
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
    """Run until interrupted (Ctrl+C: a graceful shutdown, then return). `ready()` is called
    from another thread once the server listens."""
    import uvicorn

    app = create_app(model, config)
    http, ws = _protocols(app.state.server.config)
    listener = uvicorn.Server(
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
        threading.Thread(target=_notify_when_started, args=(listener, ready), daemon=True).start()
    try:
        listener.run()
    except KeyboardInterrupt:
        # after its graceful shutdown uvicorn re-raises the signal it caught; the
        # interruption has been handled: return normally (exit status 0)
        if not listener.should_exit:
            raise
    finally:
        app.state.server.scheduler.close()


def _notify_when_started(listener, ready) -> None:
    while not listener.started:
        time.sleep(0.02)
    ready()


__all__ = ["ServerConfig", "create_app", "serve"]
