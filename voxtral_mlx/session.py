"""The streaming engine: one decode schedule for live audio and for files.

`Session.feed(samples)` takes 16 kHz float32 audio in chunks of any size and returns the
events it produced; `finish()` appends the right pad so the words still behind the delay
come out. Every stage keeps its own bounded state (MODEL.md "Streaming"):

    StreamingMel (samples of the frames not yet computed)
      -> EncoderState (2 mel frames, 1 conv frame, KV ring of 750 frames)
      -> adapter (whole tokens only: no remainder)
      -> decoder (KV ring of 8192 positions, last token, step position)

Work per 80 ms does not grow with the audio already seen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

from .audio import SAMPLE_RATE
from .config import DEFAULT_DELAY_MS, ENCODER_BATCH_TOKENS
from .decoder import StepCache
from .errors import VoxtralError
from .mel import StreamingMel
from .model import VoxtralRealtime
from .words import Word, WordTracker, step_time

# Clear MLX's buffer cache this often (decoder steps), so it cannot grow without bound.
CLEAR_CACHE_EVERY = 256


@dataclass(frozen=True)
class TextDelta:
    """New text, append-only. `start`/`end`: the audio time (s) the tokens speak about."""

    text: str
    token_ids: tuple[int, ...]
    start: float
    end: float


@dataclass(frozen=True)
class WordDone:
    word: Word


@dataclass(frozen=True)
class Stats:
    audio_seconds: float
    decoder_steps: int
    elapsed_seconds: float
    tokens_per_second: float  # decoder steps per second of wall time
    real_time_factor: float  # wall time / audio time (< 1: faster than real time)
    peak_memory_bytes: int  # MLX's peak allocation since the session started


@dataclass(frozen=True)
class Transcript:
    """The final result: also what `transcribe()` returns."""

    text: str
    tokens: list[int]  # every generated id in order, pads (and EOS) included
    words: list[Word]
    delay_ms: int
    stats: Stats

    @property
    def audio_seconds(self) -> float:
        return self.stats.audio_seconds


Event = TextDelta | WordDone | Transcript


@dataclass
class _DecoderState:
    cache: list = field(default_factory=list)  # the prompt's prefill
    steps: StepCache | None = None  # then one-token steps (compiled)
    pending: list[mx.array] = field(default_factory=list)  # adapter outputs not yet decoded
    position: int = 0  # next decoder position to fill
    last_token: int | None = None
    stopped: bool = False


class Session:
    """Streaming transcription with one model; `reset()` starts a new utterance.

    `stop_at_eos=False` (live): EOS is fed back like any token and the session runs on
    until the audio ends, as the reference realtime server does. `transcribe()` uses True,
    the offline schedule: stop at EOS.
    """

    def __init__(
        self, model: VoxtralRealtime, delay_ms: int = DEFAULT_DELAY_MS, *, stop_at_eos: bool = False
    ):
        if model.tokenizer is None:
            raise VoxtralError("the model has no tokenizer: load it with voxtral_mlx.load")
        self.model = model
        self.args = model.args.with_delay(delay_ms)
        self.tokenizer = model.tokenizer
        self.stop_at_eos = stop_at_eos
        self._scales = model.decoder.ffn_norm_weights(self.args.n_delay_tokens)
        mx.eval(self._scales)
        self.reset()

    # --- public API ---
    def reset(self) -> None:
        """Forget the audio and text so far; keep the model and the delay."""
        args = self.args
        self._mel = StreamingMel(args.audio, args.n_left_pad_tokens)
        self._encoder = self.model.encoder.make_state()
        self._decoder = _DecoderState(cache=self.model.decoder.make_cache())
        self._detok = self.tokenizer.detokenizer()
        self._words = WordTracker(self.tokenizer, args.n_left_pad_tokens, args.n_delay_tokens, None)
        self._all_words: list[Word] = []
        self._tokens: list[int] = []
        self._text: list[str] = []
        self._samples_in = 0
        self._finished = False
        self._elapsed = 0.0
        mx.reset_peak_memory()

    @property
    def tokens(self) -> list[int]:
        return list(self._tokens)

    @property
    def text(self) -> str:
        return "".join(self._text)

    @property
    def audio_seconds(self) -> float:
        return self._samples_in / SAMPLE_RATE

    @property
    def elapsed_seconds(self) -> float:
        """Wall time spent in the model so far."""
        return self._elapsed

    @property
    def backlog_seconds(self) -> float:
        """Audio fed but not decoded yet (look-ahead and delay not counted)."""
        decoded = max(self._decoder.position - self.args.n_left_pad_tokens, 0)
        return max(self.audio_seconds - decoded * self.args.samples_per_token / SAMPLE_RATE, 0.0)

    def feed(self, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> list[Event]:
        """Add 16 kHz mono float32 samples (any count); return the events they produced."""
        if self._finished:
            raise VoxtralError("this session is finished: call reset() to start a new one")
        samples = _check_chunk(samples, sample_rate)
        events: list[Event] = []
        # large inputs go in slices, so memory stays bounded however much arrives at once
        step = ENCODER_BATCH_TOKENS * self.args.samples_per_token
        for lo in range(0, len(samples), step):
            chunk = samples[lo : lo + step]
            self._samples_in += len(chunk)
            self._mel.push(chunk)
            events += self._process()
        return events

    def finish(self) -> list[Event]:
        """Flush: right pad, decode the last tokens, and return the final Transcript."""
        if self._finished:
            raise VoxtralError("this session is already finished: call reset() to start again")
        args = self.args
        per_token = args.samples_per_token
        align = (per_token - self._samples_in % per_token) % per_token
        # the right pad, plus half a window of silence: the reflection of silence
        right = align + args.n_right_pad_tokens * per_token + args.audio.window_size // 2
        self._words.duration = self.audio_seconds
        self._mel.push(np.zeros(right, np.float32))
        events = self._process()
        self._finished = True
        tail = self._detok.flush()
        if tail:
            events.append(self._delta(tail, (), self._decoder.position))
        if word := self._words.flush():
            self._all_words.append(word)
            events.append(WordDone(word))
        events.append(self._transcript())
        return events

    # --- the schedule ---
    def _process(self) -> list[Event]:
        events: list[Event] = []
        tic = time.perf_counter()
        while (n := min(self._mel.available_tokens(), ENCODER_BATCH_TOKENS)) > 0:
            if self._decoder.stopped:
                self._mel.pull(n)  # keep the grid moving, skip the model
                continue
            mel = mx.array(self._mel.pull(n), dtype=self.model.dtype)[None]
            frames = self.model.encoder(mel, self._encoder)
            embeds = self.model.adapter(frames)[0]
            mx.eval(embeds)
            self._decoder.pending.extend(embeds[i] for i in range(n))
            events += self._decode()
        self._elapsed += time.perf_counter() - tic
        return events

    def _decode(self) -> list[Event]:
        """Decode every pending position. Double-buffered: step p+1 is queued (async_eval)
        before token p is read back, so graph building overlaps the previous step."""
        state, decoder = self._decoder, self.model.decoder
        events: list[Event] = []
        L = self.args.prompt_length
        if state.last_token is None:
            if len(state.pending) < L:
                return events
            prompt = [self.tokenizer.bos_id] + [self.tokenizer.streaming_pad_id] * (L - 1)
            x = mx.stack(state.pending[:L]) + decoder.tok_embeddings(mx.array(prompt))
            del state.pending[:L]
            logits = decoder(x[None], self._scales, state.cache)
            token, fresh = mx.argmax(logits[0, -1]), True
            mx.async_eval(token)
            state.steps = StepCache(state.cache, self.args.decoder.sliding_window)
            state.cache = []
            state.position = L
        else:  # carry on from the last call: that token was emitted already
            token, fresh = mx.array(state.last_token, dtype=mx.uint32), False
        position = state.position - 1  # the position `token` was output at
        while state.pending and not state.stopped:
            next_token = decoder.step(state.pending.pop(0), token, self._scales, state.steps)
            mx.async_eval(next_token)
            state.position += 1
            if fresh:
                events += self._emit(token.item(), position)
            token, position, fresh = next_token, position + 1, True
            if state.position % CLEAR_CACHE_EVERY == 0:
                mx.clear_cache()
        if fresh and not state.stopped:
            events += self._emit(token.item(), position)
        return events

    def _emit(self, token: int, position: int) -> list[Event]:
        self._tokens.append(token)
        self._decoder.last_token = token
        if token == self.tokenizer.eos_id and self.stop_at_eos:
            self._decoder.stopped = True
            self._decoder.pending.clear()
        events: list[Event] = []
        if word := self._words.add(position, token):
            self._all_words.append(word)
            events.append(WordDone(word))
        if text := self._detok.add(token):
            events.append(self._delta(text, (token,), position))
        return events

    def _delta(self, text: str, ids: tuple[int, ...], position: int) -> TextDelta:
        self._text.append(text)
        n_left, n_delay = self.args.n_left_pad_tokens, self.args.n_delay_tokens
        start = max(step_time(position, n_left, n_delay), 0.0)
        return TextDelta(text, ids, start, max(step_time(position + 1, n_left, n_delay), start))

    def _transcript(self) -> Transcript:
        steps = len(self._tokens)
        audio = self.audio_seconds
        stats = Stats(
            audio_seconds=audio,
            decoder_steps=steps,
            elapsed_seconds=self._elapsed,
            tokens_per_second=steps / self._elapsed if self._elapsed else 0.0,
            real_time_factor=self._elapsed / audio if audio else 0.0,
            peak_memory_bytes=mx.get_peak_memory(),
        )
        return Transcript(
            text=self.text.strip(),
            tokens=list(self._tokens),
            words=list(self._all_words),
            delay_ms=self.args.delay_ms,
            stats=stats,
        )


def _check_chunk(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    if sample_rate != SAMPLE_RATE:
        raise VoxtralError(
            f"Session.feed takes {SAMPLE_RATE} Hz audio, got {sample_rate} Hz: resample first "
            "(voxtral_mlx.audio.resample)"
        )
    if isinstance(samples, mx.array):
        samples = np.array(samples)
    if not isinstance(samples, np.ndarray):
        raise VoxtralError(
            f"Session.feed takes a numpy float32 array, got {type(samples).__name__}"
        )
    if samples.ndim != 1:
        raise VoxtralError(f"Session.feed takes mono samples (1-D), got shape {samples.shape}")
    if samples.dtype != np.float32:
        raise VoxtralError(f"Session.feed takes float32 samples in [-1, 1], got {samples.dtype}")
    return samples
