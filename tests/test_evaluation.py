"""Text normalization for `voxtral eval`: Whisper's English normalizer by default (so figures
compare with published ones), the basic one on request. No model needed."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from voxtral_mlx import VoxtralError
from voxtral_mlx.evaluation import basic_normalize, evaluate, score, text_normalizer

VOXTRAL = [sys.executable, "-m", "voxtral_cli.app"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [  # what OpenAI's own whisper.normalizers.EnglishTextNormalizer gives
        ("The colour of the theatre.", "the color of the theater"),
        ("I organised twenty five meetings.", "i organized 25 meetings"),
        ("Mr. Smith paid $5.", "mister smith paid $5"),
        ("It cost five dollars and twenty cents.", "it cost $5.20"),
        ("Ten thousand dollars", "$10000"),
        ("in 1984, 1,000 people", "in 1984 1000 people"),
        ("one two three", "123"),
        ("Hmm, um, well [laughs] (inaudible) okay", "well okay"),
        ("I won't, can't, let's", "i will not can not let us"),
        ("the cause of it, kinda", "the cause of it kinda"),  # whisper-normalizer's differ
        ("Café naïve", "cafe naive"),
        ("hello%", "hello"),  # no space left where the symbol was
    ],
)
def test_whisper_normalizer(text, expected):
    assert text_normalizer("whisper")(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The colour of the theatre.", "the colour of the theatre"),
        ("Mr. Smith paid $5.", "mr smith paid five"),
        ("in 1984, 1,000 people", "in one thousand nine hundred eighty four one thousand people"),
        ('I won\'t say "hello-world"', "i won't say hello world"),
        (
            "call 1234567890123",
            "call one two three four five six seven eight nine zero one two three",
        ),
    ],
)
def test_basic_normalizer(text, expected):
    assert text_normalizer("basic") is basic_normalize
    assert basic_normalize(text) == expected


def test_the_normalizer_changes_the_score():
    reference = "The colour of the theatre cost twenty five dollars."
    hypothesis = "The color of the theater cost $25."
    whisper = score(reference, hypothesis)  # the default
    assert (whisper.reference, whisper.hypothesis) == ("the color of the theater cost $25",) * 2
    assert whisper.words == 7 and whisper.wer == 0
    basic = score(reference, hypothesis, normalizer="basic")
    assert basic.hypothesis == "the color of the theater cost twenty five"
    assert basic.words == 9 and basic.word_errors == 3  # colour, theatre, dollars


def test_unknown_normalizer():
    with pytest.raises(VoxtralError, match="unknown normalizer 'nope'; choose one of: whisper"):
        score("a", "a", normalizer="nope")
    with pytest.raises(VoxtralError, match="unknown normalizer"):
        evaluate(None, [], 480, "nope")  # before any transcription


def test_normalizer_package_is_imported_on_first_use():
    probe = """
import sys
import voxtral_mlx.evaluation as e
assert "transformers" not in sys.modules and "mlx_lm" not in sys.modules
e.text_normalizer("whisper")
assert "transformers" not in sys.modules
e.text_normalizer("whisper")("Mr. X")
assert "transformers" in sys.modules
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_cli_rejects_an_unknown_normalizer_before_loading_a_model(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros(1600, np.float32), 16000)
    (tmp_path / "a.txt").write_text("hello\n")
    done = subprocess.run(
        [*VOXTRAL, "eval", str(tmp_path), "--model", str(tmp_path / "nowhere")]
        + ["--normalizer", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0] == "error: unknown normalizer 'nope'; choose one of: whisper, basic"
