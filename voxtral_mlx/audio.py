"""Audio in: files of any container and rate, and in-memory samples, as mono float32.

Files are decoded by soundfile (WAV, FLAC, OGG, MP3) or, for other containers, ffmpeg when it
is installed, then resampled with soxr "HQ" as mistral-common does. In-memory audio follows
one rule everywhere (`as_samples`), and a stream at another rate goes through
`StreamResampler`, whose output does not depend on how the stream is chunked.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soundfile as sf
import soxr

from .config import SAMPLE_RATE
from .errors import VoxtralError

# Formats soundfile (libsndfile) reads itself: ffmpeg is no help for a broken one.
SOUNDFILE_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au")
FFMPEG_HINT = "macOS: brew install ffmpeg; Debian/Ubuntu: sudo apt install ffmpeg"
# What the first bytes of the formats soundfile reads look like.
SOUNDFILE_MAGIC = (b"RIFF", b"RF64", b"fLaC", b"OggS", b"FORM", b"ID3", b"\xff\xfb", b"\xff\xf3")


def resample(samples: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """soxr "HQ", as mistral-common's Audio.resample does."""
    if rate == target:
        return samples.astype(np.float32, copy=False)
    return soxr.resample(samples, rate, target, quality="HQ").astype(np.float32, copy=False)


class StreamResampler:
    """soxr "HQ" over a stream: the same samples as `resample` of the whole signal, however
    the stream is cut into chunks. Pass `last=True` with the final chunk to flush."""

    def __init__(self, rate: int, target: int = SAMPLE_RATE):
        if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
            raise VoxtralError(f"sample rate must be a positive integer (Hz), got {rate!r}")
        self.rate, self.target = rate, target
        self._stream = None
        if rate != target:
            self._stream = soxr.ResampleStream(rate, target, 1, dtype="float32", quality="HQ")

    def __call__(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples, last=last)


def as_samples(samples: Any) -> np.ndarray:
    """In-memory audio as the model's input: a 1-D array (numpy, MLX or a list) of finite
    floating-point samples in [-1, 1], any float width, returned as float32."""
    array = np.asarray(samples)
    if array.ndim != 1:
        raise VoxtralError(f"audio must be a 1-D array of mono samples, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        hint = " (int16 PCM: divide by 32768)" if np.issubdtype(array.dtype, np.integer) else ""
        raise VoxtralError(
            f"audio samples must be floating point in [-1, 1], got {array.dtype}{hint}"
        )
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise VoxtralError(f"audio has {bad} non-finite sample(s) (NaN or infinity)")
    return array


def to_mono(samples: np.ndarray) -> np.ndarray:
    # [frames, channels] -> [frames]: the average of the channels
    if samples.ndim == 1:
        return samples
    return samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1)


def load_audio(source: str | Path | BinaryIO, sampling_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode an audio file to mono float32 at `sampling_rate` (non-finite samples are a
    VoxtralError, see `check_finite`)."""
    samples, rate = decode_audio(source)
    return resample(check_finite(samples, rate), rate, sampling_rate)


def check_finite(samples: np.ndarray, rate: int) -> np.ndarray:
    """Samples that are not numbers (NaN, infinite: a float file can hold them) are an error,
    not silence: one would turn the whole transcript to nothing (MODEL.md)."""
    bad = ~np.isfinite(samples)
    if bad.any():
        first = int(np.argmax(bad)) / rate
        raise VoxtralError(
            f"the audio has {_samples_that_are_not_numbers(int(bad.sum()))} (NaN or infinite), "
            f"the first at {first:.2f} s: repair or re-encode it"
        )
    return samples


def check_audio_file(path: Path) -> None:
    """Raise VoxtralError unless `path` is a file with something in it."""
    if path.is_dir():
        raise VoxtralError(f"{path} is a folder, not an audio file")
    if not path.exists():
        raise VoxtralError(f"{path}: no such audio file")
    if path.stat().st_size == 0:
        raise VoxtralError(f"{path} is empty (0 bytes)")


def _samples_that_are_not_numbers(n: int) -> str:
    return "1 sample that is not a number" if n == 1 else f"{n} samples that are not numbers"


def decode_audio(source: str | Path | BinaryIO) -> tuple[np.ndarray, int]:
    """Decode an audio file to mono float32 at its own sample rate: (samples, rate)."""
    if isinstance(source, (str, Path)):
        check_audio_file(Path(source))
    try:
        samples, rate = sf.read(source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        if not isinstance(source, (str, Path)):
            raise VoxtralError(f"cannot decode audio from stream: {_reason(e)}") from e
        samples, rate = _decode_with_ffmpeg(Path(source), e)
    if samples.shape[0] == 0:
        raise VoxtralError(f"audio file has no samples: {source}")
    return to_mono(samples).astype(np.float32, copy=False), rate


def decode_audio_bytes(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """An uploaded file's audio, as `decode_audio`; errors call it `name` (never by the
    temporary path ffmpeg needs, which is removed in any case)."""
    if not data:
        raise VoxtralError(f"{name} is empty (0 bytes)")
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"upload{Path(name).suffix.lower()}"
            path.write_bytes(data)
            try:
                samples, rate = _decode_with_ffmpeg(path, e)
            except VoxtralError as error:
                raise VoxtralError(str(error).replace(str(path), name)) from None
    if samples.shape[0] == 0:
        raise VoxtralError(f"{name} has no audio samples")
    return to_mono(samples).astype(np.float32, copy=False), rate


def _is_text(head: bytes) -> bool:
    """Whether a file's first bytes are text: UTF-8, no control bytes but white space, and
    words (some white space: a few bytes of junk are no text file)."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:  # (a character cut at the end of `head` is still text)
        if e.start < len(head) - 3:
            return False
        text = head[: e.start].decode("utf-8")
    printable = all(c.isprintable() or c in "\t\n\r\f" for c in text)
    return printable and any(c.isspace() for c in text)


def _decode_with_ffmpeg(path: Path, soundfile_error: Exception) -> tuple[np.ndarray, int]:
    """The fallback for containers soundfile cannot read. A file that looks like one of
    soundfile's own formats is broken, and ffmpeg is only suggested where it would help."""
    with path.open("rb") as f:
        head = f.read(4096)
    if head.startswith(SOUNDFILE_MAGIC):
        raise VoxtralError(f"cannot decode {path}: damaged audio file ({_reason(soundfile_error)})")
    if _is_text(head):  # ffmpeg would be no help
        raise VoxtralError(f"cannot decode {path}: it is a text file, not audio")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        if path.suffix.lower() in SOUNDFILE_SUFFIXES:
            raise VoxtralError(
                f"cannot decode {path}: not a {path.suffix} audio file "
                f"({_reason(soundfile_error).rstrip('.')})"
            )
        raise VoxtralError(
            f"cannot decode {path}: not WAV, FLAC, OGG or MP3, and ffmpeg, which reads other "
            f"formats, is not installed ({FFMPEG_HINT})"
        )
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "decoded.wav"
        # keep the native rate and channels: resampling and downmixing happen here, with soxr
        cmd = [ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-c:a", "pcm_f32le", str(wav)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not wav.exists():
            lines = done.stderr.strip().splitlines()
            raise VoxtralError(
                f"cannot decode {path}: not an audio file ffmpeg can read "
                f"({lines[-1] if lines else 'unknown error'})"
            )
        samples, rate = sf.read(wav, dtype="float32", always_2d=True)
    return samples, rate


def _reason(error: Exception) -> str:
    """libsndfile's reason without the file name it repeats."""
    text = str(error)
    return text.split(": ", 1)[1] if text.startswith("Error opening") and ": " in text else text
