"""MLX's memory settings for a process that holds the model for long (MODEL.md "MLX habits"):
the weights kept wired on Apple GPUs, and a bound on MLX's buffer cache."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import mlx.core as mx
from mlx.utils import tree_flatten

from .errors import VoxtralWarning
from .model import VoxtralRealtime
from .session import stream_bytes

NEAR_LIMIT = 0.9  # of the GPU's working set: weights above it are warned about, as mlx-lm does
CACHE_FLOOR = 32 * 2**20  # MLX 0.32's own bound on its CPU backend; a small model's passes fit


@dataclass(frozen=True)
class MemorySettings:
    """What `settle_memory` set. `wired`: the wired limit in bytes (None where MLX has none
    to set: no Metal). `cache`: the buffer cache's bound in bytes."""

    wired: int | None
    cache: int


def settle_memory(model: VoxtralRealtime) -> MemorySettings:
    """For the life of the process: with Metal, let MLX keep up to the GPU's recommended
    working set wired, so that macOS does not page the weights out between steps (warns when
    they take most of it); everywhere, bound MLX's cache of freed buffers to one stream's
    caches at their most (`stream_bytes`, at least CACHE_FLOOR), which holds a pass's reused
    buffers and not the rings a growing stream leaves behind."""
    wired = None
    working_set = mx.device_info().get("max_recommended_working_set_size")
    if mx.metal.is_available() and working_set:
        weights = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
        if weights > NEAR_LIMIT * working_set:
            warnings.warn(
                f"the model's {weights / 1e9:.1f} GB are close to the {working_set / 1e9:.1f} GB "
                "the GPU may use: decoding may be slow (a 4-bit model: voxtral convert -q)",
                VoxtralWarning,
                stacklevel=2,
            )
        mx.set_wired_limit(working_set)
        wired = working_set
    cache = max(stream_bytes(model), CACHE_FLOOR)
    mx.set_cache_limit(cache)
    return MemorySettings(wired, cache)
