"""Reading audio files: any container and rate in, 16 kHz mono float32 out."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from .errors import VoxtralError

SAMPLE_RATE = 16000


def resample(samples: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """soxr "HQ", as mistral-common's Audio.resample does."""
    if rate == target:
        return samples.astype(np.float32, copy=False)
    return soxr.resample(samples, rate, target, quality="HQ").astype(np.float32, copy=False)


def to_mono(samples: np.ndarray) -> np.ndarray:
    # [frames, channels] -> [frames]: the average of the channels
    return samples if samples.ndim == 1 else samples.mean(axis=1)


def load_audio(source: str | Path | BinaryIO, sampling_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode an audio file to mono float32 at `sampling_rate`.

    WAV, FLAC, OGG and MP3 are read by soundfile (libsndfile); other containers
    (m4a, mp4, webm, ...) go through ffmpeg when it is installed.
    """
    samples, rate = decode_audio(source)
    return resample(samples, rate, sampling_rate)


def decode_audio(source: str | Path | BinaryIO) -> tuple[np.ndarray, int]:
    """Decode an audio file to mono float32 at its own sample rate: (samples, rate)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise VoxtralError(f"no such audio file: {path}")
    try:
        samples, rate = sf.read(source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        if not isinstance(source, (str, Path)):
            raise VoxtralError(f"cannot decode audio from stream: {e}") from e
        samples, rate = _decode_with_ffmpeg(Path(source), e)
    if samples.shape[0] == 0:
        raise VoxtralError(f"audio file has no samples: {source}")
    return to_mono(samples).astype(np.float32, copy=False), rate


def _decode_with_ffmpeg(path: Path, soundfile_error: Exception) -> tuple[np.ndarray, int]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise VoxtralError(
            f"cannot decode {path}: soundfile cannot read it ({soundfile_error}) and ffmpeg, "
            "needed for this format, is not installed (macOS: brew install ffmpeg)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "decoded.wav"
        # keep the native rate and channels: resampling and downmixing happen here, with soxr
        cmd = [ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-c:a", "pcm_f32le", str(wav)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not wav.exists():
            reason = (
                done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "unknown error"
            )
            raise VoxtralError(f"cannot decode {path}: ffmpeg failed: {reason}")
        samples, rate = sf.read(wav, dtype="float32", always_2d=True)
    return samples, rate


def check_samples(samples: np.ndarray) -> np.ndarray:
    """Validate in-memory audio: a 1-D float array of 16 kHz samples."""
    array = np.asarray(samples)
    if array.ndim != 1:
        raise VoxtralError(f"audio must be a 1-D array of mono samples, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise VoxtralError(f"audio samples must be floating point in [-1, 1], got {array.dtype}")
    return array.astype(np.float32, copy=False)
