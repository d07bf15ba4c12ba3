"""The real `voxtral` command on a tiny checkpoint the tests write."""

import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from clirun import sigint_default, voxtral
from typer.testing import CliRunner
from voxtral_cli import capture
from voxtral_cli.app import app

import voxtral_mlx
from voxtral_mlx.testing import shared_audio

runner = CliRunner()
SRT_CUE = re.compile(r"^(\d+)\n(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})\n(.+)$", re.S)
VTT_TIME = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) --> (\d\d:\d\d:\d\d\.\d{3})$")


def seconds(stamp: str) -> float:
    h, m, s = stamp.replace(",", ".").split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


@pytest.fixture(scope="module")
def wav(tmp_path_factory, jfk) -> Path:
    path = tmp_path_factory.mktemp("audio") / "jfk.wav"
    sf.write(path, jfk, 16000)
    return path


@pytest.fixture(scope="module")
def expected(model, jfk):
    return voxtral_mlx.transcribe(model, jfk, delay_ms=480)


def test_transcribe_prints_text(official_dir, model, jfk, wav):
    result = runner.invoke(
        app, ["transcribe", str(wav), "--model", str(official_dir), "-d", "0.96s"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == voxtral_mlx.transcribe(model, jfk, delay_ms=960).text


def test_transcribe_every_format(official_dir, wav, expected, tmp_path):
    out = tmp_path / "out"
    done = voxtral("transcribe", wav, "--model", official_dir, "-f", "all", "-o", out)
    assert done.returncode == 0, done.stderr
    assert (out / "jfk.txt").read_text().strip() == expected.text

    data = json.loads((out / "jfk.json").read_text())
    assert data["text"] == expected.text and data["tokens"] == expected.tokens
    assert data["delay_ms"] == 480 and data["stats"]["decoder_steps"] == len(expected.tokens)
    assert [(w["text"], w["start"], w["end"]) for w in data["words"]] == [
        (w.text, w.start, w.end) for w in expected.words
    ]

    blocks = (out / "jfk.srt").read_text().strip().split("\n\n")
    assert blocks and blocks != [""]
    cue_words = []
    for i, block in enumerate(blocks, 1):
        m = SRT_CUE.match(block)
        assert m, block
        assert int(m.group(1)) == i and seconds(m.group(2)) <= seconds(m.group(3)) <= 11.01
        cue_words += m.group(4).split(" ")
    assert cue_words == [w.text for w in expected.words]

    vtt = (out / "jfk.vtt").read_text()
    assert vtt.startswith("WEBVTT\n\n")
    cues = vtt[len("WEBVTT\n\n") :].strip().split("\n\n")
    assert len(cues) == len(blocks)
    for cue in cues:
        timing, text = cue.split("\n", 1)
        m = VTT_TIME.match(timing)
        assert m and seconds(m.group(1)) <= seconds(m.group(2)) and text


def test_transcribe_many_files_one_failing(official_dir, wav, expected, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....WAVEjunk")
    out = tmp_path / "out"
    done = voxtral(
        "transcribe",
        wav,
        bad,
        tmp_path / "missing.flac",
        wav,
        "--model",
        official_dir,
        "-f",
        "txt",
        "-o",
        out,
    )
    assert done.returncode == 1
    errors = done.stderr.strip().splitlines()
    errors = [e for e in errors if e.startswith("error:")]
    # missing inputs are reported first, before the model loads; then each failing file
    assert len(errors) == 2 and "missing.flac: no such audio file" in errors[0]
    assert errors[1].startswith(f"error: cannot decode {bad}: damaged audio file")
    assert "Traceback" not in done.stderr
    assert (out / "jfk.txt").read_text().strip() == expected.text


def test_transcribe_stdin(official_dir, wav, expected):
    done = voxtral("transcribe", "-", "--model", official_dir, input=wav.read_bytes())
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == expected.text


def test_transcribe_word_timestamps(official_dir, tmp_path):
    path = shared_audio("librivox-0880.wav")
    done = voxtral(
        "transcribe",
        path,
        "--model",
        official_dir,
        "-f",
        "srt",
        "-o",
        tmp_path,
        "--word-timestamps",
    )
    assert done.returncode == 0, done.stderr
    data = (tmp_path / "librivox-0880.srt").read_text().strip().split("\n\n")
    assert all(len(SRT_CUE.match(b).group(4).split(" ")) == 1 for b in data)
    # where no cue is written the option would do nothing: refused, not ignored
    for output in ([], ["-f", "json", "-o", tmp_path / "json"]):
        done = voxtral("transcribe", path, "--model", official_dir, *output, "--word-timestamps")
        assert done.returncode == 2 and "--word-timestamps applies to srt and vtt" in done.stderr


@pytest.mark.parametrize("fmt", ["txt", "srt", "vtt", "jsonl"])
def test_live_input_gives_the_transcribe_text(official_dir, wav, expected, tmp_path, fmt):
    out = tmp_path / f"live.{fmt}"
    done = voxtral("live", "--input", wav, "--fast", "--model", official_dir, "-o", out)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected.text
    text = out.read_text()
    if fmt == "txt":
        assert text.strip() == expected.text
    elif fmt == "jsonl":
        events = [json.loads(line) for line in text.splitlines()]
        assert events[-1]["type"] == "done" and events[-1]["text"] == expected.text
        assert "".join(e["text"] for e in events if e["type"] == "text").strip() == expected.text
        assert [e["text"] for e in events if e["type"] == "word"] == [
            w.text for w in expected.words
        ]
    else:
        assert text.startswith("WEBVTT") if fmt == "vtt" else SRT_CUE.match(text.split("\n\n")[0])


def test_live_input_at_real_time_pace(official_dir, model):
    path = shared_audio("librivox-0880.wav")  # 3 s
    tic = time.perf_counter()
    done = voxtral("live", "--input", path, "--model", official_dir)
    assert done.returncode == 0, done.stderr
    assert time.perf_counter() - tic > 2.9
    assert done.stdout.strip() == voxtral_mlx.transcribe(model, voxtral_mlx.load_audio(path)).text


def test_digital_silence_warns_with_the_permission_hint(model, official_dir, tmp_path, capsys):
    """A microphone that gives digital silence is muted or blocked: one warning with the
    permission hint. A file of silence is only silence: no warning."""
    from rich.console import Console
    from voxtral_cli.capture import Source
    from voxtral_cli.live import run_live

    class SilentMicrophone(Source):
        name, rate = "microphone", 16000

        def __init__(self):
            super().__init__()
            for _ in range(6 * 20):  # 6 s in 50 ms blocks, as a muted microphone gives them
                self._queue.put(np.zeros(800, np.float32))
            self._queue.put(None)

        def close(self) -> None:
            pass

    run_live(voxtral_mlx.Session(model), SilentMicrophone(), None, Console())
    warning = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert len(warning) == 1 and "digital silence" in warning[0] and "Microphone" in warning[0]
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(16000 * 6, np.float32), 16000)
    done = voxtral("live", "--input", silence, "--fast", "--model", official_dir)
    assert done.returncode == 0 and "warning" not in done.stderr, done.stderr


def test_convert_and_load_back(official_dir, model, tmp_path):
    out = tmp_path / "converted"
    result = runner.invoke(app, ["convert", "--hf-path", str(official_dir), "--mlx-path", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} >= {"params.json", "model.safetensors", "tekken.json"}
    again = voxtral_mlx.load(out)
    audio = voxtral_mlx.load_audio(shared_audio("librivox-0880.wav"))
    assert (
        voxtral_mlx.transcribe(again, audio).tokens == voxtral_mlx.transcribe(model, audio).tokens
    )


def test_cli_errors(official_dir, wav, tmp_path):
    """Every bad input is one line on stderr: exit 2 for a wrong command line, 1 for work
    that cannot be done."""
    (tmp_path / "afile").write_text("x")
    usage = [
        (["live", "--fast", "--model", official_dir], "--fast only applies to --input"),
        (
            ["live", "--input", wav, "--model", official_dir, "-o", tmp_path / "x.doc"],
            "must end in",
        ),
        (["live", "--input", wav, "--device", "pulse"], "exclude each other"),
        (
            [
                "convert",
                "--hf-path",
                official_dir,
                "--mlx-path",
                tmp_path / "q",
                "-q",
                "--q-bits",
                "5",
            ],
            "--q-bits 5: choose 4, 6, 8",
        ),
        (
            ["convert", "--hf-path", official_dir, "--mlx-path", tmp_path / "d", "--dtype", "int8"],
            "--dtype 'int8'",
        ),
        (["transcribe", wav, "-f", "doc"], "-f 'doc': choose txt, srt, vtt, json, all"),
        (["bench", "--size", "huge"], "--size 'huge': choose full, small"),
        (["bench", "--q-bits", "3"], "--q-bits 3"),
        (["bench", "--q-group-size", "32"], "--q-group-size applies to --q-bits"),
        (["serve", "--port", "99999"], "--port 99999: choose 1-65535"),
        (["serve", "--max-sessions", "0"], "--max-sessions 0"),
        (["transcribe", wav, "--delay", "500ms"], "invalid delay '500ms'"),
        (["transcribe", wav, "--nosuch"], "No such option"),
        (["transcribe"], "Missing argument"),
        (["serve", "--port", "abc"], "Invalid value for '--port'"),
        (["transcribe", "--server", "127.0.0.1:8765", wav, wav], "use http://HOST:PORT"),
        (["live", "--server", "ftp://x"], "'ftp://x': use http://HOST:PORT or ws://HOST:PORT"),
        (["transcribe", "-", "-", "--model", official_dir], "stdin (-) can be read only once"),
    ]
    work = [
        (["transcribe", tmp_path / "missing.wav", "--model", official_dir], "no such audio file"),
        (["transcribe", wav, "--model", tmp_path / "nope"], "model not found"),
        (["transcribe", wav, "--model", "nobody/no-model", "--offline"], "--offline"),
        (["transcribe", wav, "-o", tmp_path / "afile" / "out"], "is not a folder"),
        # the permission bits allow it (root, here) but nothing can be made there: the model
        # (which does not exist) is never looked for
        (["transcribe", wav, "-o", "/proc/x", "--model", tmp_path / "nope"], "not writable"),
        (
            ["live", "--input", tmp_path / "missing.wav", "--model", official_dir],
            "no such audio file",
        ),
        (["convert", "--hf-path", official_dir, "--mlx-path", tmp_path / "afile"], "not an empty"),
        (["transcribe", wav, "--server", "http://127.0.0.1:1"], "1/v1/audio/transcriptions: Conn"),
    ]
    for cases, code in ((usage, 2), (work, 1)):
        for args, message in cases:
            done = voxtral(*args, env={"HF_HUB_CACHE": str(tmp_path / "hub")})
            lines = done.stderr.strip().splitlines()
            assert done.returncode == code, (args, done.stderr)
            assert len(lines) == 1 and lines[0].startswith("error:"), (args, lines)
            assert message in lines[0], (args, lines)


def test_unreachable_hub_says_what_would_help(wav, tmp_path):
    """No network (a closed port stands in for the hub): the message names the network,
    HF_ENDPOINT and a local model, and does not send the user to `voxtral download`."""
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(tmp_path / "hub")}
    for args in (["transcribe", wav, "-m", "nobody/no-model"], ["download", "nobody/no-model"]):
        done = voxtral(*args, env=env, process=True)  # huggingface_hub reads them as imported
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1, lines
        assert "cannot be reached" in lines[0] and "HF_ENDPOINT" in lines[0], lines
        assert "voxtral download" not in lines[0]
        # a local model directory helps where there is a --model to give it to
        assert ("--model DIR" in lines[0]) == (args[0] == "transcribe"), lines


def test_inputs_are_checked_before_the_model_loads(tmp_path):
    """A missing input, an unwritable output folder or a bad option never waits for (or
    downloads) a model: the model here does not exist, and is never looked for."""
    (tmp_path / "afile").write_text("x")
    nowhere = tmp_path / "no-model"
    for args, message in [
        (["transcribe", tmp_path / "missing.wav", "-m", nowhere], "no such audio file"),
        (["transcribe", "-", "-", "-m", nowhere], "only once"),
        (["transcribe", "x.wav", "-o", tmp_path / "afile" / "o", "-m", nowhere], "not a folder"),
        (["serve", "--port", "99999", "-m", nowhere], "--port"),
        (["live", "--input", tmp_path / "missing.wav", "-m", nowhere], "no such audio file"),
        (["convert", "--hf-path", nowhere, "--mlx-path", tmp_path / "q", "--q-bits", "5"], "bits"),
    ]:
        done = voxtral(*args)
        assert done.returncode in (1, 2) and message in done.stderr, (args, done.stderr)
        assert "model not found" not in done.stderr


def test_output_folder_problems_are_one_line_per_file(official_dir, wav, tmp_path):
    """Files that cannot be written are reported one by one and the others go on."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "jfk.txt").mkdir()  # a folder where the first file's output should go
    other = tmp_path / "other.wav"
    shutil.copy(wav, other)
    done = voxtral("transcribe", wav, other, "-m", official_dir, "-o", out)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1 and len(errors) == 1 and "jfk.wav: cannot write" in errors[0]
    assert (out / "other.txt").read_text().strip()
    assert "Traceback" not in done.stderr
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left


def read_only_folder(tmp_path: Path) -> Path | None:
    """A folder this process cannot write into: a chmod-ed one, or for root (who ignores
    permission bits) one on a file system the kernel keeps read-only."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)
        return folder
    return Path("/proc/sys") if not os.access("/proc/sys", os.W_OK) else None


def test_read_only_output_folder(official_dir, wav, tmp_path):
    folder = read_only_folder(tmp_path)
    if folder is None:
        pytest.skip("no read-only folder on this machine")
    for out in (folder, folder / "new-subfolder"):
        done = voxtral("transcribe", wav, "-m", official_dir, "-o", out)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1 and "not writable" in lines[0], lines


def test_several_files_are_named_and_piped_text_is_bare(official_dir, wav, expected, tmp_path):
    """Several files are named on each line (decoded together, the lines come as files are
    done; --batch 1 decodes one at a time); one file is its bare text."""
    other = tmp_path / "second.wav"
    sf.write(other, sf.read(wav, dtype="float32")[0][: 16000 * 4], 16000)
    short = voxtral_mlx.transcribe(voxtral_mlx.load(official_dir), other).text
    want = {f"{wav}: {expected.text}", f"{other}: {short}"}
    for extra in ([], ["--batch", "1"]):
        done = voxtral("transcribe", wav, other, "-m", official_dir, *extra)
        assert done.returncode == 0, done.stderr
        assert set(done.stdout.splitlines()) == want, extra
    one = voxtral("transcribe", wav, "-m", official_dir)
    assert one.stdout == expected.text + "\n"
    # named because several were given, though one of them is missing (scripts parse this)
    missing = voxtral("transcribe", wav, tmp_path / "nope.wav", "-m", official_dir)
    assert missing.returncode == 1 and missing.stdout == f"{wav}: {expected.text}\n"


def test_ctrl_c_during_transcribe_keeps_the_finished_files(official_dir, wav, tmp_path):
    """Ctrl+C says so, keeps the files already written and writes nothing half done."""
    long = tmp_path / "long.wav"  # 40 minutes: far more than a loaded machine gets through
    # between the first file's last output and the signal (the signal comes at once)
    sf.write(long, np.tile(sf.read(wav, dtype="int16")[0], 240), 16000, subtype="PCM_16")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "voxtral_cli.app",
            "transcribe",
            wav,
            long,
            "-m",
            official_dir,
            "-f",
            "all",
            "-o",
            out,
        ],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_default,
    )
    deadline = time.monotonic() + 120
    while not (out / "jfk.json").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)  # once: one Ctrl+C stops it
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1].startswith("interrupted: stopped after 1 of 2 files")
    assert sorted(p.name for p in out.iterdir()) == [
        f"jfk.{f}" for f in ("json", "srt", "txt", "vtt")
    ]
    assert "Traceback" not in stderr


def test_ctrl_c_waits_for_a_files_outputs_and_its_count():
    """Ctrl+C while a file's outputs are written is raised once they are all written and the
    file is counted (the interrupted message then counts what was kept)."""
    import os

    from voxtral_cli.batch import _ctrl_c_deferred

    steps = []
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with _ctrl_c_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # a signal is handled between bytecodes: here, held
            steps.append("written")
            steps.append("counted")
    assert steps == ["written", "counted"]
    assert signal.getsignal(signal.SIGINT) is before


def test_the_interrupted_line_says_what_was_kept(capsys):
    """Ctrl+C's line fits what the run did: files kept, none written, or texts printed."""
    import typer
    from voxtral_cli.batch import Batch

    for formats, done, said in [
        (["txt"], 2, "the finished ones are kept, nothing of those in progress was written"),
        (["txt"], 0, "nothing was written"),
        (None, 1, "the texts of those in progress were not printed"),
    ]:
        work = Batch(["a.wav", "b.wav", "c.wav"], formats, Path("."), False)
        work.done = done
        with pytest.raises(typer.Exit) as stopped, work._interruptible():
            raise KeyboardInterrupt
        assert stopped.value.exit_code == 130
        line = f"interrupted: stopped after {done} of 3 files; {said}"
        assert capsys.readouterr().err.strip() == line


def test_debug_variable_shows_the_traceback(wav, tmp_path):
    done = voxtral(
        "transcribe", wav, "--model", tmp_path / "nope", env={"VOXTRAL_DEBUG": "1"}, process=True
    )
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_missing_portaudio(tmp_path, monkeypatch):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "sounddevice.py").write_text("raise OSError('PortAudio library not found')\n")
    path = f"{fake}:{os.environ.get('PYTHONPATH', '')}"
    done = voxtral("devices", env={"PYTHONPATH": path}, process=True)  # imports a fake module
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"error: {capture.PORTAUDIO_HINT}"]


def have_virtual_mic() -> bool:
    try:
        return shutil.which("paplay") is not None and any(
            d.name == "pulse" for d in capture.input_devices()
        )
    except Exception:
        return False


def live_through_virtual_mic(model_dir, wav, *extra) -> tuple[int, str, str]:
    """`voxtral live` on the virtual microphone while `wav` plays into it, then Ctrl+C:
    (exit code, stdout, stderr)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "voxtral_cli.app",
            "live",
            "--device",
            "pulse",
            "--model",
            str(model_dir),
            *map(str, extra),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr.readline().startswith("listening: pulse @")
        subprocess.run(["paplay", "--device=voxtral_vmic", str(wav)], check=True, timeout=60)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, stdout, stderr


mic = pytest.mark.skipif(
    not have_virtual_mic(),
    reason="no virtual microphone: a PulseAudio null sink as the default input (see README, Tests)",
)


@mic
def test_devices_and_device_matching():
    done = voxtral("devices")
    assert done.returncode == 0 and "pulse" in done.stdout and "Hz" in done.stdout
    assert capture.find_device("PULSE").name == "pulse"
    pulse = capture.find_device("pulse")
    assert capture.find_device(str(pulse.index)) == pulse
    for spec, message in [
        ("no-such-mic", "matches no input device"),
        ("99", "matches no input device"),
        ("u", "matches several input devices"),  # pUlse and defaUlt
    ]:
        with pytest.raises(voxtral_mlx.VoxtralError, match=f"{message}.*pulse"):
            capture.find_device(spec)


def test_outputs_are_never_replaced_silently(official_dir, wav, tmp_path):
    """Two inputs that would write one file are refused before the model loads (exit 2); a
    file that exists (the reference beside eval audio, yesterday's notes) is replaced only
    with --overwrite, in transcribe as in live."""
    nowhere = tmp_path / "no-model"  # never looked for: the checks come first
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(wav, tmp_path / "a" / "x.wav")
    shutil.copy(wav, tmp_path / "b" / "x.wav")
    a, b = tmp_path / "a" / "x.wav", tmp_path / "b" / "x.wav"
    done = voxtral("transcribe", a, b, "-f", "txt", "-o", tmp_path / "same", "-m", nowhere)
    assert done.returncode == 2 and done.stderr.splitlines() == [
        f"error: {a} and {b} would both be written to {tmp_path / 'same' / 'x.txt'}: "
        "transcribe them into different folders (-o)"
    ]
    reference = tmp_path / "a" / "x.txt"
    reference.write_text("the reference\n")
    done = voxtral("transcribe", a, "-f", "txt", "-o", tmp_path / "a", "-m", nowhere)
    assert done.returncode == 1 and done.stderr.splitlines() == [
        f"error: {reference} already exists: add --overwrite to replace it"
    ]
    notes = tmp_path / "notes.txt"
    notes.write_text("yesterday\n")
    done = voxtral("live", "--input", wav, "-o", notes, "-m", nowhere)
    assert done.returncode == 1 and done.stderr.splitlines() == [
        f"error: {notes} already exists: add --overwrite to replace it"
    ]
    assert reference.read_text() == "the reference\n" and notes.read_text() == "yesterday\n"
    done = voxtral(
        "transcribe", a, "-f", "txt", "-o", tmp_path / "a", "-m", official_dir, "--overwrite"
    )
    assert done.returncode == 0 and reference.read_text() != "the reference\n", done.stderr
    done = voxtral("live", "--input", wav, "--fast", "-o", notes, "-m", official_dir, "--overwrite")
    assert done.returncode == 0 and notes.read_text() != "yesterday\n", done.stderr


def test_live_checks_like_transcribe_before_the_model_loads(official_dir, wav, tmp_path):
    """The same fault is the same line in live and transcribe, before any model loads; a
    failed run leaves no empty output file; a missing output folder is made, as
    transcribe makes it."""
    nowhere = tmp_path / "no-model"
    (tmp_path / "afile").write_text("x")
    nan = tmp_path / "nan.wav"
    samples = np.zeros(16000, np.float32)
    samples[[100, 200]] = np.nan
    sf.write(nan, samples, 16000, subtype="FLOAT")
    live = voxtral("live", "--input", nan, "-o", tmp_path / "nan.jsonl", "-m", nowhere)
    batch = voxtral("transcribe", nan, "-m", official_dir)
    assert live.returncode == batch.returncode == 1
    assert live.stderr == batch.stderr and len(live.stderr.splitlines()) == 1, live.stderr
    assert "2 samples that are not numbers" in live.stderr and "listening" not in live.stderr
    assert not (tmp_path / "nan.jsonl").exists()
    (tmp_path / "folder").mkdir()
    for name in ("missing.wav", "folder", "afile"):  # afile: not audio (found by decoding)
        live = voxtral("live", "--input", tmp_path / name, "-m", nowhere)
        batch = voxtral("transcribe", tmp_path / name, "-m", official_dir)
        assert live.stderr == batch.stderr and len(live.stderr.splitlines()) == 1, live.stderr
    done = voxtral("live", "--input", wav, "-o", tmp_path / "afile" / "x.srt", "-m", nowhere)
    assert done.returncode == 1 and done.stderr.splitlines() == [
        f"error: cannot write {tmp_path / 'afile' / 'x.srt'}: {tmp_path / 'afile'} is not a folder"
    ]
    done = voxtral(
        "live", "--input", wav, "--fast", "-o", tmp_path / "new" / "x.srt", "-m", official_dir
    )
    assert done.returncode == 0 and SRT_CUE.match((tmp_path / "new" / "x.srt").read_text()), (
        done.stderr
    )


def test_voxtral_alone_prints_the_help():
    done = voxtral()
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "Usage: voxtral" in done.stdout and "transcribe" in done.stdout


@pytest.mark.parametrize("closed", [0, 1])
def test_closed_standard_streams(official_dir, wav, expected, closed):
    """Launchers and cron may start a command with stdin (or stdout) closed: the weights
    file must not get descriptor 0, and nothing is blamed on a healthy file. A closed
    stdout is said once on stderr (what would be printed there is lost)."""
    done = subprocess.run(
        [sys.executable, "-m", "voxtral_cli.app", "transcribe", str(wav), "-m", str(official_dir)],
        capture_output=closed == 0,
        stderr=subprocess.PIPE if closed else None,
        text=True,
        timeout=300,
        preexec_fn=lambda: os.close(closed),
    )
    assert done.returncode == 0, done.stderr
    if closed == 1:
        assert done.stderr == "warning: standard output is closed: what is printed there is lost\n"
        return
    assert done.stdout.strip() == expected.text and done.stderr == ""
    empty = subprocess.run(  # stdin closed reads as empty
        [sys.executable, "-m", "voxtral_cli.app", "transcribe", "-", "-m", str(official_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: os.close(0),
    )
    assert empty.returncode == 1 and empty.stderr == "error: no audio on stdin\n"


def test_messages_name_things_once_and_plainly(official_dir, wav, tmp_path):
    """A file is named once; a folder is not 'no such file'; file names are shown as they
    are, never read as markup; a plain web server's error page is one line of its text."""
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    folder = tmp_path / "clips"
    folder.mkdir()
    done = voxtral("transcribe", empty, folder, "-m", official_dir)
    assert done.returncode == 1 and done.stderr.splitlines() == [
        f"error: {empty} is empty (0 bytes)",
        f"error: {folder} is a folder, not an audio file",
    ]
    marked = tmp_path / "[b]ca fé.wav"
    shutil.copy(wav, marked)
    done = voxtral("live", "--input", marked, "--fast", "-m", official_dir)
    assert done.returncode == 0 and "listening: file [b]ca fé.wav @" in done.stderr, done.stderr

    class Plain(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # what http.server answers a method it does not serve
            self.send_error(501, "Unsupported method ('POST')")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Plain)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        done = voxtral("transcribe", "--server", url, wav)
    finally:
        server.shutdown()
    (line,) = done.stderr.splitlines()
    assert done.returncode == 1 and "<" not in line, line
    assert line.startswith(f"error: {wav}: server answered 501: Error response Error code: 501")


def test_a_reader_that_leaves_ends_live_quietly(official_dir, wav, tmp_path):
    """`voxtral live | head -c 3`: no error line, exit code 1 (as Click ends on EPIPE)."""
    long = tmp_path / "long.wav"
    sf.write(long, np.tile(sf.read(wav, dtype="float32")[0], 6), 16000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxtral_cli.app", "live", "--input", str(long), "--fast"]
        + ["-m", str(official_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert len(proc.stdout.read(3)) == 3
    proc.stdout.close()  # the reader leaves; the next write breaks the pipe
    stderr = proc.stderr.read()
    assert proc.wait(timeout=300) == 1
    assert stderr.startswith("listening:") and len(stderr.splitlines()) == 1, stderr


def test_bench_refuses_audio_shorter_than_a_token(tmp_path):
    one = tmp_path / "one.wav"
    sf.write(one, np.zeros(1, np.float32), 16000)
    done = voxtral("bench", "--random-weights", "--size", "small", "--audio", one)
    assert done.returncode == 1 and done.stderr.splitlines() == [
        "error: the audio is 0.1 ms long: bench needs at least one token of it (80 ms)"
    ]


def test_lost_audio_is_said_once_at_the_end(official_dir, wav, expected, monkeypatch):
    """A device that overflowed (audio lost while the decoder held the interpreter) is one
    warning line at the end, with the text still printed in full."""
    real_blocks = capture.FileSource.blocks

    def overflowing(self, stop):
        self.overflows = 2
        yield from real_blocks(self, stop)

    monkeypatch.setattr(capture.FileSource, "blocks", overflowing)
    done = voxtral("live", "--input", wav, "--fast", "--model", official_dir)
    assert done.returncode == 0 and done.stdout.strip() == expected.text.strip()
    (warning,) = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert "overflowed 2 times: some audio was lost" in warning
