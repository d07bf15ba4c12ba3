"""The realtime endpoints, /v1/realtime and /v1/audio/transcriptions/realtime: the key, a
session slot, the client's dialect, then one `Connection` until either side closes; and the
watch over idle connections.

A connection speaks one of DIALECTS, one module each. On /v1/realtime: vLLM's (vllm.py, the
default) or OpenAI's Realtime transcription dialect (openai/), chosen by
`?intent=transcription` in the URL, or by the client's first event (a `session.update` whose
`session` is an object, or the beta `transcription_session.update`: `Dialect.speaks`). On
/v1/audio/transcriptions/realtime: Mistral's (mistral/). A new dialect implements `Dialect`
(connection.py) and joins DIALECTS and `chosen_dialect` here.
"""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect

from .connection import Connection, Dialect
from .errors import KEY_REFUSED, authorized, error_response, too_many_sessions
from .mistral import MistralDialect
from .openai import OpenAIDialect
from .server import Server
from .vllm import VllmDialect

DIALECTS: tuple[type[Dialect], ...] = (VllmDialect, OpenAIDialect, MistralDialect)
MISTRAL_PATH = "/v1/audio/transcriptions/realtime"


def chosen_dialect(websocket: WebSocket) -> type[Dialect]:
    """The dialect the URL asks for: Mistral's on its own path, OpenAI's for
    `?intent=transcription`, else vLLM's (which hands the connection over if the first event
    is another dialect's)."""
    if websocket.url.path.rstrip("/") == MISTRAL_PATH:
        return MistralDialect
    if websocket.query_params.get("intent") == "transcription":
        return OpenAIDialect
    return VllmDialect


def subprotocol(offered: list[str]) -> str | None:
    """The one the handshake answers with: a browser fails a connection that offered
    subprotocols and got none back. `realtime` when offered, else the first offered (the
    key's own, for a client that offers only that)."""
    offered = [p for p in offered if p]
    if "realtime" in offered:
        return "realtime"
    return offered[0] if offered else None


async def realtime(websocket: WebSocket) -> None:
    """The realtime handler: key, slot, then the client's events until either side
    closes."""
    server = websocket.app.state.server
    protocols = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",")]
    if not authorized(server.config.api_key, websocket.headers, protocols):
        # an HTTP 401 in OpenAI's shape, as for every other endpoint (where the server
        # cannot send a response to a handshake, a plain refusal: 403)
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(error_response(KEY_REFUSED, 401))
        else:
            await websocket.close(code=1008, reason="missing or wrong API key")
        return
    await websocket.accept(subprotocol=subprotocol(protocols))
    dialect = chosen_dialect(websocket)
    limit = server.config.max_sessions
    if len(server.connections) >= limit:
        error = dialect.refusal(too_many_sessions(limit), "too_many_sessions")
        await websocket.send_text(json.dumps(error))
        await websocket.close(code=1013, reason="too many sessions")
        return
    conn = Connection(websocket, server, dialect, DIALECTS)
    server.connections.add(conn)
    if server.watcher is None:
        server.watcher = asyncio.create_task(watch_idle(server))
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


async def watch_idle(server: Server) -> None:
    """Every second: a realtime connection idle for `idle_timeout` (Connection.
    idle_seconds) is told why and closed, and its slot is free for the next one."""
    limit = server.config.idle_timeout
    while True:
        await asyncio.sleep(min(1.0, limit / 4))
        now = time.monotonic()
        for conn in [c for c in server.connections if c.idle_seconds(now) >= limit]:
            reason = f"idle for {limit:g} s: no audio and no commit"
            await conn.error(reason, "idle_timeout")
            await conn.flush(1.0)
            await conn.drop(reason, 1000)
