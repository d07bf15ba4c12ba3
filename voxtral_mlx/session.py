"""The streaming engine: one decode schedule for live audio, files and many streams at once.

`Session.feed(samples)` takes audio in chunks of any size and returns the events it produced;
`finish()` appends the right pad so the words still behind the delay come out, and sets
`result`, the whole Transcript. Every stage keeps its own bounded state (MODEL.md "Streaming"):

    StreamingMel (samples of the frames not yet computed)
      -> EncoderState (2 mel frames, 1 conv frame, KV ring of 750 frames)
      -> adapter (whole tokens only: no remainder)
      -> a row of a DecoderBatch (KV ring of the window, next position, last token)

A `SessionPool` decodes many sessions together: one decoder pass reads the weights once
for every stream that has audio waiting. A lone Session is a pool of one.
"""

from __future__ import annotations

import math
import os
import time

import mlx.core as mx
import numpy as np

from .audio import StreamResampler, as_samples
from .biasing import BiasMatcher, Bonus, ContextBias, ContextBiasInput
from .config import ENCODER_BATCH_TOKENS, MAX_DRAFT, SAMPLE_RATE
from .decoder import MAX_PASS, DecoderBatch, Row
from .encoder import EncoderBatch
from .errors import VoxtralError
from .events import Event, Stats, TextDelta, Transcript, WordDone
from .mel import StreamingMel
from .model import VoxtralRealtime
from .words import Word, WordTracker

# Clear MLX's buffer cache this often (decoder passes), so it cannot grow without bound.
CLEAR_CACHE_EVERY = 256
# the positions of a pass over several rows, at most, once drafts are added: B rows already
# share the weight reads, and drafted positions beyond this move a CPU pass from weight-read
# bound to compute bound (benchmarks/RESULTS.md "Drafted pads")
PASS_POSITIONS = 16


class Session:
    """Streaming transcription of one stream; `reset()` starts a new utterance.

    Audio: `sample_rate` is the rate of everything fed (resampled to 16 kHz inside, by a
    streaming resampler, so the chunking never changes the result); samples follow the rule
    of `audio.as_samples` (1-D, finite, any float width). `delay_ms`: None for the
    checkpoint's own delay.

    `stop_at_eos=False` (live): EOS is fed back like any token and the session runs on
    until the audio ends, as the reference realtime server does. `transcribe()` uses True,
    the offline schedule: stop at EOS.

    `pool`: decode together with the pool's other sessions (SessionPool.add makes them).

    `max_draft`: when several encoded positions wait (a file, a backlog), the positions
    after the next are drafted as [STREAMING_PAD] and verified in the same pass, up to this
    many (1: one position a pass). Greedy decoding is causal, so the tokens are exactly
    those of one position a pass (MODEL.md "Drafted pads").

    `context_bias`: phrases the model should prefer (custom vocabulary): a list of phrases
    or (phrase, weight) pairs, or a ContextBias (biasing.parse_context_bias); None or an
    empty list decodes exactly as without (MODEL.md "Context biasing").
    """

    def __init__(
        self,
        model: VoxtralRealtime,
        delay_ms: int | None = None,
        *,
        sample_rate: int = SAMPLE_RATE,
        stop_at_eos: bool = False,
        pool: SessionPool | None = None,
        max_draft: int = MAX_DRAFT,
        context_bias: ContextBiasInput | ContextBias = None,
    ):
        if model.tokenizer is None:
            raise VoxtralError("the model has no tokenizer: load it with voxtral_mlx.load")
        self.model = model
        self.schedule = model.args.schedule(delay_ms)
        self.sample_rate = StreamResampler(sample_rate).rate  # checks the rate
        self.tokenizer = model.tokenizer
        self.stop_at_eos = stop_at_eos
        if max_draft < 1:
            raise VoxtralError(f"max_draft must be at least 1, got {max_draft}")
        self.max_draft = max_draft
        self.context_bias = ContextBias.build(self.tokenizer, context_bias)
        self.pool = pool if pool is not None else SessionPool(model)
        if self.pool.model is not model:
            raise VoxtralError("a session and its pool must share one model")
        self._row: Row | None = None
        self.reset()

    # --- public API ---
    def reset(self) -> None:
        """Forget the audio and text so far; keep the model, the delay, the rate, the pool."""
        schedule = self.schedule
        self._resampler = StreamResampler(self.sample_rate, schedule.sample_rate)
        self._mel = StreamingMel(schedule)
        if self._row is not None:
            self.pool.batch.remove(self._row)
            self.pool.encoders.remove(self._encoder)
        self._row = self.pool.batch.add(schedule.n_delay_tokens)
        self._encoder = self.pool.encoders.add()
        self.pool._sessions.add(self)
        self._pending: mx.array | None = None  # adapter outputs not decoded yet [n, dim]
        self._last_token: int | None = None  # the output at position _row.position - 1
        self._stopped = False  # EOS came (stop_at_eos)
        self._matcher: BiasMatcher | None = self.context_bias and self.context_bias.matcher()
        self._run = 0  # [STREAMING_PAD]s output since the last other token
        self._runs = self.max_draft / 4  # recent pad runs: a moving average (see _draft)
        self._passes = 0
        self._ended = False  # finish() has pushed the right pad
        self._detok = self.tokenizer.detokenizer()
        self._words = WordTracker(self.tokenizer, schedule)
        self._all_words: list[Word] = []
        self._tokens: list[int] = []
        self._forgotten = 0  # outputs dropped from the front of _tokens (forget())
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
    def transcribed_seconds(self) -> float:
        """The audio time every output so far speaks up to: text about the audio before it
        is out (held-back UTF-8 aside)."""
        return max(self.schedule.step_time(self._position), 0.0)

    @property
    def _position(self) -> int:  # the decoder position of the next output
        return self.schedule.prompt_length - 1 + self._forgotten + len(self._tokens)

    def outputs(self, start: int = 0) -> list[tuple[int, float]]:
        """(token id, the audio time it speaks about) of every output from index `start`
        (counted from the first output; not before what `forget` dropped)."""
        first = self.schedule.prompt_length - 1  # the prompt's last position gives the first
        step_time = self.schedule.step_time
        kept = self._tokens[max(start - self._forgotten, 0) :]
        return [(t, step_time(first + i)) for i, t in enumerate(kept, max(start, self._forgotten))]

    def forget(self, outputs: int) -> None:
        """Drop what only `result` needs: the outputs before index `outputs` and the text and
        words so far (`text`, `tokens` and `result` then start after them). A stream that
        never ends (a realtime connection's) calls it so its memory stays bounded."""
        drop = min(outputs - self._forgotten, len(self._tokens))
        if drop > 0:
            del self._tokens[:drop]
            self._forgotten += drop
        self._text.clear()
        self._all_words.clear()

    @property
    def elapsed_seconds(self) -> float:
        """Wall time spent in the model for this session so far (passes shared with other
        sessions of its pool count in full)."""
        return self._elapsed

    @property
    def backlog_seconds(self) -> float:
        """Audio fed but not decoded yet (look-ahead and delay not counted)."""
        decoded = self.schedule.decoded_seconds(self._row.position)
        return max(self.audio_seconds - decoded, 0.0)

    @property
    def pending_positions(self) -> int:
        """Positions whose audio is there, waiting for the encoder or the decoder."""
        return self._encoded + (0 if self._stopped else self._mel.available_tokens())

    @property
    def _encoded(self) -> int:
        return 0 if self._pending is None else self._pending.shape[0]

    @property
    def decodable_positions(self) -> int:
        """Positions the decoder can take (none until the whole prompt's audio is there)."""
        if self._stopped or (
            self._last_token is None and self.pending_positions < self.schedule.prompt_length
        ):
            return 0
        return self.pending_positions

    @property
    def state_bytes(self) -> int:
        """Memory held by this session's caches: its share of the pool's encoder rings and
        of its decoder rings (a decoder row's ring grows with the stream up to the window)."""
        batch, encoders = self.pool.batch, self.pool.encoders
        return encoders.nbytes // max(len(encoders.rows), 1) + batch.nbytes // max(
            len(batch.rows), 1
        )

    def feed(self, samples: np.ndarray) -> list[Event]:
        """Add samples (any count, at the session's rate); return the events they produced."""
        self._check_open()
        samples = self._resampler(as_samples(samples))
        events: list[Event] = []
        # large inputs go in slices, so memory stays bounded however much arrives at once
        step = ENCODER_BATCH_TOKENS * self.schedule.samples_per_token
        for lo in range(0, len(samples), step):
            self.push(samples[lo : lo + step], resampled=True)
            events += self.pool.drain(self)
        return events

    def finish(self) -> list[Event]:
        """Flush: the right pad, the last tokens; returns the last events and sets `result`
        (the whole Transcript: text, tokens, words, stats)."""
        self.end()
        return self.pool.drain(self)

    # --- the stages, for SessionPool ---
    def push(self, samples: np.ndarray, *, resampled: bool = False) -> None:
        """Audio in: resampled and turned into mel frames; the pool's next pass encodes
        them (every session's together) and decodes."""
        self._check_open()
        if not resampled:
            samples = self._resampler(as_samples(samples))
        self._samples_in += len(samples)
        self._mel.push(samples)

    def end(self) -> None:
        """The end of the audio: the resampler's tail and the right pad go in; the session
        is finished once the pool has encoded and decoded every position (SessionPool)."""
        self._check_open()
        self.push(self._resampler(np.zeros(0, np.float32), last=True), resampled=True)
        schedule = self.schedule
        # the right pad, plus half a window of silence: the reflection of silence
        right = schedule.right_pad_samples(self._samples_in) + schedule.audio.window_size // 2
        self._words.duration = self.audio_seconds
        self._mel.push(np.zeros(right, np.float32))
        self._ended = True

    def _check_open(self) -> None:
        if self.result is not None:
            raise VoxtralError("this session is finished: call reset() to start a new one")
        if self._ended:
            raise VoxtralError("this session is finishing: no more audio can be added")

    # --- the encoder's and the decoder's side, driven by SessionPool ---
    def _wants_encoding(self) -> int:
        """Tokens of mel to encode before the next pass (0: enough encoded, or none)."""
        available = self._mel.available_tokens()
        if self._stopped:
            self._mel.pull(available)  # keep the grid moving, skip the model
            return 0
        need = self.schedule.prompt_length if self._last_token is None else self.max_draft
        return available if self._encoded < need else 0

    def _add_encoded(self, embeds: mx.array) -> None:
        self._pending = embeds if self._pending is None else mx.concatenate([self._pending, embeds])

    def _next_input(self) -> tuple[mx.array, list[int]] | None:
        """What this session gives the next pass: (audio embeddings, token ids), or None."""
        if self._stopped or self._pending is None:
            return None
        if self._last_token is None:  # the prompt
            L = self.schedule.prompt_length
            if self._pending.shape[0] < L:
                return None
            return self._pending[:L], self.tokenizer.prompt(L)
        k = min(self._draft(), self._pending.shape[0], self.pool.batch.max_pass)
        pad = self.tokenizer.streaming_pad_id
        return self._pending[:k], [self._last_token] + [pad] * (k - 1)

    def _draft(self) -> int:
        """Positions for the next pass: twice the expected run of [STREAMING_PAD] (the
        recent runs' moving average, halved at the end of each run, or the current run if
        longer), rounded up to a power of two, 1 to max_draft: 1 (no draft) while the
        output has few pads, as in continuous speech."""
        expected = 2 * max(self._runs, self._run)
        return min(self.max_draft, 1 << max(0, math.ceil(math.log2(max(expected, 1)))))

    def set_context_bias(self, context_bias: ContextBiasInput | ContextBias) -> None:
        """Another list (as `context_bias` of the constructor) from the next position on; a
        phrase the old list was matching is dropped."""
        self.context_bias = ContextBias.build(self.tokenizer, context_bias)
        written = self._forgotten or any(
            t >= self.tokenizer.num_special_tokens for t in self._tokens
        )
        self._matcher = self.context_bias and self.context_bias.matcher(at_start=not written)

    def _bonus(self) -> Bonus | None:
        """The context-bias bonus of this session's next positions (None: no list)."""
        return self._matcher.bonus() if self._matcher else None

    def _take(self, n: int) -> None:
        rest = self._pending[n:]
        self._pending = rest if rest.shape[0] else None

    def _verify(self, outputs: list[int], start: int) -> tuple[int, list[Event]]:
        """The outputs of a pass at positions start, start + 1, ...: the first is exact (its
        input was the last output); each next one is exact while the one before it was the
        drafted [STREAMING_PAD]. Returns how many are accepted, and their events."""
        pad = self.tokenizer.streaming_pad_id
        events: list[Event] = []
        for j, token in enumerate(outputs):
            events += self._decoded(token, start + j)
            if token != pad or self._stopped:
                break
        return j + 1, events

    def _decoded(self, token: int, position: int) -> list[Event]:
        """The output at decoder `position` is `token`."""
        self._tokens.append(token)
        self._last_token = token
        if self._matcher:
            self._matcher.advance(token)
        if token == self.tokenizer.streaming_pad_id:
            self._run += 1
        else:
            self._runs, self._run = (self._runs + self._run) / 2, 0
        if token == self.tokenizer.eos_id and self.stop_at_eos:
            self._stopped = True
            self._pending = None
        events: list[Event] = []
        if word := self._words.add(position, token):
            self._all_words.append(word)
            events.append(WordDone(word))
        if text := self._detok.add(token):
            events.append(self._delta(text, (token,), position))
        return events

    def _finalize(self) -> list[Event]:
        """Once ended and fully decoded: flush the held-back text and word; set `result`."""
        events: list[Event] = []
        if tail := self._detok.flush():
            events.append(self._delta(tail, (), self._row.position))
        if word := self._words.flush():
            self._all_words.append(word)
            events.append(WordDone(word))
        self.result = self._transcript()
        return events

    def _delta(self, text: str, ids: tuple[int, ...], position: int) -> TextDelta:
        self._text.append(text)
        start, end = self.schedule.step_time(position), self.schedule.step_time(position + 1)
        if self._ended:  # the flush decodes the right pad: no time past the audio's end
            start, end = min(start, self.audio_seconds), min(end, self.audio_seconds)
        start = max(start, 0.0)
        return TextDelta(text, ids, start, max(end, start))

    def _transcript(self) -> Transcript:
        steps = len(self._tokens)
        audio = self.audio_seconds
        stats = Stats(
            audio_seconds=audio,
            decoder_steps=steps,
            decoder_passes=self._passes,
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


class SessionPool:
    """Sessions run together: each step is one encoder call for the sessions that need
    encoded positions (EncoderBatch) and one decoder pass that advances every session with
    positions waiting (its prompt, one position, or a draft), so B streams cost one read of
    the weights instead of B.

        pool = SessionPool(model)
        a, b = pool.add(delay_ms=480), pool.add(delay_ms=960, sample_rate=48000)
        a.push(chunk_a); b.push(chunk_b)        # audio in (mel frames)
        for session, events in pool.step().items(): ...   # encoder + decoder, both
        b.end()                                   # b's audio is over: steps flush it
        pool.remove(a)                            # a leaves; b goes on

    `Session.feed` and `Session.finish` work on a pooled session too (they decode that
    session alone). Each session's tokens are those of its solo run (tested)."""

    def __init__(self, model: VoxtralRealtime, max_pass: int = MAX_PASS):
        self.model = model
        text_from = model.tokenizer.num_special_tokens if model.tokenizer else 0
        self.batch = DecoderBatch(model.decoder, max_pass, text_from)
        self.encoders = EncoderBatch(model.encoder, ENCODER_BATCH_TOKENS)
        self._sessions: set[Session] = set()
        self._passes = 0

    @property
    def sessions(self) -> list[Session]:
        return list(self._sessions)

    def add(self, delay_ms: int | None = None, **kwargs) -> Session:
        """A new session in this pool (the keywords of Session)."""
        return Session(self.model, delay_ms, pool=self, **kwargs)

    def remove(self, session: Session) -> None:
        """The session leaves the pool (at any point; its decoder row is freed)."""
        if session._row is not None and session in self._sessions:
            self.batch.remove(session._row)
            self.encoders.remove(session._encoder)
            session._row = None
            self._sessions.discard(session)

    def step(self) -> dict[Session, list[Event]]:
        """One decoder pass for every session with positions waiting; returns each
        session's events (a session that has ended and is fully decoded gets its last
        events and its `result`)."""
        return self._pass(self.sessions)

    def drain(self, session: Session) -> list[Event]:
        """Decode every position `session` has waiting (passes of that session alone)."""
        events: list[Event] = []
        while True:
            out = self._pass([session])
            events += out.get(session, [])
            if not out or session.result is not None:
                return events

    def _encode(self, sessions: list[Session]) -> None:
        """One encoder call for every session that needs encoded positions for the next
        pass: up to ENCODER_BATCH_TOKENS tokens, shared out so the call pads few rows."""
        wanted = {s: n for s in sessions if (n := s._wants_encoding())}
        if not wanted:
            return
        tic = time.perf_counter()
        most = max(1, ENCODER_BATCH_TOKENS // len(wanted))
        dtype = self.model.dtype
        mels = {s: mx.array(s._mel.pull(min(n, most)), dtype=dtype) for s, n in wanted.items()}
        frames = self.encoders.run({s._encoder: mel for s, mel in mels.items()})
        embeds = {s: self.model.adapter(frames[s._encoder][None])[0] for s in wanted}
        mx.eval(list(embeds.values()))
        elapsed = time.perf_counter() - tic
        for s, e in embeds.items():
            s._add_encoded(e)
            s._elapsed += elapsed

    def _pass(self, sessions: list[Session]) -> dict[Session, list[Event]]:
        self._encode(sessions)
        inputs, out = {}, {}
        for s in sessions:
            given = s._next_input()
            if given is not None:
                inputs[s] = given
            elif s._ended and s.result is None and not s._mel.available_tokens():
                out[s] = s._finalize()
        if not inputs:
            return out
        # prompts in passes of their own (the others are not padded to their length)
        for s in [s for s in inputs if s._last_token is None]:
            tic = time.perf_counter()
            audio, prompt = inputs.pop(s)
            token = self.batch.prefill(s._row, audio, prompt, bias=s._bonus())[0, -1].item()
            s._take(audio.shape[0])
            s._elapsed += time.perf_counter() - tic
            s._passes += 1
            out[s] = out.get(s, []) + s._decoded(token, s._row.position - 1)
        if not inputs:
            return out
        if len(inputs) > 1:  # drafts shortened so the pass holds PASS_POSITIONS at most
            most = max(1, PASS_POSITIONS // len(inputs))
            inputs = {s: (audio[:most], ids[:most]) for s, (audio, ids) in inputs.items()}
        tic = time.perf_counter()
        bias = {s._row: b for s in inputs if (b := s._bonus()) is not None}
        tokens = self.batch.run({s._row: given for s, given in inputs.items()}, bias=bias)
        rows = {row: b for b, row in enumerate(self.batch.rows)}
        grid = tokens.tolist()
        elapsed = time.perf_counter() - tic
        for s, (audio, _) in inputs.items():
            n = audio.shape[0]
            start = s._row.position - n
            accepted, events = s._verify(grid[rows[s._row]][:n], start)
            self.batch.rewind(s._row, n - accepted)  # a rejected draft's positions
            s._take(accepted)
            s._elapsed += elapsed
            s._passes += 1
            out[s] = out.get(s, []) + events
        self._passes += 1
        if self._passes % CLEAR_CACHE_EVERY == 0:
            mx.clear_cache()
        return out


def stream_bytes(model: VoxtralRealtime, max_pass: int = MAX_PASS) -> int:
    """The most memory one stream's caches take: its decoder row at the full ring (window +
    max_pass - 1 positions; every row of a pool has the longest row's capacity) and its
    encoder row (a ring of window - 1 frames plus those of the largest encoder call,
    ENCODER_BATCH_TOKENS tokens of 4 frames)."""
    dec, enc = model.args.decoder, model.args.encoder
    decoder = dec.n_layers * 2 * dec.n_kv_heads * dec.head_dim
    encoder = enc.n_layers * 2 * enc.n_kv_heads * enc.head_dim
    positions = dec.sliding_window + max_pass - 1
    frames = enc.sliding_window - 1 + ENCODER_BATCH_TOKENS * model.args.downsample_factor
    return (decoder * positions + encoder * frames) * model.dtype.size


def streams_that_fit(model: VoxtralRealtime) -> int:
    """How many streams half the memory the weights leave free holds, each at its most
    (`stream_bytes`), from 1 to 64."""
    from mlx.utils import tree_flatten

    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    weights = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    return max(1, min(64, (total - weights) // 2 // stream_bytes(model)))
