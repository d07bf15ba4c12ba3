"""Packaging: the wheel installs `voxtral_mlx` and the CLI as `voxtral_cli` (never a bare
`cli` that could collide), and its `voxtral` entry point runs."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
    )
    (whl,) = out.glob("voxtral_mlx-*.whl")
    return whl


def test_wheel_layout(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"voxtral_mlx", "voxtral_cli"}
    assert "voxtral_cli/app.py" in names
    assert "voxtral_mlx/serve/openai/dialect.py" in names  # every subpackage is packaged
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "voxtral = voxtral_cli.app:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_installed_command_runs(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    where = subprocess.run(
        [sys.executable, "-c", "import voxtral_cli, voxtral_mlx; print(voxtral_cli.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert where.stdout.startswith(str(target))
    script = target / "bin" / "voxtral"
    done = subprocess.run(
        [sys.executable, str(script), "--help"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "transcribe" in done.stdout


def test_bad_arguments_fail_before_the_model_code_is_imported(tmp_path):
    """`import voxtral_mlx` and its constants do not import MLX, nor do the clients of a
    server (`live --server` runs without it), and a mistyped command says so at once: the
    model code (MLX, mlx-lm, which imports transformers) is imported only when there is a
    model to run. Every public name still resolves."""
    probe = f"""
import sys
import voxtral_mlx
import voxtral_mlx.transcribe
import voxtral_cli.live, voxtral_cli.remote
from voxtral_mlx import TextDelta, Transcript, WordDone
from voxtral_mlx import DEFAULT_DELAY_MS, DEFAULT_MODEL, SAMPLE_RATE, VALID_DELAYS_MS
assert voxtral_mlx.parse_delay("0.48s") == DEFAULT_DELAY_MS and SAMPLE_RATE == 16000
mlx_lm = [m for m in sys.modules if m.split(".")[0] == "mlx_lm"]
assert "mlx.core" not in sys.modules and not mlx_lm, "MLX was imported"
assert "voxtral_mlx.model" not in sys.modules
assert voxtral_mlx.transcribe.__name__ == "transcribe"  # the function, not the submodule
from voxtral_cli.app import main
for argv, code in (
    (["live", "--fast"], 2),
    (["live", "--input", "x.wav", "-o", "notes.doc"], 2),
    (["transcribe", "x.wav", "--model", {str(tmp_path / "nowhere")!r}], 1),
    (["transcribe", "x.wav", "-f", "doc"], 2),
    (["convert", "--hf-path", ".", "--mlx-path", "out", "-q", "--q-bits", "5"], 2),
    (["serve", "--port", "99999"], 2),
    (["bench", "--size", "huge"], 2),
    (["transcribe", "x.wav", "--delay", "500"], 2),
    (["transcribe", "x.wav", "--context-bias", "Voxtral, " + "x" * 101], 2),
):
    sys.argv = ["voxtral", *argv]
    try:
        main()
    except SystemExit as e:
        assert e.code == code, (argv, e.code)
    assert "mlx.core" not in sys.modules, argv
assert all(getattr(voxtral_mlx, name) is not None for name in voxtral_mlx.__all__)
assert "mlx_lm.models.cache" in sys.modules  # the model code, once its names are resolved
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    assert done.stderr.count("error:") == 9
