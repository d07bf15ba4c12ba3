"""The whole-signal form of the schedule: the padded signal and its encoding in one pass.

The streaming Session never builds these; they are the reference it is tested against and
what `voxtral bench` times stage by stage.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from .config import ENCODER_BATCH_TOKENS, Schedule
from .mel import log_mel_spectrogram
from .model import VoxtralRealtime


def pad_audio(samples: np.ndarray, schedule: Schedule) -> np.ndarray:
    """The offline padded signal: the left pad of silence, the audio, the right pad
    (mistral-common's OFFLINE streaming pad)."""
    return np.pad(samples, (schedule.left_pad_samples, schedule.right_pad_samples(len(samples))))


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
