"""The streaming engine: one decode schedule for live audio, files and many streams at once.

`Session.feed(samples)` takes audio in chunks of any size and returns the events it produced;
`finish()` appends the right pad so the words still behind the delay come out, and sets
`result`, the whole Transcript. Every stage keeps its own bounded state (MODEL.md "Streaming",
"Encoder rows", "Decoder passes"):

    StreamResampler (its filter's last samples) -> StreamingMel (the samples of the frames
    not yet computed)
      -> a row of the pool's EncoderBatch (2 mel frames, 1 conv1 frame, its position; its KV
         ring, up to window + 4 x 94 - 1 frames, in the batch's rings)
      -> adapter (whole tokens only: no remainder) -> the positions encoded, not yet decoded
      -> a row of the pool's DecoderBatch (next position, AdaRMSNorm weights of its delay; its
         KV ring, up to window + max_pass - 1 positions), and the last output token

A `SessionPool` decodes many sessions together: one decoder pass reads the weights once
for every stream that has audio waiting. A lone Session is a pool of one. Each session has a
`Lane` in its pool: the model's side of it (mel to encode, rows, encoded positions, the last
output, the draft's statistics), which the pool drives.
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
from .encoder import EncoderBatch, EncoderRow
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
# A stream fed from a queue (a server's connection, transcribe_many's files) gives its session
# more audio while fewer positions than this (2 s) wait for the decoder: the rest waits in its
# queue, where backpressure sees it, and the decoder's backlog stays short.
DECODABLE_AHEAD = 25


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

    `settle_seconds`: a word is complete (WordDone) once this much audio has passed with no
    text added to it, without waiting for the next word (None: only the next word or the
    end completes it). For transcripts that must show a speaker's last word before they
    speak again (`voxtral meeting`); the text is the same either way.

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
        settle_seconds: float | None = None,
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
        self.settle_seconds = settle_seconds
        self.context_bias = ContextBias.build(self.tokenizer, context_bias)
        self.pool = pool if pool is not None else SessionPool(model)
        if self.pool.model is not model:
            raise VoxtralError("a session and its pool must share one model")
        self.lane: Lane | None = None  # its place in its pool (a new one at each reset)
        self.reset()

    # --- public API ---
    def reset(self) -> None:
        """Forget the audio and text so far; keep the model, the delay, the rate, the pool."""
        schedule = self.schedule
        self._resampler = StreamResampler(self.sample_rate, schedule.sample_rate)
        if self.lane is not None:
            self.pool.remove(self)
        self.lane = self.pool.join(self)
        self._matcher: BiasMatcher | None = self.context_bias and self.context_bias.matcher()
        self._ended = False  # finish() has pushed the right pad
        self._detok = self.tokenizer.detokenizer()
        self._held_ids: list[int] = []  # text ids whose text the detokenizer holds back
        self._words = WordTracker(self.tokenizer, schedule)
        self._all_words: list[Word] = []
        self._tokens: list[int] = []
        self._forgotten = 0  # outputs dropped from the front of _tokens (forget())
        self._text: list[str] = []
        self._samples_in = 0  # at the model's rate
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
    def settled_seconds(self) -> float:
        """Every word that starts before this audio time is out (a WordDone); infinite once
        the session is finished. Rounded to the millisecond, as word times are."""
        if self.result is not None:
            return math.inf
        since = self._words.open_since
        now = self.transcribed_seconds
        return round(now if since is None else min(since, now), 3)

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
        return self.lane.elapsed

    @property
    def backlog_seconds(self) -> float:
        """Audio fed but not decoded yet (look-ahead and delay not counted)."""
        decoded = self.schedule.decoded_seconds(self.lane.position)
        return max(self.audio_seconds - decoded, 0.0)

    @property
    def pending_positions(self) -> int:
        """Positions whose audio is there, waiting for the encoder or the decoder."""
        return self.lane.pending_positions

    @property
    def decodable_positions(self) -> int:
        """Positions the decoder can take (none until the whole prompt's audio is there)."""
        return self.lane.decodable_positions

    @property
    def ended(self) -> bool:
        """`end()` (or `finish()`) was called: no more audio can be added."""
        return self._ended

    @property
    def wants_audio(self) -> bool:
        """Whether a stream fed from a queue should give this session more audio now: it has
        not ended, and fewer than DECODABLE_AHEAD positions wait for the decoder."""
        return not self._ended and self.decodable_positions < DECODABLE_AHEAD

    @property
    def state_bytes(self) -> int:
        """Memory held by this session's caches: its encoder and decoder rows' rings (each
        grows with the stream up to its window)."""
        lane = self.lane
        return self.pool.encoders.row_bytes(lane.encoder) + self.pool.batch.row_bytes(lane.row)

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
        self.lane.mel.push(samples)

    def end(self) -> None:
        """The end of the audio: the resampler's tail and the right pad go in; the session
        is finished once the pool has encoded and decoded every position (SessionPool)."""
        self._check_open()
        self.push(self._resampler(np.zeros(0, np.float32), last=True), resampled=True)
        self._words.duration = self.audio_seconds
        self.lane.mel.push(np.zeros(self.schedule.end_pad_samples(self._samples_in), np.float32))
        self._ended = True

    def _check_open(self) -> None:
        if self.result is not None:
            raise VoxtralError("this session is finished: call reset() to start a new one")
        if self._ended:
            raise VoxtralError("this session is finishing: no more audio can be added")

    def set_context_bias(self, context_bias: ContextBiasInput | ContextBias) -> None:
        """Another list (as `context_bias` of the constructor) from the next position on; a
        phrase the old list was matching is dropped."""
        self.context_bias = ContextBias.build(self.tokenizer, context_bias)
        written = self._forgotten or any(
            t >= self.tokenizer.num_special_tokens for t in self._tokens
        )
        self._matcher = self.context_bias and self.context_bias.matcher(at_start=not written)

    def bonus(self) -> Bonus | None:
        """The context-bias bonus of this session's next positions (None: no list)."""
        return self._matcher.bonus() if self._matcher else None

    def settle(self, outputs: list[int]) -> list[int]:
        """A pass's outputs for this session as it takes them (BiasMatcher.settle; the
        outputs themselves without a list)."""
        if not self._matcher:
            return outputs
        return [self._matcher.settle(token) for token in outputs]

    # --- the outputs, from its pool ---
    def decoded(self, tokens: list[int], position: int) -> list[Event]:
        """Its pool's outputs at decoder positions `position`, `position + 1`, ...: the
        events of their text and words."""
        events: list[Event] = []
        for i, token in enumerate(tokens):
            self._tokens.append(token)
            if self._matcher:
                self._matcher.advance(token)
            word = self._words.add(position + i, token)
            if word is None and self.settle_seconds is not None:
                word = self._words.settle(position + i, self.settle_seconds)
            if word is not None:
                self._all_words.append(word)
                events.append(WordDone(word))
            if not self.tokenizer.is_special(token):
                self._held_ids.append(token)  # its text may wait for the rest of a character
            if text := self._detok.add(token):
                events.append(self._delta(text, position + i))
        return events

    def finalize(self) -> list[Event]:
        """Once it ended and its pool has decoded every position: the held-back text and
        word; sets `result`."""
        events: list[Event] = []
        if (tail := self._detok.flush()) or self._held_ids:
            events.append(self._delta(tail, self.lane.position))
        if word := self._words.flush():
            self._all_words.append(word)
            events.append(WordDone(word))
        self.result = self._transcript()
        return events

    def _delta(self, text: str, position: int) -> TextDelta:
        """The text decoded at `position`, with the ids of every text token it holds."""
        ids, self._held_ids = tuple(self._held_ids), []
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
            decoder_passes=self.lane.passes,
            elapsed_seconds=self.lane.elapsed,
            tokens_per_second=steps / self.lane.elapsed if self.lane.elapsed else 0.0,
            real_time_factor=self.lane.elapsed / audio if audio else 0.0,
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


class Lane:
    """A session's place in its pool, the model's side of it, which the pool drives: the mel
    frames its session pushes, its encoder and decoder rows, the audio embeddings encoded and
    not decoded yet, the last output, and the runs of [STREAMING_PAD] that size its drafts
    (MODEL.md "Drafted pads"). `SessionPool.join` makes it."""

    def __init__(self, session: Session, encoder: EncoderRow, row: Row):
        schedule, tokenizer = session.schedule, session.tokenizer
        self.mel = StreamingMel(schedule)
        self.encoder, self.row = encoder, row
        self.prompt = tokenizer.prompt(schedule.prompt_length)
        self.pad_id = tokenizer.streaming_pad_id
        self.tokenizer, self.stop_at_eos = tokenizer, session.stop_at_eos
        self.max_draft = session.max_draft
        self.pending: mx.array | None = None  # adapter outputs not decoded yet [n, dim]
        self.last_token: int | None = None  # the output at position `position` - 1
        self.in_flight = 0  # positions of a pass started before the last one was read
        self.stopped = False  # EOS came (stop_at_eos)
        self.run = 0  # [STREAMING_PAD]s output since the last other token
        self.runs = self.max_draft / 4  # recent pad runs: a moving average (see draft)
        self.passes = 0
        self.elapsed = 0.0  # wall time in the model (passes shared with others count in full)

    @property
    def encoded(self) -> int:
        return 0 if self.pending is None else self.pending.shape[0]

    @property
    def position(self) -> int:
        """The decoder position of the next output taken (a pass started ahead aside)."""
        return self.row.position - self.in_flight

    @property
    def pending_positions(self) -> int:
        """Positions whose audio is there, waiting for the encoder or the decoder."""
        return self.encoded + (0 if self.stopped else self.mel.available_tokens())

    @property
    def decodable_positions(self) -> int:
        """Positions the decoder can take (none until the whole prompt's audio is there)."""
        if self.stopped or (self.last_token is None and self.pending_positions < len(self.prompt)):
            return 0
        return self.pending_positions

    def wants_encoding(self) -> int:
        """Tokens of mel to encode before the next pass (0: enough encoded, or none)."""
        available = self.mel.available_tokens()
        if self.stopped:
            self.mel.pull(available)  # keep the grid moving, skip the model
            return 0
        need = len(self.prompt) if self.last_token is None else self.max_draft
        return available if self.encoded < need else 0

    def add_encoded(self, embeds: mx.array) -> None:
        self.pending = embeds if self.pending is None else mx.concatenate([self.pending, embeds])

    def next_input(self, max_pass: int) -> tuple[mx.array, list[int]] | None:
        """What the next pass takes: (audio embeddings, token ids), or None."""
        if self.stopped or self.pending is None:
            return None
        if self.last_token is None:  # the prompt
            L = len(self.prompt)
            return (self.pending[:L], self.prompt) if self.encoded >= L else None
        k = min(self.draft(), self.encoded, max_pass)
        return self.pending[:k], [self.last_token] + [self.pad_id] * (k - 1)

    def next_input_ahead(self, token: mx.array, max_pass: int) -> tuple[mx.array, mx.array] | None:
        """The input of the pass after the one in flight, which gives this lane one position
        and whose output `token` [1] is not read yet (lazy): the next encoded positions, that
        token, and drafted pads; None when fewer than two positions are encoded (the one in
        flight takes the first). The draft's length comes from the outputs read so far, one
        fewer than `next_input` would have: that changes how many positions a pass tries,
        never the tokens (MODEL.md "Drafted pads")."""
        if self.stopped or self.last_token is None or self.encoded < 2:
            return None
        k = min(self.draft(), self.encoded - 1, max_pass)
        pads = mx.array([self.pad_id] * (k - 1), dtype=token.dtype)
        return self.pending[1 : 1 + k], mx.concatenate([token, pads]) if k > 1 else token

    def draft(self) -> int:
        """Positions for the next pass: twice the expected run of [STREAMING_PAD] (the
        recent runs' moving average, halved at the end of each run, or the current run if
        longer), rounded up to a power of two, 1 to max_draft: 1 (no draft) while the
        output has few pads, as in continuous speech."""
        expected = 2 * max(self.runs, self.run)
        return min(self.max_draft, 1 << max(0, math.ceil(math.log2(max(expected, 1)))))

    def take(self, n: int) -> None:
        """The first n encoded positions are decoded."""
        if self.pending is None:  # EOS stopped the session: nothing is left to decode
            return
        rest = self.pending[n:]
        self.pending = rest if rest.shape[0] else None

    def accept(self, outputs: list[int]) -> list[int]:
        """The outputs of a pass at its positions that are exact: the first (its input was
        the last output), and each next one while the one before it was the drafted
        [STREAMING_PAD]."""
        for j, token in enumerate(outputs):
            self.last_token = token
            if token == self.pad_id:
                self.run += 1
            else:
                self.runs, self.run = (self.runs + self.run) / 2, 0
            if token == self.tokenizer.eos_id and self.stop_at_eos:
                self.stopped = True
                self.pending = None
            if token != self.pad_id or self.stopped:
                return outputs[: j + 1]
        return outputs


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
        self._ahead: Ahead | None = None  # a pass built before the last one's output is read

    @property
    def sessions(self) -> list[Session]:
        return list(self._sessions)

    def join(self, session: Session) -> Lane:
        """A lane of this pool for `session` (a session joins as it starts or resets)."""
        encoder = self.encoders.add()
        row = self.batch.add(session.schedule.n_delay_tokens)
        self._sessions.add(session)
        return Lane(session, encoder, row)

    def add(self, delay_ms: int | None = None, **kwargs) -> Session:
        """A new session in this pool (the keywords of Session)."""
        return Session(self.model, delay_ms, pool=self, **kwargs)

    def remove(self, session: Session) -> None:
        """The session leaves the pool (at any point; its decoder row is freed, and a pass
        started ahead for it is dropped)."""
        if self._ahead is not None and self._ahead.session is session:
            self._ahead.cancel(self.batch)
            self._ahead = None
        if session in self._sessions:
            self.batch.remove(session.lane.row)
            self.encoders.remove(session.lane.encoder)
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

    def _encode(self, lanes: list[Lane]) -> None:
        """One encoder call for every lane that needs encoded positions for the next pass:
        up to ENCODER_BATCH_TOKENS tokens, shared out so the call pads few rows."""
        wanted = {lane: n for lane in lanes if (n := lane.wants_encoding())}
        if not wanted:
            return
        tic = time.perf_counter()
        most = max(1, ENCODER_BATCH_TOKENS // len(wanted))
        dtype = self.model.dtype
        mels = {
            lane.encoder: mx.array(lane.mel.pull(min(n, most)), dtype) for lane, n in wanted.items()
        }
        frames = self.encoders.run(mels)
        embeds = {lane: self.model.adapter(frames[lane.encoder][None])[0] for lane in wanted}
        mx.eval(list(embeds.values()))
        elapsed = time.perf_counter() - tic
        for lane, e in embeds.items():
            lane.add_encoded(e)
            lane.elapsed += elapsed

    def _pass(self, sessions: list[Session]) -> dict[Session, list[Event]]:
        self._encode([s.lane for s in sessions])
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead.holds(sessions):
            ahead.lane.in_flight = 0  # its pass is this one; its time counts from here
            return self._finish_pass(
                ahead.inputs, ahead.tokens, ahead.rows, time.perf_counter(), {}
            )
        if ahead is not None:
            ahead.cancel(self.batch)
        inputs, out = {}, {}
        for s in sessions:
            given = s.lane.next_input(self.batch.max_pass)
            if given is not None:
                inputs[s] = given
            elif s.ended and s.result is None and not s.lane.mel.available_tokens():
                out[s] = s.finalize()
        if not inputs:
            return out
        # prompts in passes of their own (the others are not padded to their length)
        for s in [s for s in inputs if s.lane.last_token is None]:
            lane, tic = s.lane, time.perf_counter()
            audio, prompt = inputs.pop(s)
            token = self.batch.prefill(lane.row, audio, prompt, bias=s.bonus()).item()
            lane.take(audio.shape[0])
            (token,) = lane.accept(s.settle([token]))
            lane.elapsed += time.perf_counter() - tic
            lane.passes += 1
            out[s] = out.get(s, []) + s.decoded([token], lane.position - 1)
        if not inputs:
            return out
        if len(inputs) > 1:  # drafts shortened so the pass holds PASS_POSITIONS at most
            most = max(1, PASS_POSITIONS // len(inputs))
            inputs = {s: (audio[:most], ids[:most]) for s, (audio, ids) in inputs.items()}
        tic = time.perf_counter()
        bias = {s.lane.row: b for s in inputs if (b := s.bonus()) is not None}
        tokens = self.batch.run({s.lane.row: given for s, given in inputs.items()}, bias=bias)
        rows = {row: b for b, row in enumerate(self.batch.rows)}
        return self._finish_pass(inputs, tokens, rows, tic, out)

    def _finish_pass(self, inputs, tokens: mx.array, rows, tic: float, out) -> dict:
        """A pass's outputs (`tokens`, lazy; `rows`: each row's index in them) taken by its
        sessions. Before they are read, the next pass may be built and started (`_ahead`)."""
        self._ahead = self._start_ahead(inputs, tokens, rows)
        grid = tokens.tolist()
        elapsed = time.perf_counter() - tic
        for s, (audio, _) in inputs.items():
            lane, n = s.lane, audio.shape[0]
            start = lane.position - n
            accepted = lane.accept(s.settle(grid[rows[lane.row]][:n]))
            self.batch.rewind(lane.row, n - len(accepted))  # a rejected draft's positions
            lane.take(len(accepted))
            lane.elapsed += elapsed
            lane.passes += 1
            out[s] = out.get(s, []) + s.decoded(accepted, start)
        if self._ahead is not None and not self._ahead.follows():
            self._ahead.cancel(self.batch)  # EOS stopped its session
            self._ahead = None
        self._passes += 1
        if self._passes % CLEAR_CACHE_EVERY == 0:
            mx.clear_cache()
        return out

    def _start_ahead(self, inputs: dict, tokens: mx.array, rows: dict) -> Ahead | None:
        """The next pass of a lone session (the only one in its pool), built with this
        pass's output before it is read and started (mx.async_eval), so that building it
        overlaps this pass's evaluation, as mlx-lm's generation does: when this pass gives
        it one position, its outputs need no choice that depends on their value (no
        context-bias list: its bonus and settle do), and two or more positions are encoded.
        A pool of several sessions builds each pass after the last one's outputs are read
        (its next step is every session's: Ahead.holds)."""
        if len(inputs) != 1 or len(self._sessions) != 1:
            return None
        ((s, (audio, _)),) = inputs.items()
        lane = s.lane
        if audio.shape[0] != 1 or s.bonus() is not None:
            return None
        b = rows[lane.row]
        given = lane.next_input_ahead(tokens[b, :1], self.batch.max_pass)
        if given is None:
            return None
        following = self.batch.run({lane.row: given})
        mx.async_eval(following)
        lane.in_flight = given[0].shape[0]
        rows = {row: b for b, row in enumerate(self.batch.rows)}  # other rows are padded
        return Ahead(s, lane, {s: given}, following, rows)


class Ahead:
    """A pass built and started before the outputs of the pass before it were read
    (SessionPool._start_ahead): its session, the lane it was built for, its inputs, its
    outputs (lazy), their row indices. Its time in the model counts from when the pool
    takes it (the caller's time between two steps is not the session's)."""

    def __init__(self, session, lane, inputs, tokens, rows):
        self.session, self.lane = session, lane
        self.inputs, self.tokens, self.rows = inputs, tokens, rows

    def follows(self) -> bool:
        """Whether it still follows its session's outputs once the pass before it is taken:
        that pass's output was its input (no EOS stopped the session)."""
        return not self.lane.stopped

    def holds(self, sessions: list) -> bool:
        """Whether it is the pass the pool would build now for `sessions`: the same lone
        session, still in the same lane (no reset), still without a context-bias list."""
        s = self.session
        return sessions == [s] and s.lane is self.lane and s.bonus() is None

    def cancel(self, batch: DecoderBatch) -> None:
        """Undo it: its positions are forgotten (their keys stay in slots no query reads
        before they are written again, as a rejected draft's)."""
        if self.lane.row in batch.rows:
            batch.rewind(self.lane.row, self.lane.in_flight)
        self.lane.in_flight = 0


def stream_bytes(model: VoxtralRealtime, max_pass: int = MAX_PASS) -> int:
    """The most memory one stream's caches take: its decoder row at the full ring (window +
    max_pass - 1 positions) and its encoder row (a ring of window - 1 frames plus those of
    the largest encoder call, ENCODER_BATCH_TOKENS tokens of 4 frames)."""
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
