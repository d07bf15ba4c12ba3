"""Clients of a server that speaks the realtime protocol (ours or vLLM's): a drop-in for
`Session` in `voxtral live --server`, and the upload endpoint for `voxtral transcribe --server`."""

from __future__ import annotations

import base64
import json
import queue
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from voxtral_mlx import SAMPLE_RATE, Stats, TextDelta, Transcript, VoxtralError, Word
from voxtral_mlx.audio import StreamResampler, as_samples
from voxtral_mlx.config import DEFAULT_DELAY_MS, AudioArgs, Schedule

DONE_TIMEOUT_SECONDS = 120.0


def realtime_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("ws", "wss", "http", "https"):
        raise VoxtralError(f"--server {url!r}: use ws://HOST:PORT (or wss://, http://, https://)")
    scheme = {"http": "ws", "https": "wss"}.get(parsed.scheme, parsed.scheme)
    path = parsed.path.rstrip("/") or ""
    if not path.endswith("/v1/realtime"):
        path += "/v1/realtime"
    return f"{scheme}://{parsed.netloc}{path}"


def http_url(url: str, path: str) -> str:
    parsed = urlparse(url)
    scheme = {"ws": "http", "wss": "https"}.get(parsed.scheme, parsed.scheme)
    if scheme not in ("http", "https"):
        raise VoxtralError(f"--server {url!r}: use http://HOST:PORT")
    base = parsed.path.rstrip("/").removesuffix("/v1/realtime")
    return f"{scheme}://{parsed.netloc}{base}{path}"


def served_model(url: str, api_key: str | None) -> str | None:
    """The model id a server announces at /v1/models (ours and vLLM's), or None."""
    import requests

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = requests.get(http_url(url, "/v1/models"), headers=headers, timeout=10)
        return response.json()["data"][0]["id"] if response.status_code == 200 else None
    except (requests.RequestException, ValueError, KeyError, IndexError):
        return None


class RemoteSession:
    """The Session interface (feed, finish, result, backlog_seconds) over a WebSocket. With
    no `model`, it uses the one the server announces. Audio at `sample_rate` is sent as
    16 kHz PCM16, resampled as Session does."""

    def __init__(
        self,
        url: str,
        model: str | None,
        api_key: str | None,
        delay_ms: int | None,
        sample_rate: int = SAMPLE_RATE,
    ):
        from websockets.exceptions import InvalidHandshake, InvalidURI
        from websockets.sync.client import connect

        self.schedule = Schedule(AudioArgs(), delay_ms or DEFAULT_DELAY_MS)
        self.delay_ms = self.schedule.delay_ms
        self._resampler = StreamResampler(sample_rate)
        self.result: Transcript | None = None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        target = realtime_url(url)
        try:
            ws = connect(target, additional_headers=headers, max_size=2**24, open_timeout=10)
            self._ws = ws.__enter__()  # what `with connect(...)` does; closed in finish()
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as e:
            status = getattr(getattr(e, "response", None), "status_code", None)
            if status in (401, 403):  # (403: a server that refuses before the handshake)
                hint = "set the key with --api-key or VOXTRAL_API_KEY"
                raise VoxtralError(f"{target} refused the API key (HTTP {status}): {hint}") from e
            raise VoxtralError(f"cannot connect to {target}: {e}") from e
        self._events: queue.Queue[dict] = queue.Queue()
        self._receiver = threading.Thread(target=self._receive, daemon=True)
        self._receiver.start()
        first = self._next_event(10.0)
        if first.get("type") != "session.created":
            raise VoxtralError(f"{target} does not speak the realtime protocol (got {first})")
        self._send({"type": "session.update", "model": model or served_model(url, api_key)})
        self._send({"type": "input_audio_buffer.commit"})
        self._samples = 0
        self._text: list[str] = []
        self._tic = time.perf_counter()

    def _receive(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for message in self._ws:
                self._events.put(json.loads(message))
        except (ConnectionClosed, OSError, ValueError):
            pass
        code = self._ws.close_code
        reason = self._ws.close_reason
        self._events.put({"type": "closed", "code": code, "reason": reason})

    def _next_event(self, timeout: float) -> dict:
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty as e:
            raise VoxtralError("the server did not answer in time") from e

    def _send(self, event: dict) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            self._ws.send(json.dumps(event))
        except ConnectionClosed as e:
            raise VoxtralError(f"the server closed the connection ({e.rcvd})") from e

    def _drain(self, until_done: bool = False) -> tuple[list, dict | None]:
        events, done = [], None
        deadline = time.monotonic() + DONE_TIMEOUT_SECONDS
        while True:
            try:
                timeout = max(deadline - time.monotonic(), 0.01) if until_done else 0
                event = (
                    self._events.get(timeout=timeout) if until_done else self._events.get_nowait()
                )
            except queue.Empty:
                if until_done:
                    raise VoxtralError(
                        "the server did not finish the transcription in time"
                    ) from None
                return events, done
            kind = event.get("type")
            if kind == "transcription.delta":
                self._text.append(event["delta"])
                events.append(TextDelta(event["delta"], (), 0.0, 0.0))
            elif kind == "transcription.done":
                return events, event
            elif kind == "error":
                raise VoxtralError(f"server error: {event.get('error')} ({event.get('code')})")
            elif kind == "closed":
                raise VoxtralError(f"the server closed the connection (code {event['code']})")

    @property
    def backlog_seconds(self) -> float:
        return 0.0

    def feed(self, samples: np.ndarray) -> list:
        self._append(self._resampler(as_samples(samples)))
        return self._drain()[0]

    def _append(self, samples: np.ndarray) -> None:
        if len(samples):
            pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()
            self._send(
                {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}
            )
            self._samples += len(samples)

    def finish(self) -> list:
        self._append(self._resampler(np.zeros(0, np.float32), last=True))
        self._send({"type": "input_audio_buffer.commit", "final": True})
        events, done = self._drain(until_done=True)
        self._ws.close()
        seconds = self._samples / SAMPLE_RATE
        elapsed = time.perf_counter() - self._tic
        usage = done.get("usage") or {}
        stats = Stats(
            audio_seconds=seconds,
            decoder_steps=usage.get("completion_tokens", 0),
            elapsed_seconds=elapsed,
            tokens_per_second=usage.get("completion_tokens", 0) / elapsed if elapsed else 0.0,
            real_time_factor=elapsed / seconds if seconds else 0.0,
            peak_memory_bytes=0,
        )
        text = done.get("text", "".join(self._text))
        self.result = Transcript(text.strip(), [], [], self.delay_ms, stats)
        return events


def transcribe_remote(
    url: str, path_or_bytes: Path | bytes, name: str, api_key: str | None, delay_ms: int | None
) -> Transcript:
    """One file through POST /v1/audio/transcriptions (verbose_json, for the word times)."""
    import requests

    data = path_or_bytes if isinstance(path_or_bytes, bytes) else _read(Path(path_or_bytes))
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    target = http_url(url, "/v1/audio/transcriptions")
    try:
        response = requests.post(
            target,
            headers=headers,
            files={"file": (name, data)},
            data={"response_format": "verbose_json"},
            timeout=3600,
        )
    except requests.RequestException as e:
        raise VoxtralError(f"cannot reach {target}: {e}") from e
    if response.status_code != 200:
        try:
            detail = response.json()
            message = (
                detail.get("error", {}).get("message") or detail.get("detail") or response.text
            )
        except ValueError:
            message = response.text
        raise VoxtralError(f"server answered {response.status_code}: {message}")
    body = response.json()
    words = [Word(w["word"], w["start"], w["end"]) for w in body.get("words", [])]
    seconds = float(body.get("duration", 0.0))
    stats = Stats(seconds, 0, 0.0, 0.0, 0.0, 0)
    return Transcript(body["text"], [], words, delay_ms or DEFAULT_DELAY_MS, stats)


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise VoxtralError(f"no such audio file: {path}") from None
    except OSError as e:
        raise VoxtralError(f"cannot read {path}: {e.strerror}") from None
