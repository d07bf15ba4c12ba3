"""Word and character error rates over folders of audio with reference transcripts.

Layout: NAME.wav (or .flac, .mp3, .ogg, .m4a, ...) beside NAME.txt holding the reference.
Both sides are normalized first, by one of NORMALIZERS:

- "whisper" (the default): Whisper's English text normalizer, the usual one for published
  English WER figures (it came with Whisper's): lower case, punctuation and fillers dropped,
  contractions and titles expanded, British spellings made American, numbers and currencies
  written with digits ("Mr. Smith paid five dollars" -> "mister smith paid $5"). The code is
  transformers' copy of OpenAI's; the spelling list is OpenAI's, from whisper-normalizer.
- "basic": lower case, numbers spelled out, punctuation dropped, white space collapsed, so
  "Mr. Smith paid $5." and "mr smith paid five" compare equal but for the "$" sign (symbols
  are dropped, not read out).
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import VoxtralError
from .transcribe import transcribe

if TYPE_CHECKING:  # model code is imported only when a model is loaded
    from .model import VoxtralRealtime

NORMALIZERS = {  # name -> what it is, as the eval command's summary line says
    "whisper": "Whisper's English text normalizer",
    "basic": "lower case, numbers spelled out, punctuation dropped",
}
DEFAULT_NORMALIZER = "whisper"
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".mp4", ".webm", ".aac")
ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_to_words(n: int) -> str:
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])
    for size, name in (
        (10**9, "billion"),
        (10**6, "million"),
        (1000, "thousand"),
        (100, "hundred"),
    ):
        if n >= size:
            head, rest = divmod(n, size)
            return f"{number_to_words(head)} {name}" + (f" {number_to_words(rest)}" if rest else "")
    raise AssertionError(n)


def basic_normalize(text: str) -> str:
    """Lower case, numbers spelled out, punctuation dropped, white space collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 1,000 -> 1000
    text = re.sub(
        r"\d+",
        lambda m: (
            f" {number_to_words(int(m.group()))} "
            if len(m.group()) < 13
            else " ".join(ONES[int(d)] for d in m.group())
        ),
        text,
    )
    text = re.sub(r"[-_/]", " ", text)
    text = re.sub(r"[^\w\s']", "", text)
    text = re.sub(r"'(?!\w)|(?<!\w)'", "", text)  # quotes, not contractions
    return " ".join(text.split())


@cache
def whisper_english_normalizer() -> Callable[[str], str]:
    """Whisper's EnglishTextNormalizer (built once: it loads the spelling list). The code is
    transformers' copy of OpenAI's; the British-to-American spelling list it needs (Whisper's
    english.json, which transformers reads from a tokenizer on the hub) comes from the
    whisper-normalizer package, which ships it unchanged."""
    import os
    from importlib.resources import files

    # transformers says at import that PyTorch is missing (a user of eval needs none): its
    # advisory warnings are off while it is imported
    advisory = os.environ.get("TRANSFORMERS_NO_ADVISORY_WARNINGS")
    os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
    try:
        from transformers.models.whisper.english_normalizer import EnglishTextNormalizer
    finally:
        if advisory is None:
            del os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"]
        else:
            os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = advisory

    spellings = files("whisper_normalizer") / "normalizers" / "english.json"
    return EnglishTextNormalizer(json.loads(spellings.read_text(encoding="utf-8")))


def whisper_normalize(text: str) -> str:
    """Whisper's English normalization, then single spaces between words and none around them
    (Whisper's can leave one where it dropped a symbol: "hello%" -> "hello ")."""
    return " ".join(whisper_english_normalizer()(text).split())


def check_normalizer(name: str) -> None:
    """Raise VoxtralError unless `name` is one of NORMALIZERS."""
    if name not in NORMALIZERS:
        raise VoxtralError(f"unknown normalizer {name!r}; choose one of: {', '.join(NORMALIZERS)}")


def text_normalizer(name: str) -> Callable[[str], str]:
    """The text normalizer called `name` (a key of NORMALIZERS)."""
    check_normalizer(name)
    return whisper_normalize if name == "whisper" else basic_normalize


@dataclass(frozen=True)
class FileScore:
    audio: str
    reference: str
    hypothesis: str
    words: int
    word_errors: int
    chars: int
    char_errors: int

    # jiwer's convention, for a file as for the total: errors over the reference's words (or
    # characters), at least one, so an empty reference counts every inserted word as an error

    @property
    def wer(self) -> float:
        return self.word_errors / max(self.words, 1)

    @property
    def cer(self) -> float:
        return self.char_errors / max(self.chars, 1)


@dataclass
class Report:
    normalizer: str = DEFAULT_NORMALIZER  # the name of the one that produced the scores
    files: list[FileScore] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, why): pairs skipped
    audio_seconds: float = 0.0
    elapsed_seconds: float = 0.0

    @property
    def wer(self) -> float:
        return sum(f.word_errors for f in self.files) / max(sum(f.words for f in self.files), 1)

    @property
    def cer(self) -> float:
        return sum(f.char_errors for f in self.files) / max(sum(f.chars for f in self.files), 1)


def score(
    reference: str, hypothesis: str, audio: str = "", normalizer: str = DEFAULT_NORMALIZER
) -> FileScore:
    """Word and character errors of `hypothesis` against `reference`, both normalized."""
    import jiwer

    normalize = text_normalizer(normalizer)
    ref, hyp = normalize(reference), normalize(hypothesis)
    words = jiwer.process_words(ref or " ", hyp or " ") if ref or hyp else None
    chars = jiwer.process_characters(ref or " ", hyp or " ") if ref or hyp else None
    word_errors = 0 if words is None else words.substitutions + words.deletions + words.insertions
    char_errors = 0 if chars is None else chars.substitutions + chars.deletions + chars.insertions
    return FileScore(audio, ref, hyp, len(ref.split()), word_errors, len(ref), char_errors)


def find_pairs(paths: list[Path]) -> list[tuple[Path, Path]]:
    """(audio, reference .txt) pairs from files and folders (searched recursively)."""
    pairs = []
    for path in paths:
        if path.is_dir():
            audio = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        elif path.is_file():
            audio = [path]
        else:
            raise VoxtralError(f"no such file or folder: {path}")
        for a in audio:
            ref = a.with_suffix(".txt")
            if ref.is_file():
                pairs.append((a, ref))
            elif path.is_file():
                raise VoxtralError(f"{a} has no reference transcript {ref.name} beside it")
    if not pairs:
        raise VoxtralError(
            "no audio files with a NAME.txt reference found in " + ", ".join(map(str, paths))
        )
    return pairs


def read_reference(path: Path) -> str:
    """A reference transcript: UTF-8 (a byte-order mark dropped; any line ends)."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise VoxtralError(
            f"{path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}): "
            "save it as UTF-8"
        ) from None
    except OSError as e:
        raise VoxtralError(f"cannot read {path}: {e.strerror}") from None


def evaluate(
    model: VoxtralRealtime,
    pairs: list[tuple[Path, Path]],
    delay_ms: int,
    normalizer: str = DEFAULT_NORMALIZER,
    report: Report | None = None,
    context_bias: object = None,
) -> Report:
    """Transcribe each (audio, reference) pair and score it with the named normalizer. A
    pair whose reference or audio cannot be read is skipped, with why (`Report.failed`).
    `report`: the Report to fill as files are done, so a caller interrupted midway keeps
    the scores so far. `context_bias`: one list for every file (see Session)."""
    check_normalizer(normalizer)
    report = Report(normalizer) if report is None else report
    references = {}
    for audio, ref in pairs:  # every reference first: a bad one is known before any decoding
        try:
            references[audio] = read_reference(ref)
        except VoxtralError as e:
            report.failed.append((str(ref), str(e)))
    tic = time.perf_counter()
    for audio, reference in references.items():
        try:
            result = transcribe(model, audio, delay_ms=delay_ms, context_bias=context_bias)
        except VoxtralError as e:
            report.failed.append((str(audio), str(e)))
            continue
        finally:
            report.elapsed_seconds = time.perf_counter() - tic
        report.files.append(score(reference, result.text, str(audio), normalizer))
        report.audio_seconds += result.audio_seconds
    return report
