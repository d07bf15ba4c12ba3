"""What every handler of the server shares: `Server`, kept on `app.state.server`."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from fastapi import HTTPException, Request

from ..model import VoxtralRealtime
from .config import ServerConfig
from .errors import KEY_REFUSED, authorized, shorten
from .scheduler import Scheduler


@dataclass
class Server:
    """The model and the config served, the scheduler that feeds the model, and the
    realtime connections open."""

    model: VoxtralRealtime
    config: ServerConfig  # its defaults resolved (create_app)
    delay_ms: int  # the default delay of new sessions
    scheduler: Scheduler
    connections: set = field(default_factory=set)  # the realtime connections open
    started: float = field(default_factory=time.time)
    watcher: asyncio.Task | None = None  # the watch over idle connections (realtime.py)

    def check_model(self, name) -> str | None:
        """Why `name` is not a model this server serves (None: it is, or names none)."""
        if name in (None, "", *self.config.model_names):
            return None
        return f"The model `{shorten(str(name))}` does not exist."


def keyed(request: Request) -> Server:
    """The shared state, once the request's key is checked (HTTPException 401: no key)."""
    server = request.app.state.server
    if not authorized(server.config.api_key, request.headers):
        raise HTTPException(401, KEY_REFUSED)
    return server
