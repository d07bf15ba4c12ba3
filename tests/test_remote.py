"""`voxtral live --server` and `voxtral transcribe --server` against our server (the tiny
trained model, so real words at known times) and against a stand-in that speaks only vLLM's
dialect (tests/vllm_standin.py): every output format, the delay asked for, the times, --fast."""

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from clirun import voxtral
from vllm_standin import SERVED_NAME, VllmStandIn

import voxtral_mlx
from voxtral_mlx import Session, TextDelta
from voxtral_mlx.errors import VoxtralWarning

ASSET = Path(__file__).parent / "assets" / "tiny-voxtral"
SPEECH_SEED = 4242  # one held-out utterance of six words (training used seeds 1234 to 1238)

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is needed to generate held-out speech"
)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A wav file of about 5 s, and its samples as a client reads them."""
    from data import make_utterance

    u = make_utterance(np.random.default_rng(SPEECH_SEED), 6, 6)
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    sf.write(path, u.audio, 16000, subtype="PCM_16")
    return path, voxtral_mlx.load_audio(path)


@pytest.fixture(scope="module")
def ours():
    """`voxtral serve` whose backlog limit is far below what --fast sends at once."""
    from test_server import start_server

    proc, port = start_server(ASSET, "--max-backlog", "0.5")
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def standin(trained):
    with VllmStandIn(trained) as server:
        yield server


def live_events(model, audio: np.ndarray, delay_ms: int | None) -> tuple[str, list[TextDelta]]:
    """What the server's live session makes of the audio: its text and its deltas."""
    session = Session(model, delay_ms)
    events = session.feed(audio) + session.finish()
    return session.result.text, [e for e in events if isinstance(e, TextDelta) and e.text]


def run(*args: str) -> subprocess.CompletedProcess:
    return voxtral(*args)


def live(url: str, speech: Path, *args: str) -> subprocess.CompletedProcess:
    return run("live", "--server", url, "--input", str(speech), "--fast", *args)


def seconds(stamp: str) -> float:
    h, m, s = stamp.replace(",", ".").split(":")
    return 3600 * int(h) + 60 * int(m) + float(s)


def cues(subtitles: str) -> list[tuple[float, float, str]]:
    """(start, end, text) of each cue of an srt or vtt file."""
    out = []
    for block in subtitles.split("\n\n"):
        lines = block.splitlines()
        if at := [i for i, line in enumerate(lines) if " --> " in line]:
            start, end = (seconds(t) for t in lines[at[0]].split(" --> "))
            out.append((start, end, " ".join(lines[at[0] + 1 :])))
    return out


def assert_sane(spans: list[tuple[float, float]], duration: float) -> None:
    """Inside the audio, each span in order, and in order one after another."""
    assert spans
    assert all(0.0 <= a <= b <= duration + 1e-3 for a, b in spans), spans
    assert all(a <= c and b <= d for (a, b), (c, d) in zip(spans, spans[1:], strict=False)), spans


def test_live_through_our_server_every_format(ours, speech, trained, tmp_path):
    """jsonl and srt (one cue a word) at --delay 960, vtt and txt at the server's default:
    the text and the delta times are the library's at that delay, the words are the text's,
    the times sane, the delay reported is the one used. --fast against a 0.5 s backlog
    limit: the audio waits, none is dropped (no warning, the whole text)."""
    path, audio = speech
    duration = len(audio) / 16000
    url = f"ws://127.0.0.1:{ours}"
    runs = {
        "960.jsonl": ["--delay", "960"],
        "960.srt": ["--delay", "960", "--word-timestamps"],
        "default.vtt": [],
        "default.txt": [],
    }
    done = {name: live(url, path, "-o", str(tmp_path / name), *args) for name, args in runs.items()}
    at_960, deltas_960 = live_events(trained, audio, 960)
    at_default, _ = live_events(trained, audio, None)
    default_ms = trained.args.audio.default_delay_ms
    assert len(at_960.split()) >= 4 and default_ms != 960
    for name, result in done.items():
        assert result.returncode == 0, (name, result.stderr)
        assert "warning" not in result.stderr and "error" not in result.stderr, result.stderr
        at = 960 if name.startswith("960") else default_ms
        assert f"delay {at} ms" in result.stderr  # (the `listening:` line)
        assert result.stdout.strip() == (at_960 if at == 960 else at_default)

    events = [json.loads(line) for line in (tmp_path / "960.jsonl").read_text().splitlines()]
    texts = [e for e in events if e["type"] == "text"]
    assert "".join(e["text"] for e in texts) == at_960
    # the times the server sent, as the library's session makes them
    assert [(e["start"], e["end"]) for e in texts] == [
        (round(d.start, 3), round(d.end, 3)) for d in deltas_960
    ]
    spoken = [e for e in events if e["type"] == "word"]
    assert [w["text"] for w in spoken] == at_960.split()
    assert_sane([(w["start"], w["end"]) for w in spoken], duration)
    # the words as the server's session made them (our extension), times and all
    session = Session(trained, 960)
    session.feed(audio)
    session.finish()
    assert [(w["text"], w["start"], w["end"]) for w in spoken] == [
        (w.text, w.start, w.end) for w in session.result.words
    ]
    assert events[-1]["type"] == "done" and events[-1]["text"] == at_960
    assert events[-1]["delay_ms"] == 960  # what transcription.done says was used

    srt = cues((tmp_path / "960.srt").read_text())
    assert [text for _, _, text in srt] == at_960.split()
    assert_sane([(a, b) for a, b, _ in srt], duration)
    vtt_text = (tmp_path / "default.vtt").read_text()
    assert vtt_text.startswith("WEBVTT\n\n")
    vtt = cues(vtt_text)
    assert " ".join(text for _, _, text in vtt) == at_default
    assert_sane([(a, b) for a, b, _ in vtt], duration)
    assert (tmp_path / "default.txt").read_text().strip() == at_default


def test_live_through_a_vllm_server(standin, speech, trained, tmp_path):
    """vLLM's dialect has no delay and no times: --delay is sent, ignored, and said to be (one
    warning line); the text is right; jsonl has null times, no words and an unknown delay;
    txt is written; srt and vtt are refused before any audio is sent."""
    path, audio = speech
    count = len(standin.session_updates)
    runs = {
        "x.jsonl": ["--delay", "960"],
        "x.txt": [],
        "x.srt": [],
        "x.vtt": [],
    }
    done = {n: live(standin.url, path, "-o", str(tmp_path / n), *args) for n, args in runs.items()}
    assert len(standin.session_updates) == count + 4  # (srt and vtt: connected, then refused)
    default, _ = live_events(trained, audio, None)
    jsonl = done["x.jsonl"]
    assert jsonl.returncode == 0, jsonl.stderr
    (warning,) = [line for line in jsonl.stderr.splitlines() if "warning" in line]
    assert "--delay is ignored" in warning
    assert jsonl.stdout.strip() == default
    (update,) = [u for u in standin.session_updates[count:] if "delay_ms" in u]
    assert update["delay_ms"] == 960 and update["model"] == SERVED_NAME
    assert "backpressure" not in update  # our extension, for our server only
    events = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert {e["type"] for e in events} == {"text", "done"}
    assert all(e["start"] is None and e["end"] is None for e in events[:-1])
    assert events[-1]["text"] == default and events[-1]["delay_ms"] is None

    txt = done["x.txt"]
    assert txt.returncode == 0 and "warning" not in txt.stderr, txt.stderr
    assert (tmp_path / "x.txt").read_text().strip() == default
    for name in ("x.srt", "x.vtt"):
        refused = done[name]
        assert refused.returncode == 1 and not (tmp_path / name).exists()
        assert refused.stderr.startswith(f"error: cannot write {name}: the server sends no times")
        assert len(refused.stderr.strip().splitlines()) == 1


def test_transcribe_through_our_server(ours, speech, trained, tmp_path):
    """Every upload format at the server's default delay: the library's text, its words in
    json, srt and vtt, sane times, and the delay the server says it used."""
    path, audio = speech
    files = run(
        "transcribe", "--server", f"http://127.0.0.1:{ours}", str(path), "-f", "all",
        "-o", str(tmp_path),
    )  # fmt: skip
    assert files.returncode == 0, files.stderr
    assert "warning" not in files.stderr
    expected = voxtral_mlx.transcribe(trained, audio)
    body = json.loads((tmp_path / "speech.json").read_text())
    assert body["text"] == expected.text and len(expected.words) >= 4
    assert body["delay_ms"] == expected.delay_ms
    assert [w["text"] for w in body["words"]] == expected.text.split()
    assert_sane([(w["start"], w["end"]) for w in body["words"]], len(audio) / 16000)
    assert (tmp_path / "speech.txt").read_text().strip() == expected.text
    for fmt in ("srt", "vtt"):
        found = cues((tmp_path / f"speech.{fmt}").read_text())
        assert " ".join(text for _, _, text in found) == expected.text
        assert_sane([(a, b) for a, b, _ in found], len(audio) / 16000)


def test_transcribe_sends_the_delay_to_our_server(ours, speech, trained, tmp_path):
    """--delay 960 reaches the upload (the `delay_ms` field), and the json says it was used."""
    path, audio = speech
    done = run(
        "transcribe", "--server", f"http://127.0.0.1:{ours}", str(path), "-f", "json",
        "-o", str(tmp_path), "--delay", "960",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr, done.stderr
    body = json.loads((tmp_path / "speech.json").read_text())
    assert body["delay_ms"] == 960
    assert body["text"] == voxtral_mlx.transcribe(trained, audio, delay_ms=960).text


def test_transcribe_through_a_vllm_server(standin, speech, trained, tmp_path):
    """vLLM answers 400 to verbose_json for this model: the client asks for json, warns that
    --delay was not taken and the delay is unknown, and writes the json (no words, a null
    delay); srt is one clear error."""
    path, audio = speech
    url = f"http://127.0.0.1:{standin.port}"
    done = run(
        "transcribe", "--server", url, str(path), "-f", "json", "-o", str(tmp_path),
        "--delay", "960",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (warning,) = [line for line in done.stderr.splitlines() if "warning" in line]
    assert "does not take --delay" in warning and "unknown" in warning
    asked = [form["response_format"] for form in standin.upload_forms[-2:]]
    assert asked == ["verbose_json", "json"]
    assert all(form["delay_ms"] == "960" for form in standin.upload_forms[-2:])
    body = json.loads((tmp_path / "speech.json").read_text())
    assert body["text"] == voxtral_mlx.transcribe(trained, audio).text
    assert body["words"] == [] and body["delay_ms"] is None
    srt = run("transcribe", "--server", url, str(path), "-f", "srt", "-o", str(tmp_path))
    assert srt.returncode == 1 and not (tmp_path / "speech.srt").exists()
    assert "no word times" in srt.stderr and len(srt.stderr.strip().splitlines()) == 1


def test_dropped_audio_slows_the_client_down(trained, speech):
    """A server that drops audio sent too fast (buffer_full, as ours without backpressure
    "wait") does not stop a --fast client: one warning, then real-time pace."""
    from voxtral_cli.remote import RemoteSession

    _, audio = speech
    chunks = np.array_split(audio[:16000], 10)  # 1 s in 0.1 s appends; the second is dropped
    with VllmStandIn(trained, drop_appends=frozenset({1})) as server:
        session = RemoteSession(server.url, None, None, None)
        tic = time.perf_counter()
        with pytest.warns(VoxtralWarning, match="buffer_full"):
            for chunk in chunks:
                session.feed(chunk)
                time.sleep(0.02)  # (the error has time to arrive before the last appends)
            session.finish()
    assert time.perf_counter() - tic >= 0.5  # the appends after the drop went at 0.1 s each
    assert session.result is not None and session.result.audio_seconds == pytest.approx(1.0)


def test_a_client_process_ends_cleanly_at_another_rate(ours, speech, trained, tmp_path):
    """`voxtral live --server` as a real process on a 22.05 kHz file (the client resamples):
    its stderr is the `listening:` line alone. The connection's reader thread outlived the
    session and kept its resampler to the interpreter's end, which nanobind reported as 15
    lines of leaked soxr objects in most runs."""
    import soundfile as sf
    import soxr

    _, audio = speech
    wav = tmp_path / "22k.wav"
    sf.write(wav, soxr.resample(audio, 16000, 22050), 22050)
    for _ in range(2):
        done = voxtral("live", "--server", f"ws://127.0.0.1:{ours}", "--input", wav, "--fast",
                       process=True)  # fmt: skip
        assert done.returncode == 0 and done.stdout.strip(), done.stderr
        assert done.stderr.strip().splitlines()[1:] == [], done.stderr
