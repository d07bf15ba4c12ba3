"""Log-mel front end, exactly as mistral-common / vLLM / transformers compute it.

MODEL.md "Mel recipe": periodic Hann 400, hop 160, |STFT|^2, the last frame dropped,
128 Slaney mel bins, log10 floored at global_log_mel_max - 8, then (x + 4) / 4.

Computed in float64 with numpy, so the front end is exact and identical whether frames are
computed all at once or while streaming (MODEL.md gives the float32 error it avoids). The
result is float32; the model casts it to its own dtype on entry.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from mistral_common.audio import mel_filter_bank

from .config import AudioArgs, Schedule

DEFAULT_AUDIO = AudioArgs()


@lru_cache(maxsize=4)
def mel_filters(args: AudioArgs = DEFAULT_AUDIO) -> np.ndarray:
    """Slaney filterbank [n_fft // 2 + 1, n_mels], taken from mistral-common itself."""
    return mel_filter_bank(
        num_frequency_bins=args.window_size // 2 + 1,
        num_mel_bins=args.num_mel_bins,
        min_frequency=0.0,
        max_frequency=args.sampling_rate / 2,
        sampling_rate=args.sampling_rate,
    )


@lru_cache(maxsize=4)
def _sparse_filters(args: AudioArgs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The filterbank's nonzero weights grouped by mel band: (bins, weights, group starts).
    Each band spans a few bins, so the product needs no dense matrix (nor BLAS: MODEL.md)."""
    mel, bins = np.nonzero(mel_filters(args).T)  # sorted by band
    if len(np.unique(mel)) != args.num_mel_bins:
        raise ValueError("a mel band without frequency bins")
    starts = np.searchsorted(mel, np.arange(args.num_mel_bins))
    return bins, mel_filters(args).T[mel, bins], starts


def apply_mel_filters(power: np.ndarray, args: AudioArgs = DEFAULT_AUDIO) -> np.ndarray:
    """power [T, n_fft // 2 + 1] -> mel energies [T, n_mels] (== power @ mel_filters)."""
    bins, weights, starts = _sparse_filters(args)
    return np.add.reduceat(power[:, bins] * weights, starts, axis=1)


@lru_cache(maxsize=4)
def hann_window(size: int) -> np.ndarray:
    # periodic Hann (torch.hann_window default): 0.5 - 0.5 cos(2 pi n / N), n < N
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(size) / size)


def log_mel_frames(samples: np.ndarray, args: AudioArgs = DEFAULT_AUDIO) -> np.ndarray:
    """Log-mel of every full window in `samples` (no centering): [n_frames, n_mels].

    Frame t covers samples[hop * t : hop * t + window]. This is the building block of both
    the offline spectrogram and the streaming front end, which share one frame grid.
    """
    hop, win = args.hop_length, args.window_size
    x = np.asarray(samples, dtype=np.float64)
    n_frames = 1 + (len(x) - win) // hop if len(x) >= win else 0
    if n_frames == 0:
        return np.zeros((0, args.num_mel_bins), np.float32)
    frames = np.lib.stride_tricks.as_strided(
        x, shape=(n_frames, win), strides=(hop * x.strides[0], x.strides[0]), writeable=False
    )
    power = np.abs(np.fft.rfft(frames * hann_window(win), axis=-1)) ** 2
    log_mel = np.log10(np.maximum(apply_mel_filters(power, args), 1e-10))
    log_mel = np.maximum(log_mel, args.global_log_mel_max - 8.0)
    return ((log_mel + 4.0) / 4.0).astype(np.float32)


def log_mel_spectrogram(samples: np.ndarray, args: AudioArgs = DEFAULT_AUDIO) -> np.ndarray:
    """Offline log-mel of a whole signal: [len(samples) // hop, n_mels].

    torch.stft(center=True) reflect-pads half a window on each side, then the last frame
    is dropped, which leaves exactly len // hop frames.
    """
    x = np.asarray(samples, dtype=np.float32)
    half = args.window_size // 2
    if x.ndim != 1 or len(x) <= half:
        raise ValueError(f"need a 1-D signal of more than {half} samples, got shape {x.shape}")
    return log_mel_frames(np.pad(x, half, mode="reflect"), args)[:-1]


class StreamingMel:
    """The offline frame grid, computed as samples arrive.

    The stream is [200 zeros] + [left pad zeros] + audio (+ right pad at the end): the
    offline spectrogram reflect-pads 200 samples at each end, and the reflection of the
    silent pads is silence, so offline frame t is exactly stream[160 t : 160 t + 400].
    Only whole tokens (8 frames) are handed out; history before the next frame is dropped.
    """

    def __init__(self, schedule: Schedule):
        self.args = args = schedule.audio
        self.frames_per_token = args.mel_frames_per_token
        self._buffer = np.zeros(args.window_size // 2 + schedule.left_pad_samples, np.float32)
        self._next_frame = 0  # index of the next frame to compute
        self._buffer_start = 0  # stream index of self._buffer[0]

    def push(self, samples: np.ndarray) -> None:
        self._buffer = np.concatenate([self._buffer, samples.astype(np.float32, copy=False)])

    def available_tokens(self) -> int:
        """Whole tokens whose 8 frames are computable from the samples pushed so far."""
        end = self._buffer_start + len(self._buffer)
        full_frames = 1 + (end - self.args.window_size) // self.args.hop_length
        return max(full_frames - self._next_frame, 0) // self.frames_per_token

    def pull(self, n_tokens: int) -> np.ndarray:
        """Log-mel of the next `n_tokens` tokens: [8 n_tokens, n_mels]."""
        hop, win = self.args.hop_length, self.args.window_size
        n_frames = n_tokens * self.frames_per_token
        lo = self._next_frame * hop - self._buffer_start
        hi = lo + (n_frames - 1) * hop + win
        mel = log_mel_frames(self._buffer[lo:hi], self.args)
        self._next_frame += n_frames
        keep_from = self._next_frame * hop - self._buffer_start
        self._buffer = self._buffer[keep_from:]
        self._buffer_start += keep_from
        return mel
