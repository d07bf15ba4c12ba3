"""`MistralDialect`: a Mistral realtime transcription session on one connection (the
package's docstring): the client's events in, the utterances between flushes transcribed
one after another, each a live Session of the scheduler, and their events out."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ...audio import StreamResampler
from ...config import SAMPLE_RATE
from ...formats import Cue, CueBuilder, StrippedStream
from ...model import VoxtralRealtime
from ...session import Session, TextDelta, WordDone
from ...turns import SlotEnergy, SpeechStarted, TurnDetector
from ...words import Word
from ..connection import Connection
from ..errors import ClientError, mistral_error, shorten
from ..scheduler import SLICE_SECONDS, AudioQueue, waiting, waiting_seconds
from ..wire import decode_base64
from .events import segment, segment_event, usage, word_item
from .settings import Settings

# what one transcription.done carries at most: an event must stay under the SDK's 1 MiB
# (websockets' max_size); the deltas and segment events before it carried everything
MAX_DONE_CHARS = 100_000
MAX_DONE_SEGMENTS = 2000
LOUD_DB = 18.0  # turn detection: audio this far above the noise floor holds a turn open


@dataclass(eq=False)
class Utterance:
    """The audio from one flush to the next, and what the model made of it so far. Its
    settings are the session's when its first audio came (they cannot change while it
    takes audio); `offset`: where it starts in the connection's audio (s)."""

    settings: Settings
    offset: float
    audio: AudioQueue = field(default_factory=AudioQueue)  # 16 kHz, not yet given to the model
    samples: int = 0  # its 16 kHz samples, given to the model or waiting
    final: bool = False  # flushed (or ended): no more audio; then transcription.done
    seen: int = 0  # outputs of its session read so far
    stripped: StrippedStream = field(default_factory=StrippedStream)
    text: list[str] = field(default_factory=list)  # its last MAX_DONE_CHARS, in pieces
    chars: int = 0
    segments: deque = field(default_factory=lambda: deque(maxlen=MAX_DONE_SEGMENTS))
    cues: CueBuilder = field(default_factory=CueBuilder)
    words: list[dict] = field(default_factory=list)  # completed since the last delta
    told_language: bool = False
    energy: SlotEnergy | None = None  # turn detection (when the settings ask for it)
    turns: TurnDetector | None = None

    def listen_for_turns(self, model: VoxtralRealtime) -> None:
        if (config := self.settings.turn_detection) is None:
            return
        audio = model.args.audio
        self.energy = SlotEnergy(audio)
        self.turns = TurnDetector(
            model.tokenizer,
            silence_seconds=config["min_silence_ms"] / 1000,
            prefix_seconds=0.0,
            energy=self.energy,
            loud_db=LOUD_DB,
            audio=audio,
        )

    def add_text(self, text: str) -> None:
        self.text.append(text)
        self.chars += len(text)
        if self.chars > 2 * MAX_DONE_CHARS:  # (joined now and then: appends stay cheap)
            kept = "".join(self.text)[-MAX_DONE_CHARS:]
            self.text, self.chars = [kept], len(kept)

    @property
    def transcript(self) -> str:
        return "".join(self.text)[-MAX_DONE_CHARS:]


class MistralDialect:
    """Mistral's realtime transcription protocol: a Dialect of the connection, a Stream of
    the scheduler. Its utterances are transcribed in order; the first one's Session is
    `session`. Audio is never dropped: past the backlog limit the connection is not read
    until there is room (the SDK sends a file as fast as it reads it)."""

    live = True
    undecided = False  # chosen by its URL

    def __init__(self, conn: Connection):
        self.conn, self.server = conn, conn.server
        self.scheduler = self.server.scheduler
        self.request_id = uuid.uuid4().hex
        asked = conn.ws.query_params.get("model")
        self.refused = self.server.check_model(asked)  # why the model is not served, if not
        model = asked or self.server.config.model_id
        self.settings = Settings(
            model=model, delay_ms=self.server.delay_ms, context_bias=self.server.context_bias()
        )
        self.resampler = StreamResampler(self.settings.rate)
        self.partial = b""  # the bytes of a sample an append cut: the next one's start
        self.session: Session | None = None
        self.utterances: deque[Utterance] = deque()
        self.heard = 0.0  # the connection's audio so far (s at 16 kHz): utterances' offsets
        self.ended = False  # input_audio.end came: closed after the last done
        self.hanging_up: asyncio.Task | None = None
        self.room = asyncio.Event()
        self.room.set()

    @staticmethod
    def speaks(event: dict) -> bool:
        return False  # chosen by its URL only

    @staticmethod
    def refusal(message: str, code: str) -> dict:
        return mistral_error(message, code)

    def early_audio(self) -> list[np.ndarray]:
        return []

    def adopt(self, early: list[np.ndarray]) -> None:
        pass  # (never undecided: no connection is handed to it)

    async def error(self, message: str, code: str, param: str | None = None, client_event=None):
        await self.conn.send(mistral_error(message, code))

    async def start(self) -> None:
        """session.created, or an error and the end for a model this server does not serve
        (the SDK raises it from connect())."""
        if self.refused is not None:
            await self.error(self.refused, "model_not_found")
            await self.conn.flush()
            await self.conn.drop("model not found", 1008)
            return
        created = {"type": "session.created", "session": self.settings.describe(self.request_id)}
        await self.conn.send(created)

    # --- events in ---
    async def handle(self, event: dict) -> None:
        handlers = {"session.update": self.session_update, "input_audio.append": self.append}
        handlers |= {"input_audio.flush": self.flush, "input_audio.end": self.end}
        kind = event.get("type")
        if (handler := handlers.get(kind) if isinstance(kind, str) else None) is None:
            kind = shorten(kind) if isinstance(kind, str) else shorten(repr(kind))
            message = f"Unknown event type: {kind} (a transcription session takes "
            message += "session.update and input_audio.append / flush / end)"
            raise ClientError(message, "unknown_event", "type")
        if self.ended:
            raise ClientError("the audio has ended (input_audio.end)", "invalid_event")
        await handler(event)

    @property
    def _open(self) -> Utterance | None:
        """The utterance new audio goes to (it has audio), if one is not flushed yet."""
        last = self.utterances[-1] if self.utterances else None
        return last if last is not None and not last.final else None

    async def session_update(self, event: dict) -> None:
        if self._open is not None:
            raise ClientError(
                "the settings are fixed while audio waits for its flush: send session.update "
                "before input_audio.append, or after input_audio.flush",
                "invalid_event",
                "session",
            )
        settings = self.settings.updated(event.get("session"), self.server)
        if settings.rate != self.settings.rate:
            self.resampler = StreamResampler(settings.rate)
        if settings.encoding != self.settings.encoding:
            self.partial = b""
        self.settings = settings
        await self.conn.send(
            {"type": "session.updated", "session": settings.describe(self.request_id)}
        )

    async def append(self, event: dict) -> None:
        """Its audio in the session's format; a sample cut between two appends is joined
        (the SDK sends a stream's bytes as the caller cuts them)."""
        try:
            raw = self.partial + decode_base64(event.get("audio"))
            whole = len(raw) - len(raw) % self.settings.sample_bytes
            samples = self.settings.decode(raw[:whole])
        except ValueError as e:
            raise ClientError(str(e), "invalid_audio", "audio") from None
        self.partial = raw[whole:]
        if raw:  # (an empty append changes nothing)
            await self._add(self.resampler(samples))

    async def _add(self, samples: np.ndarray, final: bool = False) -> None:
        """16 kHz samples into the open utterance (a new one if none is open); `final`:
        it is flushed with them."""
        utterance = self._open
        if utterance is None:
            utterance = Utterance(self.settings, self.heard)
            self.utterances.append(utterance)
        utterance.audio.append(samples)
        utterance.samples += len(samples)
        utterance.final = final
        self.heard += len(samples) / SAMPLE_RATE
        self.conn.last_activity = time.monotonic()
        await self._start_next()
        if self.waiting_seconds > self.server.config.max_backlog_seconds:
            self.room.clear()  # read no more until the model has taken some (intake)
        self.scheduler.live_audio()

    async def flush(self, event: dict) -> None:
        """The open utterance ends (what the resampler holds back goes with it): its last
        words, then its transcription.done; with no audio since the last one, an empty
        done, in order."""
        self.partial = b""  # (half a sample at the end is dropped)
        if self._open is not None:
            tail = self.resampler(np.zeros(0, np.float32), last=True)
            self.resampler = StreamResampler(self.settings.rate)
            await self._add(tail, final=True)
        else:
            self.utterances.append(Utterance(self.settings, self.heard, final=True))
            self.conn.last_activity = time.monotonic()
            await self._start_next()

    async def end(self, event: dict) -> None:
        """As flush for audio not flushed yet (an empty done when nothing is under way);
        the connection closes after the last done."""
        if self._open is not None or not self.utterances:
            await self.flush(event)
        self.ended = True
        await self._start_next()

    # --- the scheduler's side ---
    @property
    def waiting_seconds(self) -> float:
        return waiting_seconds(self.utterances)

    @property
    def busy(self) -> bool:
        return waiting(self.utterances)

    async def _start_next(self) -> None:
        """The first utterance goes to the model once it has audio (an empty flushed one is
        answered at once); with none left after input_audio.end, the connection closes."""
        while self.session is None and self.utterances:
            utterance = self.utterances[0]
            if utterance.samples:
                utterance.listen_for_turns(self.server.model)
                settings = utterance.settings
                await self.scheduler.open_session(self, settings.delay_ms, settings.context_bias)
                return
            if not utterance.final:
                return
            self.utterances.popleft()
            await self._done(utterance, None)
        if self.session is None:
            self.room.set()  # nothing drains the backlog: never hold the reading
            if self.ended and not self.utterances and self.hanging_up is None:
                self.hanging_up = asyncio.create_task(self._hang_up())

    async def _hang_up(self) -> None:
        await self.conn.flush()
        await self.conn.drop("the audio ended (input_audio.end)", 1000)

    def intake(self) -> tuple[np.ndarray | None, bool] | None:
        if self.session is None or self.session.ended:
            return None
        utterance, samples = self.utterances[0], None
        if utterance.audio and self.session.wants_audio:
            samples = utterance.audio.take(int(SLICE_SECONDS * SAMPLE_RATE))
            if utterance.energy is not None:
                utterance.energy.push(samples)
            if self.waiting_seconds <= self.server.config.max_backlog_seconds:
                self.room.set()
        end = utterance.final and not utterance.audio
        return (samples, end) if samples is not None or end else None

    async def deliver(self, events) -> None:
        """Text deltas, segments (subtitle cues, as their last word completes) and turns in
        the order of their audio; once the session is finished, transcription.done and the
        next utterance. The session keeps no history: an utterance may last for hours."""
        session = self.session
        if session is None:
            return
        utterance = self.utterances[0]
        outputs = session.outputs(utterance.seen)
        utterance.seen += len(outputs)
        turns = deque(utterance.turns.update(outputs) if utterance.turns is not None else [])
        session.forget(utterance.seen)
        for event in events:
            if isinstance(event, TextDelta) and event.text:
                await self._turns(utterance, turns, event.start)
                await self._delta(utterance, event)
            elif isinstance(event, WordDone):
                await self._turns(utterance, turns, event.word.end)
                await self._word(utterance, event.word)
        await self._turns(utterance, turns, None)
        if session.result is None:
            return
        if cue := utterance.cues.flush():
            await self._segment(utterance, cue)
        detector = utterance.turns
        if detector is not None and detector.speaking:  # a turn still open ends at the flush
            at = utterance.offset + detector.last_speech
            await self._send("turn.end", time_s=round(at, 3), end_reason="threshold")
        self.utterances.popleft()
        await self._done(utterance, session)
        await self.scheduler.close_session(self, session)
        await self._start_next()

    async def _send(self, kind: str, **fields) -> None:
        await self.conn.send({"type": kind, **fields}, activity=True)

    async def _turns(self, utterance: Utterance, turns: deque, until: float | None) -> None:
        """The turn events up to `until` (seconds of the utterance; None: all)."""
        while turns and (until is None or turns[0].seconds <= until):
            found = turns.popleft()
            if isinstance(found, SpeechStarted):
                await self._send("turn.start", time_s=round(utterance.offset + found.seconds, 3))
            else:
                at = round(utterance.offset + found.speech_end, 3)
                await self._send("turn.end", time_s=at, end_reason="threshold")

    async def _delta(self, utterance: Utterance, delta: TextDelta) -> None:
        """Its text (white space before the first word dropped, so that the deltas add up
        to the done text); `start`, `end` and `words` are our extension."""
        if not (text := utterance.stripped.push(delta.text)):
            return
        if (language := utterance.settings.language) and not utterance.told_language:
            utterance.told_language = True  # the client's own: Voxtral detects none
            await self._send("transcription.language", audio_language=language)
        utterance.add_text(text)
        start, end = utterance.offset + delta.start, utterance.offset + delta.end
        words, utterance.words = utterance.words, []
        await self._send(
            "transcription.text.delta",
            text=text,
            start=round(start, 3),
            end=round(end, 3),
            words=words,
        )

    async def _word(self, utterance: Utterance, word: Word) -> None:
        utterance.words.append(word_item(word, utterance.offset))
        shifted = Word(word.text, utterance.offset + word.start, utterance.offset + word.end)
        if cue := utterance.cues.add(shifted):
            await self._segment(utterance, cue)

    async def _segment(self, utterance: Utterance, cue: Cue) -> None:
        item = segment(cue.text, cue.start, cue.end)
        utterance.segments.append(item)
        await self.conn.send(segment_event(item), activity=True)

    async def _done(self, utterance: Utterance, session: Session | None) -> None:
        """The utterance's transcription.done: its text (the deltas, added up), language,
        segments and usage; `delay_ms` and the words not yet sent are our extension."""
        prompt = session.schedule.prompt_length if session is not None else 0
        await self._send(
            "transcription.done",
            model=utterance.settings.model,
            text=utterance.transcript,
            language=utterance.settings.language,
            segments=list(utterance.segments),
            usage=usage(utterance.samples / SAMPLE_RATE, prompt, utterance.seen),
            delay_ms=utterance.settings.delay_ms,
            words=utterance.words,
        )

    async def failed(self, error: Exception) -> None:
        """The utterance in progress ends with an error event; the next one goes on."""
        await self.error(f"transcription failed: {error}", "processing_error")
        if (session := self.session) is not None:
            self.utterances.popleft()
            await self.scheduler.close_session(self, session)
            await self._start_next()

    async def close(self) -> None:
        self.scheduler.streams.discard(self)
        session, self.session = self.session, None
        self.utterances.clear()
        self.room.set()
        if session is not None:
            await self.scheduler.close_session(self, session)
