"""What this package takes from mlx-lm, imported in one place.

mlx-lm's package `__init__` imports its generate and convert modules, hence transformers and,
where it is installed, torch: about 4 s of every command's start here, for nothing the model
needs. The model utilities used here (`mlx_lm.models`: activations, base, cache) import only
MLX, so they are imported without running that `__init__`; it still runs, as usual, for
whoever imports `mlx_lm` itself later. `save_model` (mlx_lm.utils, for `voxtral convert`)
is imported when it is called.
"""

from __future__ import annotations

import importlib.util
import resource
import sys
import warnings

from .errors import VoxtralWarning


def _import_models() -> None:
    """Import mlx_lm.models' modules under a stand-in for the package, removed afterwards."""
    if "mlx_lm" in sys.modules:  # imported already: nothing to save
        return
    package = importlib.util.module_from_spec(importlib.util.find_spec("mlx_lm"))
    sys.modules["mlx_lm"] = package  # its __path__ finds the submodules; __init__ is not run
    try:
        import mlx_lm.models.activations  # noqa: F401
        import mlx_lm.models.base  # noqa: F401
        import mlx_lm.models.cache  # noqa: F401
    finally:
        del sys.modules["mlx_lm"]


_import_models()

from mlx_lm.models.activations import swiglu  # noqa: E402
from mlx_lm.models.base import create_attention_mask  # noqa: E402
from mlx_lm.models.cache import RotatingKVCache  # noqa: E402


def save_model(path, model) -> None:
    """mlx-lm's save_model (safetensors shards and their index). Importing mlx_lm.utils sets
    the open-file limit to 2048, hard 4096 (`resource.setrlimit`); where the hard limit is
    lower that raises ValueError: the limit is then left as it is, with a warning."""
    real = resource.setrlimit

    def setrlimit_or_warn(which, limits):
        try:
            real(which, limits)
        except (ValueError, OSError):
            soft, hard = resource.getrlimit(which)
            warnings.warn(
                f"the open-file limit stays at {soft} (hard limit {hard}; mlx-lm asks for "
                f"{limits[1]})",
                VoxtralWarning,
                stacklevel=2,
            )

    resource.setrlimit = setrlimit_or_warn
    try:
        from mlx_lm.utils import save_model as save
    finally:
        resource.setrlimit = real
    save(path, model)


__all__ = ["RotatingKVCache", "create_attention_mask", "save_model", "swiglu"]
