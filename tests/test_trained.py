"""End to end with the tiny *trained* model (tests/assets/tiny-voxtral): real words come out,
at the right time, through every front door. Held-out speech is generated here with
espeak-ng (seeded), never seen in training."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_cli import have_virtual_mic, live_through_virtual_mic

import voxtral_mlx
from voxtral_mlx import Session
from voxtral_mlx.evaluation import evaluate, find_pairs, normalize, score

ASSET = Path(__file__).parent / "assets" / "tiny-voxtral"
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is needed to generate held-out speech"
)
HELD_OUT_SEED = 987654  # training used 1234, 1235, 1236
# Issue 7 asks for a word error rate of at most 5 %; the committed model measures 6.5 % on this
# held-out set at 480 ms (8.6 % at 240 ms). These bounds guard what it does, not the target.
MAX_WER = 0.10
VOXTRAL = [sys.executable, "-m", "voxtral_cli.app"]


@pytest.fixture(scope="module")
def trained():
    return voxtral_mlx.load(ASSET)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    from data import write_set

    folder = tmp_path_factory.mktemp("held-out")
    utterances = write_set(folder, 24, HELD_OUT_SEED)
    return folder, utterances


def wer(pairs) -> float:
    scores = [score(ref, hyp) for ref, hyp in pairs]
    return sum(s.word_errors for s in scores) / sum(s.words for s in scores)


def test_wer_through_transcribe_and_eval(trained, held_out):
    folder, _ = held_out
    report = evaluate(trained, find_pairs([folder]), 480)
    print(f"held-out WER {100 * report.wer:.2f}%, CER {100 * report.cer:.2f}%")
    assert len(report.files) == 24
    assert report.wer <= MAX_WER
    done = subprocess.run(
        [*VOXTRAL, "eval", str(folder), "--model", str(ASSET), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert len(data["files"]) == 24 and data["wer"] == pytest.approx(report.wer)


def test_wer_through_session_in_random_chunks(trained, held_out):
    _, utterances = held_out
    rng = np.random.default_rng(5)
    pairs = []
    for u in utterances:
        session = Session(trained, 480)
        lo = 0
        while lo < len(u.audio):
            n = int(rng.integers(1, 6000))
            session.feed(u.audio[lo : lo + n])
            lo += n
        pairs.append((u.text, session.finish()[-1].text))
    measured = wer(pairs)
    print(f"Session WER {100 * measured:.2f}%")
    assert measured <= MAX_WER


def test_a_larger_delay_writes_the_same_words_later(trained, held_out):
    _, utterances = held_out
    shifts = []
    for u in utterances[:8]:
        positions = {}
        for delay in (240, 960):
            tokens = voxtral_mlx.transcribe(trained, u.audio, delay_ms=delay).tokens
            first_output = 1 + 32 + delay // 80 - 1
            positions[delay] = [first_output + i for i, t in enumerate(tokens) if t >= 1000]
        if len(positions[240]) == len(positions[960]):
            shifts += [b - a for a, b in zip(positions[240], positions[960], strict=True)]
    assert len(shifts) >= 16
    # (960 - 240) / 80 = 9 positions later, give or take one for quantization
    assert np.median(shifts) == 9 and all(8 <= s <= 10 for s in shifts)


def test_word_timestamps_within_160_ms(trained, held_out):
    _, utterances = held_out
    errors = []
    for u in utterances:
        words = voxtral_mlx.transcribe(trained, u.audio, delay_ms=480).words
        if [w.text for w in words] != list(u.words):
            continue
        for w, (start, end) in zip(words, u.spans, strict=True):
            errors += [abs(w.start - start), abs(w.end - end)]
    assert len(errors) >= 2 * 40
    mean, worst = 1000 * np.mean(errors), 1000 * max(errors)
    print(f"word boundary error: mean {mean:.0f} ms, max {worst:.0f} ms")
    assert max(errors) <= 0.16


def test_live_input_and_server(trained, held_out, tmp_path):
    """One utterance per stream: the tiny model was trained on clips of at most ~7 s and does
    not generalize to decoder positions far beyond them (long streams are not its job)."""
    _, utterances = held_out
    chosen = utterances[:4]
    live_pairs = []
    for i, u in enumerate(chosen):
        wav = tmp_path / f"u{i}.wav"
        sf.write(wav, u.audio, 16000, subtype="PCM_16")
        live = subprocess.run(
            [*VOXTRAL, "live", "--input", str(wav), "--fast", "--model", str(ASSET)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert live.returncode == 0, live.stderr
        live_pairs.append((u.text, live.stdout))
    assert wer(live_pairs) <= MAX_WER

    from test_server import start_server, stream

    proc, port = start_server(ASSET)
    try:
        pcm = [np.round(u.audio * 32768).clip(-32768, 32767).astype(np.int16) for u in chosen]
        served = [(u.text, stream(port, x)[1]["text"]) for u, x in zip(chosen, pcm, strict=True)]
        assert wer(served) <= MAX_WER
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.skipif(not have_virtual_mic(), reason="no virtual microphone (virtual-mic start)")
def test_virtual_microphone(held_out, tmp_path):
    _, utterances = held_out
    pairs = []
    for i, u in enumerate(utterances[4:7]):
        wav = tmp_path / f"mic{i}.wav"
        sf.write(wav, u.audio, 16000, subtype="PCM_16")
        code, stdout, stderr = live_through_virtual_mic(ASSET, wav)
        assert code == 0, stderr
        pairs.append((u.text, stdout))
    measured = wer(pairs)
    print(f"virtual microphone WER {100 * measured:.2f}%: {[normalize(h) for _, h in pairs]}")
    # Through PulseAudio (44.1 kHz, resampled twice) the tiny model, trained on clean espeak
    # files only, measured 56 % here: far from the 5 % target (issue 7 stays open on this
    # point). This bound only guards that real words come through the microphone path.
    assert measured <= 0.75
    assert any(normalize(h) == normalize(ref) for ref, h in pairs)
