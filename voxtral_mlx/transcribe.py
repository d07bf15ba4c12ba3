"""File transcription: "feed everything, then finish" through the streaming Session.

Light to import (`import voxtral_mlx` imports it eagerly, see __init__): the model code is
imported when `transcribe` runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import ENCODER_BATCH_TOKENS, MAX_DRAFT, SAMPLE_RATE

if TYPE_CHECKING:
    from .errors import VoxtralError
    from .model import VoxtralRealtime
    from .session import Session, Transcript


def transcribe(
    model: VoxtralRealtime,
    audio: str | Path | Any,
    delay_ms: int | None = None,
    progress: Callable[[float, float], None] | None = None,
    *,
    sample_rate: int = SAMPLE_RATE,
    max_draft: int = MAX_DRAFT,
    context_bias: Any = None,
) -> Transcript:
    """Transcribe a file, or in-memory samples at `sample_rate` (see `audio.as_samples`),
    greedily: the offline schedule, which stops at EOS and never runs past the padded audio.

    `delay_ms`: None for the checkpoint's own delay. `progress(seconds_done, seconds_total)`
    is called after each block of audio. `max_draft`, `context_bias` (custom vocabulary):
    see Session.
    """
    from .audio import as_samples, load_audio
    from .session import Session

    if isinstance(audio, (str, Path)):
        samples, sample_rate = load_audio(audio), SAMPLE_RATE
    else:
        samples = as_samples(audio)
    session = Session(
        model,
        delay_ms,
        stop_at_eos=True,
        sample_rate=sample_rate,
        max_draft=max_draft,
        context_bias=context_bias,
    )
    block = round(ENCODER_BATCH_TOKENS * session.schedule.seconds_per_token * sample_rate)
    total = len(samples) / sample_rate
    for lo in range(0, len(samples), block):
        session.feed(samples[lo : lo + block])
        if progress is not None:
            progress(min(lo + block, len(samples)) / sample_rate, total)
    session.finish()
    return session.result


def transcribe_many(
    model: VoxtralRealtime,
    sources: Iterable[str | Path | Any],
    delay_ms: int | None = None,
    batch: int = 8,
    *,
    context_bias: Any = None,
) -> Iterator[tuple[int, Transcript | VoxtralError]]:
    """Transcribe many files (or 16 kHz arrays) `batch` at a time through one SessionPool:
    each decoder pass reads the weights once for every file in flight. Yields (index in
    `sources`, Transcript) as each file is done, or (index, VoxtralError) for one that
    cannot be read; sources are opened only when their turn comes. Each result equals
    `transcribe()` of that file alone. `context_bias`: one list for every file (Session)."""
    from .audio import as_samples, load_audio
    from .errors import VoxtralError
    from .session import SessionPool

    if batch < 1:
        raise VoxtralError(f"batch must be at least 1, got {batch}")
    pool = SessionPool(model)
    if context_bias is not None:  # one tree for every file (parsed before any file opens)
        from .biasing import ContextBias

        context_bias = ContextBias.build(model.tokenizer, context_bias)
    waiting = iter(enumerate(sources))
    active: dict[Session, _File] = {}
    while True:
        while len(active) < batch and (item := next(waiting, None)) is not None:
            index, source = item
            try:
                samples = load_audio(source) if isinstance(source, (str, Path)) else source
                samples = as_samples(samples)
            except VoxtralError as e:
                yield index, e
                continue
            session = pool.add(delay_ms, stop_at_eos=True, context_bias=context_bias)
            active[session] = _File(index, samples)
        if not active:
            return
        for session, file in active.items():
            file.feed(session)
        pool.step()
        for session in [s for s in active if s.result is not None]:
            yield active.pop(session).index, session.result
            pool.remove(session)


class _File:
    """A file being fed to its pooled session a block at a time, while the decoder keeps up."""

    def __init__(self, index: int, samples):
        self.index, self.samples, self.fed = index, samples, 0

    def feed(self, session: Session) -> None:
        block = ENCODER_BATCH_TOKENS * session.schedule.samples_per_token
        if not session.wants_audio:
            return
        session.push(self.samples[self.fed : self.fed + block])
        self.fed += block
        if self.fed >= len(self.samples):
            session.end()
