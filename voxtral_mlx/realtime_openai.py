"""OpenAI's Realtime transcription dialect on /v1/realtime (the official SDKs, LiveKit, Pipecat
and the apps built on them). realtime.py picks it per connection.

A connection is one stream: its audio goes to one live Session for as long as the connection
lasts, so the decoder's state carries across turns (no reset, no words lost between them).
Each turn is an item; its text streams as it is decided, before the turn ends:

  client -> session.update {session: {type: "transcription", audio: {input: {format,
            transcription, turn_detection, noise_reduction}}, include}}  (or the beta
            transcription_session.update)      answered by session.updated
            (transcription.keywords: the custom vocabulary, from the next output on)
  client -> input_audio_buffer.append {audio}   PCM16 at 24 kHz by default (or G.711)
  server -> conversation.item.input_audio_transcription.delta {item_id, content_index, delta}
  server -> input_audio_buffer.speech_started / speech_stopped   (turn_detection server_vad)
  client -> input_audio_buffer.commit           (turn_detection null: the client ends turns)
  server -> input_audio_buffer.committed {item_id, previous_item_id}
  server -> conversation.item.input_audio_transcription.completed {item_id, transcript, usage}
  client -> input_audio_buffer.clear            server -> input_audio_buffer.cleared

A turn is complete once the decoder has spoken for all of its audio, `delay` after its end:
if the client sends no more audio after a commit (push to talk), silence is appended for it,
as a file's end is padded. Server VAD (turns.py) comes from the model's own output, held open
by the signal's energy. How each setting is honoured: DIALECT below, and the README.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .audio import StreamResampler
from .config import SAMPLE_RATE
from .errors import VoxtralError
from .realtime import (
    MAX_ENCODED_AHEAD,
    SLICE_SECONDS,
    Connection,
    decode_base64,
    decode_pcm16,
    shorten,
    take_audio,
)
from .session import Session, TextDelta
from .turns import SlotEnergy, SpeechStarted, SpeechStopped, TurnDetector, WordStarts

log = logging.getLogger("voxtral_mlx.server")

# OpenAI's transcription `delay` levels, as our delays (ms)
DELAY_LEVELS = {"minimal": 80, "low": 240, "medium": 480, "high": 960, "xhigh": 2400}
# the input formats: PCM16 at 24 kHz (OpenAI's only PCM rate), and 8 kHz G.711
FORMATS = {"audio/pcm": 24000, "audio/pcmu": 8000, "audio/pcma": 8000}
LEGACY_FORMATS = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
# server_vad defaults (OpenAI's)
SILENCE_MS, PREFIX_MS, THRESHOLD = 500, 300, 0.5
# a commit shorter than this is refused (as OpenAI does)
MIN_COMMIT_SECONDS = 0.1
# after a commit, audio that stops for this long is taken as the end of the turn: silence is
# appended so its last words come out
PAD_AFTER_SECONDS = 0.2
# how far back a time of the stream may be turned into the client's (VAD reports times the
# delay after the audio)
SHIFTS_KEPT_SECONDS = 60.0


def event_id() -> str:
    return f"event_{uuid.uuid4().hex[:20]}"


def g711_to_float(raw: bytes, law: str) -> np.ndarray:
    """G.711 bytes (mu-law or A-law) as samples in [-1, 1] (ITU-T G.711 expansion)."""
    code = ~np.frombuffer(raw, dtype=np.uint8) if law == "audio/pcmu" else None
    if code is not None:  # mu-law: sign, 3-bit exponent, 4-bit mantissa, bias 0x84
        exponent, mantissa = (code >> 4) & 7, code & 15
        magnitude = (((mantissa.astype(np.int32) << 3) + 0x84) << exponent) - 0x84
        sign = code & 0x80
    else:  # A-law: even bits inverted
        code = np.frombuffer(raw, dtype=np.uint8) ^ 0x55
        exponent, mantissa = (code >> 4) & 7, (code & 15).astype(np.int32)
        magnitude = np.where(
            exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1)
        )
        sign = ~code & 0x80
    return np.where(sign, -magnitude, magnitude).astype(np.float32) / 32768.0


@dataclass(eq=False)
class Turn:
    """One item: the stream's audio from `start` to `end` (seconds of the model's stream),
    and the text spoken in it."""

    item_id: str = field(default_factory=lambda: f"item_{uuid.uuid4().hex[:20]}")
    start: float = 0.0
    end: float | None = None  # set when it is committed
    client_start: float = 0.0  # the client's audio (s) before it, for the smallest commit
    text: list[str] = field(default_factory=list)

    @property
    def transcript(self) -> str:
        return "".join(self.text)


class OpenAIDialect:
    """OpenAI's Realtime transcription session (the module's docstring). As a stream of the
    Server's scheduler: `session`, `intake`, `deliver`, `failed`.

    Times: the model's stream (`received`, turn starts and ends, in seconds) holds the
    client's audio resampled to 16 kHz, less what `clear` dropped, plus the silence padded
    after a push-to-talk turn; `shifts` turn its times back into the client's."""

    def __init__(self, conn: Connection):
        self.conn, self.server = conn, conn.server
        self.id = f"sess_{uuid.uuid4().hex[:20]}"
        self.legacy = False  # the client spoke the beta's transcription_session.update
        self.format = "audio/pcm"
        self.rate = FORMATS[self.format]
        self.delay_ms = self.server.delay_ms
        self.delay_level: str | None = None
        self.model = self.server.config.model_id
        self.context_bias = self.server.context_bias()  # keywords: the server's list, or none
        self.vad: dict | None = {
            "type": "server_vad",
            "threshold": THRESHOLD,
            "prefix_padding_ms": PREFIX_MS,
            "silence_duration_ms": SILENCE_MS,
        }
        self.session: Session | None = None
        self.audio: deque[np.ndarray] = deque()  # 16 kHz samples not yet given to the model
        self.received = 0.0  # seconds of the model's stream: given to it, or waiting
        self.client_seconds = 0.0  # the client's audio so far, at its rate
        self._new_resampler()
        self.shifts: list[tuple[float, float]] = []  # (stream s, client s - stream s) from there
        self.last_audio = time.monotonic()
        self.pad_timer: asyncio.TimerHandle | None = None
        self.turns: deque[Turn] = deque([Turn()])  # committed ones waiting, then the open one
        self.previous_item: str | None = None
        self.seen = 0  # outputs of the session read so far
        self.word_starts = WordStarts(self.server.model.tokenizer)
        self.started: dict[float, float] = {}  # text output time -> its word's start
        self.energy = SlotEnergy()
        self.detector = self._detector()
        self.early: list[np.ndarray] = []  # audio that came before the dialect was known
        self.room = asyncio.Event()  # (buffer_full drops audio: reading never waits)
        self.room.set()

    def _new_resampler(self) -> None:
        self.resampler = StreamResampler(self.rate)
        self.fed = self.released = 0.0  # seconds into and out of this resampler

    @property
    def held_seconds(self) -> float:
        """Audio the resampler holds back (its filter's look-ahead)."""
        return max(self.fed - self.released, 0.0)

    # --- events out ---
    async def send(self, kind: str, activity: bool = False, **fields) -> None:
        await self.conn.send({"type": kind, "event_id": event_id(), **fields}, activity)

    async def error(self, message: str, code: str, param: str | None = None, client_event=None):
        client_event = client_event if isinstance(client_event, str) else None
        detail = {"type": "invalid_request_error", "code": code, "message": message}
        detail |= {"param": param, "event_id": client_event}
        await self.send("error", error=detail)

    async def start(self) -> None:
        await self.send("session.created", session=self._session_object())

    # --- events in ---
    async def handle(self, event: dict) -> None:
        kind, client_event = event.get("type"), event.get("event_id")
        handler = (
            {
                "session.update": self.session_update,
                "transcription_session.update": self.session_update,
                "input_audio_buffer.append": self.append,
                "input_audio_buffer.commit": self.commit,
                "input_audio_buffer.clear": self.clear,
            }.get(kind)
            if isinstance(kind, str)
            else None
        )
        if handler is None:
            kind = shorten(kind) if isinstance(kind, str) else shorten(repr(kind))
            message = f"Unknown event type: {kind} (a transcription session takes session."
            message += "update and input_audio_buffer.append / commit / clear)"
            return await self.error(message, "unknown_event", "type", client_event)
        try:
            await handler(event)
        except SettingError as e:
            await self.error(str(e), e.code, e.param, client_event)

    async def session_update(self, event: dict) -> None:
        legacy = event["type"] == "transcription_session.update"
        session = event.get("session")
        if not isinstance(session, dict):
            raise SettingError("session.update needs a `session` object", "session")
        settings = _legacy(session) if legacy else session
        if settings.get("type", "transcription") != "transcription":
            raise SettingError(
                "this server transcribes: the session's type must be `transcription`",
                "session.type",
            )
        audio = _object(settings.get("audio"), "audio")
        bias = self.context_bias
        self._apply(_object(audio.get("input"), "audio.input"))
        if self.session is not None and self.context_bias is not bias:  # from the next output
            await self.server.worker.run(self.session.set_context_bias, self.context_bias)
        self.legacy = legacy
        kind = "transcription_session.updated" if self.legacy else "session.updated"
        await self.send(kind, session=self._session_object())
        early, self.early = self.early, []
        for samples in early:  # audio sent before this first session.update, at its rate
            await self._add_audio(samples)

    def adopt(self, early: list[np.ndarray]) -> None:
        """Audio the connection received before it knew its dialect (PCM16 samples): it is
        the stream's start, at the rate the first session.update sets."""
        self.early = early

    def _apply(self, audio_in: dict) -> None:
        """Check every setting first, then change them: a bad one changes nothing."""
        rate, fmt = self.rate, self.format
        if (given := audio_in.get("format")) is not None:
            fmt, rate = _format(given)
        started = self.session is not None or self.client_seconds > 0
        if started and (fmt, rate) != (self.format, self.rate):
            raise SettingError("the audio format cannot change once audio came", "format")
        transcription = _object(audio_in.get("transcription"), "transcription")
        model, delay_ms, level = self.model, self.delay_ms, self.delay_level
        if "model" in transcription:
            if (message := self.server.check_model(transcription["model"])) is not None:
                raise SettingError(message, "transcription.model", "model_not_found")
            model = transcription["model"] or self.server.config.model_id
        if (level := transcription.get("delay", level)) is not None:
            if not isinstance(level, str) or level not in DELAY_LEVELS:
                raise SettingError(
                    f"delay must be one of {', '.join(DELAY_LEVELS)}", "transcription.delay"
                )
            delay_ms = DELAY_LEVELS[level]
        if started and delay_ms != self.delay_ms:
            raise SettingError("the delay cannot change once audio came", "transcription.delay")
        vad = self.vad
        if "turn_detection" in audio_in:
            vad = _turn_detection(audio_in["turn_detection"])
        bias = self.context_bias
        if "keywords" in transcription:  # the custom vocabulary; null: the server's
            try:
                bias = self.server.context_bias(_keywords(transcription["keywords"]))
            except VoxtralError as e:
                raise SettingError(str(e), "transcription.keywords") from None
        for name in ("language", "prompt", "languages"):
            if transcription.get(name):  # accepted, said in session.updated: not applied
                log.warning("transcription.%s %r: not applied", name, transcription[name])
        self.format, self.rate, self.model = fmt, rate, model
        self.context_bias = bias
        self.delay_ms, self.delay_level = delay_ms, level
        if not started:
            self._new_resampler()
        if vad != self.vad:
            self.vad = vad
            self.detector = self._detector()

    def _detector(self) -> TurnDetector | None:
        if self.vad is None:
            return None
        detector = TurnDetector(
            self.server.model.tokenizer,
            silence_seconds=self.vad["silence_duration_ms"] / 1000,
            prefix_seconds=self.vad["prefix_padding_ms"] / 1000,
            energy=self.energy,
            loud_db=6.0 + 24.0 * self.vad["threshold"],  # 0.5: 18 dB over the noise floor
        )
        detector.turn_start = self.turns[-1].start
        return detector

    def _session_object(self) -> dict:
        """The session as it is: settings it does not apply say so (null)."""
        fmt = {"type": self.format} | ({"rate": self.rate} if self.format == "audio/pcm" else {})
        transcription = {"model": self.model, "language": None, "prompt": None}
        bias = self.context_bias  # the custom vocabulary (its phrases), or null
        transcription["keywords"] = [p for p, _ in bias.phrases] if bias else None
        if self.delay_level is not None:
            transcription["delay"] = self.delay_level
        if self.legacy:
            legacy_format = {v: k for k, v in LEGACY_FORMATS.items()}[self.format]
            return {
                "id": self.id,
                "object": "realtime.transcription_session",
                "input_audio_format": legacy_format,
                "input_audio_transcription": transcription,
                "turn_detection": self.vad,
                "input_audio_noise_reduction": None,
                "include": [],
            }
        audio_in = {"format": fmt, "transcription": transcription}
        audio_in |= {"turn_detection": self.vad, "noise_reduction": None}
        session = {"type": "transcription", "id": self.id}
        session |= {"object": "realtime.transcription_session"}
        return session | {"audio": {"input": audio_in}, "include": []}

    async def append(self, event: dict) -> None:
        audio = event.get("audio")
        try:
            if self.format == "audio/pcm":
                samples = decode_pcm16(audio)
            elif raw := decode_base64(audio):
                samples = g711_to_float(raw, self.format)
            else:
                raise ValueError("'audio' must be a non-empty base64 string")
        except ValueError as e:
            raise SettingError(str(e), "audio", "invalid_audio") from None
        await self._add_audio(samples)

    async def _add_audio(self, samples: np.ndarray) -> None:
        """The client's samples (at its rate) into the stream."""
        seconds = len(samples) / self.rate
        limit = self.server.config.max_backlog_seconds
        if self.waiting_seconds + seconds > limit:
            raise SettingError(
                f"Audio arrives faster than it is transcribed: more than {limit:g} s are "
                "waiting; this chunk was dropped",
                "audio",
                "buffer_full",
            )
        self.conn.last_activity = self.last_audio = time.monotonic()
        self.client_seconds += seconds
        self.fed += seconds
        self._queue(self.resampler(samples))
        if self.session is None:
            await self.server.open_session(self, self.delay_ms, self.context_bias)
        self.server.live_audio()

    def _queue(self, samples: np.ndarray) -> None:
        """16 kHz samples for the model, after those waiting."""
        if len(samples):
            self.audio.append(samples)
            self.received += len(samples) / SAMPLE_RATE
            self.released += len(samples) / SAMPLE_RATE

    @property
    def waiting_seconds(self) -> float:
        return sum(len(a) for a in self.audio) / SAMPLE_RATE

    @property
    def stream_end(self) -> float:
        """Where the client's audio so far ends in the stream (the resampler's held-back
        samples counted)."""
        return self.received + self.held_seconds

    async def commit(self, event: dict) -> None:
        turn = self.turns[-1]
        have = self.client_seconds - turn.client_start
        if have < MIN_COMMIT_SECONDS - 1e-9:
            raise SettingError(
                f"Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_SECONDS * 1000:g}ms of audio, but buffer only has "
                f"{max(have, 0.0) * 1000:.2f}ms of audio.",
                None,
                "input_audio_buffer_commit_empty",
            )
        self.conn.last_activity = time.monotonic()
        await self._commit(self.stream_end)
        if self.detector is not None:  # the client's commit ends the turn VAD was in
            self.detector = self._detector()
        self._wake_for_pad(PAD_AFTER_SECONDS)
        self.server.live_audio()

    async def _commit(self, end: float) -> None:
        turn = self.turns[-1]
        turn.end = end
        await self.send(
            "input_audio_buffer.committed",
            previous_item_id=self.previous_item,
            item_id=turn.item_id,
        )
        self.previous_item = turn.item_id
        self.turns.append(Turn(start=end, client_start=self.client_seconds))

    async def clear(self, event: dict) -> None:
        """The open turn's audio not yet heard is dropped, and its text (what the model
        heard of it is in its state, and the words it writes about it are dropped too)."""
        turn = self.turns[-1]
        open_seconds = max(self.received - turn.start, 0.0)
        dropped = drop_tail(
            self.audio, round(min(open_seconds, self.waiting_seconds) * SAMPLE_RATE)
        )
        dropped_seconds = dropped / SAMPLE_RATE + self.held_seconds
        self.received -= dropped / SAMPLE_RATE
        self._new_resampler()  # (its held-back samples are the open turn's too)
        if dropped_seconds:
            self._shift_from(self.received, dropped_seconds)
        self.turns[-1] = Turn(start=self.received, client_start=self.client_seconds)
        if self.detector is not None:
            self.detector = self._detector()
        await self.send("input_audio_buffer.cleared")

    def _shift_from(self, seconds: float, change: float) -> None:
        """The client's time runs `change` s ahead of the stream's from `seconds` on (audio it
        sent was dropped, or silence it did not send was added). Times more than a minute
        old are no longer asked for: their entries go, so the list stays short."""
        self.shifts.append((seconds, self._shift(seconds) + change))
        while len(self.shifts) > 1 and self.shifts[1][0] < seconds - SHIFTS_KEPT_SECONDS:
            self.shifts.pop(0)

    def _shift(self, seconds: float) -> float:
        shift = 0.0
        for at, value in self.shifts:
            if at <= seconds:
                shift = value
        return shift

    def client_ms(self, seconds: float) -> int:
        """A time of the model's stream as the client counts its audio (ms)."""
        return max(0, round((seconds + self._shift(seconds)) * 1000))

    # --- the scheduler's side ---
    @property
    def busy(self) -> bool:
        return bool(self.audio) or len(self.turns) > 1

    def intake(self) -> tuple[np.ndarray | None, bool] | None:
        """Audio for the next job; silence for a committed turn whose audio stopped."""
        if self.session is None:
            return None
        samples = None
        if self.audio and self.session.decodable_positions < MAX_ENCODED_AHEAD:
            samples = take_audio(self.audio, int(SLICE_SECONDS * SAMPLE_RATE))
        elif not self.audio and len(self.turns) > 1:
            samples = self._pad()
        if samples is None or not len(samples):
            return None
        self.energy.push(samples)
        return samples, False

    def _wake_for_pad(self, after: float) -> None:
        """Have the scheduler look again (intake may pad) once `after` s have passed."""
        if self.pad_timer is not None:
            self.pad_timer.cancel()
        loop = asyncio.get_running_loop()
        self.pad_timer = loop.call_later(after + 0.01, self.server.wake)

    def _pad(self) -> np.ndarray | None:
        """Silence after a committed turn once its audio stopped for PAD_AFTER_SECONDS: as
        much as a file's end gets (the delay, and the longest word), so its last words come
        out."""
        quiet = time.monotonic() - self.last_audio
        if quiet < PAD_AFTER_SECONDS:
            self._wake_for_pad(PAD_AFTER_SECONDS - quiet)  # (more audio may still come)
            return None
        schedule = self.session.schedule
        end = self.turns[-2].end  # the last committed turn
        need = end + schedule.n_right_pad_tokens * schedule.seconds_per_token
        need += schedule.audio.window_size / 2 / SAMPLE_RATE
        if self.received >= need:
            return None
        tail = self.resampler(np.zeros(0, np.float32), last=True)  # its samples held back
        self._new_resampler()
        seconds = max(need - self.received - len(tail) / SAMPLE_RATE, 0.0)
        silence = np.zeros(round(seconds * SAMPLE_RATE), np.float32)
        self.received += len(tail) / SAMPLE_RATE
        if len(silence):
            self._shift_from(self.received, -len(silence) / SAMPLE_RATE)
            self.received += len(silence) / SAMPLE_RATE
        return np.concatenate([tail, silence])

    async def deliver(self, events) -> None:
        """Deltas to the turns their words began in, VAD's turns, then every turn the
        decoder has spoken for all of (no word begun in it still unwritten) is completed."""
        session = self.session
        if session is None:
            return
        timeline: list[tuple[float, int, object]] = []
        outputs = session.outputs(self.seen)
        self.seen += len(outputs)
        self.started |= self.word_starts.update(outputs)
        if self.detector is not None:
            for found in self.detector.update(outputs):
                order = 0 if isinstance(found, SpeechStarted) else 2
                timeline.append((found.seconds, order, found))
        for event in events:
            if isinstance(event, TextDelta) and event.text:
                timeline.append((self.started.get(event.start, event.start), 1, event))
        for at, _, item in sorted(timeline, key=lambda x: (x[0], x[1])):
            if isinstance(item, TextDelta):
                await self._delta(item, at)
            elif isinstance(item, SpeechStarted):
                turn = self.turns[-1]
                await self.send(
                    "input_audio_buffer.speech_started",
                    audio_start_ms=self.client_ms(item.seconds),
                    item_id=turn.item_id,
                )
            elif isinstance(item, SpeechStopped):
                turn = self.turns[-1]
                await self.send(
                    "input_audio_buffer.speech_stopped",
                    audio_end_ms=self.client_ms(item.seconds),
                    item_id=turn.item_id,
                )
                await self._commit(item.seconds)
        await self._complete(session.transcribed_seconds)
        session.forget(self.seen)  # the connection may last for days: keep no history
        first = self.turns[0].start
        self.started = {t: w for t, w in self.started.items() if t >= first}

    async def _delta(self, delta: TextDelta, began: float) -> None:
        """Text whose word began at `began` (stream seconds) goes to that turn; a cleared
        turn's is dropped."""
        if began < self.turns[0].start:
            return
        turn = next(t for t in self.turns if t.end is None or began < t.end)
        text = delta.text if turn.text else delta.text.lstrip()
        if not text:
            return
        turn.text.append(text)
        await self.send(
            "conversation.item.input_audio_transcription.delta",
            activity=True,
            item_id=turn.item_id,
            content_index=0,
            delta=text,
        )

    async def _complete(self, transcribed: float) -> None:
        while len(self.turns) > 1 and self.turns[0].end <= transcribed:
            turn = self.turns[0]
            unwritten = self.word_starts.open_since
            if unwritten is not None and unwritten < turn.end:
                return  # a word begun in it is still being spoken: its text comes at its end
            self.turns.popleft()
            seconds = (self.client_ms(turn.end) - self.client_ms(turn.start)) / 1000
            await self.send(
                "conversation.item.input_audio_transcription.completed",
                activity=True,
                item_id=turn.item_id,
                content_index=0,
                transcript=turn.transcript,
                usage={"type": "duration", "seconds": max(seconds, 0.0)},
            )

    async def failed(self, error: Exception) -> None:
        await self.error(f"transcription failed: {error}", "processing_error")
        await self.close()
        await self.conn.drop("transcription failed", 1011)

    async def close(self) -> None:
        self.server.streams.discard(self)
        session, self.session = self.session, None
        self.audio.clear()
        if self.pad_timer is not None:
            self.pad_timer.cancel()
        if session is not None:
            await self.server.close_session(self, session)


def drop_tail(queue: deque[np.ndarray], n: int) -> int:
    """Remove up to n samples from the end of a queue of chunks; how many were removed."""
    removed = 0
    while queue and removed < n:
        tail = queue.pop()
        if removed + len(tail) > n:
            queue.append(tail[: len(tail) - (n - removed)])
            return n
        removed += len(tail)
    return removed


def _object(value, name: str) -> dict:
    """A settings object (absent or null: empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SettingError(f"{name} must be an object", name)
    return value


class SettingError(Exception):
    """A client event this dialect refuses: an error event, the connection goes on."""

    def __init__(self, message: str, param: str | None, code: str = "invalid_value"):
        super().__init__(message)
        self.param, self.code = param, code


def _format(given) -> tuple[str, int]:
    """(format type, sample rate) of an audio format object."""
    fmt = given.get("type", "audio/pcm") if isinstance(given, dict) else None
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise SettingError(f"format type must be one of {', '.join(FORMATS)}", "format.type")
    rate = given.get("rate", FORMATS[fmt])
    if isinstance(rate, bool) or not isinstance(rate, int):
        raise SettingError("format.rate must be an integer (Hz)", "format.rate")
    if fmt != "audio/pcm" and rate != FORMATS[fmt]:
        raise SettingError(f"{fmt} is 8000 Hz", "format.rate")
    # other PCM rates than 24000 (OpenAI's only one) are our extension, resampled as well
    if not 8000 <= rate <= 192000:
        raise SettingError("format.rate: a sample rate from 8000 to 192000", "format.rate")
    return fmt, rate


def _turn_detection(given) -> dict | None:
    """server_vad's settings (semantic_vad runs as server_vad); None: the client commits."""
    if given is None:
        return None
    if not isinstance(given, dict) or given.get("type") not in ("server_vad", "semantic_vad"):
        raise SettingError(
            "turn_detection must be null, or of type server_vad or semantic_vad",
            "turn_detection.type",
        )
    vad = {"type": "server_vad", "threshold": THRESHOLD}
    vad |= {"prefix_padding_ms": PREFIX_MS, "silence_duration_ms": SILENCE_MS}
    for name, low, high in (
        ("threshold", 0.0, 1.0),
        ("prefix_padding_ms", 0, 10000),
        ("silence_duration_ms", 80, 10000),
    ):
        value = given.get(name)
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not low <= value <= high
        ):
            raise SettingError(
                f"turn_detection.{name}: from {low} to {high}", f"turn_detection.{name}"
            )
        vad[name] = value
    return vad


def _keywords(given) -> list | None:
    """`keywords`, as OpenAI types it: a list of words or phrases (or null)."""
    if given is not None and not isinstance(given, list):
        raise SettingError("keywords must be a list of words or phrases", "transcription.keywords")
    return given


def _legacy(session: dict) -> dict:
    """The beta's transcription_session.update settings, in the GA's shape."""
    audio_in = {}
    if (fmt := session.get("input_audio_format")) is not None:
        if not isinstance(fmt, str) or fmt not in LEGACY_FORMATS:
            raise SettingError(
                f"input_audio_format must be one of {', '.join(LEGACY_FORMATS)}",
                "input_audio_format",
            )
        audio_in["format"] = {"type": LEGACY_FORMATS[fmt]}
    if "input_audio_transcription" in session:
        audio_in["transcription"] = session["input_audio_transcription"]
    if "turn_detection" in session:
        audio_in["turn_detection"] = session["turn_detection"]
    return {"type": "transcription", "audio": {"input": audio_in}}
