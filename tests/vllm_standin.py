"""A stand-in for a vLLM server of this model, for the clients' tests: it transcribes with our
library's Session but speaks only vLLM's dialect (vllm/entrypoints/openai/realtime/protocol.py
and speech_to_text.py), none of our extensions.

  server -> session.created {id, created}            no delay_ms
  client -> session.update {model}                   `model` required; delay_ms and
                                                     backpressure ignored (pydantic's extras)
  server -> transcription.delta {delta}              no start/end
  server -> transcription.done {text, usage}         no delay_ms
  server -> error {error, code}
  POST /v1/audio/transcriptions                      json and text; verbose_json is a 400, as
                                                     vLLM answers for a model without segment
                                                     timestamps
  GET /health                                        200 with an empty body

Audio is queued without limit, as vLLM does. `drop_appends` (a test knob, not vLLM's
behaviour) answers those appends (0-based) with `buffer_full` and drops them, as a server
without backpressure "wait" does.
"""

from __future__ import annotations

import io
import json
import math
import socket
import threading
import time
import uuid

import uvicorn
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.websockets import WebSocketDisconnect

import voxtral_mlx
from voxtral_mlx import Session, TextDelta
from voxtral_mlx.serve.wire import decode_pcm16

SERVED_NAME = "mistralai/Voxtral-Mini-4B-Realtime-2602"


class VllmStandIn:
    """`with VllmStandIn(model) as server:` serves on `server.url` from a thread."""

    def __init__(self, model, drop_appends: frozenset[int] = frozenset()):
        self.model, self.drop_appends = model, drop_appends
        self.session_updates: list[dict] = []  # what clients sent, for the tests to read
        self.upload_forms: list[dict] = []
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}"
        app = FastAPI()
        app.add_api_route("/health", lambda: Response(status_code=200))
        app.add_api_route("/v1/models", self.models)
        app.add_api_route("/v1/audio/transcriptions", self.transcriptions, methods=["POST"])
        app.add_api_websocket_route("/v1/realtime", self.realtime)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> VllmStandIn:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the vLLM stand-in did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    async def models(self) -> dict:
        entry = {"id": SERVED_NAME, "object": "model", "created": 0, "owned_by": "vllm"}
        return {"object": "list", "data": [entry]}

    async def transcriptions(self, request: Request):
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        self.upload_forms.append(fields)
        response_format = fields.get("response_format", "json")
        if response_format not in ("json", "text"):
            message = f"Currently do not support {response_format} for {SERVED_NAME}"
            error = {"message": message, "type": "BadRequestError", "param": None, "code": 400}
            return JSONResponse({"error": error}, status_code=400)
        audio = voxtral_mlx.load_audio(io.BytesIO(await form["file"].read()))
        text = voxtral_mlx.transcribe(self.model, audio).text
        if response_format == "text":
            return PlainTextResponse(text)
        seconds = math.ceil(len(audio) / voxtral_mlx.SAMPLE_RATE)
        return {"text": text, "usage": {"type": "duration", "seconds": seconds}}

    async def realtime(self, ws: WebSocket) -> None:
        await ws.accept()

        async def send(event: dict) -> None:
            await ws.send_text(json.dumps(event))

        async def error(message: str, code: str) -> None:
            await send({"type": "error", "error": message, "code": code})

        async def deltas(events) -> None:
            for event in events:
                if isinstance(event, TextDelta) and event.text:
                    await send({"type": "transcription.delta", "delta": event.text})

        created = {"type": "session.created", "id": f"sess-{uuid.uuid4().hex}"}
        await send(created | {"created": int(time.time())})
        session, early, ready, appends = None, [], False, 0
        try:
            while True:
                event = json.loads(await ws.receive_text())
                kind = event.get("type")
                if kind == "session.update":
                    self.session_updates.append(event)
                    if "model" not in event:
                        await error("Missing required field: model", "invalid_event")
                    elif event["model"] not in (None, SERVED_NAME):
                        await error(f"Model {event['model']} not found", "model_not_found")
                    else:
                        ready = True
                elif kind == "input_audio_buffer.append":
                    samples = decode_pcm16(event.get("audio"))
                    appends += 1
                    if appends - 1 in self.drop_appends:
                        await error("Audio buffer full: this chunk was dropped", "buffer_full")
                    elif session is None:
                        early.append(samples)
                    else:
                        await deltas(session.feed(samples))
                elif kind == "input_audio_buffer.commit" and not ready:
                    await error("Model not validated", "model_not_validated")
                elif kind == "input_audio_buffer.commit" and event.get("final"):
                    if session is not None:
                        await deltas(session.finish())
                        prompt = session.schedule.prompt_length
                        completion = len(session.result.tokens)
                        usage = {"prompt_tokens": prompt, "completion_tokens": completion}
                        usage |= {"total_tokens": prompt + completion}
                        done = {"type": "transcription.done", "text": session.text}
                        await send(done | {"usage": usage})
                        session = None
                elif kind == "input_audio_buffer.commit" and session is None:
                    session = Session(self.model)  # the model's own delay: vLLM has no other
                    for samples in early:
                        await deltas(session.feed(samples))
                    early = []
                elif kind != "input_audio_buffer.commit":
                    await error(f"Unknown event type: {kind}", "unknown_event")
        except WebSocketDisconnect:
            pass
