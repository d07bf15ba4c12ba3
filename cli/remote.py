"""Clients of a server that speaks the realtime protocol (ours or vLLM's): a drop-in for
`Session` in `voxtral live --server`, and the upload endpoint for `voxtral transcribe --server`;
which API a server speaks (`server_protocol`: this one, or Mistral's, remote_mistral.py) and
the key a client sends (`server_key`).

Our server extends vLLM's protocol with what a client needs to do what the user asked: the
delay (`delay_ms` in session.update sets it; session.created and transcription.done say
which is used), the audio time of every delta (`start`, `end`: words and subtitles are made
from them) and `backpressure: "wait"` (audio is never dropped). A vLLM server has none of
these: with it, the delay is not known (--delay is ignored) and there are no times.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import os
import queue
import re
import textwrap
import threading
import time
import warnings
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from voxtral_mlx import SAMPLE_RATE, Stats, TextDelta, Transcript, VoxtralError, Word, WordDone
from voxtral_mlx.audio import StreamResampler, as_samples
from voxtral_mlx.config import AudioArgs, Schedule
from voxtral_mlx.errors import VoxtralWarning
from voxtral_mlx.words import WordBuilder

DONE_TIMEOUT_SECONDS = 120.0
MESSAGE_CHARS = 200  # of a server's error message, shown on one line
PROTOCOLS = ("auto", "vllm", "mistral")
# the endpoints a --server URL may name; the server's base is what comes before them
ENDPOINTS = ("/v1/audio/transcriptions/realtime", "/v1/audio/transcriptions", "/v1/realtime")
MISTRAL_ENDPOINTS = ENDPOINTS[:2]
MISTRAL_HOST = "mistral.ai"


def server_protocol(url: str, protocol: str = "auto") -> str:
    """The API to speak to `url`: `protocol`, or for "auto" Mistral's where the URL names one
    of its endpoints or the host is Mistral's (api.mistral.ai), else vLLM's (/v1/realtime,
    which our server speaks too)."""
    if protocol != "auto":
        return protocol
    parsed = urlparse(url)
    host = (parsed.hostname or "").lower()
    mistral = host == MISTRAL_HOST or host.endswith("." + MISTRAL_HOST)
    return "mistral" if mistral or parsed.path.rstrip("/").endswith(MISTRAL_ENDPOINTS) else "vllm"


def server_key(api_key: str | None, protocol: str) -> str | None:
    """The key to send: --api-key; else, for Mistral's API, MISTRAL_API_KEY; else
    VOXTRAL_API_KEY (an empty variable is none)."""
    names = (
        ("MISTRAL_API_KEY", "VOXTRAL_API_KEY") if protocol == "mistral" else ("VOXTRAL_API_KEY",)
    )
    for value in (api_key, *map(os.environ.get, names)):
        if value:
            return value
    return None


def _base(url: str) -> tuple[str, str, str]:
    """(scheme, host and port, base path) of a --server URL: its path less the endpoint it
    names, if any."""
    parsed = urlparse(url)
    path = parsed.path.rstrip("/")
    for endpoint in ENDPOINTS:
        if path.endswith(endpoint):
            path = path.removesuffix(endpoint)
            break
    return parsed.scheme, parsed.netloc, path


def realtime_url(url: str, path: str = "/v1/realtime") -> str:
    scheme, host, base = _base(url)
    if scheme not in ("ws", "wss", "http", "https"):
        raise VoxtralError(f"--server {url!r}: use ws://HOST:PORT (or wss://, http://, https://)")
    scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
    return f"{scheme}://{host}{base}{path}"


def http_url(url: str, path: str) -> str:
    scheme, host, base = _base(url)
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    if scheme not in ("http", "https"):
        raise VoxtralError(f"--server {url!r}: use http://HOST:PORT")
    return f"{scheme}://{host}{base}{path}"


def served_model(url: str, api_key: str | None) -> str | None:
    """The model id a server announces at /v1/models (ours and vLLM's), or None."""
    return next(iter(served_models(url, api_key)), None)


def served_models(url: str, api_key: str | None) -> list[str]:
    """The model ids a server lists at /v1/models (none if it does not answer)."""
    import requests

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = requests.get(http_url(url, "/v1/models"), headers=headers, timeout=10)
        return [m["id"] for m in response.json()["data"]] if response.status_code == 200 else []
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return []


def why_unreachable(error: Exception) -> str:
    """The reason in a requests error, as a user reads it ("Connection refused"), rather
    than urllib3's nested description of its connection pool."""
    import requests

    if isinstance(error, requests.Timeout):
        return "no answer in time"
    text = str(error)
    if found := re.search(r"\[Errno -?\d+\] ([^'\")]+)", text):
        return found.group(1).strip()
    return text


class RemoteSession:
    """The Session interface (feed, finish, result, delay_ms, backlog_seconds) over a
    WebSocket. With no `model`, it uses the one the server announces. Audio at `sample_rate`
    is sent as 16 kHz PCM16, resampled as Session does.

    `delay_ms` and `context_bias` (our extension: only our server takes it) are sent when
    given. `self.delay_ms` is the delay the server uses (from
    transcription.done once it comes), None when it does not say. `timed`: the server speaks
    our extensions (its session.created says its delay), so the deltas carry times and the
    events words; with a vLLM server, TextDelta times are None and there are no words."""

    APPEND = "input_audio_buffer.append"  # the event that carries audio
    FINAL = {"type": "input_audio_buffer.commit", "final": True}  # the end of the audio

    def __init__(
        self,
        url: str,
        model: str | None,
        api_key: str | None,
        delay_ms: int | None,
        sample_rate: int = SAMPLE_RATE,
        context_bias: list[tuple[str, float]] | None = None,
    ):
        self._resampler = StreamResampler(sample_rate)
        self.result: Transcript | None = None
        self._open(url, model, api_key, delay_ms, context_bias)
        self._start_stream()

    def _open(
        self,
        url: str,
        model: str | None,
        api_key: str | None,
        delay_ms: int | None,
        context_bias: list[tuple[str, float]] | None,
    ):
        """Connect, read session.created, start the session (VoxtralError: why not)."""
        target = realtime_url(url)
        self._connect(target, api_key, "set the key with --api-key or VOXTRAL_API_KEY")
        created = self._next_event(10.0)
        if created.get("type") != "session.created":
            self.close()
            if created.get("type") == "error":  # (the server is full, say)
                raise VoxtralError(f"server error: {created.get('error')} ({created.get('code')})")
            raise VoxtralError(f"{target} does not speak the realtime protocol (got {created})")
        # our server states its delay at once (and sends times); vLLM's has no delay setting
        self.timed = isinstance(created.get("delay_ms"), int)
        self.delay_ms = (delay_ms or created["delay_ms"]) if self.timed else None
        if delay_ms is not None and not self.timed:
            message = (
                "the server speaks only vLLM's protocol, which has no delay setting: --delay "
                "is ignored, and the delay it uses is not known"
            )
            warnings.warn(message, VoxtralWarning, stacklevel=2)
        update = {"type": "session.update", "model": model or served_model(url, api_key)}
        if delay_ms is not None:
            update["delay_ms"] = delay_ms
        if context_bias:  # our extension; a vLLM server would refuse the session
            if not self.timed:
                self.close()
                raise VoxtralError(
                    "the server speaks only vLLM's protocol, which has no context bias: "
                    "drop --context-bias"
                )
            update["context_bias"] = [list(item) for item in context_bias]
        if self.timed:  # audio faster than the server transcribes waits; none is dropped
            update["backpressure"] = "wait"
        self._send(update)
        self._send({"type": "input_audio_buffer.commit"})

    def _connect(self, target: str, api_key: str | None, key_hint: str) -> None:
        """Open the WebSocket (VoxtralError: why not) and start reading its events."""
        from websockets.exceptions import InvalidHandshake, InvalidURI
        from websockets.sync.client import connect

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        try:
            ws = connect(target, additional_headers=headers, max_size=2**24, open_timeout=10)
            self._ws = ws.__enter__()  # what `with connect(...)` does; closed in finish()
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as e:
            status = getattr(getattr(e, "response", None), "status_code", None)
            if status in (401, 403):  # (403: a server that refuses before the handshake)
                raise VoxtralError(
                    f"{target} refused the API key (HTTP {status}): {key_hint}"
                ) from e
            raise VoxtralError(f"cannot connect to {target}: {e}") from e
        self._events: queue.Queue[dict] = queue.Queue()
        self._receiver = threading.Thread(target=self._receive, daemon=True)
        self._receiver.start()

    def _start_stream(self) -> None:
        self._samples = 0
        self._text: list[str] = []
        self._words = WordBuilder()
        self._all_words: list[Word] = []
        self._paced_since: tuple[float, int] | None = None  # (wall clock, samples sent then)
        self._tic = time.perf_counter()

    @property
    def schedule(self) -> Schedule | None:
        """The server's schedule, once its delay is known."""
        return None if self.delay_ms is None else Schedule(AudioArgs(), self.delay_ms)

    @property
    def backlog_seconds(self) -> float:
        return 0.0  # the server's own backlog: a client cannot see it

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
            self.close()
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
            if event.get("type") == "transcription.done":
                return events, event
            events += self._read(event)

    def _read(self, event: dict) -> list:
        """The events of one of the server's (VoxtralError for an error it sends)."""
        kind = event.get("type")
        if kind == "transcription.delta":
            return self._delta(str(event.get("delta", "")), event)
        if kind == "error" and event.get("code") == "buffer_full":
            self._slow_down()
        elif kind == "error":
            raise VoxtralError(f"server error: {event.get('error')} ({event.get('code')})")
        elif kind == "closed":
            raise VoxtralError(f"the server closed the connection (code {event['code']})")
        return []

    def _delta(self, text: str, event: dict) -> list:
        """A delta's events: the word its text completed, if any, then the text."""
        self._text.append(text)
        start, end = event.get("start"), event.get("end")  # our extension
        if not all(isinstance(t, (int, float)) for t in (start, end)):
            return [TextDelta(text, (), None, None)]
        events = self._server_words(event)
        if events is None and self._words is not None:  # times but no words: made here
            events = []
            if word := self._words.add(text.encode(), start, end):
                self._all_words.append(word)
                events.append(WordDone(word))
        return (events or []) + [TextDelta(text, (), start, end)]

    def _server_words(self, event: dict) -> list | None:
        """The words the server completed (our server sends them with their times, as its
        session made them); None if it sends none."""
        if not isinstance(event.get("words"), list):
            return None
        self._words = None  # the server's words, never also ours
        words = [Word(str(w["word"]), float(w["start"]), float(w["end"])) for w in event["words"]]
        self._all_words += words
        return [WordDone(w) for w in words]

    def _slow_down(self) -> None:
        """A server that drops audio sent faster than it transcribes (`buffer_full`: one
        without backpressure "wait") lost a chunk: say so once, and send the rest at
        real-time pace, which a server that keeps up takes whole."""
        if self._paced_since is None:
            self._paced_since = (time.monotonic(), self._samples)
            warnings.warn(
                "the server dropped audio sent faster than it transcribes (buffer_full): the "
                "transcript misses some; the rest goes at real-time pace",
                VoxtralWarning,
                stacklevel=2,
            )

    def feed(self, samples: np.ndarray) -> list:
        self._append(self._resampler(as_samples(samples)))
        return self._drain()[0]

    def _append(self, samples: np.ndarray) -> None:
        if not len(samples):
            return
        if self._paced_since is not None:
            since, sent = self._paced_since
            ahead = (self._samples - sent) / SAMPLE_RATE - (time.monotonic() - since)
            time.sleep(max(ahead, 0.0))
        pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()
        self._send({"type": self.APPEND, "audio": base64.b64encode(pcm).decode()})
        self._samples += len(samples)

    def finish(self) -> list:
        self._append(self._resampler(np.zeros(0, np.float32), last=True))
        self._send(self.FINAL)
        events, done = self._drain(until_done=True)
        self.close()
        seconds = self._samples / SAMPLE_RATE
        if (last := self._server_words(done)) is not None:
            events += last
        elif self._words is not None:
            self._words.duration = seconds
            if word := self._words.flush():
                self._all_words.append(word)
                events.append(WordDone(word))
        if isinstance(done.get("delay_ms"), int):  # our extension: the delay it used
            self.delay_ms = done["delay_ms"]
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
        self.result = Transcript(text.strip(), [], self._all_words, self.delay_ms, stats)
        return events

    def close(self) -> None:
        self._ws.close()
        receiver = getattr(self, "_receiver", None)
        if receiver is not None and receiver is not threading.current_thread():
            receiver.join(timeout=5)  # it ends with the connection: it holds this session


def transcribe_remote(
    url: str,
    path_or_bytes: Path | bytes,
    name: str,
    api_key: str | None,
    delay_ms: int | None,
    context_bias: list[tuple[str, float]] | None = None,
) -> Transcript:
    """One file through POST /v1/audio/transcriptions: verbose_json for the word times, or
    json where the server has none (vLLM answers 400 to verbose_json for this model).
    `delay_ms` is sent when given; the Transcript's is the delay the server says it used,
    else the default its /health states, else None. `context_bias` goes as the upload's
    `context_bias` field (a JSON list of [phrase, weight] pairs)."""
    import requests

    data = path_or_bytes if isinstance(path_or_bytes, bytes) else _read(Path(path_or_bytes))
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    target = http_url(url, "/v1/audio/transcriptions")
    form = {"response_format": "verbose_json"}
    if delay_ms is not None:
        form["delay_ms"] = str(delay_ms)  # our extension
    if context_bias:  # Mistral's field: a JSON list ([phrase, weight] pairs: ours)
        form["context_bias"] = json.dumps([list(item) for item in context_bias])

    def post(form: dict) -> requests.Response:
        try:
            files = {"file": (name, data)}
            return requests.post(target, headers=headers, files=files, data=form, timeout=3600)
        except requests.RequestException as e:
            raise VoxtralError(f"cannot reach {target}: {why_unreachable(e)}") from e

    response = post(form)
    if response.status_code == 400 and "verbose_json" in _message(response):
        response = post(form | {"response_format": "json"})
    if response.status_code != 200:
        raise VoxtralError(f"server answered {response.status_code}: {_message(response)}")
    try:
        body = response.json()
        words = [Word(w["word"], w["start"], w["end"]) for w in body.get("words", [])]
        text, seconds = body["text"], float(body.get("duration", 0.0))
    except (ValueError, TypeError, KeyError) as e:
        raise VoxtralError(f"{target} did not answer with a transcription ({e})") from None
    used = body.get("delay_ms")  # our extension: the delay it used
    if not isinstance(used, int):
        if context_bias:  # a server without our extensions: vLLM's has no such field
            message = "the server is not voxtral serve: --context-bias may have been ignored"
            warnings.warn(message, VoxtralWarning, stacklevel=2)
        used = server_delay(url, api_key)
        if delay_ms is not None:
            said = "unknown" if used is None else f"its default, {used} ms"
            message = f"the server does not take --delay: the delay it used is {said}"
            warnings.warn(message, VoxtralWarning, stacklevel=2)
    stats = Stats(seconds, 0, 0.0, 0.0, 0.0, 0)
    return Transcript(text, [], words, used, stats)


@functools.lru_cache
def server_delay(url: str, api_key: str | None) -> int | None:
    """The default delay a server states at /health (ours does; vLLM's answers nothing)."""
    import requests

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        value = requests.get(http_url(url, "/health"), headers=headers, timeout=10).json()
        return value["delay_ms"] if isinstance(value.get("delay_ms"), int) else None
    except (requests.RequestException, ValueError, AttributeError):
        return None


def _message(response) -> str:
    """The error message of a response, on one line: OpenAI's shape, FastAPI's, or the
    text (an HTML error page's text without its markup), shortened."""
    try:
        detail = response.json()
        error = detail.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        text = str(message or detail.get("message") or detail.get("detail") or response.text)
    except (ValueError, AttributeError):
        text = response.text
        if "html" in response.headers.get("content-type", "") or text.lstrip().startswith("<"):
            text = re.sub(r"(?is)<(head|script|style)\b.*?</\1>", " ", text)
            text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    return textwrap.shorten(text, MESSAGE_CHARS) or response.reason or "no message"


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise VoxtralError(f"no such audio file: {path}") from None
    except OSError as e:
        raise VoxtralError(f"cannot read {path}: {e.strerror}") from None
