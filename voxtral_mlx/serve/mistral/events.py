"""The shapes of Mistral's transcription events and answers, as the official `mistralai` SDK
validates them (3.8.0: `mistralai/client/models/`), shared by the realtime dialect and the
uploads: `usage` with whole `prompt_audio_seconds`, segments
typed `transcription_segment`, and the server-sent events of `stream()`."""

from __future__ import annotations

import json
import math

from ...words import Word

SEGMENT = "transcription_segment"  # a segment's `type` (the SDK takes no other)


def segment(text: str, start: float, end: float) -> dict:
    """An item of `segments` (in transcription.done, and an upload's answer)."""
    return {"text": text, "start": round(start, 3), "end": round(end, 3), "type": SEGMENT}


def segment_event(item: dict) -> dict:
    """The transcription.segment event of a `segment` item."""
    return {"type": "transcription.segment", "text": item["text"]} | {
        "start": item["start"],
        "end": item["end"],
    }


def word_item(word: Word, offset: float = 0.0) -> dict:
    """A word with its times, as our extensions (`words`) carry it."""
    start, end = round(word.start + offset, 3), round(word.end + offset, 3)
    return {"word": word.text, "start": start, "end": end}


def usage(audio_seconds: float, prompt_tokens: int, completion_tokens: int) -> dict:
    """`usage`: the audio in whole seconds (the SDK takes only an int), rounded up as a
    meter would; the decoder's prompt and every output, as the other dialects count them."""
    return {
        "prompt_audio_seconds": math.ceil(round(audio_seconds, 6)),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def sse(event: dict) -> str:
    """One server-sent event of `stream()`: the SDK requires the `event:` line."""
    return f"event: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"
