"""A Mistral realtime session's settings (`Settings`): read from session.update, every one
checked before any changes, described back in session.created / session.updated in the
SDK's `RealtimeTranscriptionSession` shape, and the audio format they set decoded. How each
is honoured: the README, "Mistral's API"."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ...biasing import ContextBias
from ...config import SAMPLE_RATE, check_delay
from ...errors import VoxtralError
from ..errors import ClientError, shorten
from ..server import Server
from ..upload_form import LANGUAGE_CODE
from ..wire import PCM_SAMPLES, g711_to_float, pcm_to_float

# Mistral's encodings (the SDK's AudioEncoding) -> how wire.py reads them
ENCODINGS = {
    "pcm_s16le": "s16",
    "pcm_s32le": "s32",
    "pcm_f16le": "f16",
    "pcm_f32le": "f32",
    "pcm_mulaw": "audio/pcmu",
    "pcm_alaw": "audio/pcma",
}
MIN_RATE, MAX_RATE = 8000, 192000
# the SDK's TurnDetectionConfig defaults, and the ranges taken
TURN_DEFAULTS = {
    "start_threshold": 0.5,
    "eager_end_threshold": 0.5,
    "end_threshold": 0.33,
    "min_silence_ms": 500,
}
THRESHOLDS = ("start_threshold", "eager_end_threshold", "end_threshold")
MIN_SILENCE_MS = (80, 10000)


class SettingError(ClientError):
    """A setting this server refuses: the settings stay as they were."""

    def __init__(self, message: str, param: str):
        super().__init__(message, "invalid_value", param)


@dataclass(frozen=True)
class Settings:
    model: str  # the model's name, as the client gave it (or the served one)
    delay_ms: int
    encoding: str = "pcm_s16le"
    rate: int = SAMPLE_RATE  # the client's sample rate
    language: str | None = None  # the client's, echoed: Voxtral detects none
    context_bias: ContextBias | None = None  # the custom vocabulary (None: no list)
    turn_detection: dict | None = None  # None: no turn.* events

    def updated(self, session, server: Server) -> Settings:
        """The settings a session.update's `session` asks for, or a SettingError that
        changes nothing. Fields left out (or null) stay as they are."""
        if not isinstance(session, dict):
            raise SettingError("session.update needs a `session` object", "session")
        changes: dict = {}
        if (given := session.get("audio_format")) is not None:
            changes["encoding"], changes["rate"] = _audio_format(given)
        if (delay := session.get("target_streaming_delay_ms")) is not None:
            try:
                changes["delay_ms"] = check_delay(delay)
            except VoxtralError as e:
                raise SettingError(f"target_streaming_delay_ms: {e}", "delay") from None
        if (diarize := session.get("diarize")) is not None:
            if not isinstance(diarize, bool):
                raise SettingError("diarize must be true or false", "diarize")
            if diarize:
                raise SettingError(
                    "diarize is not supported: Voxtral Realtime does not tell speakers apart "
                    "(send diarize false, or leave it out)",
                    "diarize",
                )
        if session.get("speaker_references"):
            raise SettingError(
                "speaker_references are not supported: they need diarization, which this "
                "server does not do",
                "speaker_references",
            )
        if (bias := session.get("context_bias")) is not None:
            changes["context_bias"] = context_bias(bias, server)
        if (language := session.get("language")) is not None:
            if not isinstance(language, str) or not LANGUAGE_CODE.fullmatch(language):
                raise SettingError(
                    "language must be a language code such as en (ISO-639-1)", "language"
                )
            changes["language"] = language
        if "turn_detection" in session:
            changes["turn_detection"] = _turn_detection(session["turn_detection"])
        return replace(self, **changes)

    def describe(self, request_id: str) -> dict:
        """The `session` of session.created / session.updated: what is applied (diarize is
        always false; speaker_references always null)."""
        return {
            "request_id": request_id,
            "model": self.model,
            "audio_format": {"encoding": self.encoding, "sample_rate": self.rate},
            "target_streaming_delay_ms": self.delay_ms,
            "diarize": False,
            "context_bias": [phrase for phrase, _ in self.context_bias.phrases]
            if self.context_bias
            else None,
            "language": self.language,
            "speaker_references": None,
            "turn_detection": self.turn_detection,
        }

    @property
    def sample_bytes(self) -> int:
        kind = ENCODINGS[self.encoding]
        return 1 if kind.startswith("audio/") else np.dtype(PCM_SAMPLES[kind][0]).itemsize

    def decode(self, raw: bytes) -> np.ndarray:
        """The samples (at the client's rate) of whole samples' bytes (ValueError)."""
        kind = ENCODINGS[self.encoding]
        if not raw:
            return np.zeros(0, np.float32)
        if kind.startswith("audio/"):
            return g711_to_float(raw, kind)
        return pcm_to_float(raw, kind)


def context_bias(value, server: Server) -> ContextBias | None:
    """The custom vocabulary a session.update sends: a list of phrases, each weighed by the
    server's --context-bias-strength ([]: none; it replaces the server's list)."""
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise SettingError("context_bias must be a list of strings", "context_bias")
    try:
        return server.context_bias(value)
    except VoxtralError as e:
        raise SettingError(f"context_bias: {e}", "context_bias") from None


def _audio_format(given) -> tuple[str, int]:
    if not isinstance(given, dict):
        raise SettingError("audio_format must be an object", "audio_format")
    encoding = given.get("encoding", "pcm_s16le")
    if not isinstance(encoding, str) or encoding not in ENCODINGS:
        shown = shorten(str(encoding))
        raise SettingError(
            f"audio_format.encoding {shown!r} is not supported: use one of " + ", ".join(ENCODINGS),
            "audio_format.encoding",
        )
    rate = given.get("sample_rate", SAMPLE_RATE)
    if isinstance(rate, float) and rate.is_integer():
        rate = int(rate)  # (as the SDK's own model reads it)
    if isinstance(rate, bool) or not isinstance(rate, int) or not MIN_RATE <= rate <= MAX_RATE:
        raise SettingError(
            f"audio_format.sample_rate: an integer from {MIN_RATE} to {MAX_RATE} (Hz)",
            "audio_format.sample_rate",
        )
    return encoding, rate


def _turn_detection(given) -> dict | None:
    """The SDK's TurnDetectionConfig, checked, with its defaults filled in."""
    if given is None:
        return None
    if not isinstance(given, dict):
        raise SettingError("turn_detection must be an object or null", "turn_detection")
    config = dict(TURN_DEFAULTS)
    for name in THRESHOLDS:
        if (value := given.get(name)) is not None:
            if not _number(value) or not 0.0 <= value <= 1.0:
                raise SettingError(f"turn_detection.{name}: from 0 to 1", f"turn_detection.{name}")
            config[name] = value
    low, high = MIN_SILENCE_MS
    if (value := given.get("min_silence_ms")) is not None:
        if not _number(value) or value != int(value) or not low <= value <= high:
            raise SettingError(
                f"turn_detection.min_silence_ms: an integer from {low} to {high}",
                "turn_detection.min_silence_ms",
            )
        config["min_silence_ms"] = int(value)
    if (value := given.get("end_timeout_ms")) is not None:
        if not _number(value) or value != int(value) or value < 0:
            raise SettingError(
                "turn_detection.end_timeout_ms: a whole number of ms, or null",
                "turn_detection.end_timeout_ms",
            )
        config["end_timeout_ms"] = int(value)
    return config


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
