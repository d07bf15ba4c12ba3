"""Every error a client of the server gets, built here in the shape its API expects, and the
API key check that refuses a request.

HTTP errors have OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`), so its
clients show the message; on /v1/realtime vLLM's dialect sends `{"type": "error", "error",
"code"}` and OpenAI's its error event; Mistral's dialect (and its uploads' server-sent
events) `{"type": "error", "error": {"message", "code"}}` with an integer code
(`mistral_error`). A client's text quoted back is `shorten`ed.
"""

from __future__ import annotations

import secrets

from fastapi.responses import JSONResponse

INSECURE_KEY_PROTOCOL = "openai-insecure-api-key."  # browsers cannot set WebSocket headers
KEY_REFUSED = "missing or wrong API key (Authorization: Bearer KEY)"
ERROR_TYPES = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}
# our error codes (the dialects') as Mistral's integer codes: HTTP's statuses, which
# clients read as such (LiveKit's plugin raises an APIStatusError with it); others are 400
MISTRAL_CODES = {
    "model_not_found": 404,
    "idle_timeout": 408,
    "too_many_sessions": 429,
    "buffer_full": 429,
    "processing_error": 500,
    "server_stopping": 503,
}


def mistral_error(message: str, code: str) -> dict:
    """Mistral's `error` event (realtime, and an upload's stream()): `error.code` must be an
    int, or the SDK cannot read it."""
    return {"type": "error", "error": {"message": message, "code": MISTRAL_CODES.get(code, 400)}}


def shorten(text: str, most: int = 64) -> str:
    """Client text quoted back in an error: a short prefix, never the whole of it."""
    return text if len(text) <= most else text[:most] + f"... ({len(text)} characters)"


def authorized(api_key: str | None, headers, protocols: list[str] | None = None) -> bool:
    """Whether a request carries the key (always, when the server has none): as a bearer
    token, or as a WebSocket subprotocol (INSECURE_KEY_PROTOCOL + key, for browsers)."""
    if api_key is None:
        return True
    supplied = []
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        supplied.append(auth[7:].strip())
    for p in protocols or []:
        if p.startswith(INSECURE_KEY_PROTOCOL):
            supplied.append(p[len(INSECURE_KEY_PROTOCOL) :])
    return any(secrets.compare_digest(s.encode(), api_key.encode()) for s in supplied)


def error_body(message: str, status: int, code: str | None = None) -> dict:
    """An HTTP error's body, in OpenAI's shape."""
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def error_response(message: str, status: int, code: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, status, code), status_code=status)


def vllm_error(message: str, code: str) -> dict:
    """vLLM's realtime error event."""
    return {"type": "error", "error": message, "code": code}


def openai_error(
    message: str,
    code: str,
    param: str | None = None,
    client_event: str | None = None,
    kind: str = "invalid_request_error",
) -> dict:
    """The `error` object of OpenAI's realtime error event (`client_event`: the event_id of
    the client's event it answers)."""
    return {
        "type": kind,
        "code": code,
        "message": message,
        "param": param,
        "event_id": client_event,
    }


STOPPING = "the server is stopping: send the request again once it is back"


class ServerStopping(Exception):
    """The server stops (Ctrl+C) before a request is done: 503, in the API's shape."""


def too_many_sessions(limit: int) -> str:
    return f"the server is at its limit of {limit} session{'s' if limit != 1 else ''}"


class ClientError(Exception):
    """A client's realtime event refused: the client gets an error event in its dialect's
    shape (`code`, and OpenAI's `param`), and its connection goes on."""

    def __init__(self, message: str, code: str, param: str | None = None):
        super().__init__(message)
        self.message, self.code, self.param = message, code, param


def buffer_full(limit: float, param: str | None = None) -> ClientError:
    """An append refused: more than `limit` seconds of the client's audio wait for the model."""
    return ClientError(
        f"Audio arrives faster than it is transcribed: more than {limit:g} s are waiting; "
        "this chunk was dropped",
        "buffer_full",
        param,
    )
