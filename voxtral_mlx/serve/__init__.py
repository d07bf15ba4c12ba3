"""`voxtral serve`: the realtime WebSocket endpoint, OpenAI-style uploads, /health and the
browser page. Imported only when serving."""

from .app import ServerConfig, create_app, serve

__all__ = ["ServerConfig", "create_app", "serve"]
