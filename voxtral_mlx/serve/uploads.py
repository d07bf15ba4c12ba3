"""/v1/audio/transcriptions: a file decoded as one more stream of the scheduler (`Upload`,
in the upload pool), answered in OpenAI's response formats, or streamed as its text events;
or, for Mistral's clients (upload_form.speaks_mistral), in Mistral's shapes and events."""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import AsyncIterator

import numpy as np
from fastapi import Request
from fastapi.responses import PlainTextResponse, StreamingResponse

from ..audio import check_finite, decode_audio_bytes, resample
from ..config import ENCODER_BATCH_TOKENS, SAMPLE_RATE
from ..errors import VoxtralError
from ..events import Event
from ..formats import CueBuilder, StrippedStream, cues, render
from ..model import VoxtralRealtime
from ..session import Session, TextDelta, Transcript, WordDone
from ..words import Word, words_with_tokens
from .errors import ServerStopping, error_body, error_response, mistral_error
from .mistral.events import segment, segment_event, sse, usage, word_item
from .scheduler import AudioQueue
from .server import Server, keyed
from .upload_form import UploadForm, UploadRefused, audio_file, read_upload

# an upload's audio per job while live sessions run (about 1 s): its encoder call is what a
# live session may wait for (a 94-token call took 560 ms with the test model on a 2-core CPU)
UPLOAD_TOKENS_BESIDE_LIVE = 12
UNKNOWN_LANGUAGE = "und"  # ISO 639's "undetermined": Voxtral Realtime detects no language


class Upload:
    """A file posted to /v1/audio/transcriptions, decoded as one more stream of the pool.

    `done` gets its Transcript, the exception it failed with, or None once its client is
    gone. With `stream`, `events` gets the session's events as they are decoded, then None
    once `done` is set. A Stream of the scheduler."""

    live = False

    def __init__(self, samples: np.ndarray, server: Server, stream: bool = False):
        self.server = server
        self.audio = AudioQueue([samples])
        self.session: Session | None = None
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()
        self.events: asyncio.Queue[Event | None] | None = asyncio.Queue() if stream else None
        self.decoding: asyncio.Task | None = None  # stream: _decode, beside the response

    def intake(self) -> tuple[np.ndarray | None, bool] | None:
        if not self.session.wants_audio:
            return None
        # alone, a whole encoder call's worth (small slices make 12-token encoder calls, 1.7x
        # the cost per token, and cap drafts below 16 positions); beside live sessions, small
        # ones: a live session waits for the upload's encoder call in progress
        live = self.server.scheduler.serving_live
        tokens = UPLOAD_TOKENS_BESIDE_LIVE if live else ENCODER_BATCH_TOKENS
        samples = self.audio.take(tokens * self.session.schedule.samples_per_token)
        return samples, not self.audio

    async def deliver(self, events) -> None:
        if self.events is not None:
            for event in events:
                self.events.put_nowait(event)
        if self.session.result is not None:
            self.end(self.session.result)

    async def failed(self, error: Exception) -> None:
        self.end(error=error)

    def end(self, result: Transcript | None = None, error: Exception | None = None) -> None:
        """Set `done` (once): the transcript, None (the client is gone), or the error."""
        if self.done.done():
            return
        if error is not None:
            self.done.set_exception(error)
        else:
            self.done.set_result(result)
        if self.events is not None:
            self.events.put_nowait(None)


# --- the endpoint ---


async def transcriptions(request: Request):
    server = keyed(request)  # the key first, before a byte of the body is read
    try:
        return await server.before_stop(_transcribe(request, server))
    except ServerStopping as e:
        return error_response(str(e), 503, "server_stopping")


async def _transcribe(request: Request, server: Server):
    try:
        form = await read_upload(request, server.config)
        try:
            asked = UploadForm.read(form, server, request.headers.get("accept", ""))
            name, data = await audio_file(form)
        finally:
            await form.close()
    except UploadRefused as e:
        return error_response(str(e), e.status, e.code)
    try:
        # decoded beside the model's thread, not on it: a long file takes seconds to decode
        # and resample, and live sessions would wait for it
        upload = Upload(await asyncio.to_thread(_decode_bytes, data, name), server, asked.stream)
        del data
        await server.scheduler.open_session(upload, asked.delay_ms, asked.context_bias)
    except VoxtralError as e:
        return error_response(str(e), 400)
    if asked.stream:
        upload.decoding = asyncio.create_task(_decode_before_stop(request, server, upload))
        if asked.mistral:
            events = _mistral_events(upload, asked, server)
        else:
            events = _text_events(upload, server.model)
        return StreamingResponse(events, media_type="text/event-stream")
    await _decode(request, server, upload)
    try:
        result = upload.done.result()
    except VoxtralError as e:
        return error_response(str(e), 400)
    if result is None:
        return error_response("the client closed the connection", 499)
    if asked.mistral:
        return _mistral_reply(result, asked, server)
    return _reply(result, asked, name, server)


async def _decode(request: Request, server: Server, upload: Upload) -> None:
    """Wait for the upload's `done`, or set it to None once its client is gone (checked
    every half second); then close its session: a client gone stops its decoding."""
    try:
        while not upload.done.done():
            await asyncio.wait({upload.done}, timeout=0.5)
            if not upload.done.done() and await request.is_disconnected():
                upload.end(None)
    finally:
        await server.scheduler.close_session(upload)


async def _decode_before_stop(request: Request, server: Server, upload: Upload) -> None:
    """`_decode` for a streamed upload, whose response has started: a server stopping ends
    it with the error its text events then send."""
    try:
        await server.before_stop(_decode(request, server, upload))
    except ServerStopping as e:
        upload.end(error=e)


def _reply(result: Transcript, asked: UploadForm, name: str, server: Server):
    seconds = {"type": "duration", "seconds": result.audio_seconds}
    if asked.response_format == "text":
        return PlainTextResponse(result.text + "\n")
    if asked.response_format in ("srt", "vtt"):
        return PlainTextResponse(render(result, asked.response_format, name))
    if asked.response_format == "json":
        # model and language too: a Mistral client that sends none of its own fields reads it
        model = asked.model or server.config.model_id
        return {"text": result.text, "model": model, "language": asked.language, "usage": seconds}
    return {
        "task": "transcribe",
        "language": asked.language or UNKNOWN_LANGUAGE,
        "duration": result.audio_seconds,
        "text": result.text,
        "words": [{"word": w.text, "start": w.start, "end": w.end} for w in result.words],
        "segments": _segments(result, server.model),
        "usage": seconds,
        "delay_ms": result.delay_ms,  # our extension: the delay it was transcribed at
    }


def _segments(result: Transcript, model: VoxtralRealtime) -> list[dict]:
    """verbose_json's segments: the transcript's subtitle cues, each with the text token ids
    of its words. Decoding is greedy (temperature 0.0); avg_logprob and no_speech_prob
    have no value here and are 0.0, as README "Uploads" says."""
    schedule = model.args.schedule(result.delay_ms)
    first = schedule.prompt_length - 1  # the decoder position of the first generated token
    words = iter(words_with_tokens(result.tokens, first, model.tokenizer, schedule))
    segments = []
    for i, cue in enumerate(cues(result.words)):
        texts, tokens = [], []
        while " ".join(texts) != cue.text:  # a cue is its words' texts, joined by spaces
            word, ids = next(words)
            texts.append(word.text)
            tokens += ids
        segments.append(
            {
                "id": i,
                "seek": round(cue.start * 100),  # its start in 10 ms frames
                "start": cue.start,
                "end": cue.end,
                "text": cue.text,
                "tokens": tokens,
                "temperature": 0.0,
                "avg_logprob": 0.0,
                "compression_ratio": _compression_ratio(cue.text),
                "no_speech_prob": 0.0,
            }
        )
    return segments


def _compression_ratio(text: str) -> float:
    """Whisper's: the text's UTF-8 bytes over their zlib-compressed size."""
    data = text.encode()
    return len(data) / len(zlib.compress(data))


async def _text_events(upload: Upload, model: VoxtralRealtime) -> AsyncIterator[str]:
    """The upload's server-sent events as OpenAI sends them: `transcript.text.delta` for
    each piece of text as the file is decoded, then `transcript.text.done`. The deltas add
    up to the done text, the transcript's (StrippedStream); a failure is an error event in
    OpenAI's shape."""
    stripped = StrippedStream()
    while (event := await upload.events.get()) is not None:
        if isinstance(event, TextDelta) and (delta := stripped.push(event.text)):
            yield _event({"type": "transcript.text.delta", "delta": delta})
    try:
        result = upload.done.result()
    except ServerStopping as e:  # (sent, not raised: the response has started)
        yield _event(error_body(str(e), 503, "server_stopping"))
        return
    except Exception as e:
        yield _event(error_body(f"transcription failed: {e}", 500, "processing_error"))
        return
    if result is not None:  # (None: the client is gone)
        tokens = _token_usage(result, model)
        yield _event({"type": "transcript.text.done", "text": result.text, "usage": tokens})


def _event(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _token_usage(result: Transcript, model: VoxtralRealtime) -> dict:
    """Usage in tokens, the only kind OpenAI's done event has: the decoder's prompt in,
    every generated id out (pads included), as transcription.done counts them."""
    prompt = model.args.schedule(result.delay_ms).prompt_length
    out = len(result.tokens)
    return {
        "type": "tokens",
        "input_tokens": prompt,
        "output_tokens": out,
        "total_tokens": prompt + out,
    }


def _decode_bytes(data: bytes, name: str) -> np.ndarray:
    """An uploaded file's audio at 16 kHz (non-finite samples are an error, as for files;
    errors name the file by the name it was sent with)."""
    samples, rate = decode_audio_bytes(data, name)
    try:
        check_finite(samples, rate)
    except VoxtralError as e:
        raise VoxtralError(f"{name}: {e}") from None
    return resample(samples, rate, SAMPLE_RATE)


# --- Mistral's answers ---


def _mistral_reply(result: Transcript, asked: UploadForm, server: Server) -> dict:
    """Mistral's TranscriptionResponse: `segments` when timestamp_granularities asks for
    them (the words for `word` alone, else the subtitle cues, with the words beside them as
    our extension `words` when both are asked); `delay_ms` is our extension."""
    body = _mistral_done(result, asked, server)
    del body["type"]
    if {"word", "segment"} <= set(asked.granularities):
        body["words"] = [word_item(w) for w in result.words]
    return body


def _mistral_done(result: Transcript, asked: UploadForm, server: Server) -> dict:
    prompt = server.model.args.schedule(result.delay_ms).prompt_length
    body = {
        "type": "transcription.done",
        "model": asked.model or server.config.model_id,
        "text": result.text,
        "language": asked.language,
        "usage": usage(result.audio_seconds, prompt, len(result.tokens)),
    }
    if asked.granularities:
        body["segments"] = [_mistral_segment(s) for s in _mistral_units(result.words, asked)]
    return body | {"delay_ms": result.delay_ms}


def _mistral_units(words: list[Word], asked: UploadForm) -> list:
    """What a segment is: a word when only `word` is asked, else a subtitle cue."""
    return words if asked.granularities == ("word",) else cues(words)


def _mistral_segment(unit) -> dict:
    return segment(unit.text, unit.start, unit.end)


async def _mistral_events(upload: Upload, asked: UploadForm, server: Server) -> AsyncIterator[str]:
    """The upload's server-sent events as Mistral's stream() reads them, each with its
    `event:` line: transcription.language (the language asked for, if any), a
    transcription.text.delta for each piece of text as the file is decoded, a
    transcription.segment for each segment once complete, then transcription.done. The
    deltas add up to the done text; a failure is an `error` event."""
    stripped, units = StrippedStream(), CueBuilder(asked.granularities == ("word",))
    if asked.language:
        yield sse({"type": "transcription.language", "audio_language": asked.language})
    while (event := await upload.events.get()) is not None:
        if isinstance(event, TextDelta) and (text := stripped.push(event.text)):
            yield sse({"type": "transcription.text.delta", "text": text})
        elif isinstance(event, WordDone) and (cue := units.add(event.word)):
            yield sse(segment_event(_mistral_segment(cue)))
    if cue := units.flush():
        yield sse(segment_event(_mistral_segment(cue)))
    try:
        result = upload.done.result()
    except ServerStopping as e:  # (sent, not raised: the response has started)
        yield sse(mistral_error(str(e), "server_stopping"))
        return
    except Exception as e:
        yield sse(mistral_error(f"transcription failed: {e}", "processing_error"))
        return
    if result is not None:
        yield sse(_mistral_done(result, asked, server))
