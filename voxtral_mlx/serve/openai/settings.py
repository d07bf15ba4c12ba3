"""An OpenAI transcription session's settings (`Settings`): read from session.update (or the
beta's transcription_session.update), every one checked before any changes, and described
back in session.created / session.updated. How each is honoured: the README."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from ...biasing import ContextBias
from ...errors import VoxtralError
from ..errors import ClientError
from ..server import Server

log = logging.getLogger("voxtral_mlx.server")

# OpenAI's transcription `delay` levels, as our delays (ms)
DELAY_LEVELS = {"minimal": 80, "low": 240, "medium": 480, "high": 960, "xhigh": 2400}
# the input formats: PCM16 at 24 kHz (OpenAI's only PCM rate), and 8 kHz G.711
FORMATS = {"audio/pcm": 24000, "audio/pcmu": 8000, "audio/pcma": 8000}
LEGACY_FORMATS = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
# server_vad defaults (OpenAI's)
SILENCE_MS, PREFIX_MS, THRESHOLD = 500, 300, 0.5


class SettingError(ClientError):
    """A setting this dialect refuses (`param` names it): the settings stay as they were."""

    def __init__(self, message: str, param: str | None, code: str = "invalid_value"):
        super().__init__(message, code, param)


def default_vad() -> dict:
    return {
        "type": "server_vad",
        "threshold": THRESHOLD,
        "prefix_padding_ms": PREFIX_MS,
        "silence_duration_ms": SILENCE_MS,
    }


@dataclass(frozen=True)
class Settings:
    model: str  # the model's name, as the client gave it (or the served one)
    delay_ms: int
    delay_level: str | None = None  # OpenAI's name of the delay, once the client gave one
    format: str = "audio/pcm"
    rate: int = FORMATS["audio/pcm"]  # the client's sample rate
    vad: dict | None = field(default_factory=default_vad)  # None: the client commits turns
    legacy: bool = False  # the client spoke the beta's transcription_session.update
    context_bias: ContextBias | None = None  # transcription.keywords (None: no list)

    def updated(self, event: dict, server: Server, started: bool) -> Settings:
        """The settings `event` asks for (a session.update, or the beta's
        transcription_session.update), or a SettingError that changes nothing. Once audio
        came (`started`), the format and the delay stay."""
        legacy = event["type"] == "transcription_session.update"
        session = event.get("session")
        if not isinstance(session, dict):
            raise SettingError("session.update needs a `session` object", "session")
        settings = _legacy(session) if legacy else session
        if settings.get("type", "transcription") != "transcription":
            raise SettingError(
                "this server transcribes: the session's type must be `transcription`",
                "session.type",
            )
        audio = _object(settings.get("audio"), "audio")
        audio_in = _object(audio.get("input"), "audio.input")
        rate, fmt = self.rate, self.format
        if (given := audio_in.get("format")) is not None:
            fmt, rate = _format(given)
        if started and (fmt, rate) != (self.format, self.rate):
            raise SettingError("the audio format cannot change once audio came", "format")
        transcription = _object(audio_in.get("transcription"), "transcription")
        model, delay_ms, level = self.model, self.delay_ms, self.delay_level
        if "model" in transcription:
            if (message := server.check_model(transcription["model"])) is not None:
                raise SettingError(message, "transcription.model", "model_not_found")
            model = transcription["model"] or server.config.model_id
        if (level := transcription.get("delay", level)) is not None:
            if not isinstance(level, str) or level not in DELAY_LEVELS:
                raise SettingError(
                    f"delay must be one of {', '.join(DELAY_LEVELS)}", "transcription.delay"
                )
            delay_ms = DELAY_LEVELS[level]
        if started and delay_ms != self.delay_ms:
            raise SettingError("the delay cannot change once audio came", "transcription.delay")
        vad = self.vad
        if "turn_detection" in audio_in:
            vad = _turn_detection(audio_in["turn_detection"])
        bias = self.context_bias
        if "keywords" in transcription:  # the custom vocabulary; null: the server's
            try:
                bias = server.context_bias(_keywords(transcription["keywords"]))
            except VoxtralError as e:
                raise SettingError(str(e), "transcription.keywords") from None
        for name in ("language", "prompt", "languages"):
            if transcription.get(name):  # accepted, said in session.updated: not applied
                log.warning("transcription.%s %r: not applied", name, transcription[name])
        return replace(
            self,
            model=model,
            delay_ms=delay_ms,
            delay_level=level,
            format=fmt,
            rate=rate,
            vad=vad,
            legacy=legacy,
            context_bias=bias,
        )

    def describe(self, session_id: str) -> dict:
        """The session object of session.created / updated: settings it does not apply say
        so (null)."""
        fmt = {"type": self.format} | ({"rate": self.rate} if self.format == "audio/pcm" else {})
        transcription = {"model": self.model, "language": None, "prompt": None}
        bias = self.context_bias  # the custom vocabulary (its phrases), or null
        transcription["keywords"] = [phrase for phrase, _ in bias.phrases] if bias else None
        if self.delay_level is not None:
            transcription["delay"] = self.delay_level
        if self.legacy:
            legacy_format = {v: k for k, v in LEGACY_FORMATS.items()}[self.format]
            return {
                "id": session_id,
                "object": "realtime.transcription_session",
                "input_audio_format": legacy_format,
                "input_audio_transcription": transcription,
                "turn_detection": self.vad,
                "input_audio_noise_reduction": None,
                "include": [],
            }
        audio_in = {"format": fmt, "transcription": transcription}
        audio_in |= {"turn_detection": self.vad, "noise_reduction": None}
        session = {"type": "transcription", "id": session_id}
        session |= {"object": "realtime.transcription_session"}
        return session | {"audio": {"input": audio_in}, "include": []}


def _object(value, name: str) -> dict:
    """A settings object (absent or null: empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SettingError(f"{name} must be an object", name)
    return value


def _format(given) -> tuple[str, int]:
    """(format type, sample rate) of an audio format object."""
    fmt = given.get("type", "audio/pcm") if isinstance(given, dict) else None
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise SettingError(f"format type must be one of {', '.join(FORMATS)}", "format.type")
    rate = given.get("rate", FORMATS[fmt])
    if isinstance(rate, bool) or not isinstance(rate, int):
        raise SettingError("format.rate must be an integer (Hz)", "format.rate")
    if fmt != "audio/pcm" and rate != FORMATS[fmt]:
        raise SettingError(f"{fmt} is 8000 Hz", "format.rate")
    # other PCM rates than 24000 (OpenAI's only one) are our extension, resampled as well
    if not 8000 <= rate <= 192000:
        raise SettingError("format.rate: a sample rate from 8000 to 192000", "format.rate")
    return fmt, rate


def _turn_detection(given) -> dict | None:
    """server_vad's settings (semantic_vad runs as server_vad); None: the client commits."""
    if given is None:
        return None
    if not isinstance(given, dict) or given.get("type") not in ("server_vad", "semantic_vad"):
        raise SettingError(
            "turn_detection must be null, or of type server_vad or semantic_vad",
            "turn_detection.type",
        )
    vad = default_vad()
    for name, low, high in (
        ("threshold", 0.0, 1.0),
        ("prefix_padding_ms", 0, 10000),
        ("silence_duration_ms", 80, 10000),
    ):
        value = given.get(name)
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not low <= value <= high
        ):
            raise SettingError(
                f"turn_detection.{name}: from {low} to {high}", f"turn_detection.{name}"
            )
        vad[name] = value
    return vad


def _keywords(given) -> list | None:
    """`keywords`, as OpenAI types it: a list of words or phrases (or null)."""
    if given is not None and not isinstance(given, list):
        raise SettingError("keywords must be a list of words or phrases", "transcription.keywords")
    return given


def _legacy(session: dict) -> dict:
    """The beta's transcription_session.update settings, in the GA's shape."""
    audio_in = {}
    if (fmt := session.get("input_audio_format")) is not None:
        if not isinstance(fmt, str) or fmt not in LEGACY_FORMATS:
            raise SettingError(
                f"input_audio_format must be one of {', '.join(LEGACY_FORMATS)}",
                "input_audio_format",
            )
        audio_in["format"] = {"type": LEGACY_FORMATS[fmt]}
    if "input_audio_transcription" in session:
        audio_in["transcription"] = session["input_audio_transcription"]
    if "turn_detection" in session:
        audio_in["turn_detection"] = session["turn_detection"]
    return {"type": "transcription", "audio": {"input": audio_in}}
