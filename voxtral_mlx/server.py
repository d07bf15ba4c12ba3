"""`voxtral serve`: a realtime WebSocket endpoint compatible with vLLM's /v1/realtime, an
OpenAI-style upload endpoint, and /health. Imported only when serving (FastAPI, uvicorn).

Protocol (the same event names as vLLM, so its clients work unchanged):
  server -> session.created {id, created}
  client -> session.update {model}            start the session (and check the model name)
  client -> input_audio_buffer.commit         start transcribing (audio appended so far too)
  client -> input_audio_buffer.append {audio} base64 PCM16 little-endian, mono, 16 kHz
  server -> transcription.delta {delta}       text, append-only, as soon as it is decided
  client -> input_audio_buffer.commit {final: true}   end of input: flush the last words
  server -> transcription.done {text, usage}  then the connection is ready for another one
  server -> error {error, code}               the connection stays usable

Concurrency: every connection has its own Session; all share the weights and one worker
thread, which runs model work in slices of at most `SLICE_SECONDS` of audio, round-robin,
so the event loop never blocks and a connection with a backlog cannot starve the others.
Backpressure: a connection whose unprocessed audio exceeds `max_backlog_seconds` gets an
`error {code: "buffer_full"}` for each further append, which is dropped; it can slow down
and resend.
"""

import asyncio
import base64
import binascii
import io
import json
import secrets
import tempfile
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import mlx.core as mx
import numpy as np

from .audio import SAMPLE_RATE, load_audio
from .config import check_delay
from .errors import VoxtralError
from .formats import cues, render
from .model import VoxtralRealtime
from .session import Session, TextDelta, Transcript
from .transcribe import transcribe

WEB_DIR = Path(__file__).parent / "web"
SLICE_SECONDS = 1.0  # the most audio one worker job processes before others get a turn
INSECURE_KEY_PROTOCOL = "openai-insecure-api-key."  # browsers cannot set WebSocket headers


@dataclass
class ServerConfig:
    model_name: str
    delay_ms: int = 480
    api_key: str | None = None
    max_sessions: int = 8
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


class RealtimeConnection:
    def __init__(self, websocket, model: VoxtralRealtime, config: ServerConfig, worker: Worker):
        self.ws, self.model, self.config, self.worker = websocket, model, config, worker
        self.id = f"sess-{uuid.uuid4().hex}"
        self.session: Session | None = None
        self.delay_ms = config.delay_ms
        self.started = False  # session.update received
        self.transcribing = False  # commit received
        self.pending: deque[np.ndarray] = deque()  # audio not yet given to the model
        self.pending_seconds = 0.0
        self.wakeup = asyncio.Event()
        self.final_requested = False
        self.closed = False
        self.pump_task: asyncio.Task | None = None
        self.send_lock = asyncio.Lock()

    async def send(self, event: dict) -> None:
        if self.closed:
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
        kind = event["type"]
        if kind == "session.update":
            model = event.get("model")
            if model not in (None, "", self.config.model_name, Path(self.config.model_name).name):
                return await self.error(f"The model `{model}` does not exist.", "model_not_found")
            if event.get("delay_ms") is not None:  # our extension: the delay of this session
                try:
                    self.delay_ms = check_delay(event["delay_ms"])
                except (VoxtralError, TypeError, ValueError) as e:
                    return await self.error(str(e), "invalid_delay")
            self.started = True
        elif kind == "input_audio_buffer.append":
            await self.append(event.get("audio"))
        elif kind == "input_audio_buffer.commit":
            if not self.started:
                return await self.error(
                    "Send session.update before input_audio_buffer.commit", "model_not_validated"
                )
            if event.get("final"):
                if not self.transcribing:
                    return await self.error(
                        "Nothing to finish: no transcription started", "not_started"
                    )
                self.final_requested = True
                self.wakeup.set()
            elif not self.transcribing:
                self.transcribing = True
                # MLX streams belong to a thread: build the session's arrays where they run
                self.session = await self.worker.run(Session, self.model, self.delay_ms)
                self.pump_task = asyncio.create_task(self.pump())
        else:
            await self.error(f"Unknown event type: {kind}", "unknown_event")

    async def append(self, audio) -> None:
        if not self.started:
            return await self.error(
                "Audio before the session started: send session.update first", "session_not_started"
            )
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
        if self.pending_seconds + seconds > self.config.max_backlog_seconds:
            return await self.error(
                f"Audio arrives faster than it is transcribed: more than "
                f"{self.config.max_backlog_seconds:g} s are waiting; this chunk was dropped",
                "buffer_full",
            )
        self.pending.append(np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0)
        self.pending_seconds += seconds
        self.wakeup.set()

    async def pump(self) -> None:
        """Give pending audio to the model slice by slice; send what comes back; on the
        final commit, flush and send transcription.done."""
        try:
            while not self.closed:
                if self.pending:
                    chunk = self._take(int(SLICE_SECONDS * SAMPLE_RATE))
                    await self._send_events(await self.worker.run(self.session.feed, chunk))
                elif self.final_requested:
                    await self.finish()
                    return
                else:  # no await between the check above and clear(): no lost wakeup
                    self.wakeup.clear()
                    await self.wakeup.wait()
        except Exception as e:  # this connection's transcription ends; the server goes on
            if not self.closed:
                await self.error(f"transcription failed: {e}", "processing_error")

    def _take(self, n: int) -> np.ndarray:
        parts, taken = [], 0
        while self.pending and taken < n:
            head = self.pending.popleft()
            if taken + len(head) > n:
                self.pending.appendleft(head[n - taken :])
                head = head[: n - taken]
            parts.append(head)
            taken += len(head)
        self.pending_seconds = sum(len(p) for p in self.pending) / SAMPLE_RATE
        return np.concatenate(parts)

    async def finish(self) -> None:
        await self._send_events(await self.worker.run(self.session.finish))
        final = self.session.result
        prompt = self.session.schedule.prompt_length
        await self.send(
            {
                "type": "transcription.done",
                "text": final.text,
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": len(final.tokens),
                    "total_tokens": prompt + len(final.tokens),
                },
            }
        )
        # ready for the next utterance on the same connection: a new commit starts it
        self.transcribing = self.final_requested = False
        self.session = None

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

    def close(self) -> None:
        self.closed = True
        self.pending.clear()
        self.wakeup.set()
        if self.pump_task is not None:
            self.pump_task.cancel()


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


def create_app(model: VoxtralRealtime, config: ServerConfig):
    from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile, WebSocket
    from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.websockets import WebSocketDisconnect

    app = FastAPI(title="voxtral-mlx", docs_url=None, redoc_url=None)
    # the browser page: public (it holds no secret); its API calls carry the key
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(WEB_DIR / "index.html")

    worker = Worker()
    connections: set[RealtimeConnection] = set()
    started = time.time()

    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
        )

    def check_key(request: Request) -> None:
        if not _authorized(config, request.headers):
            raise HTTPException(401, "missing or wrong API key (Authorization: Bearer KEY)")

    @app.get("/health")
    async def health(request: Request):
        check_key(request)
        return {
            "status": "ok",
            "model": config.model_name,
            "delay_ms": config.delay_ms,
            "sessions": len(connections),
            "max_sessions": config.max_sessions,
            "uptime_s": round(time.time() - started, 1),
        }

    @app.get("/v1/models")
    async def models(request: Request):
        check_key(request)
        entry = {
            "id": config.model_name,
            "object": "model",
            "created": int(started),
            "owned_by": "voxtral-mlx",
        }
        return {"object": "list", "data": [entry]}

    @app.websocket("/v1/realtime")
    async def realtime(websocket: WebSocket):
        protocols = [
            p.strip()
            for p in websocket.headers.get("sec-websocket-protocol", "").split(",")
            if p.strip()
        ]
        if not _authorized(config, websocket.headers, protocols):
            await websocket.close(code=1008, reason="missing or wrong API key")
            return
        subprotocol = "realtime" if "realtime" in protocols else None
        await websocket.accept(subprotocol=subprotocol)
        if len(connections) >= config.max_sessions:
            await websocket.send_text(
                json.dumps(
                    {
                        "type": "error",
                        "code": "too_many_sessions",
                        "error": f"the server is at its limit of {config.max_sessions} sessions",
                    }
                )
            )
            await websocket.close(code=1013, reason="too many sessions")
            return
        conn = RealtimeConnection(websocket, model, config, worker)
        connections.add(conn)
        try:
            await conn.send({"type": "session.created", "id": conn.id, "created": int(time.time())})
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("text") is None:
                    await conn.error(
                        "Binary frames are not part of the protocol: send JSON text",
                        "invalid_event",
                    )
                    continue
                await conn.handle(message["text"])
        except WebSocketDisconnect:
            pass
        finally:
            conn.close()
            connections.discard(conn)

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(
        request: Request,
        file: Annotated[UploadFile, File()],
        model_name: Annotated[str | None, Form(alias="model")] = None,
        response_format: Annotated[str, Form()] = "json",
    ):
        check_key(request)
        formats = ("json", "text", "srt", "vtt", "verbose_json")
        if response_format not in formats:
            return JSONResponse(
                {
                    "error": {
                        "message": f"response_format must be one of {', '.join(formats)}",
                        "type": "invalid_request_error",
                    }
                },
                status_code=400,
            )
        data = await file.read(config.max_upload_bytes + 1)
        if len(data) > config.max_upload_bytes:
            return JSONResponse(
                {"error": {"message": "file too large", "type": "invalid_request_error"}},
                status_code=413,
            )
        try:
            result = await worker.run(
                _transcribe_bytes, model, data, file.filename or "", config.delay_ms
            )
        except VoxtralError as e:
            return JSONResponse(
                {"error": {"message": str(e), "type": "invalid_request_error"}}, status_code=400
            )
        if response_format == "text":
            return PlainTextResponse(result.text + "\n")
        if response_format in ("srt", "vtt"):
            return PlainTextResponse(render(result, response_format, file.filename or "upload"))
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

    app.state.connections = connections
    app.state.worker = worker
    return app


def _transcribe_bytes(
    model: VoxtralRealtime, data: bytes, filename: str, delay_ms: int
) -> Transcript:
    try:
        samples = load_audio(io.BytesIO(data))
    except VoxtralError:
        # containers soundfile cannot read go through ffmpeg, which needs a file
        suffix = Path(filename).suffix or ".bin"
        with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
            tmp.write(data)
            tmp.flush()
            samples = load_audio(tmp.name)
    return transcribe(model, samples, delay_ms=delay_ms)


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
        app.state.worker.close()


def _notify_when_started(server, ready) -> None:
    while not server.started:
        time.sleep(0.02)
    ready(server)


__all__ = ["ServerConfig", "create_app", "serve"]
