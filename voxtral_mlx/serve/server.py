"""What every handler of the server shares: `Server`, kept on `app.state.server`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from fastapi import HTTPException, Request

from ..biasing import ContextBias, parse_context_bias
from ..model import VoxtralRealtime
from .config import ServerConfig
from .errors import KEY_REFUSED, STOPPING, ServerStopping, authorized, shorten
from .scheduler import Scheduler

SHUTDOWN_SECONDS = 5  # Ctrl+C: requests in flight get this long, then are cut off (uvicorn)
# ... of which a request still running gets this long to finish; then it is answered 503
STOP_GRACE_SECONDS = SHUTDOWN_SECONDS - 1
T = TypeVar("T")


@dataclass
class Server:
    """The model and the config served, the scheduler that feeds the model, the realtime
    connections open, and whether the server is stopping."""

    model: VoxtralRealtime
    config: ServerConfig  # its defaults resolved (create_app)
    delay_ms: int  # the default delay of new sessions
    scheduler: Scheduler
    connections: set = field(default_factory=set)  # the realtime connections open
    started: float = field(default_factory=time.time)
    watcher: asyncio.Task | None = None  # the watch over idle connections (realtime.py)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)  # set on Ctrl+C (serve)
    default_bias: ContextBias | None = None  # the list of sessions that send none (create_app)

    def context_bias(self, value: object = None) -> ContextBias | None:
        """The list a request or session sent (checked: VoxtralError), or the server's own
        when it sent none (None)."""
        if value is None:
            return self.default_bias
        phrases = parse_context_bias(value, self.config.context_bias_strength)
        return ContextBias.build(self.model.tokenizer, phrases)

    def check_model(self, name) -> str | None:
        """Why `name` is not a model this server serves (None: it is, or names none)."""
        if name in (None, "", *self.config.model_names):
            return None
        return f"The model `{shorten(str(name))}` does not exist."

    async def before_stop(self, work: Awaitable[T]) -> T:
        """`work`'s result, unless the server stops first and STOP_GRACE_SECONDS pass: then
        `work` is cancelled and ServerStopping raised, so that its client is answered before
        uvicorn cuts the request off."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self._stopped())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            stop.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})  # (its own cleanup runs)
            raise ServerStopping(STOPPING)
        return task.result()

    async def _stopped(self) -> None:
        await self.stopping.wait()
        await asyncio.sleep(STOP_GRACE_SECONDS)


def keyed(request: Request) -> Server:
    """The shared state, once the request's key is checked (HTTPException 401: no key)."""
    server = request.app.state.server
    if not authorized(server.config.api_key, request.headers):
        raise HTTPException(401, KEY_REFUSED)
    return server
