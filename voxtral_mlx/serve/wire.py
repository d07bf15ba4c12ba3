"""Audio as clients send it: base64 text of PCM little-endian samples (16- or 32-bit integers,
16- or 32-bit floats), or of G.711 bytes (mu-law, A-law), turned into float samples in
[-1, 1]. ValueError says what is wrong."""

from __future__ import annotations

import base64
import binascii

import numpy as np


def decode_base64(audio) -> bytes:
    """The bytes of a client's base64 audio string (ValueError: why not)."""
    if not isinstance(audio, str):
        raise ValueError("'audio' must be a base64 string")
    try:
        return base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("Invalid audio data: not base64") from None


def decode_pcm16(audio) -> np.ndarray:
    """The samples of a base64 PCM16 little-endian string, in [-1, 1) (ValueError: why not)."""
    raw = decode_base64(audio)
    if len(raw) == 0 or len(raw) % 2:
        raise ValueError(
            f"Invalid audio data: PCM16 needs a positive, even number of bytes, got {len(raw)}"
        )
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


# little-endian PCM sample types: numpy's type, and the full scale of an integer type
PCM_SAMPLES = {"s16": ("<i2", 2.0**15), "s32": ("<i4", 2.0**31), "f16": ("<f2", None)}
PCM_SAMPLES |= {"f32": ("<f4", None)}


def pcm_to_float(raw: bytes, sample: str) -> np.ndarray:
    """Little-endian PCM bytes (`sample`: a key of PCM_SAMPLES) as samples in [-1, 1]
    (ValueError: no whole samples, or float samples that are not numbers)."""
    dtype, scale = PCM_SAMPLES[sample]
    width = np.dtype(dtype).itemsize
    if len(raw) == 0 or len(raw) % width:
        raise ValueError(
            f"Invalid audio data: {width}-byte samples need a positive multiple of {width} "
            f"bytes, got {len(raw)}"
        )
    samples = np.frombuffer(raw, dtype=dtype).astype(np.float32)
    if scale is not None:
        return samples / np.float32(scale)
    if not np.isfinite(samples).all():
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        raise ValueError(f"Invalid audio data: {bad} sample(s) are not numbers (NaN or infinity)")
    return np.clip(samples, -1.0, 1.0)


def g711_to_float(raw: bytes, law: str) -> np.ndarray:
    """G.711 bytes (mu-law or A-law) as samples in [-1, 1] (ITU-T G.711 expansion)."""
    code = ~np.frombuffer(raw, dtype=np.uint8) if law == "audio/pcmu" else None
    if code is not None:  # mu-law: sign, 3-bit exponent, 4-bit mantissa, bias 0x84
        exponent, mantissa = (code >> 4) & 7, code & 15
        magnitude = (((mantissa.astype(np.int32) << 3) + 0x84) << exponent) - 0x84
        sign = code & 0x80
    else:  # A-law: even bits inverted
        code = np.frombuffer(raw, dtype=np.uint8) ^ 0x55
        exponent, mantissa = (code >> 4) & 7, (code & 15).astype(np.int32)
        magnitude = np.where(
            exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1)
        )
        sign = ~code & 0x80
    return np.where(sign, -magnitude, magnitude).astype(np.float32) / 32768.0


def decode_audio(audio, fmt: str) -> np.ndarray:
    """The samples of a client's base64 audio in format `fmt` (OpenAI's names: audio/pcm is
    PCM16, audio/pcmu and audio/pcma G.711); ValueError: why not."""
    if fmt == "audio/pcm":
        return decode_pcm16(audio)
    if raw := decode_base64(audio):
        return g711_to_float(raw, fmt)
    raise ValueError("'audio' must be a non-empty base64 string")
