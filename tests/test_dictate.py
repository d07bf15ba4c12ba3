"""`voxtral dictate`: the text rules and the hotkey without a display, then the real command
with the tiny trained model typing into a real Tk window under Xvfb (one X server for the
module), the hotkey sent with xdotool, --paste through the real clipboard (xclip)."""

import importlib.util
import json
import os
import pty
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from clirun import sigint_default
from typer.testing import CliRunner
from voxtral_cli.app import app
from voxtral_cli.keyboard import REPEAT_GAP, HotkeyState, parse_hotkey

import voxtral_mlx
from voxtral_mlx import VoxtralError
from voxtral_mlx.dictation import DictationText

ASSET = Path(__file__).parent / "assets" / "tiny-voxtral"
VOXTRAL = [sys.executable, "-m", "voxtral_cli.app"]
HOTKEY = "ctrl+alt+space"  # the Linux default, sent with xdotool


def typed(deltas: list[str], commands: bool = False) -> str:
    """What DictationText types for these deltas, taking the text after each, then flushing."""
    text, out = DictationText(commands), ""
    for delta in deltas:
        text.push(delta)
        out += text.take()
    text.flush()
    return out + text.take()


def test_no_leading_space_and_the_model_s_capitals():
    assert typed([" Hello", " world", "."]) == "Hello world."
    assert typed([" ", " ok"]) == "ok"
    text = DictationText()
    text.push(" One.")
    assert text.take() == "One."
    text.push(" Two.")
    assert text.take() == " Two."  # the same window: the space between phrases stays
    text.new_target()
    text.push(" Three.")
    assert text.take() == "Three."  # another window: a new start


def test_spoken_commands():
    deltas = [" Dear", " John", ",", " new", " line", ".", " Thanks", "."]
    assert typed(deltas, commands=True) == "Dear John,\nThanks."
    assert typed(deltas) == "Dear John, new line. Thanks."  # off by default
    para = [" Hi", ".", " New", " Paragraph", ".", " How", " are", " you", "?"]
    assert typed(para, commands=True) == "Hi.\n\nHow are you?"
    # not commands: other words, inside a word, a longer word
    assert typed([" the", " new", " lines"], commands=True) == "the new lines"
    assert typed([" re", "new", " line"], commands=True) == "renew line"
    assert typed([" a", " new", " car"], commands=True) == "a new car"
    # split anywhere by the tokenizer; a command at the very start or end
    assert typed([" ne", "w li", "ne", " ok"], commands=True) == "\nok"
    assert typed([" done", " new", " line"], commands=True) == "done\n"


def test_text_that_may_be_a_command_waits_for_the_next_words():
    text = DictationText(commands=True)
    text.push(" buy")
    text.push(" new")
    assert text.take() == "buy"  # " new" may start "new line"
    text.push(" line")
    assert text.take() == ""  # "new line" may go on: "new lines"
    text.push(" please")
    assert text.take() == "\nplease"


def test_hotkey_parsing():
    assert str(parse_hotkey("ctrl+alt+space")) == "ctrl+alt+space"
    assert parse_hotkey("<Alt>+<Ctrl>+<Space>") == parse_hotkey("ctrl+alt+space")
    assert parse_hotkey("command+option+D").pynput == "<alt>+<cmd>+d"
    assert parse_hotkey("f8").modifiers == () and parse_hotkey("super+f8").modifiers == ("cmd",)
    for bad, message in [
        ("ctrl+alt+spacebar", "unknown key 'spacebar'"),
        ("ctrl+alt", "one key besides the modifiers"),
        ("ctrl+a+b", "one key besides the modifiers"),
        ("", "unknown key ''"),
        ("a", "needs ctrl, alt or cmd"),
        ("space", "needs ctrl, alt or cmd"),
        ("shift+1", "needs ctrl, alt or cmd"),
    ]:
        with pytest.raises(VoxtralError, match=message):
            parse_hotkey(bad)


def test_hotkey_state_counts_a_repeating_key_as_held():
    state = HotkeyState({"ctrl", "alt", "space"}, {"ctrl", "alt"})
    assert not state.update("ctrl", True, 0.0) and not state.update("alt", True, 0.0)
    assert state.modifiers_held
    assert state.update("space", True, 0.0)  # down
    assert not state.update("space", True, 0.5)  # a repeat is no new press
    state.update("space", False, 1.0)  # X11's repeat: a release, then a press at once
    assert not state.update("space", True, 1.0) and not state.released(1.0 + 2 * REPEAT_GAP)
    state.update("space", False, 2.0)
    assert not state.released(2.0) and state.released(2.0 + REPEAT_GAP)  # let go
    assert state.modifiers_held and not state.released(3.0)
    state.update("ctrl", False, 3.0)
    state.update("alt", False, 3.0)
    assert not state.modifiers_held


def test_cue_tones_rise_when_listening_starts_and_fall_when_it_stops():
    from voxtral_cli.dictate import cue_tones

    for start in (True, False):
        tones = cue_tones(start, 16000)
        first, second = (np.argmax(np.abs(np.fft.rfft(x))) for x in np.split(tones, 2))
        assert (first < second) == start
        assert np.abs(tones).max() <= 0.2 and abs(tones[0]) < 1e-3 and abs(tones[-1]) < 1e-3


# --- the real command under Xvfb -------------------------------------------------------

TK_WINDOW = r"""
import json, sys, tkinter as tk
root = tk.Tk()
root.title(sys.argv[1])
text = tk.Text(root, width=80, height=8)
text.pack()
# printable keys typed; of those, sent by XSendEvent (which terminals ignore); pastes
seen = {"keys": 0, "sent": 0, "pastes": 0}
def key(event):
    if event.char and event.char.isprintable() and not event.state & 0x4:
        seen["keys"] += 1
        seen["sent"] += bool(event.send_event)
def paste(event):
    seen["pastes"] += 1
text.bind("<KeyPress>", key, add="+")
text.bind("<<Paste>>", paste, add="+")
def command(*_):
    line = sys.stdin.readline().strip()
    if not line:
        root.destroy()
        return
    if line == "focus":
        text.focus_force()
        root.update()
    print(json.dumps({"text": text.get("1.0", "end-1c"), **seen}), flush=True)
root.tk.createfilehandler(sys.stdin, tk.READABLE, command)
root.update()
print(json.dumps({"ready": True}), flush=True)
root.mainloop()
"""


class TkWindow:
    """A real X11 window with a Tk text widget, in a process of its own."""

    def __init__(self, env: dict, title: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", TK_WINDOW, title],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert json.loads(self.proc.stdout.readline())["ready"]

    def ask(self, command: str = "get") -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    @property
    def text(self) -> str:
        return self.ask()["text"]

    def focus(self) -> None:
        self.ask("focus")

    def wait_for(self, want: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while (got := self.text) != want and time.monotonic() < deadline:
            time.sleep(0.05)
        return got

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def x11():
    """An Xvfb display of its own: the environment for the processes that use it."""
    missing = [t for t in ("Xvfb", "xdotool", "xclip", "espeak-ng") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} missing (apt install xvfb xdotool xclip espeak-ng)")
    if importlib.util.find_spec("pynput") is None:  # it cannot be imported without X
        pytest.skip("pynput is missing (pip install -e '.[test]')")
    pytest.importorskip("tkinter", reason="tkinter is missing (apt install python3-tk)")
    read, write = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as numbers:
        number = numbers.readline().strip()  # written once the server accepts clients
    if not number:
        pytest.skip("Xvfb did not start")
    env = {**os.environ, "DISPLAY": f":{number}"}
    env.pop("WAYLAND_DISPLAY", None)
    yield env
    server.terminate()
    server.wait(10)


@pytest.fixture
def window(x11):
    w = TkWindow(x11, "target")
    w.focus()
    yield w
    w.close()


@pytest.fixture(scope="module")
def speech():
    """Held-out utterances (the tiny model's words, spoken by espeak-ng), none with a word
    of another."""
    from data import make_utterance

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is needed to speak the test sentences (apt install espeak-ng)")
    rng = np.random.default_rng(2026)
    found, words = [], set()
    while len(found) < 4:
        u = make_utterance(rng, 3, 4)
        if not words & set(u.words):
            found.append(u)
            words |= set(u.words)
    return found


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(16000 * seconds), np.float32)


def write_wav(path: Path, *pieces: np.ndarray) -> Path:
    sf.write(path, np.concatenate(pieces), 16000, subtype="PCM_16")
    return path


@cache
def trained():
    return voxtral_mlx.load(ASSET)


def transcript(audio: Path | np.ndarray) -> str:
    if isinstance(audio, Path):
        audio = voxtral_mlx.load_audio(audio)
    return voxtral_mlx.transcribe(trained(), audio).text


def dictate_here(x11: dict, *args):
    """`voxtral dictate` in this process (no start-up cost), with stdin no terminal."""
    env = {"DISPLAY": x11.get("DISPLAY"), "WAYLAND_DISPLAY": None}
    command = ["dictate", "--model", str(ASSET), "--no-cue", *map(str, args)]
    return CliRunner().invoke(app, command, env=env)


def input_at(line: str) -> int:
    """The input's position (a sample at 16 kHz) in a state line: "paused at 4.05 s of..."."""
    return round(16000 * float(line.split(" at ")[1].split(" s ")[0]))


def dictate_process(env: dict, *args, stdin=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen(
        [*VOXTRAL, "dictate", "--model", str(ASSET), "--no-cue", *map(str, args)],
        env=env,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_default,
    )


class Lines:
    """A process's stderr lines as they come (read on a thread), with waits on them."""

    def __init__(self, stream):
        self.all: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, start: str, timeout: float = 60) -> str:
        """Waits for a line starting with `start`, and returns it."""
        deadline = time.monotonic() + timeout
        while (line := self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))) is not None:
            self.all.append(line)
            if line.startswith(start):
                return line
        raise AssertionError(f"no line {start!r} in {self.all}")

    def rest(self) -> list[str]:
        while (line := self._queue.get(timeout=30)) is not None:
            self.all.append(line)
        return self.all


def test_types_what_transcribe_gives(x11, window, speech, tmp_path):
    wav = write_wav(tmp_path / "one.wav", speech[0].audio, speech[1].audio)
    done = dictate_here(x11, "--input", wav, "--fast")
    assert done.exit_code == 0, done.stderr
    want = transcript(wav)
    assert window.wait_for(want) == want and len(want.split()) >= 4
    assert done.stdout == "" and f"s of input: {len(want)} characters typed" in done.stderr
    seen = window.ask()
    assert seen["keys"] >= len(want.replace(" ", "")) and seen["sent"] == 0  # XTest, as keys


def test_paste_goes_through_the_clipboard_and_restores_it(x11, window, speech, tmp_path):
    def clipboard(*args, data=None):
        command = ["xclip", "-selection", "clipboard", *args]
        if data is None:
            return subprocess.run(command, env=x11, capture_output=True, text=True).stdout
        subprocess.run(command, env=x11, input=data, text=True, stdout=subprocess.DEVNULL)

    clipboard("-i", data="what was copied before")
    wav = write_wav(tmp_path / "paste.wav", speech[2].audio)
    done = dictate_here(x11, "--paste", "--input", wav, "--fast")
    assert done.exit_code == 0, done.stderr
    assert window.wait_for(transcript(wav)) == transcript(wav)
    seen = window.ask()
    assert seen["pastes"] >= 1 and seen["keys"] == 0  # pasted, not typed
    assert clipboard("-o") == "what was copied before"


def test_dry_run_needs_no_display(speech, tmp_path):
    wav = write_wav(tmp_path / "dry.wav", speech[3].audio)
    done = dictate_here({}, "--dry-run", "--input", wav, "--fast")
    assert done.exit_code == 0, done.stderr
    assert done.stdout == transcript(wav) + "\n"  # the line ends before the status's
    assert "warning: the hotkey is off: no X display" in done.stderr
    held = dictate_here({}, "--dry-run", "--hold", "--input", wav, "--fast")
    assert held.exit_code == 1 and held.stderr.startswith("error: --hold needs the hotkey")


def test_hotkey_own_terminal_and_ctrl_c(x11, speech, tmp_path):
    """A dictation as it happens, in real time, started from a terminal (stdin a pty) whose
    window has the focus:

    - A's first words wait while the terminal has the focus; the focus moves to the other
      window, and A is typed there;
    - the hotkey (xdotool), just after A's last word: a pause, which flushes that word;
    - B is said while paused and typed nowhere; the hotkey again: listening again, C typed;
    - the focus goes back to the terminal and Ctrl+C comes just after C's last word: that
      word, flushed, is printed on stdout instead of typed into the terminal.

    What is typed is what transcribe gives for the input heard while listening (dictate logs
    where the input was at each change)."""
    terminal, other = TkWindow(x11, "terminal"), TkWindow(x11, "other")
    a, b, c = speech[0], speech[3], speech[2]
    parts = [silence(0.3), a.audio, silence(2.0), b.audio, silence(1.8), c.audio, silence(1.0)]
    wav = write_wav(tmp_path / "abc.wav", *parts)
    audio = voxtral_mlx.load_audio(wav)
    starts = np.cumsum([0] + [len(p) / 16000 for p in parts])
    a_said, b_said, c_said = (starts[i] + u.spans[-1][1] for i, u in ((1, a), (3, b), (5, c)))

    def at(t: float) -> None:
        time.sleep(max(start + t - time.monotonic(), 0))

    def hotkey() -> None:
        subprocess.run(["xdotool", "key", HOTKEY], env=x11, check=True)

    terminal.focus()
    tty, tty_peer = pty.openpty()
    proc = dictate_process(x11, "--input", wav, stdin=tty_peer)
    try:
        lines = Lines(proc.stderr)
        lines.wait_for("listening")
        start = time.monotonic()  # the file plays from about now, in real time
        lines.wait_for("listening at 0.00 s of input; waiting: the focus is on this terminal")
        assert terminal.text == ""
        other.focus()
        at(a_said + 0.15)  # A's last word is 480 ms behind
        hotkey()
        paused = input_at(lines.wait_for("paused"))
        a_text = transcript(audio[:paused])
        after_pause = other.wait_for(a_text, timeout=5)
        at(b_said + 0.6)
        during_pause = other.text
        hotkey()
        resumed = input_at(lines.wait_for("listening"))
        at(c_said + 0.1)
        # the words before C's last are typed by now, or being typed: the focus moves once
        # the window's text holds still (a focus moved while keys are typed takes the rest)
        shown, still = other.text, time.monotonic()
        while time.monotonic() - still < 0.12:
            if (now := other.text) != shown:
                shown, still = now, time.monotonic()
        terminal.focus()
        time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        stdout = proc.stdout.read()
        proc.wait(60)
    finally:
        proc.kill()
        os.close(tty)
        os.close(tty_peer)
    log = lines.rest()
    assert proc.returncode == 0, log
    stopped = input_at(log[-1])
    assert after_pause == a_text and during_pause == a_text, log
    c_text = transcript(audio[resumed:stopped])
    # real words: A's and C's (the tiny model may write one twice), none of B's
    assert set(a_text.split()) == set(a.words) and set(c_text.split()) == set(c.words), log
    assert resumed > round(16000 * b_said), log
    assert terminal.text == ""
    typed = other.text
    assert typed.startswith(a_text + " ") and stdout.endswith("\n") and stdout.strip(), log
    assert typed + stdout[:-1] == f"{a_text} {c_text}", "\n".join([typed, stdout, *log])
    assert any("not typed (the focus is on this terminal)" in line for line in log)
    terminal.close()
    other.close()


def test_hold_is_push_to_talk(x11, window, speech, tmp_path):
    """--hold with a key that is no modifier: listening from the press (typing as it goes)
    to the release, which flushes the last word."""
    a = speech[1]
    parts = [silence(0.5), a.audio, silence(0.5)]
    wav = write_wav(tmp_path / "hold.wav", *parts)
    a_said = len(parts[0]) / 16000 + a.spans[-1][1]
    proc = dictate_process(x11, "--hold", "--hotkey", "f8", "--input", wav)
    lines = Lines(proc.stderr)
    lines.wait_for("paused at 0.00 s of input")
    start = time.monotonic()
    subprocess.run(["xdotool", "keydown", "F8"], env=x11, check=True)
    listening = input_at(lines.wait_for("listening"))
    first_word = window.wait_for(a.words[0], timeout=10)
    typed_while_held = time.monotonic() < start + a_said
    time.sleep(max(start + a_said + 0.15 - time.monotonic(), 0))
    subprocess.run(["xdotool", "keyup", "F8"], env=x11, check=True)
    paused = input_at(lines.wait_for("paused"))
    proc.wait(60)
    log = lines.rest()
    assert proc.returncode == 0, log
    assert first_word == a.words[0] and typed_while_held, log
    audio = voxtral_mlx.load_audio(wav)
    assert window.wait_for(transcript(audio[listening:paused]), timeout=5) == transcript(
        audio[listening:paused]
    )
    assert set(window.text.split()) == set(a.words), log


def test_dictate_errors(x11, tmp_path):
    """One line on stderr and a non-zero exit, before any model is loaded (it does not
    exist here)."""
    nowhere = tmp_path / "no-model"
    wav = write_wav(tmp_path / "s.wav", silence(0.5))
    no_display = {k: v for k, v in x11.items() if k != "DISPLAY"}
    no_mic = ("no-such-mic", "no audio input device", "PortAudio")
    cases = [
        (x11, ["--hotkey", "ctrl+alt+spacebar"], 2, "unknown key 'spacebar'"),
        (x11, ["--hotkey", "ctrl+alt"], 2, "one key besides the modifiers"),
        (x11, ["--fast"], 2, "--fast only applies to --input"),
        (x11, ["--input", wav, "--device", "x"], 2, "exclude each other"),
        ({**x11, "WAYLAND_DISPLAY": "wayland-0"}, [], 1, "Wayland session"),
        (no_display, [], 1, "no X display ($DISPLAY is not set)"),
        ({**x11, "DISPLAY": ":9876"}, [], 1, "cannot open the X display ':9876'"),
        ({**x11, "PATH": str(tmp_path)}, ["--paste"], 1, "--paste needs xclip"),
        (x11, ["--input", tmp_path / "missing.wav"], 1, "no such audio file"),
        (x11, ["--device", "no-such-mic"], 1, no_mic),
    ]

    def run(case):
        env, args, code, message = case
        done = subprocess.run(
            [*VOXTRAL, "dictate", "-m", nowhere, *map(str, args)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode == code, (args, done.stderr)
        assert len(lines) == 1 and lines[0].startswith("error:"), (args, lines)
        messages = message if isinstance(message, tuple) else (message,)
        assert any(m in lines[0] for m in messages), (args, lines)

    with ThreadPoolExecutor(2) as pool:  # one per core
        list(pool.map(run, cases))
