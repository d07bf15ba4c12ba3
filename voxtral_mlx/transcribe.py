"""File transcription: "feed everything, then finish" through the streaming Session.

Light to import (`import voxtral_mlx` imports it eagerly, see __init__): the model code is
imported when `transcribe` runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import ENCODER_BATCH_TOKENS, SAMPLE_RATE

if TYPE_CHECKING:
    from .model import VoxtralRealtime
    from .session import Transcript


def transcribe(
    model: VoxtralRealtime,
    audio: str | Path | Any,
    delay_ms: int | None = None,
    progress: Callable[[float, float], None] | None = None,
    *,
    sample_rate: int = SAMPLE_RATE,
) -> Transcript:
    """Transcribe a file, or in-memory samples at `sample_rate` (see `audio.as_samples`),
    greedily: the offline schedule, which stops at EOS and never runs past the padded audio.

    `delay_ms`: None for the checkpoint's own delay. `progress(seconds_done, seconds_total)`
    is called after each block of audio.
    """
    from .audio import as_samples, load_audio
    from .session import Session

    if isinstance(audio, (str, Path)):
        samples, sample_rate = load_audio(audio), SAMPLE_RATE
    else:
        samples = as_samples(audio)
    session = Session(model, delay_ms, stop_at_eos=True, sample_rate=sample_rate)
    block = round(ENCODER_BATCH_TOKENS * session.schedule.seconds_per_token * sample_rate)
    total = len(samples) / sample_rate
    for lo in range(0, len(samples), block):
        session.feed(samples[lo : lo + block])
        if progress is not None:
            progress(min(lo + block, len(samples)) / sample_rate, total)
    session.finish()
    return session.result
