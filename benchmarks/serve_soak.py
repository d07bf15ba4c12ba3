"""Soak test of `voxtral serve` on loopback: well-behaved and misbehaving clients at once for
`--duration` seconds, with the server's memory, file descriptors and session slots sampled
throughout.

Load, all concurrent, from one asyncio process:
  live      N WebSocket sessions on /v1/realtime, each streaming real speech (the shared audio
            folder) at real-time pace in 100 ms messages, utterance after utterance (commit,
            audio, final commit, wait for transcription.done). Per delta, the latency: its
            arrival time minus the time the client sent the 100 ms message holding the audio
            up to the delta's `end`. buffer_full errors (and the audio they dropped, 0.1 s
            each) and any other error event are counted: all should be 0.
  uploads   POST /v1/audio/transcriptions, one after another, cycling through the shared
            clips and one long file (`--upload-minutes` of the clips concatenated).
  idle      WebSockets that send session.update and then nothing (pings answered): when and
            how (close code, reason) the server closes them; each reconnects after 1 s.
  stuck     a raw-socket WebSocket client (receive buffer of 4 KiB) that starts a session and
            streams audio (`--stuck-speed` times real time, one endless utterance) but never
            reads after the handshake: when the server stops reading from it (a send waits
            over 2 s) and when it closes it (its TCP state, or a send error).
  silent    TCP connections that send nothing: how many the server closes and after how
            long; each reopens after 1 s.
  storm     `--storm-rate` connections a second to /v1/realtime: session.created,
            session.update, close; counts of accepted, refused (too_many_sessions) and failed.
  sampler   every `--sample-every` s: the server's RSS (VmRSS), open fds (/proc/PID/fd),
            threads and /health's sessions and max_sessions.

The server gets `--max-sessions` and, where its `serve --help` lists them, `--idle-timeout`,
`--read-timeout`, `--max-connections`, `--max-upload-mb` and `--served-model-name` (0 or ""
leaves one out), then `--serve-args`. It is always stopped (SIGINT, then SIGKILL) and the temp
files removed, also on Ctrl+C, which ends the soak early with a report of what was measured.

    python benchmarks/serve_soak.py                                  # 10 minutes
    python benchmarks/serve_soak.py --duration 60 --upload-minutes 2 --live 2 --silent 50
    python benchmarks/serve_soak.py --serve-args "--max-backlog 10" --json soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fcntl
import io
import json
import math
import os
import resource
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

ROOT = Path(__file__).resolve().parents[1]
RATE = 16000
CHUNK = 1600  # samples of one append: 100 ms
CHUNK_SECONDS = CHUNK / RATE
TCP_STATES = {
    1: "ESTABLISHED",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    11: "CLOSING",
}
OPTIONAL_FLAGS = ("idle_timeout", "read_timeout", "max_connections", "max_upload_mb")


def default_audio_dir() -> Path:
    shared = os.environ.get("VOXTRAL_SHARED", ROOT.parent / "shared")
    return Path(shared) / "audio"


def dist(values) -> dict:
    """n, p50, p95, max of a list of seconds (None where empty)."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    v = np.asarray(values, dtype=float)
    return {
        "n": len(v),
        "p50": float(np.percentile(v, 50)),
        "p95": float(np.percentile(v, 95)),
        "max": float(v.max()),
    }


def fmt_dist(d: dict, unit: str = "s", scale: float = 1.0, digits: int = 2) -> str:
    if not d["n"]:
        return "none"
    f = f"{{:.{digits}f}}"
    p50, p95, mx = (f.format(d[k] * scale) for k in ("p50", "p95", "max"))
    return f"p50 {p50} {unit}, p95 {p95} {unit}, max {mx} {unit} (n={d['n']})"


# --- data --------------------------------------------------------------------------------


@dataclass
class Clip:
    name: str
    pcm: np.ndarray  # int16, 16 kHz mono

    @property
    def seconds(self) -> float:
        return len(self.pcm) / RATE


def load_clips(folder: Path) -> list[Clip]:
    clips = []
    for path in sorted(folder.glob("*.wav")):
        pcm, rate = sf.read(path, dtype="int16", always_2d=True)
        if rate == RATE:
            clips.append(Clip(path.name, pcm[:, 0].copy()))
    if not clips:
        raise SystemExit(f"no 16 kHz WAV files in {folder}")
    return clips


def write_long(clips: list[Clip], minutes: float, path: Path) -> float:
    """The clips one after another (0.3 s of silence between) up to `minutes`."""
    target, parts, n, i = int(minutes * 60 * RATE), [], 0, 0
    gap = np.zeros(int(0.3 * RATE), np.int16)
    while n < target:
        part = np.concatenate([clips[i % len(clips)].pcm, gap])[: target - n]
        parts.append(part)
        n += len(part)
        i += 1
    sf.write(path, np.concatenate(parts), RATE, subtype="PCM_16")
    return n / RATE


# --- results -----------------------------------------------------------------------------


@dataclass
class Live:
    client: int
    connects: int = 0
    utterances: int = 0
    audio_seconds: float = 0.0
    deltas: int = 0
    latencies: list = field(default_factory=list)  # per delta, s
    rtf: list = field(default_factory=list)  # per delta: the server's compute / audio time
    ahead: int = 0  # deltas whose `end` lay past the audio sent, before the final commit
    final_lags: list = field(default_factory=list)  # done after the final commit, s
    buffer_full: int = 0
    errors: Counter = field(default_factory=Counter)  # other error codes
    other_events: Counter = field(default_factory=Counter)
    empty_done: int = 0  # transcription.done with no text
    disconnects: list = field(default_factory=list)  # (t, what)


@dataclass
class Stuck:
    connected_at: float | None = None
    handshake: str = ""
    audio_seconds: float = 0.0  # given to the kernel
    bytes_sent: int = 0
    stalled_at: float | None = None  # first time a send waited > 2 s (server not reading)
    server_closed_at: float | None = None  # its end of the socket: fd closed, or not ESTABLISHED
    server_how: str = ""
    closed_at: float | None = None  # this client saw it: its TCP state, or a send error
    how: str = ""
    # (t, our TCP state, bytes we sent not yet acknowledged, bytes it sent we never read,
    #  the server's end: TCP state, a process holds it, bytes it has not read, not yet sent)
    timeline: list = field(default_factory=list)


@dataclass
class Storm:
    attempts: int = 0
    ok: int = 0
    refused: int = 0  # error too_many_sessions
    http: Counter = field(default_factory=Counter)  # handshake rejected with this status
    failed: Counter = field(default_factory=Counter)  # exception names
    skipped: int = 0  # not started: too many attempts in flight
    handshake: list = field(default_factory=list)  # connect to session.created, s


@dataclass
class Results:
    started: float = 0.0  # time.monotonic() of the soak's start
    ended: float = 0.0  # and of its end (the clients are stopped)
    interrupted: bool = False
    live: list = field(default_factory=list)
    uploads: list = field(default_factory=list)
    idle: list = field(default_factory=list)  # one dict per connection
    stuck: list = field(default_factory=list)
    silent: list = field(default_factory=list)  # one dict per connection closed or refused
    silent_open_at_end: list = field(default_factory=list)  # lifetimes, s
    storm: Storm = field(default_factory=Storm)
    samples: list = field(default_factory=list)
    after: dict | None = None  # a sample once every client has gone

    def t(self) -> float:
        return time.monotonic() - self.started


# --- server ------------------------------------------------------------------------------


def voxtral_command() -> list[str]:
    exe = Path(sys.executable).parent / "voxtral"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "voxtral_cli.app"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_args(a, help_text: str) -> tuple[list[str], list[str]]:
    """(flags to pass, wanted flags this server does not have)."""
    args, missing = ["--max-sessions", str(a.max_sessions)], []
    wanted = [(f"--{name.replace('_', '-')}", getattr(a, name)) for name in OPTIONAL_FLAGS]
    wanted.append(("--served-model-name", a.served_model_name))
    for flag, value in wanted:
        if value in (None, 0, ""):
            continue
        if flag in help_text:
            args += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
        else:
            missing.append(flag)
    return args + shlex.split(a.serve_args), missing


def server_env() -> dict:
    return {**os.environ, "VOXTRAL_API_KEY": "", "COLUMNS": "200", "NO_COLOR": "1"}


def start_server(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=server_env(),
            cwd=ROOT,
            start_new_session=True,  # Ctrl+C reaches only us: we stop it, in order
        )


def wait_healthy(proc: subprocess.Popen, port: int, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}):\n{log.read_text()}")
        try:
            status, _ = asyncio.run(http(port, "GET", "/health", timeout=2))
            if status == 200:
                return
        except (OSError, asyncio.TimeoutError, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not answer /health")


def stop_server(proc: subprocess.Popen) -> dict:
    """SIGINT (uvicorn's graceful shutdown), SIGKILL after 20 s."""
    if proc.poll() is not None:
        return {"exit_code": proc.returncode, "stop_seconds": 0.0, "killed": False}
    t0 = time.monotonic()
    killed = False
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    return {
        "exit_code": proc.returncode,
        "stop_seconds": round(time.monotonic() - t0, 2),
        "killed": killed,
    }


# --- clients -----------------------------------------------------------------------------


async def http(
    port: int, method: str, path: str, body: bytes = b"", headers=None, timeout: float = 30
) -> tuple[int, bytes]:
    """One HTTP/1.1 request on its own connection (Connection: close): (status, body)."""

    async def go():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
            head += [f"{k}: {v}" for k, v in (headers or {}).items()]
            if body or method == "POST":
                head.append(f"Content-Length: {len(body)}")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            with contextlib.suppress(ConnectionError):  # it may answer before reading it all
                await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        top, _, rest = data.partition(b"\r\n\r\n")
        if not top:
            raise ConnectionError("connection closed without a response")
        status = int(top.split(b" ", 2)[1])
        if b"transfer-encoding: chunked" in top.lower():
            rest = dechunk(rest)
        return status, rest

    return await asyncio.wait_for(go(), timeout)


def dechunk(data: bytes) -> bytes:
    out, pos = [], 0
    while True:
        line_end = data.index(b"\r\n", pos)
        size = int(data[pos:line_end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[line_end + 2 : line_end + 2 + size])
        pos = line_end + 2 + size + 2


def multipart(fields: dict[str, str], filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = f"soak{os.urandom(8).hex()}"
    parts = io.BytesIO()
    for name, value in fields.items():
        parts.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n".encode()
        )
    parts.write(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: audio/wav\r\n\r\n".encode()
    )
    parts.write(data)
    parts.write(f"\r\n--{boundary}--\r\n".encode())
    return parts.getvalue(), f"multipart/form-data; boundary={boundary}"


def append_event(pcm: np.ndarray) -> str:
    audio = base64.b64encode(pcm.astype("<i2").tobytes()).decode()
    return json.dumps({"type": "input_audio_buffer.append", "audio": audio})


async def sleep_until(when: float) -> None:
    await asyncio.sleep(max(when - time.monotonic(), 0))


def closed_by(e: ConnectionClosed) -> dict:
    """Close code and reason as received, and who closed first."""
    if e.rcvd is not None:
        by = "server" if (e.sent is None or e.rcvd_then_sent) else "client"
        return {"code": e.rcvd.code, "reason": e.rcvd.reason, "by": by}
    return {"code": 1006, "reason": "no close frame", "by": "client" if e.sent else "lost"}


class Soak:
    def __init__(self, a, port: int, model: str, clips: list[Clip], long: Path, res: Results):
        self.a, self.port, self.model, self.clips, self.long = a, port, model, clips, long
        self.url = f"ws://127.0.0.1:{port}/v1/realtime"
        self.res = res
        self.stopping = False

    def ws(self, **kw):
        kw = {"open_timeout": 30, "close_timeout": 2, "max_size": 2**24, "proxy": None, **kw}
        return connect(self.url, **kw)

    def update(self) -> str:
        return json.dumps({"type": "session.update", "model": self.model})

    # live ---------------------------------------------------------------------------------

    async def live(self, index: int) -> None:
        stats = Live(index)
        self.res.live.append(stats)
        order = self.clips[index % len(self.clips) :] + self.clips[: index % len(self.clips)]
        n = 0
        while not self.stopping:
            try:
                async with self.ws() as ws:
                    stats.connects += 1
                    first = json.loads(await ws.recv())
                    if first.get("type") != "session.created":
                        stats.disconnects.append((round(self.res.t(), 1), f"refused: {first}"))
                        await asyncio.sleep(1)
                        continue
                    await ws.send(self.update())
                    state = {"utt": None}
                    reader = asyncio.create_task(self._live_reader(ws, stats, state))
                    try:
                        while not self.stopping:
                            clip = order[n % len(order)]
                            n += 1
                            await self._utterance(ws, clip, stats, state, reader)
                    finally:
                        reader.cancel()
            except ConnectionClosed as e:
                stats.disconnects.append((round(self.res.t(), 1), closed_by(e)))
            except (OSError, asyncio.TimeoutError, InvalidStatus, ValueError) as e:
                stats.disconnects.append((round(self.res.t(), 1), f"{type(e).__name__}: {e}"))
            if not self.stopping:
                await asyncio.sleep(1)

    async def _utterance(self, ws, clip: Clip, stats: Live, state: dict, reader) -> None:
        loop = asyncio.get_running_loop()
        utt = {"sent": [], "final_at": None, "done": loop.create_future()}
        state["utt"] = utt
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        t0 = time.monotonic()
        for i, lo in enumerate(range(0, len(clip.pcm), CHUNK)):
            # the audio of [i, i + 1) * 100 ms exists at the end of that interval
            await sleep_until(t0 + (i + 1) * CHUNK_SECONDS)
            await ws.send(append_event(clip.pcm[lo : lo + CHUNK]))
            utt["sent"].append(time.monotonic())
        await ws.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
        utt["final_at"] = time.monotonic()
        done, _ = await asyncio.wait(
            [utt["done"], reader], timeout=self.a.done_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if utt["done"] not in done:
            if reader.done():  # the connection ended: its exception goes to live()
                reader.result()
                raise ConnectionError(f"closed: {ws.close_code} {ws.close_reason!r}")
            raise asyncio.TimeoutError(f"no transcription.done in {self.a.done_timeout:g} s")
        stats.utterances += 1
        stats.audio_seconds += clip.seconds

    async def _live_reader(self, ws, stats: Live, state: dict) -> None:
        async for message in ws:
            now = time.monotonic()
            event = json.loads(message)
            kind = event.get("type")
            utt = state["utt"]
            if kind == "transcription.delta":
                stats.deltas += 1
                if isinstance(event.get("rtf"), (int, float)):
                    stats.rtf.append(event["rtf"])
                end = event.get("end")
                if utt is not None and utt["sent"] and isinstance(end, (int, float)):
                    k = max(math.ceil(end / CHUNK_SECONDS - 1e-6) - 1, 0)
                    if k >= len(utt["sent"]):  # after the final commit: the padded tail
                        stats.ahead += utt["final_at"] is None
                        k = len(utt["sent"]) - 1
                    stats.latencies.append(now - utt["sent"][k])
            elif kind == "transcription.done":
                if not event.get("text"):
                    stats.empty_done += 1
                if utt is not None and not utt["done"].done():
                    stats.final_lags.append(now - (utt["final_at"] or now))
                    utt["done"].set_result(None)
            elif kind == "error":
                if event.get("code") == "buffer_full":
                    stats.buffer_full += 1
                else:
                    stats.errors[str(event.get("code"))] += 1
            else:
                stats.other_events[str(kind)] += 1

    # uploads ------------------------------------------------------------------------------

    async def uploads(self) -> None:
        files = [(c.name, c.seconds, None) for c in self.clips]
        long_seconds = sf.info(self.long).duration
        files.insert(1, (self.long.name, long_seconds, self.long))
        datas = {}
        for name, _, path in files:
            if path is None:
                buf = io.BytesIO()
                clip = next(c for c in self.clips if c.name == name)
                sf.write(buf, clip.pcm, RATE, format="WAV", subtype="PCM_16")
                datas[name] = buf.getvalue()
            else:
                datas[name] = path.read_bytes()
        i = 0
        while not self.stopping:
            name, seconds, _ = files[i % len(files)]
            i += 1
            body, ctype = multipart(
                {"model": self.model, "response_format": "json"}, name, datas[name]
            )
            rec = {"file": name, "audio_s": round(seconds, 2), "mb": round(len(body) / 2**20, 2)}
            rec["long"] = name == self.long.name
            rec["started_at"] = round(self.res.t(), 1)
            self.res.uploads.append(rec)
            t0 = time.monotonic()
            try:
                status, reply = await http(
                    self.port,
                    "POST",
                    "/v1/audio/transcriptions",
                    body,
                    {"Content-Type": ctype},
                    timeout=self.a.upload_timeout,
                )
                rec["status"] = status
                if status == 200:
                    rec["text_chars"] = len(json.loads(reply).get("text", ""))
                else:
                    rec["error"] = reply[:200].decode(errors="replace")
            except asyncio.CancelledError:
                rec["status"] = "unfinished"
                raise
            except (OSError, asyncio.TimeoutError, ValueError) as e:
                rec["status"] = "failed"
                rec["error"] = f"{type(e).__name__}: {e}"
                await asyncio.sleep(1)
            finally:
                rec["wall_s"] = round(time.monotonic() - t0, 2)

    # idle WebSockets ----------------------------------------------------------------------

    async def idle(self, index: int) -> None:
        while not self.stopping:
            rec = {"client": index, "opened_at": round(self.res.t(), 1)}
            t0 = time.monotonic()
            self.res.idle.append(rec)
            try:
                # no pings of its own; the library answers the server's
                async with self.ws(ping_interval=None) as ws:
                    first = json.loads(await ws.recv())
                    if first.get("type") != "session.created":
                        rec["refused"] = first.get("code")
                    else:
                        await ws.send(self.update())
                        async for message in ws:
                            rec.setdefault("received", []).append(message[:200])
                        rec.update(code=ws.close_code, reason=ws.close_reason, by="server")
            except ConnectionClosed as e:
                rec.update(closed_by(e))
            except asyncio.CancelledError:
                rec["open_at_end"] = True
                raise
            except (OSError, asyncio.TimeoutError, InvalidStatus) as e:
                rec["failed"] = f"{type(e).__name__}: {e}"
            finally:
                rec["lifetime_s"] = round(time.monotonic() - t0, 2)
            await asyncio.sleep(1)

    # the client that never reads ----------------------------------------------------------

    async def stuck(self) -> None:
        rec = Stuck()
        self.res.stuck.append(rec)
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        monitor = None
        try:
            await loop.sock_connect(sock, ("127.0.0.1", self.port))
            key = base64.b64encode(os.urandom(16)).decode()
            request = (
                f"GET /v1/realtime HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            )
            await loop.sock_sendall(sock, request.encode())
            head = b""
            while b"\r\n\r\n" not in head:  # the only read: the handshake's answer
                part = await asyncio.wait_for(loop.sock_recv(sock, 1024), 30)
                if not part:
                    raise ConnectionError("closed during the handshake")
                head += part
            rec.handshake = head.split(b"\r\n", 1)[0].decode(errors="replace")
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                rec.closed_at, rec.how = round(self.res.t(), 1), "handshake refused"
                return
            rec.connected_at = round(self.res.t(), 1)
            pending = {"since": None}
            monitor = asyncio.create_task(self._stuck_monitor(sock, rec, pending))

            async def send(text: str) -> None:
                data = ws_frame(text)
                pending["since"] = time.monotonic()
                await loop.sock_sendall(sock, data)
                pending["since"] = None
                rec.bytes_sent += len(data)

            await send(self.update())
            await send(json.dumps({"type": "input_audio_buffer.commit"}))
            t0, i = time.monotonic(), 0
            while rec.closed_at is None:
                for clip in self.clips:  # one utterance, never finished
                    for lo in range(0, len(clip.pcm), CHUNK):
                        i += 1
                        await sleep_until(t0 + i * CHUNK_SECONDS / self.a.stuck_speed)
                        if rec.closed_at is not None:
                            return
                        await send(append_event(clip.pcm[lo : lo + CHUNK]))
                        rec.audio_seconds += len(clip.pcm[lo : lo + CHUNK]) / RATE
        except OSError as e:
            if rec.closed_at is None:
                rec.closed_at, rec.how = round(self.res.t(), 1), f"send: {type(e).__name__}"
            if rec.server_closed_at is None and rec.connected_at is not None:
                peer = server_end(self.port, sock.getsockname()[1])
                rec.server_closed_at = rec.closed_at
                rec.server_how = f"{peer['state']}, fd open: {peer['fd_open']}" if peer else "gone"
        finally:
            if monitor is not None:
                monitor.cancel()
            sock.close()

    async def _stuck_monitor(self, sock, rec: Stuck, pending: dict) -> None:
        last, port = -1e9, sock.getsockname()[1]
        while True:
            state, unsent, unread = tcp_view(sock)
            peer = server_end(self.port, port)
            now, t = time.monotonic(), round(self.res.t(), 1)
            since = pending["since"]
            if rec.stalled_at is None and since is not None and now - since > 2:
                rec.stalled_at = round(self.res.t() - (now - since), 1)
            if rec.server_closed_at is None:
                if peer is None:
                    rec.server_closed_at, rec.server_how = t, "socket gone"
                elif not peer["fd_open"] or peer["state"] != "ESTABLISHED":
                    rec.server_closed_at = t
                    rec.server_how = (
                        f"{peer['state']}, fd {'open' if peer['fd_open'] else 'closed'}"
                    )
            if rec.closed_at is None and state != "ESTABLISHED":
                rec.closed_at, rec.how = t, f"TCP {state}"
            if now - last >= self.a.sample_every or rec.closed_at is not None:
                theirs = tuple(peer.values()) if peer else ("gone", False, None, None)
                rec.timeline.append((t, state, unsent, unread, *theirs))
                last = now
            if rec.closed_at is not None:
                return
            if rec.server_closed_at is not None and t - rec.server_closed_at > 10:
                rec.closed_at, rec.how = t, "not seen by the client within 10 s; gave up"
                return
            await asyncio.sleep(0.25)

    # silent TCP ---------------------------------------------------------------------------

    async def silent(self, index: int, opened: dict) -> None:
        await asyncio.sleep(index * 2.0 / max(self.a.silent, 1))  # all open within 2 s
        while not self.stopping:
            t0 = time.monotonic()
            rec = {"opened_at": round(self.res.t(), 1)}
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError as e:
                rec.update(how=f"connect: {type(e).__name__}", lifetime_s=0.0)
                self.res.silent.append(rec)
                await asyncio.sleep(1)
                continue
            opened[index] = t0
            try:
                data = await reader.read(4096)
                if data:
                    rec["answer"] = data.split(b"\r\n", 1)[0].decode(errors="replace")
                    while await reader.read(4096):
                        pass
                rec["how"] = "EOF"
            except ConnectionResetError:
                rec["how"] = "reset"
            finally:
                opened.pop(index, None)
                writer.close()
            rec["lifetime_s"] = round(time.monotonic() - t0, 2)
            self.res.silent.append(rec)
            await asyncio.sleep(1)

    # reconnect storm ----------------------------------------------------------------------

    async def storm(self) -> None:
        st = self.res.storm
        inflight: set[asyncio.Task] = set()
        interval, due = 1 / self.a.storm_rate, time.monotonic()
        try:
            while not self.stopping:
                due += interval
                await sleep_until(due)
                if len(inflight) >= self.a.storm_inflight:
                    st.skipped += 1
                    continue
                task = asyncio.create_task(self._storm_attempt(st))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
        finally:
            for task in list(inflight):
                task.cancel()

    async def _storm_attempt(self, st: Storm) -> None:
        st.attempts += 1
        t0 = time.monotonic()
        try:
            async with self.ws(open_timeout=10, ping_interval=None) as ws:
                first = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if first.get("type") == "session.created":
                    st.handshake.append(time.monotonic() - t0)
                    await ws.send(self.update())
                    st.ok += 1
                elif first.get("code") == "too_many_sessions":
                    st.refused += 1
                else:
                    st.failed[f"first event {first.get('type')}/{first.get('code')}"] += 1
        except InvalidStatus as e:
            st.http[str(e.response.status_code)] += 1
        except ConnectionClosed as e:
            st.failed[f"closed {closed_by(e)['code']}"] += 1
        except (OSError, asyncio.TimeoutError, ValueError) as e:
            st.failed[type(e).__name__] += 1

    # sampler ------------------------------------------------------------------------------

    async def sample(self, pid: int) -> dict:
        row = {"t": round(self.res.t(), 1), **proc_view(pid)}
        t0 = time.monotonic()
        try:
            status, body = await http(self.port, "GET", "/health", timeout=10)
            row["health_ms"] = round((time.monotonic() - t0) * 1000, 1)
            if status == 200:
                health = json.loads(body)
                row["sessions"] = health.get("sessions")
                row["max_sessions"] = health.get("max_sessions")
            else:
                row["health"] = status
        except (OSError, asyncio.TimeoutError, ValueError) as e:
            row["health"] = type(e).__name__
        return row

    async def sampler(self, pid: int, silent_open: dict) -> None:
        while True:
            row = await self.sample(pid)
            row["silent_open"] = len(silent_open)
            cpu_percent(self.res.samples, row)
            self.res.samples.append(row)
            await asyncio.sleep(self.a.sample_every)


def cpu_percent(rows: list[dict], row: dict) -> None:
    """The server's CPU use since the previous sample, % of one core."""
    prev = next((r for r in reversed(rows) if "cpu_s" in r), None)
    if prev is not None and "cpu_s" in row and row["t"] > prev["t"]:
        row["cpu_pct"] = round(100 * (row["cpu_s"] - prev["cpu_s"]) / (row["t"] - prev["t"]))


def ws_frame(text: str) -> bytes:
    """A masked client text frame."""
    payload = np.frombuffer(text.encode(), np.uint8)
    n = len(payload)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    elif n < 2**16:
        head = bytes([0x81, 0x80 | 126]) + struct.pack("!H", n)
    else:
        head = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    return head + mask + (payload ^ np.resize(np.frombuffer(mask, np.uint8), n)).tobytes()


def tcp_view(sock: socket.socket) -> tuple[str, int | None, int | None]:
    """(TCP state, bytes we sent that the server has not taken, bytes it sent we never read)."""
    try:
        state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
        state = TCP_STATES.get(state, str(state))
    except OSError:
        return "gone", None, None
    counts = []
    for request in (termios.TIOCOUTQ, termios.FIONREAD):
        try:
            counts.append(struct.unpack("i", fcntl.ioctl(sock, request, b"\0" * 4))[0])
        except OSError:
            counts.append(None)
    return state, counts[0], counts[1]


def server_end(server_port: int, client_port: int) -> dict | None:
    """The server's end of a loopback connection (/proc/net/tcp): its state, whether a
    process still holds it (inode), bytes received it has not read, bytes not yet sent."""
    local, remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            f = line.split()
            if f[1] == local and f[2] == remote:
                tx, rx = (int(x, 16) for x in f[4].split(":"))
                state = TCP_STATES.get(int(f[3], 16), f[3])
                return {"state": state, "fd_open": f[9] != "0", "unread": rx, "unsent": tx}
    return None


def proc_view(pid: int) -> dict:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return {
            "rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024, 1),
            "threads": int(fields["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "cpu_s": (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK"),  # utime+stime
            "load1": round(os.getloadavg()[0], 2),
        }
    except (OSError, KeyError, ValueError):
        return {}


async def run_soak(soak: Soak, pid: int) -> None:
    a, res = soak.a, soak.res
    res.started = time.monotonic()
    silent_open: dict[int, float] = {}
    tasks = [asyncio.create_task(soak.sampler(pid, silent_open))]
    tasks += [asyncio.create_task(soak.live(i)) for i in range(a.live)]
    tasks += [asyncio.create_task(soak.idle(i)) for i in range(a.idle)]
    tasks += [asyncio.create_task(soak.stuck()) for _ in range(a.stuck)]
    tasks += [asyncio.create_task(soak.silent(i, silent_open)) for i in range(a.silent)]
    if a.uploads:
        tasks.append(asyncio.create_task(soak.uploads()))
    if a.storm_rate > 0:
        tasks.append(asyncio.create_task(soak.storm()))
    try:
        await asyncio.sleep(a.duration)
    except asyncio.CancelledError:  # Ctrl+C: stop early, report what was measured
        res.interrupted = True
    soak.stopping = True
    end = res.ended = time.monotonic()
    res.silent_open_at_end = [round(end - t0, 1) for t0 in silent_open.values()]
    row = {**(await soak.sample(pid)), "silent_open": len(silent_open)}
    cpu_percent(res.samples, row)
    res.samples.append(row)
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=20)
    left = await soak.sample(pid)  # every client has gone: the server should go quiet
    await asyncio.sleep(a.settle)
    res.after = await soak.sample(pid)
    cpu_percent([left], res.after)


# --- report ------------------------------------------------------------------------------


def summarize(res: Results, a, flags: list[str], missing: list[str], stop: dict) -> dict:
    live = res.live
    latencies = [x for s in live for x in s.latencies]
    finals = [x for s in live for x in s.final_lags]
    errors = sum((s.errors for s in live), Counter())
    samples = [s for s in res.samples if "rss_mb" in s]
    out = {
        "duration_s": round((res.ended or time.monotonic()) - res.started, 1),
        "interrupted": res.interrupted,
        "server_flags": flags,
        "flags_not_supported": missing,
        "server_stop": stop,
        "live": {
            "sessions": len(live),
            "utterances": sum(s.utterances for s in live),
            "audio_s": round(sum(s.audio_seconds for s in live), 1),
            "deltas": sum(s.deltas for s in live),
            "delta_latency_s": dist(latencies),
            "delta_rtf": dist([x for s in live for x in s.rtf]),
            "deltas_ahead_of_audio": sum(s.ahead for s in live),
            "done_after_final_commit_s": dist(finals),
            "buffer_full": sum(s.buffer_full for s in live),
            "buffer_full_audio_s": round(sum(s.buffer_full for s in live) * CHUNK_SECONDS, 1),
            "errors": dict(errors),
            "other_events": dict(sum((s.other_events for s in live), Counter())),
            "empty_done": sum(s.empty_done for s in live),
            "connects": sum(s.connects for s in live),
            "disconnects": [d for s in live for d in s.disconnects],
        },
        "uploads": res.uploads,
        "idle": res.idle,
        "stuck": [asdict(s) for s in res.stuck],
        "silent": {
            "connections": a.silent,
            "closed": [r for r in res.silent if r.get("how") in ("EOF", "reset")],
            "connect_failed": [r for r in res.silent if r.get("how", "").startswith("connect")],
            "open_at_end_s": res.silent_open_at_end,
        },
        "storm": {**asdict(res.storm), "handshake_s": dist(res.storm.handshake)},
        "samples": res.samples,
        "after_clients_left": res.after,
    }
    out["storm"].pop("handshake")
    if samples:
        rss = [s["rss_mb"] for s in samples]
        fds = [s["fds"] for s in samples]
        out["server"] = {
            "rss_mb_first": rss[0],
            "rss_mb_last": rss[-1],
            "rss_mb_max": max(rss),
            "rss_mb_per_min_second_half": rss_slope(samples),
            "fds_first": fds[0],
            "fds_last": fds[-1],
            "fds_max": max(fds),
            "sessions_max": max((s.get("sessions") or 0 for s in res.samples), default=0),
            "health_ms": dist([s["health_ms"] / 1000 for s in res.samples if "health_ms" in s]),
            "health_failures": Counter(str(s["health"]) for s in res.samples if "health" in s),
            "cpu_s": round(samples[-1]["cpu_s"] - samples[0]["cpu_s"], 1),
            "cpu_pct_mean": round(
                100
                * (samples[-1]["cpu_s"] - samples[0]["cpu_s"])
                / max(samples[-1]["t"] - samples[0]["t"], 1e-9)
            ),
            "load1_max": max(s["load1"] for s in samples),
        }
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["benchmark_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)
    return out


def rss_slope(samples: list[dict]) -> float | None:
    """MB a minute over the second half of the run (least squares): a leak shows here."""
    half = [s for s in samples if s["t"] >= samples[-1]["t"] / 2]
    if len(half) < 3 or half[-1]["t"] - half[0]["t"] < 10:
        return None
    t = np.array([s["t"] for s in half])
    r = np.array([s["rss_mb"] for s in half])
    return round(float(np.polyfit(t, r, 1)[0] * 60), 2)


def lifetimes(recs: list[dict]) -> str:
    if not recs:
        return "none"
    v = [r["lifetime_s"] for r in recs]
    return f"{len(v)}, after {min(v):.1f}-{max(v):.1f} s (median {np.median(v):.1f})"


def report(s: dict, a, long_s: float) -> None:
    p = print
    live = s["live"]
    flags = " ".join(s["server_flags"])
    p(f"\nvoxtral serve soak: {s['duration_s']:.0f} s" + (" (interrupted)" * s["interrupted"]))
    p(f"  server: --model {a.model} {flags}")
    if s["flags_not_supported"]:
        p(f"  not in this server's --help (not passed): {' '.join(s['flags_not_supported'])}")
    p(
        f"live ({live['sessions']} sessions, real time, 100 ms appends): "
        f"{live['utterances']} utterances, {live['audio_s']:.0f} s of audio, "
        f"{live['deltas']} deltas, {live['connects']} connects"
    )
    p(f"  delta latency: {fmt_dist(live['delta_latency_s'])}")
    if live["delta_rtf"]["n"]:
        p(f"  server-reported rtf of the deltas: {fmt_dist(live['delta_rtf'], '')}")
    if live["deltas_ahead_of_audio"]:
        p(f"  deltas whose end was past the audio sent: {live['deltas_ahead_of_audio']}")
    p(f"  done after final commit: {fmt_dist(live['done_after_final_commit_s'])}")
    p(
        f"  buffer_full: {live['buffer_full']} ({live['buffer_full_audio_s']} s of audio "
        f"dropped); other errors: {live['errors'] or 'none'}; empty done: {live['empty_done']}"
    )
    if live["other_events"]:
        p(f"  other events: {live['other_events']}")
    p(f"  disconnects: {live['disconnects'] or 'none'}")

    ups = s["uploads"]
    ok = [u for u in ups if u.get("status") == 200]
    p(f"uploads: {len(ok)} done of {len(ups)} started (long file {long_s / 60:.1f} min)")
    longs = [u for u in ups if u["long"]]
    shorts = [u for u in ok if not u["long"]]
    if shorts:
        speed = [u["audio_s"] / max(u["wall_s"], 1e-9) for u in shorts]
        p(
            f"  short files: {len(shorts)}, wall {fmt_dist(dist([u['wall_s'] for u in shorts]))}"
            f"; {min(speed):.1f}-{max(speed):.1f}x real time"
        )
    for u in longs + [u for u in ups if u.get("status") != 200 and not u["long"]]:
        if u.get("status") == 200:
            how = f"wall {u['wall_s']} s ({u['audio_s'] / max(u['wall_s'], 1e-9):.1f}x real time)"
        else:
            how = f"{u.get('status')} after {u['wall_s']} s" + (
                f": {u['error']}" if "error" in u else ""
            )
        p(
            f"  {u['file']}: {u['audio_s']:.0f} s of audio ({u['mb']} MB), started at "
            f"t={u['started_at']} s, {how}"
        )

    idle = s["idle"]
    closed = [r for r in idle if "code" in r]
    p(f"idle WebSockets ({a.idle}): {len(idle)} connections, closed by the server: {len(closed)}")
    for code, reason, by in dict.fromkeys((r["code"], r["reason"], r["by"]) for r in closed):
        recs = [r for r in closed if (r["code"], r["reason"], r["by"]) == (code, reason, by)]
        p(f"  code {code} {reason!r} (closed by {by}): {lifetimes(recs)}")
    still = [f"{r['lifetime_s']:.0f}" for r in idle if r.get("open_at_end")]
    if still:
        p(f"  still open at the end: {len(still)} (for {', '.join(still)} s)")
    for r in idle:
        if "refused" in r or "failed" in r:
            p(f"  t={r['opened_at']} s: {r.get('refused') or r.get('failed')}")
    received = Counter(m for r in idle for m in r.get("received", []))
    for message, n in received.most_common(5):
        p(f"  received before the close ({n}x): {message}")

    for st in s["stuck"]:
        p(
            f"non-reading client ({a.stuck_speed:g}x real time): handshake "
            f"{st['handshake']!r} at t={st['connected_at']} s"
        )
        p(
            f"  sent {st['audio_seconds']:.0f} s of audio ({st['bytes_sent'] / 1024:.0f} KiB); "
            f"sends stalled (server stopped reading) at: "
            f"{'t=' + str(st['stalled_at']) + ' s' if st['stalled_at'] is not None else 'never'}"
        )
        if st["server_closed_at"] is not None:
            p(f"  server closed its end at t={st['server_closed_at']} s ({st['server_how']})")
        else:
            p("  the server never closed its end")
        if st["closed_at"] is not None:
            p(f"  the client saw it at t={st['closed_at']} s ({st['how']})")
        for row in st["timeline"][-2:]:
            t, state, unsent, unread, s_state, s_fd, s_unread, s_unsent = row
            p(
                f"  t={t}: client {state}, {unsent} B unacked, {unread} B unread; server "
                f"{s_state}, fd {'open' if s_fd else 'closed'}, {s_unread} B unread, "
                f"{s_unsent} B unsent"
            )

    sil = s["silent"]
    p(
        f"silent TCP ({sil['connections']}): closed by the server: {lifetimes(sil['closed'])}; "
        f"connect failures: {len(sil['connect_failed'])}; open at the end: "
        f"{len(sil['open_at_end_s'])}"
        + (f" (oldest {max(sil['open_at_end_s']):.0f} s)" if sil["open_at_end_s"] else "")
    )
    answers = Counter(r.get("answer", "(nothing)") for r in sil["closed"])
    if answers:
        p(f"  answers before the close: {dict(answers)}; how: "
          f"{dict(Counter(r['how'] for r in sil['closed']))}")  # fmt: skip

    st = s["storm"]
    p(
        f"reconnect storm ({a.storm_rate:g}/s): {st['attempts']} attempts, {st['ok']} sessions, "
        f"{st['refused']} refused (too_many_sessions), HTTP {dict(st['http']) or 'none'}, "
        f"failed {dict(st['failed']) or 'none'}, skipped {st['skipped']}; "
        f"session.created {fmt_dist(st['handshake_s'], 'ms', 1000, 0)}"
    )

    if "server" in s:
        v = s["server"]
        after = s["after_clients_left"] or {}
        p(
            f"server: RSS {v['rss_mb_first']:.0f} -> {v['rss_mb_last']:.0f} MB (max "
            f"{v['rss_mb_max']:.0f}; second half {v['rss_mb_per_min_second_half']} MB/min), "
            f"fds {v['fds_first']} -> {v['fds_last']} (max {v['fds_max']}), "
            f"sessions max {v['sessions_max']}"
        )
        p(
            f"  after every client left ({a.settle:g} s): RSS {after.get('rss_mb')} MB, "
            f"fds {after.get('fds')}, threads {after.get('threads')}, "
            f"sessions {after.get('sessions')}/{after.get('max_sessions')}"
        )
        p(
            f"  server CPU {v['cpu_s']} s ({v['cpu_pct_mean']}% of one core); this benchmark's "
            f"CPU {s['benchmark_cpu_s']} s; 1-min load average max {v['load1_max']} "
            f"({os.cpu_count()} cores)"
        )
        p(f"  /health latency: {fmt_dist(v['health_ms'], 'ms', 1000, 1)}", end="")
        p(f"; failures {dict(v['health_failures'])}" if v["health_failures"] else "")
    stop = s["server_stop"]
    p(
        f"  stop (SIGINT): exit code {stop.get('exit_code')} after {stop.get('stop_seconds')} s"
        + (" (killed)" if stop.get("killed") else "")
    )

    after = s["after_clients_left"]
    rows = s["samples"] + ([{**after, "t": "after"}] if after else [])
    step = max(1, math.ceil(len(rows) / 40))
    shown = rows[::step] + ([rows[-1]] if (len(rows) - 1) % step else [])
    p(f"\n{'t s':>7} {'RSS MB':>8} {'fds':>5} {'thr':>4} {'sessions':>9} {'silent':>6} "
      f"{'health':>8} {'CPU %':>6} {'load':>5}")  # fmt: skip
    for r in shown:
        sessions = f"{r.get('sessions', '?')}/{r.get('max_sessions', '?')}"
        health = f"{r['health_ms']:.0f} ms" if "health_ms" in r else str(r.get("health", ""))
        p(f"{r['t']!s:>7} {r.get('rss_mb', '?')!s:>8} {r.get('fds', '?')!s:>5} "
          f"{r.get('threads', '?')!s:>4} {sessions:>9} {r.get('silent_open', '')!s:>6} "
          f"{health:>8} {r.get('cpu_pct', '')!s:>6} {r.get('load1', '')!s:>5}")  # fmt: skip


# --- main --------------------------------------------------------------------------------


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tests/assets/tiny-voxtral")
    parser.add_argument("--duration", type=float, default=600, help="seconds of load")
    parser.add_argument("--live", type=int, default=4, help="well-behaved live sessions")
    parser.add_argument("--idle", type=int, default=2, help="idle WebSockets")
    parser.add_argument("--stuck", type=int, default=1, help="clients that never read")
    parser.add_argument("--stuck-speed", type=float, default=1, help="their audio, times real time")
    parser.add_argument("--silent", type=int, default=200, help="silent TCP connections")
    parser.add_argument("--storm-rate", type=float, default=20, help="connections/s; 0: none")
    parser.add_argument("--storm-inflight", type=int, default=20, help="most at once")
    parser.add_argument("--no-uploads", dest="uploads", action="store_false")
    parser.add_argument("--upload-minutes", type=float, default=10, help="the long upload")
    parser.add_argument("--upload-timeout", type=float, default=1800)
    parser.add_argument("--done-timeout", type=float, default=60, help="live: wait for done")
    parser.add_argument("--sample-every", type=float, default=5, help="seconds")
    parser.add_argument("--settle", type=float, default=5, help="wait before the last sample")
    parser.add_argument("--audio-dir", type=Path, default=default_audio_dir())
    parser.add_argument("--max-sessions", type=int, help="default: live + idle + stuck + 8")
    parser.add_argument("--idle-timeout", type=float, default=20, help="server flag; 0: omit")
    parser.add_argument("--read-timeout", type=float, default=10, help="server flag; 0: omit")
    parser.add_argument("--max-connections", type=int, default=300, help="server flag; 0: omit")
    parser.add_argument("--max-upload-mb", type=float, default=64, help="server flag; 0: omit")
    parser.add_argument("--served-model-name", default="voxtral-soak", help='server flag; "": omit')
    parser.add_argument("--serve-args", default="", help="more `voxtral serve` flags, one string")
    parser.add_argument("--json", type=Path, help="write the figures here")
    a = parser.parse_args()
    if a.max_sessions is None:
        a.max_sessions = a.live + a.idle + a.stuck + 8
    return a


def on_sigterm(signum, frame):
    raise KeyboardInterrupt


def main() -> None:
    a = parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)
    tmp = Path(tempfile.mkdtemp(prefix="voxtral-soak-"))
    proc, stop, summary, long_s = None, {}, None, 0.0
    res = Results()
    try:
        clips = load_clips(a.audio_dir)
        long = tmp / f"long-{a.upload_minutes:g}min.wav"
        long_s = write_long(clips, a.upload_minutes, long)
        help_text = subprocess.run(
            [*voxtral_command(), "serve", "--help"],
            capture_output=True,
            text=True,
            env=server_env(),
            cwd=ROOT,
        ).stdout
        flags, missing = server_args(a, help_text)
        port = free_port()
        cmd = [*voxtral_command(), "serve", "--model", a.model, "--port", str(port), *flags]
        log = tmp / "server.log"
        print(f"starting: {shlex.join(cmd)}", flush=True)
        proc = start_server(cmd, log)
        wait_healthy(proc, port, log)
        status, body = asyncio.run(http(port, "GET", "/v1/models"))
        model = json.loads(body)["data"][0]["id"] if status == 200 else None
        print(
            f"server pid {proc.pid} ready; model {model!r}; {a.duration:g} s of load: "
            f"{a.live} live, {a.idle} idle, {a.stuck} non-reading, {a.silent} silent TCP, "
            f"storm {a.storm_rate:g}/s, uploads {'on' if a.uploads else 'off'}",
            flush=True,
        )
        soak = Soak(a, port, model, clips, long, res)
        try:
            asyncio.run(run_soak(soak, proc.pid))
        except KeyboardInterrupt:
            res.interrupted = True
    except KeyboardInterrupt:
        res.interrupted = True
    finally:
        if proc is not None:
            stop = stop_server(proc)
            text = (tmp / "server.log").read_text(errors="replace")
            lines = text.splitlines()
            if lines:
                print(f"server output ({len(lines)} lines), the last 15:")
                print("\n".join("  | " + line for line in lines[-15:]))
            stop["log_lines"] = len(lines)
            stop["log_tracebacks"] = text.count("Traceback")
        shutil.rmtree(tmp, ignore_errors=True)
    if res.started:
        summary = summarize(res, a, flags, missing, stop)
        report(summary, a, long_s)
        if a.json:
            a.json.write_text(json.dumps(summary, indent=1, default=str))
            print(f"\nfigures: {a.json}")
    if res.interrupted:
        sys.exit(130)


if __name__ == "__main__":
    main()
