"""An upload's request: its body read within the limits, its form checked (`UploadForm`),
whose API it speaks (OpenAI's or Mistral's: `speaks_mistral`), and the form's schema for the
API. `UploadRefused` is the 4xx answer to one that cannot be served."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request
from starlette.datastructures import FormData
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from ..biasing import ContextBias
from ..config import VALID_DELAYS_MS, check_delay
from ..errors import VoxtralError
from .config import ServerConfig
from .errors import shorten
from .server import Server

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
STREAM_FORMATS = ("json", "text")  # stream=true: text events, as OpenAI streams these
LANGUAGE_CODE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*")  # en, yue, pt-BR
# fields only Mistral's clients send (its SDKs always send `diarize`; OpenAI's list fields end
# in [], and OpenAI's SDKs never send these)
MISTRAL_FIELDS = (
    "diarize",
    "context_bias",
    "timestamp_granularities",
    "file_url",
    "file_id",
    "speaker_references",
)
MAX_FIELDS = 1024 + 32  # a list field is one form field per item (Mistral's context_bias)
NO_URLS = (
    "send the audio file itself as multipart/form-data (field `file`): file_url and file_id "
    "are not supported here"
)


class UploadRefused(Exception):
    """An upload this server does not take: the HTTP status and the code to answer with."""

    def __init__(self, message: str, status: int, code: str | None = None):
        super().__init__(message)
        self.status, self.code = status, code


def _too_large(limit: int) -> str:
    mb = round(limit / 2**20, 2)  # as given: --max-upload-mb 0.1 is stored as 104857 bytes
    return f"the file is larger than this server's limit of {mb:g} MB (--max-upload-mb)"


async def read_upload(request: Request, config: ServerConfig):
    """The form of an upload, its file part spooled in memory and then in an anonymous
    temporary file (removed when the form is closed), never beyond the size limit."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > config.max_upload_bytes:
        raise UploadRefused(_too_large(config.max_upload_bytes), 413)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/x-www-form-urlencoded"):  # (Mistral's file_url)
        raise UploadRefused(NO_URLS, 400)
    if not content_type.startswith("multipart/form-data"):
        raise UploadRefused("send the file as multipart/form-data (field `file`)", 400)
    body = _body(request, config.max_upload_bytes, config.read_timeout)
    # a field per list item and per chunking_strategy key
    parser = MultiPartParser(request.headers, body, max_files=1, max_fields=MAX_FIELDS)
    try:
        return await parser.parse()
    except MultiPartException as e:
        raise UploadRefused(f"bad multipart form: {e.message}", 400) from None


async def audio_file(form: FormData) -> tuple[str, bytes]:
    """The name the file was sent with, and its bytes."""
    file = form.get("file")
    if not isinstance(file, StarletteUploadFile):
        raise UploadRefused(
            "the form needs the audio file as the field `file`", 400, "missing_file"
        )
    return Path(file.filename or "").name or "the upload", await file.read()


def speaks_mistral(form: FormData, accept: str) -> bool:
    """Whether an upload is Mistral's: no `response_format` (Mistral's clients never send
    one), and a field only Mistral's clients send, or a request for server-sent events
    (Mistral's stream(); OpenAI's SDK asks for JSON even when it streams)."""
    if "response_format" in form:
        return False
    return any(name in form for name in MISTRAL_FIELDS) or "text/event-stream" in accept


@dataclass(frozen=True)
class UploadForm:
    """What an upload's form asks of this server, checked. OpenAI's other fields (prompt,
    temperature, timestamp_granularities[], chunking_strategy) are accepted and change
    nothing: README, "Uploads". `mistral`: the upload speaks Mistral's API (speaks_mistral),
    whose `timestamp_granularities` say what its answer's segments are."""

    response_format: str
    stream: bool
    delay_ms: int
    language: str | None
    model: str = ""  # the name the client asked for ("": the served model)
    mistral: bool = False
    granularities: tuple[str, ...] = ()
    context_bias: ContextBias | None = None  # the custom vocabulary (the server's, if none)

    @classmethod
    def read(cls, form: FormData, server: Server, accept: str = "") -> UploadForm:
        """UploadRefused for a field this server cannot honour."""
        # absent or empty: the served model, as vLLM does; the same check as the WebSocket's
        if (message := server.check_model(form.get("model"))) is not None:
            raise UploadRefused(message, 404, "model_not_found")
        mistral = speaks_mistral(form, accept)
        if mistral:
            _check_mistral(form)
        response_format = form.get("response_format") or "json"
        if response_format not in RESPONSE_FORMATS:
            raise UploadRefused(
                f"response_format must be one of {', '.join(RESPONSE_FORMATS)}", 400
            )
        stream = (form.get("stream") or "false").lower()
        if stream not in ("true", "false"):
            raise UploadRefused("stream must be true or false", 400)
        if stream == "true" and response_format not in STREAM_FORMATS:
            message = (
                f"stream=true streams text: response_format json or text, not {response_format}"
            )
            raise UploadRefused(message, 400, "unsupported_value")
        try:  # our extension: the delay of this upload
            delay = form.get("delay_ms")
            delay_ms = check_delay(_integer(delay)) if delay else server.delay_ms
        except VoxtralError as e:
            raise UploadRefused(str(e), 400, "invalid_delay") from None
        language = form.get("language") or None
        if language is not None and not LANGUAGE_CODE.fullmatch(language):
            message = "language must be a language code such as en (ISO-639-1)"
            raise UploadRefused(message, 400, "invalid_language")
        phrases = form.getlist("context_bias") + form.getlist("context_bias[]")
        phrases = [p for p in phrases if p]  # an empty field is no field, as delay_ms's
        try:
            context_bias = server.context_bias(phrases or None)
        except VoxtralError as e:
            raise UploadRefused(str(e), 400, "invalid_context_bias") from None
        include = form.getlist("include[]") + form.getlist("include")
        if "logprobs" in include:
            message = "include[]=logprobs is not available: this server keeps no log probabilities"
            raise UploadRefused(message, 400, "unsupported_value")
        if include:
            raise UploadRefused(f"include[]: unknown value {shorten(str(include[0]))!r}", 400)
        granularities = form.getlist("timestamp_granularities[]")
        granularities += form.getlist("timestamp_granularities")
        if unknown := [g for g in granularities if g not in ("word", "segment")]:
            message = (
                f"timestamp_granularities[]: word or segment, not {shorten(str(unknown[0]))!r}"
            )
            raise UploadRefused(message, 400)
        granularities = tuple(dict.fromkeys(granularities))
        if (temperature := form.get("temperature")) not in (None, ""):
            try:
                ok = 0.0 <= float(temperature) <= 2.0
            except ValueError:
                ok = False
            if not ok:
                raise UploadRefused("temperature must be a number from 0 to 2", 400)
        model = str(form.get("model") or "")
        return cls(
            response_format,
            stream == "true",
            delay_ms,
            language,
            model,
            mistral,
            granularities,
            context_bias,
        )


def _check_mistral(form: FormData) -> None:
    """Mistral's fields this server cannot honour (UploadRefused)."""
    diarize = str(form.get("diarize") or "false").lower()
    if diarize not in ("true", "false"):
        raise UploadRefused("diarize must be true or false", 400)
    if diarize == "true":
        message = "diarize is not supported: Voxtral Realtime does not tell speakers apart"
        raise UploadRefused(message, 400, "unsupported_value")
    if "speaker_references" in form:
        message = "speaker_references are not supported: they need diarization"
        raise UploadRefused(message, 400, "unsupported_value")
    if "file_url" in form or "file_id" in form:
        raise UploadRefused(NO_URLS, 400, "unsupported_value")


def _integer(text: str) -> int | str:
    """`text` as an int, or else shortened, for the error that quotes it."""
    try:
        return int(text)
    except ValueError:
        return shorten(text)


async def _body(request: Request, limit: int, timeout: float):
    """The request body as it arrives: at most `limit` bytes (then 413), each read within
    `timeout` seconds (then 408)."""
    received = 0
    chunks = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), timeout)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise UploadRefused(f"the upload stalled: no data for {timeout:g} s", 408) from None
        received += len(chunk)
        if received > limit:
            raise UploadRefused(_too_large(limit), 413)
        yield chunk


UPLOAD_FORM = {  # the upload's form in the API schema (the handler reads the body itself)
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "model": {"type": "string", "description": "absent: the served model"},
                        "response_format": {"type": "string", "enum": list(RESPONSE_FORMATS)},
                        "stream": {
                            "type": "boolean",
                            "description": "server-sent text events (json and text only)",
                        },
                        "delay_ms": {
                            "type": "integer",
                            "enum": list(VALID_DELAYS_MS),
                            "description": "our extension: the transcription delay",
                        },
                        "language": {
                            "type": "string",
                            "description": "verbose_json's language; not detected, not used",
                        },
                        "prompt": {"type": "string", "description": "accepted, not used"},
                        "temperature": {"type": "number", "description": "decoding is greedy"},
                        "timestamp_granularities[]": {
                            "type": "array",
                            "items": {"type": "string", "enum": ["word", "segment"]},
                            "description": "verbose_json always has both",
                        },
                        "include[]": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "logprobs are not available",
                        },
                        "chunking_strategy": {"description": "accepted, not used"},
                        "timestamp_granularities": {
                            "type": "array",
                            "items": {"type": "string", "enum": ["word", "segment"]},
                            "description": "Mistral's: what the answer's segments are",
                        },
                        "diarize": {"type": "boolean", "description": "Mistral's: false only"},
                        "context_bias": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "custom vocabulary: phrases to prefer (a field "
                            "each, or a JSON list; [phrase, weight] pairs are our extension)",
                        },
                    },
                }
            }
        },
    }
}
