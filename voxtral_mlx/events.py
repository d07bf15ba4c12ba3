"""What a session yields: its events, and the Transcript it ends with. No model code here, so
that a client of a server (voxtral live --server) uses them without importing MLX."""

from __future__ import annotations

from dataclasses import dataclass

from .words import Word


@dataclass(frozen=True)
class TextDelta:
    """New text, append-only. `start`/`end`: the audio time (s) the tokens speak about
    (None from a remote server that sends no times, as vLLM's)."""

    text: str
    token_ids: tuple[int, ...]
    start: float | None
    end: float | None


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
    decoder_passes: int = 0  # passes it took part in: fewer than steps when drafts verify


@dataclass(frozen=True)
class Transcript:
    """The final result: `Session.result`, and what `transcribe()` returns."""

    text: str
    tokens: list[int]  # every generated id in order, pads (and EOS) included
    words: list[Word]
    delay_ms: int | None  # None: not known (a remote server that does not say which it used)
    stats: Stats

    @property
    def audio_seconds(self) -> float:
        return self.stats.audio_seconds


Event = TextDelta | WordDone
