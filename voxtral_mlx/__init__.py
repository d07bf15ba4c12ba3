"""voxtral-mlx: Mistral's Voxtral Mini 4B Realtime speech-to-text, on MLX.

The names below are imported on first use: `import voxtral_mlx`, its constants and
`voxtral_mlx.transcribe` do not import MLX, mlx-lm or the tokenizer (tested), so a command
that only checks its arguments stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "load_audio": "audio",
    "DEFAULT_DELAY_MS": "config",
    "DEFAULT_MODEL": "config",
    "SAMPLE_RATE": "config",
    "VALID_DELAYS_MS": "config",
    "ModelArgs": "config",
    "Schedule": "config",
    "parse_delay": "config",
    "VoxtralError": "errors",
    "load": "loader",
    "log_mel_spectrogram": "mel",
    "VoxtralRealtime": "model",
    "Session": "session",
    "SessionPool": "session",
    "Stats": "events",
    "TextDelta": "events",
    "Transcript": "events",
    "WordDone": "events",
    "StreamingDetokenizer": "tokenizer",
    "Tokenizer": "tokenizer",
    "Word": "words",
}

__all__ = [
    "DEFAULT_DELAY_MS",
    "DEFAULT_MODEL",
    "ModelArgs",
    "SAMPLE_RATE",
    "Schedule",
    "Session",
    "SessionPool",
    "Stats",
    "StreamingDetokenizer",
    "TextDelta",
    "Tokenizer",
    "Transcript",
    "VALID_DELAYS_MS",
    "VoxtralError",
    "VoxtralRealtime",
    "Word",
    "WordDone",
    "load",
    "load_audio",
    "log_mel_spectrogram",
    "parse_delay",
    "transcribe",
    "transcribe_many",
]


# Imported eagerly (the module imports no model code): a lazy `transcribe` would be
# shadowed by the submodule of the same name as soon as anything imports it.
from .transcribe import transcribe, transcribe_many  # noqa: E402


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'voxtral_mlx' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from .audio import load_audio
    from .config import (
        DEFAULT_DELAY_MS,
        DEFAULT_MODEL,
        SAMPLE_RATE,
        VALID_DELAYS_MS,
        ModelArgs,
        Schedule,
        parse_delay,
    )
    from .errors import VoxtralError
    from .events import Stats, TextDelta, Transcript, WordDone
    from .loader import load
    from .mel import log_mel_spectrogram
    from .model import VoxtralRealtime
    from .session import Session, SessionPool
    from .tokenizer import StreamingDetokenizer, Tokenizer
    from .words import Word
