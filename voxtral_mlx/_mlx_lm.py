"""What this package takes from mlx-lm, imported in one place.

Importing mlx_lm (its utils module) sets the open-file limit to 2048, hard 4096, with
`resource.setrlimit`; where the hard limit is lower (`ulimit -Hn 1024`) that raises
ValueError and no command would start. Here the limit is then left as it is, with a
`VoxtralWarning` that says so (the CLI shows it as one line).
"""

from __future__ import annotations

import resource
import warnings

from .errors import VoxtralWarning


def _import_mlx_lm() -> None:
    real = resource.setrlimit

    def setrlimit_or_warn(which, limits):
        try:
            real(which, limits)
        except (ValueError, OSError):
            soft, hard = resource.getrlimit(which)
            warnings.warn(
                f"the open-file limit stays at {soft} (hard limit {hard}; mlx-lm asks for "
                f"{limits[1]}): with many connections a server can run out of files",
                VoxtralWarning,
                stacklevel=2,
            )

    resource.setrlimit = setrlimit_or_warn
    try:
        import mlx_lm.utils  # noqa: F401  (the module that calls setrlimit)
    finally:
        resource.setrlimit = real


_import_mlx_lm()

from mlx_lm.models.activations import swiglu  # noqa: E402
from mlx_lm.models.base import create_attention_mask  # noqa: E402
from mlx_lm.models.cache import RotatingKVCache  # noqa: E402
from mlx_lm.utils import save_model  # noqa: E402

__all__ = ["RotatingKVCache", "create_attention_mask", "save_model", "swiglu"]
