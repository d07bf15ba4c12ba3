"""Text normalization for `voxtral eval`: Whisper's English normalizer by default (so figures
compare with published ones), the basic one on request. No model needed."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from clirun import voxtral
from conftest import TRAINED

from voxtral_mlx import VoxtralError
from voxtral_mlx.evaluation import basic_normalize, evaluate, score, text_normalizer


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
assert "transformers" not in sys.modules and "mlx_lm.models.cache" not in sys.modules
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
    done = voxtral("eval", tmp_path, "--model", tmp_path / "nowhere", "--normalizer", "nope")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0] == "error: unknown normalizer 'nope'; choose one of: whisper, basic"


@pytest.fixture
def eval_folder(held_out, tmp_path):
    """Three held-out clips with their references, and what a new user's folder also holds:
    a reference with a byte-order mark and Windows line ends, one that is not UTF-8, an
    empty one, and audio that cannot be decoded."""
    folder, utterances = held_out
    for i in range(5):
        for suffix in (".wav", ".txt"):
            shutil.copy(folder / f"utt{i:04d}{suffix}", tmp_path / f"utt{i:04d}{suffix}")
    (tmp_path / "utt0001.txt").write_bytes(b"\xef\xbb\xbf" + utterances[1].text.encode() + b"\r\n")
    (tmp_path / "utt0002.txt").write_bytes(b"go b\xe4ck\n")  # Latin-1
    (tmp_path / "utt0003.txt").write_text("")
    (tmp_path / "zzz.wav").write_bytes(b"RIFF, but no audio")
    (tmp_path / "zzz.txt").write_text("nothing\n")
    return tmp_path, utterances


def test_eval_skips_what_it_cannot_read_and_scores_the_rest(eval_folder):
    """A reference that is not UTF-8 and audio that cannot be decoded are one line each and
    skipped; the others are scored (a BOM and CRLF change nothing); exit code 1."""
    folder, utterances = eval_folder
    done = voxtral("eval", folder, "--model", TRAINED, "--json")
    assert done.returncode == 1, done.stderr
    reference, audio = done.stderr.splitlines()
    assert reference == (
        f"error: {folder / 'utt0002.txt'} is not UTF-8 text (byte 0xe4 at offset 4): "
        "save it as UTF-8"
    )
    assert audio.startswith(f"error: cannot decode {folder / 'zzz.wav'}: ")
    report = json.loads(done.stdout)
    scored = {Path(f["audio"]).stem: f for f in report["files"]}
    assert sorted(scored) == ["utt0000", "utt0001", "utt0003", "utt0004"]
    assert [f["file"] for f in report["failed"]] == [
        str(folder / "utt0002.txt"),
        str(folder / "zzz.wav"),
    ]
    assert scored["utt0001"]["reference"] == text_normalizer("whisper")(utterances[1].text)
    assert report["partial"] is False


def test_an_empty_reference_counts_as_jiwer_counts_it(eval_folder, trained):
    """Errors over reference words, at least one, for a file as for the total: the row of an
    empty reference and a total over it alone agree (every word written is an insertion)."""
    folder, utterances = eval_folder
    report = evaluate(trained, [(folder / "utt0003.wav", folder / "utt0003.txt")], 480)
    (empty,) = report.files
    inserted = len(empty.hypothesis.split())
    assert empty.words == 0 and inserted > 0 and empty.word_errors == inserted
    assert empty.wer == report.wer == inserted
    assert empty.cer == report.cer == len(empty.hypothesis)
    import jiwer

    assert empty.wer == jiwer.process_words("", empty.hypothesis).wer
    both = evaluate(
        trained, [(folder / f"utt000{i}.wav", folder / f"utt000{i}.txt") for i in (0, 3)], 480
    )
    errors = sum(f.word_errors for f in both.files)
    assert both.wer == errors / both.files[0].words


def test_eval_ctrl_c_prints_the_scores_so_far(eval_folder, monkeypatch, capsys):
    """Ctrl+C (KeyboardInterrupt, as Python raises it for SIGINT) while the second file is
    transcribed: the first file's score, marked partial, and exit code 130."""
    from typer.testing import CliRunner
    from voxtral_cli.app import app

    import voxtral_mlx.evaluation as evaluation

    folder, _ = eval_folder
    real, calls = evaluation.transcribe, []

    def interrupted_on_the_second(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "transcribe", interrupted_on_the_second)
    paths = [str(folder / "utt0000.wav"), str(folder / "utt0004.wav")]
    done = CliRunner().invoke(app, ["eval", *paths, "--model", str(TRAINED)])
    assert done.exit_code == 130, done.output
    assert "utt0000.wav" in done.stdout and "utt0004.wav" not in done.stdout
    assert "partial: WER" in done.stdout and "overall" not in done.stdout
    assert done.stderr.strip() == "interrupted: stopped after 1 of 2 files: the scores are partial"
