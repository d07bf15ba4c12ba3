"""File transcription: "feed everything, then finish" through the streaming Session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import mlx.core as mx
import numpy as np

from .audio import check_samples, load_audio
from .config import DEFAULT_DELAY_MS, ENCODER_BATCH_TOKENS, ModelArgs
from .mel import log_mel_spectrogram

if TYPE_CHECKING:  # this module stays light: voxtral_mlx imports it eagerly (see __init__)
    from .model import VoxtralRealtime
    from .session import Transcript


def transcribe(
    model: VoxtralRealtime,
    audio: str | Path | np.ndarray,
    delay_ms: int = DEFAULT_DELAY_MS,
    progress: Callable[[float, float], None] | None = None,
) -> Transcript:
    """Transcribe a whole file or 16 kHz float32 array, greedily (the offline schedule:
    decoding stops at EOS, and never runs past the padded audio).

    `progress(seconds_done, seconds_total)` is called after each block of audio.
    """
    from .session import Session

    samples = load_audio(audio) if isinstance(audio, (str, Path)) else check_samples(audio)
    session = Session(model, delay_ms, stop_at_eos=True)
    block = ENCODER_BATCH_TOKENS * model.args.samples_per_token
    total = len(samples) / model.args.audio.sampling_rate
    for lo in range(0, len(samples), block):
        session.feed(samples[lo : lo + block])
        if progress is not None:
            progress(min(lo + block, len(samples)) / model.args.audio.sampling_rate, total)
    return session.finish()[-1]


def pad_audio(samples: np.ndarray, args: ModelArgs) -> np.ndarray:
    """The offline padded signal: 32 tokens of silence on the left; on the right, up to a
    whole token plus (n_delay + 1) + 10 tokens (mistral-common's OFFLINE streaming pad)."""
    per_token = args.samples_per_token
    align = (per_token - len(samples) % per_token) % per_token
    left = args.n_left_pad_tokens * per_token
    right = align + args.n_right_pad_tokens * per_token
    return np.pad(samples, (left, right))


def encode_audio(
    model: VoxtralRealtime, padded: np.ndarray, batch_tokens: int = ENCODER_BATCH_TOKENS
) -> mx.array:
    """Adapter outputs [n_tokens, dim] of a padded signal, the encoder fed `batch_tokens`
    tokens at a time through its streaming state (1 = the live path)."""
    mel = log_mel_spectrogram(padded, model.args.audio)
    state = model.encoder.make_state()
    step = batch_tokens * model.args.audio.mel_frames_per_token
    outputs = []
    for lo in range(0, mel.shape[0], step):
        frames = model.encoder(mx.array(mel[lo : lo + step], dtype=model.dtype)[None], state)
        outputs.append(model.adapter(frames)[0])
        mx.eval(outputs[-1])
    return mx.concatenate(outputs)
