"""`voxtral serve`: the realtime WebSocket endpoint, OpenAI-style uploads, /health and the
browser page.

`ServerConfig` is light to import (the CLI checks a command line with it before the model
loads); `create_app` and `serve` import the web framework and MLX on first use. Which module
owns what: MODEL.md, "Architecture".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import ServerConfig

__all__ = ["ServerConfig", "create_app", "serve"]


def __getattr__(name: str):
    if name in ("create_app", "serve"):
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module 'voxtral_mlx.serve' has no attribute {name!r}")


if TYPE_CHECKING:
    from .app import create_app, serve
