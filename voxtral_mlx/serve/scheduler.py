"""The scheduler: every stream's audio goes to a Session of a SessionPool on one worker
thread, and the sessions' events come back to their streams.

A stream is anything with audio for the model that implements `Stream`: a realtime
connection's dialect (vllm.py, openai/) or an upload (uploads.py). Each utterance is a
Session of a pool (one pool for the live streams, one for uploads), decoded together: each
pass of the decoder advances every session of its pool with audio waiting and reads the
weights once for all of them. The worker thread does all model work, in jobs that take at
most `SLICE_SECONDS` of each live stream's audio and decode for at most `JOB_SECONDS`, so the
event loop never blocks and events go out after every job.

Live first: while any live session has audio waiting, passes are for the live pool; uploads
get the passes in between, and a job of upload passes ends as soon as live audio arrives,
so an upload delays a live session by at most one upload pass. Apart, a long upload's
decoder ring (every row of a pool has the longest row's length) does not make every live
pass attend over it (benchmarks/RESULTS.md, "Serving soak").
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar, Protocol

import mlx.core as mx
import numpy as np

from ..biasing import ContextBias
from ..config import SAMPLE_RATE
from ..events import Event
from ..model import VoxtralRealtime
from ..session import Session, SessionPool

JOB_SECONDS = 0.2  # a job decodes this long at most, then the events go out
SLICE_SECONDS = 1.0  # the most audio of one live stream a job encodes


class Stream(Protocol):
    """What the scheduler asks of a stream of audio. `Scheduler.open_session` gives it its
    `session`; then, in every job, the scheduler takes what `intake` has ready, decodes, and
    hands the session's events to `deliver` (or the error to `failed`)."""

    live: ClassVar[bool]  # a realtime stream (live first, runs on at EOS), or an upload
    session: Session | None

    def intake(self) -> tuple[np.ndarray | None, bool] | None:
        """Audio for the next job (16 kHz samples, or None: none) and whether the session's
        audio ends with it; None when there is nothing to do."""

    async def deliver(self, events: list[Event]) -> None:
        """The session's events from a job (its `result` is set once it is finished)."""

    async def failed(self, error: Exception) -> None:
        """Its intake or its job raised `error`: the stream ends what it was doing."""


class AudioQueue:
    """A stream's samples (16 kHz) waiting for the model: chunks in arrival order, taken from
    the front, dropped from the back."""

    def __init__(self, chunks: Iterable[np.ndarray] = ()):
        self._chunks: deque[np.ndarray] = deque()
        self.samples = 0
        for chunk in chunks:
            self.append(chunk)

    def __bool__(self) -> bool:
        return bool(self._chunks)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self._chunks)

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE

    def append(self, samples: np.ndarray) -> None:
        if len(samples):
            self._chunks.append(samples)
            self.samples += len(samples)

    def take(self, n: int) -> np.ndarray:
        """Up to n samples from the front."""
        parts, taken = [], 0
        while self._chunks and taken < n:
            head = self._chunks.popleft()
            if taken + len(head) > n:
                self._chunks.appendleft(head[n - taken :])
                head = head[: n - taken]
            parts.append(head)
            taken += len(head)
        self.samples -= taken
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def drop_tail(self, n: int) -> int:
        """Remove up to n samples from the back; how many were removed."""
        removed = 0
        while self._chunks and removed < n:
            tail = self._chunks.pop()
            if removed + len(tail) > n:
                self._chunks.append(tail[: len(tail) - (n - removed)])
                removed = n
                break
            removed += len(tail)
        self.samples -= removed
        return removed

    def clear(self) -> None:
        self._chunks.clear()
        self.samples = 0


class Queued(Protocol):
    """An utterance of a realtime connection as the scheduler sees it (the vLLM and Mistral
    dialects' own Utterance classes)."""

    audio: AudioQueue  # received, not yet given to the model
    final: bool  # its last audio came: a flush is due


def waiting_seconds(utterances: Iterable[Queued]) -> float:
    """Audio received and not yet given to the model, in every utterance."""
    return sum(u.audio.seconds for u in utterances)


def waiting(utterances: Iterable[Queued]) -> bool:
    """Audio of them waits for the model, or a final flush does (a stream's `busy`)."""
    return any(u.audio or u.final for u in utterances)


class Worker:
    """One thread for all model work, fed by the scheduler.

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


class Scheduler:
    """Feeds every stream's audio to its pool on the worker thread and hands out the events
    (the module's docstring): live first, uploads fill the rest."""

    def __init__(self, model: VoxtralRealtime):
        self.model = model
        self.worker = Worker()
        self.streams: set[Stream] = set()  # those with a session
        # made on the worker thread, where their arrays live
        self.live_pool: SessionPool | None = None
        self.upload_pool: SessionPool | None = None
        self.decoding = False  # a pool had positions waiting after the last job
        # set (from the event loop) when a live session gets audio or its final commit: a
        # job of upload passes on the worker thread then ends at once
        self.live_waiting = threading.Event()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    @property
    def serving_live(self) -> bool:
        return any(stream.live for stream in self.streams)

    @property
    def uploads(self) -> int:
        return sum(not stream.live for stream in self.streams)

    async def open_session(
        self, stream: Stream, delay_ms: int, context_bias: ContextBias | None = None
    ) -> None:
        """Give `stream` a session (of the upload pool for an upload) with its custom
        vocabulary (`context_bias`); from there, the scheduler feeds it."""
        stream.session = await self.worker.run(self._add, delay_ms, not stream.live, context_bias)
        self.streams.add(stream)
        self.wake()

    async def close_session(self, stream: Stream, session: Session | None = None) -> None:
        """`stream` is done with its session (the given one, or its current one)."""
        session = session or stream.session
        if session is stream.session:
            self.streams.discard(stream)
            stream.session = None
        if session is not None:
            await self.worker.run(session.pool.remove, session)

    def wake(self) -> None:
        """Have the scheduler look at every stream again (it sleeps when none has work)."""
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = asyncio.create_task(self._run())
        self._wakeup.set()

    def live_audio(self) -> None:
        """A live stream has audio (or its end) for its session: it goes before uploads."""
        self.live_waiting.set()
        self.wake()

    def close(self) -> None:
        """The server stops: the worker thread finishes and is joined (Worker.close)."""
        self.worker.close()

    def _add(self, delay_ms: int, upload: bool, context_bias: ContextBias | None = None) -> Session:
        if self.live_pool is None:
            self.live_pool, self.upload_pool = SessionPool(self.model), SessionPool(self.model)
        pool = self.upload_pool if upload else self.live_pool
        # files stop at EOS, live runs on
        return pool.add(delay_ms, stop_at_eos=upload, context_bias=context_bias)

    async def _run(self) -> None:
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
                self._wakeup.clear()  # no await since intake(): no lost wakeup
                await self._wakeup.wait()
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

    def _job(self, work: dict) -> tuple[dict[Session, list[Event]], bool]:
        """On the worker: encode the audio taken, end the streams that ended, then decode
        passes for at most JOB_SECONDS: live sessions' passes first; once they have nothing
        left, their events go out (the job ends), and only then upload passes, until live
        audio arrives."""
        for stream, (samples, end) in work.items():
            if samples is not None:
                stream.session.push(samples)
            if end:
                stream.session.end()
        events: dict[Session, list[Event]] = {}
        deadline = time.perf_counter() + JOB_SECONDS
        while time.perf_counter() < deadline:
            step = self.live_pool.step()
            if not step:
                if events:
                    return events, True  # the live sessions' events go out now
                step = self.upload_pool.step()
                if not step:
                    return events, False
            for session, out in step.items():
                events.setdefault(session, []).extend(out)
            if self.live_waiting.is_set():
                return events, True
        return events, True
