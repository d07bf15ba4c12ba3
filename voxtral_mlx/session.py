"""The streaming engine: one decode schedule for live audio and for files.

`Session.feed(samples)` takes audio in chunks of any size and returns the events it produced;
`finish()` appends the right pad so the words still behind the delay come out, and sets
`result`, the whole Transcript. Every stage keeps its own bounded state (MODEL.md "Streaming"):

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

from .audio import StreamResampler, as_samples
from .config import ENCODER_BATCH_TOKENS, SAMPLE_RATE
from .decoder import StepCache
from .errors import VoxtralError
from .mel import StreamingMel
from .model import VoxtralRealtime
from .words import Word, WordTracker

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
    # MLX's peak allocation in this process since it started: every model and session in it
    # (MLX keeps one process-wide figure; nothing in the library resets it)
    peak_memory_bytes: int
    state_bytes: int = 0  # this session's own caches (encoder and decoder KV) at the end


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


Event = TextDelta | WordDone


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

    Audio: `sample_rate` is the rate of everything fed (resampled to 16 kHz inside, by a
    streaming resampler, so the chunking never changes the result); samples follow the rule
    of `audio.as_samples` (1-D, finite, any float width). `delay_ms`: None for the
    checkpoint's own delay.

    `stop_at_eos=False` (live): EOS is fed back like any token and the session runs on
    until the audio ends, as the reference realtime server does. `transcribe()` uses True,
    the offline schedule: stop at EOS.
    """

    def __init__(
        self,
        model: VoxtralRealtime,
        delay_ms: int | None = None,
        *,
        sample_rate: int = SAMPLE_RATE,
        stop_at_eos: bool = False,
    ):
        if model.tokenizer is None:
            raise VoxtralError("the model has no tokenizer: load it with voxtral_mlx.load")
        self.model = model
        self.schedule = model.args.schedule(delay_ms)
        self.sample_rate = StreamResampler(sample_rate).rate  # checks the rate
        self.tokenizer = model.tokenizer
        self.stop_at_eos = stop_at_eos
        self._scales = model.decoder.ffn_norm_weights(self.schedule.n_delay_tokens)
        mx.eval(self._scales)
        self.reset()

    # --- public API ---
    def reset(self) -> None:
        """Forget the audio and text so far; keep the model, the delay and the rate."""
        schedule = self.schedule
        self._resampler = StreamResampler(self.sample_rate, schedule.sample_rate)
        self._mel = StreamingMel(schedule)
        self._encoder = self.model.encoder.make_state()
        self._decoder = _DecoderState(cache=self.model.decoder.make_cache())
        self._detok = self.tokenizer.detokenizer()
        self._words = WordTracker(self.tokenizer, schedule)
        self._all_words: list[Word] = []
        self._tokens: list[int] = []
        self._text: list[str] = []
        self._samples_in = 0  # at the model's rate
        self._elapsed = 0.0
        self.result: Transcript | None = None  # set by finish()

    @property
    def delay_ms(self) -> int:
        return self.schedule.delay_ms

    @property
    def tokens(self) -> list[int]:
        return list(self._tokens)

    @property
    def text(self) -> str:
        """The text so far, exactly the concatenation of the TextDelta texts."""
        return "".join(self._text)

    @property
    def audio_seconds(self) -> float:
        return self._samples_in / self.schedule.sample_rate

    @property
    def elapsed_seconds(self) -> float:
        """Wall time spent in the model so far."""
        return self._elapsed

    @property
    def backlog_seconds(self) -> float:
        """Audio fed but not decoded yet (look-ahead and delay not counted)."""
        decoded = self.schedule.decoded_seconds(self._decoder.position)
        return max(self.audio_seconds - decoded, 0.0)

    @property
    def state_bytes(self) -> int:
        """Memory held by this session's caches: the encoder's and the decoder's keys and
        values (the decoder's grows with the stream up to its window)."""
        caches = [*self._encoder.cache, *self._decoder.cache]
        arrays = [a for c in caches for a in (c.keys, c.values) if a is not None]
        if self._decoder.steps is not None:
            arrays += [*self._decoder.steps.keys, *self._decoder.steps.values]
        return sum(a.nbytes for a in arrays)

    def feed(self, samples: np.ndarray) -> list[Event]:
        """Add samples (any count, at the session's rate); return the events they produced."""
        if self.result is not None:
            raise VoxtralError("this session is finished: call reset() to start a new one")
        return self._push(self._resampler(as_samples(samples)))

    def finish(self) -> list[Event]:
        """Flush: the right pad, the last tokens; returns the last events and sets `result`
        (the whole Transcript: text, tokens, words, stats)."""
        if self.result is not None:
            raise VoxtralError("this session is already finished: call reset() to start again")
        events = self._push(self._resampler(np.zeros(0, np.float32), last=True))
        schedule = self.schedule
        # the right pad, plus half a window of silence: the reflection of silence
        right = schedule.right_pad_samples(self._samples_in) + schedule.audio.window_size // 2
        self._words.duration = self.audio_seconds
        self._mel.push(np.zeros(right, np.float32))
        events += self._process()
        tail = self._detok.flush()
        if tail:
            events.append(self._delta(tail, (), self._decoder.position))
        if word := self._words.flush():
            self._all_words.append(word)
            events.append(WordDone(word))
        self.result = self._transcript()
        return events

    def _push(self, samples: np.ndarray) -> list[Event]:
        events: list[Event] = []
        # large inputs go in slices, so memory stays bounded however much arrives at once
        step = ENCODER_BATCH_TOKENS * self.schedule.samples_per_token
        for lo in range(0, len(samples), step):
            chunk = samples[lo : lo + step]
            self._samples_in += len(chunk)
            self._mel.push(chunk)
            events += self._process()
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
        L = self.schedule.prompt_length
        if state.last_token is None:
            if len(state.pending) < L:
                return events
            prompt = [self.tokenizer.bos_id] + [self.tokenizer.streaming_pad_id] * (L - 1)
            x = mx.stack(state.pending[:L]) + decoder.tok_embeddings(mx.array(prompt))
            del state.pending[:L]
            logits = decoder(x[None], self._scales, state.cache)
            token, fresh = mx.argmax(logits[0, -1]), True
            mx.async_eval(token)
            state.steps = StepCache(state.cache, self.model.args.decoder.sliding_window)
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
        start = max(self.schedule.step_time(position), 0.0)
        return TextDelta(text, ids, start, max(self.schedule.step_time(position + 1), start))

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
            state_bytes=self.state_bytes,
        )
        return Transcript(
            text=self.text.strip(),
            tokens=list(self._tokens),
            words=list(self._all_words),
            delay_ms=self.delay_ms,
            stats=stats,
        )
