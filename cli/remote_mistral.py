"""Clients of Mistral's speech-to-text API: `voxtral serve`'s Mistral dialect, or Mistral's
cloud (api.mistral.ai; untested here: no network). `MistralSession` is a drop-in for
`Session` in `voxtral live --server` over /v1/audio/transcriptions/realtime, and
`transcribe_mistral` uploads a file to /v1/audio/transcriptions as Mistral's SDK does.

Our server sends more than Mistral's events carry (the audio time of every delta, the words
with their times, the delay used), so words and subtitles are the library's own. From a
server without those extensions, the times are the segments': each segment is written as
one timed entry (a subtitle cue of its own), and the text deltas have none.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from urllib.parse import quote

from voxtral_mlx import SAMPLE_RATE, Stats, Transcript, VoxtralError, Word, WordDone
from voxtral_mlx.biasing import DEFAULT_STRENGTH
from voxtral_mlx.errors import VoxtralWarning
from voxtral_mlx.serve.config import MISTRAL_NAMES

from .remote import (
    RemoteSession,
    _message,
    _read,
    http_url,
    realtime_url,
    served_models,
    why_unreachable,
)

REALTIME_PATH = "/v1/audio/transcriptions/realtime"
# Mistral's cloud names, asked for where the server does not serve exactly one model
CLOUD_REALTIME_MODEL = MISTRAL_NAMES[0]
CLOUD_UPLOAD_MODEL = "voxtral-mini-latest"
KEY_HINT = "set the key with --api-key or MISTRAL_API_KEY"


def mistral_model(url: str, api_key: str | None, realtime: bool) -> str:
    """The model to ask for: the one a server lists when it lists exactly one (ours), else
    Mistral's cloud model for realtime or for uploads."""
    models = served_models(url, api_key)
    if len(models) == 1:
        return models[0]
    return CLOUD_REALTIME_MODEL if realtime else CLOUD_UPLOAD_MODEL


def mistral_phrases(context_bias: list[tuple[str, float]]) -> list[str]:
    """A list's phrases as Mistral's protocol carries them: without weights, so the server
    weighs each as it does phrases without one (ours: its --context-bias-strength; a
    warning says so when a weight or a strength was given)."""
    if any(weight != DEFAULT_STRENGTH for _, weight in context_bias):
        message = (
            "Mistral's protocol carries no weights: the server weighs every phrase alike "
            "(ours: by its --context-bias-strength)"
        )
        warnings.warn(message, VoxtralWarning, stacklevel=3)
    return [phrase for phrase, _ in context_bias]


def error_text(event: dict) -> str:
    """A Mistral error event's message and code, on one line."""
    error = event.get("error")
    error = error if isinstance(error, dict) else {"message": error}
    message = error.get("message")
    if isinstance(message, dict):
        message = message.get("detail", message)
    return f"{message} ({error.get('code')})"


class MistralSession(RemoteSession):
    """The Session interface (feed, finish, result, delay_ms) over Mistral's realtime
    protocol: audio goes as 16 kHz PCM16 (resampled here), the end of the audio is an
    `input_audio.flush`, whose transcription.done ends the session. `delay_ms` is sent when
    given (target_streaming_delay_ms); `self.delay_ms` is the one the server states."""

    APPEND = "input_audio.append"
    FINAL = {"type": "input_audio.flush"}

    def _open(
        self,
        url: str,
        model: str | None,
        api_key: str | None,
        delay_ms: int | None,
        context_bias: list[tuple[str, float]] | None,
    ):
        name = model or mistral_model(url, api_key, realtime=True)
        target = f"{realtime_url(url, REALTIME_PATH)}?model={quote(name, safe='')}"
        self._connect(target, api_key, KEY_HINT)
        created = self._next_event(10.0)
        session = created.get("session")
        if created.get("type") != "session.created" or not isinstance(session, dict):
            self.close()
            if created.get("type") == "error":  # (an unknown model, a full server)
                raise VoxtralError(f"server error: {error_text(created)}")
            raise VoxtralError(f"{target} does not speak Mistral's protocol (got {created})")
        said = session.get("target_streaming_delay_ms")
        self.delay_ms = delay_ms or (said if isinstance(said, int) else None)
        self.timed = True  # segments have times (and our server's deltas)
        settings = {"audio_format": {"encoding": "pcm_s16le", "sample_rate": SAMPLE_RATE}}
        if delay_ms is not None:
            settings["target_streaming_delay_ms"] = delay_ms
        if context_bias:
            settings["context_bias"] = mistral_phrases(context_bias)
        self._send({"type": "session.update", "session": settings})
        self._delta_times = False  # a delta came with its times (our server's extension)

    def _read(self, event: dict) -> list:
        kind = event.get("type")
        if kind == "transcription.text.delta":
            self._delta_times |= isinstance(event.get("start"), (int, float))
            return self._delta(str(event.get("text", "")), event)
        if kind == "transcription.segment":
            return self._segment(event)
        if kind == "error":
            raise VoxtralError(f"server error: {error_text(event)}")
        if kind == "closed":
            raise VoxtralError(f"the server closed the connection (code {event['code']})")
        return []  # session.updated, transcription.language, turn.*

    def _segment(self, event: dict) -> list:
        """A segment is a timed entry of its own where the server sends no words (once it
        has sent words, or deltas with times, they make the words)."""
        start, end = event.get("start"), event.get("end")
        text = str(event.get("text", "")).strip()
        if self._words is None or self._delta_times or not text:
            return []
        if not all(isinstance(t, (int, float)) for t in (start, end)):
            return []
        word = Word(text, float(start), float(end))
        self._all_words.append(word)
        return [WordDone(word)]


def transcribe_mistral(
    url: str,
    path_or_bytes: Path | bytes,
    name: str,
    api_key: str | None,
    delay_ms: int | None,
    model: str | None = None,
    context_bias: list[tuple[str, float]] | None = None,
) -> Transcript:
    """One file through Mistral's POST /v1/audio/transcriptions, with word timestamps (the
    words are the segments). `delay_ms` is sent when given (our extension); the Transcript's
    is the delay the server says it used, else None. `context_bias`: its phrases, a field
    each, as Mistral's SDK sends them."""
    import requests

    data = path_or_bytes if isinstance(path_or_bytes, bytes) else _read(Path(path_or_bytes))
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    target = http_url(url, "/v1/audio/transcriptions")
    form = {
        "model": model or mistral_model(url, api_key, realtime=False),
        "stream": "false",
        "diarize": "false",
        "timestamp_granularities": "word",
    }
    if delay_ms is not None:
        form["delay_ms"] = str(delay_ms)  # our extension
    fields = list(form.items())
    fields += [("context_bias", phrase) for phrase in mistral_phrases(context_bias or [])]
    try:
        files = {"file": (name, data)}
        response = requests.post(target, headers=headers, files=files, data=fields, timeout=3600)
    except requests.RequestException as e:
        raise VoxtralError(f"cannot reach {target}: {why_unreachable(e)}") from e
    if response.status_code != 200:
        raise VoxtralError(f"server answered {response.status_code}: {_message(response)}")
    try:
        body = response.json()
        text = body["text"]
        words = [
            Word(str(s["text"]).strip(), float(s["start"]), float(s["end"]))
            for s in body.get("segments") or []
            if s.get("start") is not None and s.get("end") is not None
        ]
        seconds = float((body.get("usage") or {}).get("prompt_audio_seconds") or 0.0)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise VoxtralError(f"{target} did not answer with a transcription ({e})") from None
    used = body.get("delay_ms")  # our extension: the delay it used
    if not isinstance(used, int):
        used = None
        if delay_ms is not None:
            message = "the server does not take --delay: the delay it used is unknown"
            warnings.warn(message, VoxtralWarning, stacklevel=2)
    stats = Stats(seconds, 0, 0.0, 0.0, 0.0, 0)
    return Transcript(text, [], words, used, stats)
