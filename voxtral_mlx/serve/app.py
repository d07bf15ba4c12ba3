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

import dataclasses
import threading
import time
from http import HTTPStatus
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..biasing import ContextBias
from ..config import VALID_DELAYS_MS
from ..model import VoxtralRealtime
from ..session import streams_that_fit
from .config import ServerConfig, default_max_connections
from .connection import TRANSPORT_KEY
from .errors import error_response
from .realtime import MISTRAL_PATH, realtime
from .scheduler import Scheduler
from .server import SHUTDOWN_SECONDS, Server, keyed
from .upload_form import UPLOAD_FORM
from .uploads import transcriptions

WEB_DIR = Path(__file__).parent.parent / "web"


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
    server = keyed(request)
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
    """The served model, as OpenAI's and vLLM's clients read it (`id`), and as Mistral's
    SDK does (`type`, `capabilities`: a BaseModelCard)."""
    server = keyed(request)
    entry = {
        "id": server.config.model_id,
        "object": "model",
        "created": int(server.started),
        "owned_by": "voxtral-mlx",
        "type": "base",
        "aliases": list(server.config.aliases),
        "capabilities": {"audio_transcription": True, "audio_transcription_realtime": True},
        "audio_transcription_capabilities": {
            "modes": ["offline", "realtime"],
            "diarization": False,
            "context_bias": True,
            "turn_detection": True,
            "timestamp_granularities": ["segment", "word"],
            "languages": [],  # accepted and echoed, never used: Voxtral takes no language
            "streaming_delays_ms": [{"min": d, "max": d} for d in VALID_DELAYS_MS],
        },
    }
    return {"object": "list", "data": [entry]}


async def openapi(request: Request) -> JSONResponse:
    """The API schema, behind the key like the API itself."""
    keyed(request)
    return JSONResponse(request.app.openapi())


def create_app(model: VoxtralRealtime, config: ServerConfig) -> FastAPI:
    """The app serving `model`: its routes, and its shared state (`app.state.server`) with
    the config's defaults resolved from the model and the machine."""
    # no docs pages; the schema is behind the key (openapi())
    app = FastAPI(title="voxtral-mlx", docs_url=None, redoc_url=None, openapi_url=None)
    delay_ms = model.args.schedule(config.delay_ms).delay_ms
    if config.max_sessions is None:
        config = dataclasses.replace(config, max_sessions=streams_that_fit(model))
    if config.max_connections is None:
        config = dataclasses.replace(config, max_connections=default_max_connections())
    default_bias = ContextBias.build(model.tokenizer, list(config.context_bias))
    app.state.server = Server(model, config, delay_ms, Scheduler(model), default_bias=default_bias)
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
    app.add_api_websocket_route(MISTRAL_PATH, realtime)
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

    class Listener(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            app.state.server.stopping.set()  # requests in flight are answered before the end
            await super().shutdown(sockets)

    app = create_app(model, config)
    http, ws = _protocols(app.state.server.config)
    listener = Listener(
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
