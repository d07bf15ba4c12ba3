"""voxtral-mlx: Mistral's Voxtral Mini 4B Realtime speech-to-text, on MLX."""

from .audio import load_audio
from .config import DEFAULT_DELAY_MS, VALID_DELAYS_MS, ModelArgs
from .errors import VoxtralError
from .loader import DEFAULT_MODEL, load
from .mel import log_mel_spectrogram
from .model import VoxtralRealtime
from .session import Session, Stats, TextDelta, Transcript, WordDone
from .tokenizer import StreamingDetokenizer, Tokenizer
from .transcribe import transcribe
from .words import Word

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_DELAY_MS",
    "DEFAULT_MODEL",
    "VALID_DELAYS_MS",
    "ModelArgs",
    "StreamingDetokenizer",
    "Tokenizer",
    "Session",
    "Stats",
    "TextDelta",
    "Transcript",
    "WordDone",
    "VoxtralError",
    "VoxtralRealtime",
    "Word",
    "load",
    "load_audio",
    "log_mel_spectrogram",
    "transcribe",
]
