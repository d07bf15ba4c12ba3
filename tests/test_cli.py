"""The `voxtral` command on a tiny checkpoint the tests write."""

import subprocess
import sys

import pytest
import soundfile as sf
from typer.testing import CliRunner
from voxtral_cli.app import app, parse_delay

import voxtral_mlx

runner = CliRunner()


@pytest.mark.parametrize(
    "text,ms",
    [("480", 480), ("480ms", 480), ("0.48s", 480), ("2.4s", 2400), ("80ms", 80), ("1200", 1200)],
)
def test_parse_delay(text, ms):
    assert parse_delay(text) == ms


@pytest.mark.parametrize("text", ["500", "0", "abc", "1.5s", "2400s", "-80"])
def test_parse_delay_rejects(text):
    import typer

    with pytest.raises(typer.BadParameter, match="80, 160, 240.*1200, 2400 ms"):
        parse_delay(text)


def test_transcribe_prints_text(official_dir, model, jfk, tmp_path):
    wav = tmp_path / "jfk.wav"
    sf.write(wav, jfk, 16000)
    result = runner.invoke(
        app, ["transcribe", str(wav), "--model", str(official_dir), "-d", "0.96s"]
    )
    assert result.exit_code == 0, result.output
    expected = voxtral_mlx.transcribe(model, jfk, delay_ms=960).text
    assert result.stdout.strip() == expected


def test_errors_are_one_line_without_traceback(official_dir, tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "voxtral_cli.app",
            "transcribe",
            str(tmp_path / "missing.wav"),
            "--model",
            str(official_dir),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: no such audio file: {tmp_path / 'missing.wav'}"
    ]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "voxtral_cli.app",
            "transcribe",
            "x.wav",
            "--model",
            str(tmp_path / "nope"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "model not found" in done.stderr
