"""One client of /v1/realtime (`Connection`): its events out through a bounded queue, its
events in, handed to its dialect, its idle time, its end. What the events mean is the
dialect's: a `Dialect` (vllm.py, openai/) is what a connection asks of one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from typing import Protocol

import numpy as np
from fastapi import WebSocket

from .errors import ClientError, shorten
from .scheduler import Stream
from .server import Server

# events queued for a client that does not read them, at most: then it is dropped
MAX_UNSENT_EVENTS = 1000
TRANSPORT_KEY = "voxtral.transport"  # the connection's socket, in the ASGI scope (serve())

log = logging.getLogger("voxtral_mlx.server")


class Dialect(Stream, Protocol):
    """A realtime protocol, as a connection speaks it: it reads the client's events (raising
    ClientError for one it refuses), sends its own through the connection, and feeds the
    scheduler as a Stream. Made with its connection: `Dialect(conn)`."""

    room: asyncio.Event  # set while the connection may read the client's next message
    busy: bool  # audio of it (or its end) waits for the model: the connection is not idle
    undecided: bool  # no event of its own yet: another dialect may take the connection over

    @staticmethod
    def speaks(event: dict) -> bool:
        """Whether a connection's first event is one only this dialect sends."""

    @staticmethod
    def refusal(message: str, code: str) -> dict:
        """The error event, in this dialect's shape, of a connection refused before it
        starts (too many sessions)."""

    def early_audio(self) -> list[np.ndarray]:
        """Audio received while undecided (16 kHz PCM16 samples), for the dialect that
        takes the connection over."""

    def adopt(self, early: list[np.ndarray]) -> None:
        """The audio another dialect received before this one took the connection over."""

    async def start(self) -> None:
        """The connection is accepted: its first events."""

    async def handle(self, event: dict) -> None:
        """One event of the client (a JSON object)."""

    async def error(
        self, message: str, code: str, param: str | None = None, client_event=None
    ) -> None:
        """An error event (`client_event`: the id of the event it answers, if any)."""

    async def close(self) -> None:
        """The connection is over: free the session."""


class Connection:
    """One client of /v1/realtime: its events out (through a bounded queue), its idle time,
    its end. What its events mean is its dialect's."""

    def __init__(
        self,
        websocket: WebSocket,
        server: Server,
        dialect: type[Dialect],
        dialects: tuple[type[Dialect], ...] = (),
    ):
        self.ws, self.server = websocket, server
        self.closed = False
        self.outbox: deque[str] = deque()  # events not yet sent (a client may read slowly)
        self.outbox_ready = asyncio.Event()
        self.sender = asyncio.create_task(self._send_loop())
        # the client's last audio or commit, or the last transcription event it was sent
        self.last_activity = time.monotonic()
        self.handling = False
        self.dropping: asyncio.Task | None = None
        self.dialects = dialects  # those that may take the connection over from `dialect`
        self.dialect: Dialect = dialect(self)

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
        """An error event, in the shape of its dialect."""
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
                if self.dialect.undecided:
                    self._hand_over(event)
                await self.dialect.handle(event)
            except ClientError as e:  # refused: the client is told, the connection goes on
                await self.dialect.error(e.message, e.code, e.param, event.get("event_id"))
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

    def _hand_over(self, event: dict) -> None:
        """The client's first event is one only another dialect sends: that dialect takes
        the connection over, with the audio that came before it."""
        for dialect in self.dialects:
            if not isinstance(self.dialect, dialect) and dialect.speaks(event):
                early, self.dialect = self.dialect.early_audio(), dialect(self)
                self.dialect.adopt(early)
                return

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
