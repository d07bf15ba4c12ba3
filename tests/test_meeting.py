"""`voxtral meeting`: the conversation logic (voxtral_mlx.meeting) on constructed words, then
the command itself with the tiny trained model (tests/assets/tiny-voxtral) on held-out
espeak speech (training/data.py): two replayed files, every output format, Ctrl+C, the
echo of the call in the microphone, the system audio of a PulseAudio server."""

import math
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from clirun import sigint_default, voxtral
from voxtral_cli import system_audio

import voxtral_mlx
from voxtral_mlx import Session, WordDone
from voxtral_mlx.meeting import (
    ECHO_WINDOW,
    SETTLE_SECONDS,
    Conversation,
    Echo,
    Said,
    gap,
    same_word,
)
from voxtral_mlx.words import Word

ASSET = Path(__file__).parent / "assets" / "tiny-voxtral"
SEED = 4321  # held out: training used 1234 to 1238
RATE = 16000

espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is needed to generate held-out speech"
)


def said(items) -> list[tuple[str, str]]:
    return [(i.speaker, i.word.text) for i in items if isinstance(i, Said)]


def test_words_come_out_in_time_order_once_settled():
    talk = Conversation("you", "them")
    talk.add("them", Word("hello", 0.2, 0.5))
    talk.add("them", Word("there", 1.4, 1.7))
    talk.advance("them", 1.2)
    assert talk.take() == []  # "you" may still say something before 0.2 s
    talk.advance("you", 0.5)
    assert said(talk.take()) == [("them", "hello")]
    talk.add("you", Word("hi", 0.9, 1.1))
    talk.advance("you", 1.5)
    assert talk.take() == []  # "hi" waits for "them" settled to its end + the window
    talk.advance("them", 2.0)
    assert said(talk.take()) == [("you", "hi"), ("them", "there")]
    talk.add("you", Word("bye", 2.5, 2.7))
    talk.advance("you", math.inf)  # ended: "bye" waits only for "them"
    assert talk.take() == []
    talk.advance("them", 2.7 + ECHO_WINDOW)
    assert said(talk.take()) == [("you", "bye")]
    assert talk.text("you") == "hi bye" and talk.text("them") == "hello there"


def test_a_microphone_word_waits_for_the_echo_window():
    talk = Conversation("you", "them")
    talk.add("you", Word("yes", 1.0, 1.2))
    talk.advance("you", 3.0)
    talk.advance("them", 1.2 + ECHO_WINDOW - 0.01)
    assert talk.take() == []
    talk.advance("them", 1.2 + ECHO_WINDOW)
    assert said(talk.take()) == [("you", "yes")]


def test_ties_go_to_you_first():
    talk = Conversation("you", "them")
    talk.add("them", Word("a", 1.0, 1.1))
    talk.add("you", Word("b", 1.0, 1.1))
    for speaker in ("you", "them"):
        talk.advance(speaker, math.inf)
    assert said(talk.take()) == [("you", "b"), ("them", "a")]


def test_the_echo_of_the_call_is_dropped_from_you():
    """The same word (case and punctuation aside) within the window of the call's, before
    or after it (the gap between the two words), is the call's; further away, or another
    word, it is yours."""
    talk = Conversation("you", "them")
    for word in [Word("Three.", 1.0, 1.3), Word("four", 2.0, 2.3), Word("go", 5.0, 5.2)]:
        talk.add("them", word)
    mine = [
        Word("three", 1.3 + ECHO_WINDOW, 1.9 + ECHO_WINDOW),  # as late as the window allows
        Word("four", 2.0 - 0.1, 2.2),  # early: the models' timing error
        Word("five", 2.1, 2.4),  # another word, at the same time
        Word("three", 3.5, 3.8),  # the same word, later: said again
        Word("go", 5.2 + ECHO_WINDOW + 0.08, 6.0 + ECHO_WINDOW),  # outside the window
    ]
    for word in mine:
        talk.add("you", word)
    for speaker in ("you", "them"):
        talk.advance(speaker, math.inf)
    items = talk.take()
    echoes = [(i.word.text, i.heard.start) for i in items if isinstance(i, Echo)]
    assert echoes == [("three", 1.0), ("four", 2.0)]
    assert [w for s, w in said(items) if s == "you"] == ["five", "three", "go"]
    assert talk.text("you") == "five three go"
    assert same_word("«Yes!»", "yes") and not same_word("yes", "yet")


def test_two_speakers_need_two_names():
    with pytest.raises(ValueError, match="two names"):
        Conversation("Ann", "Ann")


@pytest.fixture(scope="module")
def utterances():
    from data import make_utterance

    rng = np.random.default_rng(SEED)
    return [make_utterance(rng) for _ in range(16)]


@espeak
def test_a_pause_settles_the_last_word(trained, utterances):
    """With settle_seconds a speaker's last word is out once a pause follows it, before
    the stream ends; the words and their times are those of a session without it, and
    `settled_seconds` never passes a word still to come."""
    for u in utterances[:3]:
        audio = np.concatenate([u.audio, np.zeros(RATE, np.float32)])  # then 1 s of silence
        plain, settling = Session(trained), Session(trained, settle_seconds=SETTLE_SECONDS)
        plain.feed(audio)
        plain.finish()
        words, settled = [], []
        for lo in range(0, len(audio), 1600):
            for event in settling.feed(audio[lo : lo + 1600]):
                if isinstance(event, WordDone):
                    words.append(event.word)
                    assert event.word.start >= max(settled, default=0.0)
            settled.append(settling.settled_seconds)
        assert words == plain.result.words and words  # every word out before the end
        assert settling.settled_seconds > words[-1].start
        settling.finish()
        assert settling.result.words == words and settling.result.text == plain.result.text
        assert settling.settled_seconds == math.inf


# --- the command, with the tiny trained model -----------------------------------------------


def tracks(turns: list[tuple[int, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The microphone's track (side 0) and the call's (side 1): data.conversation's."""
    from data import conversation

    mic, call, _ = conversation(turns)
    return mic, call


TALK = (7, 10, 4)  # of `utterances`: the call, you, the call


@pytest.fixture(scope="module")
def talk(trained, utterances):
    """Three turns (the call, you, the call) in 8 s, your words never the call's,
    each track transcribed word for word: the echo test tells the call's words from
    yours by what the call's own stream writes."""
    chosen = [utterances[n] for n in TALK]
    mic, call = tracks([(1, chosen[0].audio), (0, chosen[1].audio), (1, chosen[2].audio)])
    assert not (set(chosen[0].words) | set(chosen[2].words)) & set(chosen[1].words)
    assert len(mic) < 8 * RATE  # the tiny model was trained on clips up to ~12 s
    heard = [voxtral_mlx.transcribe(trained, audio).text.split() for audio in (mic, call)]
    assert heard == [list(chosen[1].words), [*chosen[0].words, *chosen[2].words]]
    return chosen


def write_wav(path: Path, audio: np.ndarray) -> Path:
    import soundfile as sf

    sf.write(path, audio, RATE, subtype="PCM_16")
    return path


def outputs(folder: Path, *formats: str) -> list:
    return [x for f in formats for x in ("-o", folder / f"notes.{f}")]


def jsonl(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines()]


def runs(speakers: list[str]) -> list[str]:
    """The speakers of consecutive runs: [a, a, b, a] -> [a, b, a]."""
    return [s for i, s in enumerate(speakers) if i == 0 or speakers[i - 1] != s]


@pytest.fixture(scope="module")
def replayed(talk, tmp_path_factory):
    """The conversation as two files replayed (--fast) into `voxtral meeting` with every
    output format, and `voxtral transcribe` of each file."""
    from voxtral_mlx.formats import MEETING_FORMATS

    folder = tmp_path_factory.mktemp("meeting")
    first, mine, last = talk
    mic, call = tracks([(1, first.audio), (0, mine.audio), (1, last.audio)])
    mic_wav, call_wav = write_wav(folder / "mic.wav", mic), write_wav(folder / "call.wav", call)
    done = voxtral(
        "meeting", "--input", mic_wav, "--system-input", call_wav, "--fast", "--model", ASSET,
        "--you", "Ann", "--others", "Bob", *outputs(folder, *MEETING_FORMATS),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    alone = voxtral("transcribe", mic_wav, call_wav, "--model", ASSET)
    assert alone.returncode == 0, alone.stderr
    texts = dict(line.split(": ", 1) for line in alone.stdout.splitlines())
    return folder, done.stdout, {"Ann": texts[str(mic_wav)], "Bob": texts[str(call_wav)]}


@espeak
def test_two_replayed_files_give_each_files_transcript(replayed):
    """Labelled lines on stdout, one per turn in the order spoken; each speaker's words are
    exactly `voxtral transcribe`'s text of their file."""
    folder, stdout, alone = replayed
    lines = [line.split(": ", 1) for line in stdout.splitlines()]
    assert [name for name, _ in lines] == ["Bob", "Ann", "Bob"]
    for name in ("Ann", "Bob"):
        said = " ".join(text for who, text in lines if who == name)
        assert said == alone[name] and len(said.split()) >= 2
    assert not list(folder.glob(".*.part"))  # every file in its place


@espeak
def test_every_output_format(replayed):
    """jsonl: a speaker on every event, the words in time order, each speaker's `done` text;
    txt and md: a paragraph per turn with its start time; srt and vtt: cues of one speaker
    each, named, in time order. All of them the same words as stdout."""
    from voxtral_mlx.formats import clock

    folder, stdout, alone = replayed
    events = jsonl(folder / "notes.jsonl")
    assert all(e["speaker"] in ("Ann", "Bob") for e in events)
    words = [e for e in events if e["type"] == "word"]
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)
    assert runs([w["speaker"] for w in words]) == ["Bob", "Ann", "Bob"]
    done = {e["speaker"]: e for e in events if e["type"] == "done"}
    assert {name: e["text"] for name, e in done.items()} == alone
    assert all(e["delay_ms"] == 480 and e["stats"]["audio_seconds"] > 5 for e in done.values())
    assert [e["type"] for e in events].count("echo") == 0
    # a turn is its speaker's run of words
    turns, texts = [], []
    for w in words:
        if not turns or turns[-1][0] != w["speaker"]:
            turns.append((w["speaker"], w["start"]))
            texts.append([])
        texts[-1].append(w["text"])
    turn_lines = [(name, " ".join(t)) for (name, _), t in zip(turns, texts, strict=True)]
    assert [tuple(line.split(": ", 1)) for line in stdout.splitlines()] == turn_lines
    txt = (folder / "notes.txt").read_text()
    assert txt == "".join(
        f"[{clock(start)}] {name}: {text}\n"
        for (name, start), (_, text) in zip(turns, turn_lines, strict=True)
    )
    md = (folder / "notes.md").read_text()
    assert md == "\n".join(
        f"**{name}** ({clock(start)}): {text}\n"
        for (name, start), (_, text) in zip(turns, turn_lines, strict=True)
    )
    srt = [c.split("\n", 2) for c in (folder / "notes.srt").read_text().strip().split("\n\n")]
    vtt = (folder / "notes.vtt").read_text().strip().split("\n\n")
    assert vtt[0] == "WEBVTT" and len(vtt) == len(srt) + 1
    assert [int(n) for n, _, _ in srt] == list(range(1, len(srt) + 1))
    starts = []
    for (_, times, text), cue in zip(srt, vtt[1:], strict=True):
        assert cue == f"{times.replace(',', '.')}\n{text}"
        starts.append(times.split(" --> ")[0])
        assert text.split(": ", 1)[0] in ("Ann", "Bob")
    assert starts == sorted(starts)
    cue_runs = [text.split(": ", 1) for _, _, text in srt]
    for name in ("Ann", "Bob"):
        assert " ".join(t for who, t in cue_runs if who == name) == alone[name]


def delayed(audio: np.ndarray, seconds: float) -> np.ndarray:
    shift = int(seconds * RATE)
    return np.concatenate([np.zeros(shift, np.float32), audio[: len(audio) - shift]])


def meeting_process(*args, env=None):
    import os
    import subprocess
    import sys

    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "voxtral_cli.app",
            "meeting",
            "--model",
            str(ASSET),
            *map(str, args),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        preexec_fn=sigint_default,
    )


def interrupt(proc, timeout: float = 120) -> tuple[str, str]:
    """Ctrl+C (SIGINT), then the rest of stdout and stderr once it exits (read through the
    pipes' own buffers, which may hold what a readline already took in)."""
    import signal

    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.stdout.read(), proc.stderr.read()
        proc.wait()
        return stdout, stderr
    finally:
        watchdog.cancel()
        proc.kill()


@espeak
def test_the_echo_of_the_call_and_ctrl_c(talk, tmp_path):
    """No headphones: the microphone hears the call, 10 dB down and 200 ms late. Its stream
    writes the call's words too (the jsonl's echo events say which, each with the call's
    word it repeats); none of them is yours, and every word you said stays.

    Ctrl+C comes as soon as the call's second turn begins, a minute of each file still to
    come: capture stops, what was captured is transcribed, both streams flush (the call's
    last turn comes out whole), every file is whole and the exit code is 0."""
    first, mine, last = talk
    mic, call = tracks([(1, first.audio), (0, mine.audio), (1, last.audio)])
    heard = mic + 0.3 * delayed(call, 0.2)
    noise = np.random.default_rng(1).standard_normal((2, 60 * RATE)).astype(np.float32)
    proc = meeting_process(
        "--input", write_wav(tmp_path / "mic.wav", np.concatenate([heard, 1e-4 * noise[0]])),
        "--system-input", write_wav(tmp_path / "call.wav", np.concatenate([call, 1e-4 * noise[1]])),
        "--fast", *outputs(tmp_path, "jsonl", "md"),
    )  # fmt: skip
    try:
        assert proc.stdout.readline() == f"Others: {first.text}\n"
        assert proc.stdout.readline() == f"You: {mine.text}\n"  # ends as the call speaks again
    except BaseException:
        proc.kill()
        raise
    stdout, stderr = interrupt(proc)
    assert proc.returncode == 0, stderr
    assert stdout == f"Others: {last.text}\n"
    events = jsonl(tmp_path / "notes.jsonl")
    done = {e["speaker"]: e for e in events if e["type"] == "done"}
    assert done["You"]["text"] == mine.text  # all yours, as said, and nothing else
    assert done["Others"]["text"] == f"{first.text} {last.text}"
    echoes = [e for e in events if e["type"] == "echo"]
    assert len(echoes) >= 3 and {e["text"] for e in echoes} <= set(first.words) | set(last.words)
    spans = [
        (Word("", e["start"], e["end"]), Word("", e["heard_start"], e["heard_end"])) for e in echoes
    ]
    assert all(gap(mic_word, call_word) <= ECHO_WINDOW for mic_word, call_word in spans)
    assert all(e["stats"]["audio_seconds"] < 30 for e in done.values())  # stopped early
    assert (tmp_path / "notes.md").read_text().count("**") == 6  # three turns, whole
    assert not list(tmp_path.glob(".*.part"))


@pytest.fixture(scope="module")
def pulse(tmp_path_factory):
    """A PulseAudio server of the tests' own, on its own socket (other tests and other
    programs play into the shared one), with no sink yet: what the environment of a
    command that uses it needs."""
    import os
    import subprocess

    if not all(shutil.which(tool) for tool in ("pulseaudio", "pactl", "paplay")):
        pytest.skip("PulseAudio is not installed (../shared/tools/virtual-mic start installs it)")
    folder = tmp_path_factory.mktemp("pulse")
    env = {"PULSE_SERVER": f"unix:{folder}/native", "PULSE_RUNTIME_PATH": str(folder)}
    server = subprocess.Popen(
        ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no"]
        + [f"--load=module-native-protocol-unix socket={folder}/native auth-anonymous=1"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        if pactl(env, "info").returncode == 0:
            break
        threading.Event().wait(0.05)
    else:
        server.kill()
        pytest.skip("PulseAudio did not start")
    yield env
    server.terminate()
    server.wait(10)


def pactl(env: dict, *args: str):
    import os
    import subprocess

    return subprocess.run(
        ["pactl", *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=10
    )


def test_missing_sources_are_one_line_before_the_model_loads(pulse, tmp_path):
    """No PulseAudio at all, then a server with no output: one line each, exit code 1,
    before the model (here a folder that does not exist) would load."""
    assert not pactl(pulse, "list", "short", "sinks").stdout  # no output yet (file order)
    wav = write_wav(tmp_path / "mic.wav", np.zeros(RATE, np.float32))
    missing = tmp_path / "no-model"
    # PortAudio reads the PulseAudio server once, as it starts: a process of its own each
    nowhere = {"PULSE_SERVER": "unix:/nonexistent"}
    done = voxtral("meeting", "--input", wav, "--model", missing, env=nowhere, process=True)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"error: {system_audio.NO_PULSE_DEVICE}"]
    done = voxtral("meeting", "--input", wav, "--model", missing, env=pulse, process=True)
    (line,) = done.stderr.strip().splitlines()
    assert done.returncode == 1 and line.startswith("error: no system audio source: ")
    assert "@DEFAULT_MONITOR@" in line or "'pulse'" in line
    done = voxtral(
        "meeting", "--input", wav, "--model", missing, "--system-device", "nothing", process=True
    )
    assert done.returncode == 1
    assert re.fullmatch(
        "error: --system-device 'nothing' matches no input device; input devices: .*\n",
        done.stderr,
    )


@espeak
def test_system_audio_from_the_default_outputs_monitor(pulse, talk, tmp_path):
    """Real time through PulseAudio (PortAudio -> ALSA's pulse plugin -> the server): the
    call plays on the default output, whose monitor is the system audio; your voice plays
    into another sink whose monitor is the default input, the microphone. Each speaker gets
    their own words, in order; Ctrl+C right after the playing ends flushes the last ones."""
    import os
    import subprocess

    for sink in ("call", "room"):
        assert pactl(pulse, "load-module", "module-null-sink", f"sink_name={sink}").returncode == 0
    pactl(pulse, "set-default-sink", "call")
    pactl(pulse, "set-default-source", "room.monitor")
    first, mine, _ = talk
    mic, call = tracks([(1, first.audio), (0, mine.audio)])
    proc = meeting_process("-o", tmp_path / "notes.jsonl", env=pulse)
    try:
        listening = proc.stderr.readline()
        assert listening.startswith("listening: You: default @ ")
        assert "Others: the default output's monitor @ " in listening
        players = [
            subprocess.Popen(
                ["paplay", f"--device={sink}", str(write_wav(tmp_path / f"{sink}.wav", audio))],
                env={**os.environ, **pulse},
            )
            for sink, audio in (("room", mic), ("call", call))
        ]
        for player in players:
            assert player.wait(60) == 0
        threading.Event().wait(0.3)  # the last block through the server
    except BaseException:
        proc.kill()
        raise
    stdout, stderr = interrupt(proc)
    assert proc.returncode == 0, stderr
    assert stdout.splitlines() == [f"Others: {' '.join(first.words)}", f"You: {mine.text}"]
    done = {e["speaker"]: e for e in jsonl(tmp_path / "notes.jsonl") if e["type"] == "done"}
    assert all(e["stats"]["audio_seconds"] >= len(mic) / RATE for e in done.values())


@espeak
def test_the_terminal_view(trained, talk, tmp_path, monkeypatch):
    """On a terminal: the turns in the panel, each name and text in its speaker's colour,
    a line per source (name, rate, level, latency) under it. Both streams are decoded in
    the same passes (one weight read for two), the prompts aside."""
    import io

    from rich.console import Console
    from voxtral_cli.capture import FileSource
    from voxtral_cli.meeting import open_streams, run_meeting

    from voxtral_mlx.decoder import DecoderBatch

    rows = []
    run = DecoderBatch.run

    def counted(batch, given, *args, **kwargs):
        rows.append(len(given))
        return run(batch, given, *args, **kwargs)

    monkeypatch.setattr(DecoderBatch, "run", counted)

    first, mine, _ = talk
    mic, call = tracks([(1, first.audio), (0, mine.audio)])
    sources = [
        FileSource(tmp_path / name, (audio, RATE), fast=True)
        for name, audio in (("mic.wav", mic), ("call.wav", call))
    ]
    console = Console(file=io.StringIO(), force_terminal=True, width=100, height=30, record=True)
    streams = open_streams(trained, None, list(zip(("Ann", "Bob"), sources, strict=True)))
    conversation = run_meeting(streams, [], console)
    assert conversation.text("Ann") == mine.text
    shown = console.export_text(styles=False, clear=False)
    assert "voxtral meeting" in shown
    lines = [line.strip("│ ") for line in shown.splitlines()]
    pairs = [list(pair) for pair in zip(lines, lines[1:], strict=False)]
    assert [f"Bob: {first.text}", f"Ann: {mine.text}"] in pairs
    assert re.search(r"● Ann: file mic\.wav @ 16000 Hz .* dB +latency +\d+ ms", shown)
    assert re.search(r"● Bob: file call\.wav @ 16000 Hz .* dB +latency +\d+ ms", shown)
    styled = console.export_text(styles=True)
    assert "\x1b[1;36mAnn: " in styled and "\x1b[1;35mBob: " in styled  # cyan, magenta
    # two prompts (a pass each), at most one pass alone as one stream flushes, else both
    assert rows.count(1) <= 3 and rows.count(2) >= 10


def test_usage_errors(tmp_path):
    """A wrong command line: one line and exit code 2; an output that cannot be written:
    exit code 1; before any model loads (here a folder that does not exist)."""
    from typer.testing import CliRunner
    from voxtral_cli.app import app

    wav = write_wav(tmp_path / "a.wav", np.zeros(RATE, np.float32))
    nowhere = tmp_path / "nowhere"
    old = tmp_path / "old.txt"
    old.write_text("the last meeting\n")
    for args, code, message in [
        (
            ["--fast", "--input", wav],
            2,
            "--fast replays files: it needs --input and --system-input",
        ),
        (["--device", "x", "--input", wav], 2, "--device and --input exclude each other"),
        (
            ["--system-device", "x", "--system-input", wav],
            2,
            "--system-device and --system-input exclude each other",
        ),
        (
            ["--you", "Ann", "--others", "ann"],
            2,
            "--you and --others are both 'Ann': give two names",
        ),
        (["--others", " "], 2, "--others: give a name on one line"),
        (
            ["-o", tmp_path / "notes.doc"],
            2,
            "cannot write notes.doc: --output must end in .txt, .md, .srt, .vtt or .jsonl",
        ),
        (
            ["-o", tmp_path / "a.md", "-o", tmp_path / "a.md"],
            2,
            f"--output {tmp_path}/a.md is given twice",
        ),
        (["-o", wav / "a.txt"], 1, f"cannot write {wav}/a.txt: {wav} is not a folder"),
        (["-o", old], 1, f"{old} already exists: add --overwrite to replace it"),
    ]:
        result = CliRunner().invoke(app, ["meeting", "--model", str(nowhere), *map(str, args)])
        assert (result.exit_code, result.output) == (code, f"error: {message}\n"), args


def test_macos_screen_recording_permission_is_one_line(monkeypatch):
    """macOS (the logic, with stand-ins for PyObjC's modules: the code cannot run here): no
    Screen Recording permission asks for it once and says where to grant it; before macOS
    13, or without the binding, one line says so."""
    import platform
    import sys
    import types

    asked = []
    quartz = types.SimpleNamespace(
        CGPreflightScreenCaptureAccess=lambda: False,
        CGRequestScreenCaptureAccess=lambda: asked.append(True),
    )
    monkeypatch.setitem(sys.modules, "Quartz", quartz)
    monkeypatch.setitem(sys.modules, "ScreenCaptureKit", types.ModuleType("ScreenCaptureKit"))
    monkeypatch.setattr(system_audio.sys, "platform", "darwin")
    monkeypatch.setattr(platform, "mac_ver", lambda: ("14.5", ("", "", ""), "arm64"))
    with pytest.raises(voxtral_mlx.VoxtralError) as e:
        system_audio.system_audio(None)
    assert str(e.value) == system_audio.SCREEN_RECORDING_HINT and asked == [True]
    assert "Privacy & Security > Screen & System Audio Recording" in str(e.value)
    quartz.CGPreflightScreenCaptureAccess = lambda: True
    assert system_audio.system_audio(None) is system_audio.ScreenCaptureSource
    monkeypatch.setattr(platform, "mac_ver", lambda: ("12.7", ("", "", ""), "arm64"))
    with pytest.raises(voxtral_mlx.VoxtralError, match="from macOS 13 on, this is 12.7"):
        system_audio.system_audio(None)
    monkeypatch.setattr(platform, "mac_ver", lambda: ("14.5", ("", "", ""), "arm64"))
    monkeypatch.setitem(sys.modules, "ScreenCaptureKit", None)  # not installed
    with pytest.raises(voxtral_mlx.VoxtralError, match="pip install pyobjc-framework-Screen"):
        system_audio.system_audio(None)
