"""End to end with the tiny *trained* model (tests/assets/tiny-voxtral): real words come out,
at the right time, through every front door. Held-out speech is generated here with
espeak-ng (seeded), never seen in training."""

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from clirun import voxtral
from test_cli import have_virtual_mic, live_through_virtual_mic

import voxtral_mlx
from voxtral_mlx import Session
from voxtral_mlx.evaluation import NORMALIZERS, basic_normalize, find_pairs, score

ASSET = Path(__file__).parent / "assets" / "tiny-voxtral"

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is needed to generate held-out speech"
)
MAX_WER = 0.05  # issue 7's target, through every front door
# The tiny model speaks digits and commands. Its targets count every spoken word, so they are
# measured with the basic normalizer: Whisper's merges digit runs ("two five" -> "25").
TARGET_NORMALIZER = "basic"


def wer(pairs) -> float:
    scores = [score(ref, hyp, normalizer=TARGET_NORMALIZER) for ref, hyp in pairs]
    return sum(s.word_errors for s in scores) / sum(s.words for s in scores)


def test_wer_through_transcribe_and_eval(trained, held_out, tmp_path):
    """Within the target with either normalizer; `voxtral eval --json` gives the same figures
    and names the normalizer (whisper unless --normalizer says otherwise)."""
    folder, _ = held_out
    pairs = find_pairs([folder])
    hypotheses = [voxtral_mlx.transcribe(trained, audio).text for audio, _ in pairs]
    wers = {}
    for name in NORMALIZERS:  # the same transcripts, scored both ways
        scores = [
            score(ref.read_text(), hyp, normalizer=name)
            for (_, ref), hyp in zip(pairs, hypotheses, strict=True)
        ]
        wers[name] = sum(s.word_errors for s in scores) / sum(s.words for s in scores)
        print(f"held-out WER {100 * wers[name]:.2f}% ({name} normalizer)")
        assert wers[name] <= MAX_WER
    # evaluate(), through the CLI, on the first eight: the same hypotheses, the same scoring
    some = tmp_path / "some"
    some.mkdir()
    for audio, ref in pairs[:8]:
        for path in (audio, ref):
            (some / path.name).symlink_to(path)
    basic = voxtral_eval(some, "--normalizer", "basic")
    assert basic["normalizer"] == "basic" and len(basic["files"]) == 8
    scores = [
        score(ref.read_text(), hyp, normalizer="basic")
        for (_, ref), hyp in zip(pairs[:8], hypotheses[:8], strict=True)
    ]
    errors = sum(s.word_errors for s in scores) / sum(s.words for s in scores)
    assert basic["wer"] == pytest.approx(errors)
    assert [f["hypothesis"] for f in basic["files"]] == [basic_normalize(h) for h in hypotheses[:8]]
    first = voxtral_eval(folder / "utt0000.wav")  # one file is enough to check the default
    assert first["normalizer"] == "whisper"
    whisper = score("x", hypotheses[0], normalizer="whisper").hypothesis
    assert first["files"][0]["hypothesis"] == whisper


def voxtral_eval(path: Path, *args: str) -> dict:
    """`voxtral eval PATH --json ARGS` with the tiny model: the parsed output."""
    done = voxtral("eval", path, "--model", ASSET, "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


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
        session.finish()
        pairs.append((u.text, session.result.text))
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


def test_live_input(held_out, tmp_path):
    """`voxtral live --input` (the capture path: a file at the microphone's pace, here --fast).
    One utterance per stream: the tiny model was trained on clips of at most ~12 s and does
    not generalize to decoder positions far beyond them (long streams are not its job)."""
    _, utterances = held_out

    def live(i: int) -> str:
        wav = tmp_path / f"u{i}.wav"
        sf.write(wav, utterances[i].audio, 16000, subtype="PCM_16")
        done = voxtral("live", "--input", wav, "--fast", "--model", ASSET)
        assert done.returncode == 0, done.stderr
        return done.stdout

    texts = [live(i) for i in range(12)]
    pairs = [(u.text, text) for u, text in zip(utterances[:12], texts, strict=True)]
    print(f"live --input WER {100 * wer(pairs):.2f}% over {len(pairs)} utterances")
    assert wer(pairs) <= MAX_WER


def pcm16(audio: np.ndarray) -> np.ndarray:
    return np.round(audio * 32768).clip(-32768, 32767).astype(np.int16)


def test_server_streams(trained_server, held_out):
    from test_server import stream

    _, utterances = held_out
    dones = [stream(trained_server, pcm16(u.audio))[1]["text"] for u in utterances]
    # done is the deltas' concatenation (stream() checks), the first word's space included
    assert all(text.startswith(" ") for text in dones if text)
    pairs = [(u.text, text.strip()) for u, text in zip(utterances, dones, strict=True)]
    print(f"voxtral serve WER {100 * wer(pairs):.2f}% over {len(pairs)} utterances")
    assert wer(pairs) <= MAX_WER


def test_concurrent_streams_keep_their_own_words(trained, trained_server, held_out):
    """Three clients at once, 0.2 s appends interleaved by the worker: each gets the words of
    its own audio (and exactly the text transcribe() gives for it)."""
    from test_server import stream

    _, utterances = held_out
    chosen = utterances[6:9]
    assert len({u.text for u in chosen}) == 3
    results = {}

    def run(i):
        results[i] = stream(trained_server, pcm16(chosen[i].audio), chunk=3200)[1]["text"].strip()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for i, u in enumerate(chosen):
        assert results[i] == voxtral_mlx.transcribe(trained, pcm16(u.audio) / 32768.0).text
        # its own words, not a neighbour's: closer to its reference than to any other
        others = [score(v.text, results[i]).wer for v in chosen if v is not u]
        assert score(u.text, results[i]).wer < min(others)


def test_two_utterances_on_one_connection(trained, trained_server, held_out):
    """A final commit ends one utterance; the next starts clean on the same connection."""
    from test_server import receive, stream, ws

    _, utterances = held_out
    chosen = utterances[9:11]
    conn = ws(trained_server)
    assert receive(conn)["type"] == "session.created"
    texts = [stream(trained_server, pcm16(u.audio), conn=conn)[1]["text"].strip() for u in chosen]
    conn.close()
    for u, text in zip(chosen, texts, strict=True):
        assert text == voxtral_mlx.transcribe(trained, pcm16(u.audio) / 32768.0).text
        # real words (the set's WER is bounded above)
        assert score(u.text, text, normalizer=TARGET_NORMALIZER).wer <= 0.25


def test_subtitles_time_the_real_words(held_out, tmp_path):
    """`voxtral transcribe -f srt --word-timestamps` over 12 files: one cue per word, the
    words said, each cue within 160 ms of where the word really is."""
    folder, utterances = held_out
    files = [str(folder / f"utt{i:04d}.wav") for i in range(12)]
    done = voxtral(
        "transcribe", *files, "--model", ASSET, "-f", "srt", "-o", tmp_path, "--word-timestamps"
    )
    assert done.returncode == 0, done.stderr
    checked = 0
    for i, u in enumerate(utterances[:12]):
        cues = [c.split("\n") for c in (tmp_path / f"utt{i:04d}.srt").read_text().split("\n\n")]
        cues = [c for c in cues if len(c) >= 3]
        if [basic_normalize(c[2]) for c in cues] != list(u.words):
            continue
        for cue, (start, end) in zip(cues, u.spans, strict=True):
            a, b = (srt_seconds(t) for t in cue[1].split(" --> "))
            assert abs(a - start) <= 0.16 and abs(b - end) <= 0.16, (cue, start, end)
            checked += 1
    assert checked >= 30


def srt_seconds(stamp: str) -> float:
    h, m, rest = stamp.split(":")
    s, ms = rest.split(",")
    return 3600 * int(h) + 60 * int(m) + int(s) + int(ms) / 1000


@pytest.mark.alone  # make test runs it with nothing else running: a busy machine disturbs it
@pytest.mark.skipif(
    not have_virtual_mic(),
    reason="no virtual microphone: a PulseAudio null sink as the default input (see README, Tests)",
)
def test_virtual_microphone(held_out, tmp_path):
    """PulseAudio's null sink at 44.1 kHz: the speech is resampled twice and reaches us in
    device-sized blocks, and `voxtral live` stops on Ctrl+C, flushing the last word. One run
    in real time (two utterances, 11 words in 8.6 s: the tiny model is not made for streams
    much longer than its ~12 s training clips), the suite's only one through a sound server.
    One word may differ from the file's transcript (exact on these): the sound server
    resamples with its own filter and the speech falls elsewhere on the 80 ms grid."""
    _, utterances = held_out
    chosen = [utterances[10], utterances[16]]
    wav, out = tmp_path / "mic.wav", tmp_path / "mic.jsonl"
    sf.write(wav, np.concatenate([u.audio for u in chosen]), 16000, subtype="PCM_16")
    code, stdout, stderr = live_through_virtual_mic(ASSET, wav, "-o", out)
    assert code == 0, stderr
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert events[-1]["type"] == "done" and stdout.strip() == events[-1]["text"]
    heard = sum(len(u.audio) for u in chosen) / 16000
    assert events[-1]["stats"]["audio_seconds"] >= heard  # all of it heard
    measured = wer([(" ".join(u.text for u in chosen), stdout)])
    print(f"virtual microphone WER {100 * measured:.2f}%: {basic_normalize(stdout)}")
    words = sum(len(u.text.split()) for u in chosen)
    assert round(measured * words) <= 1, stderr  # (a device overflow, audio lost, says so)


def readme_block(after: str) -> str:
    """The first ```python block of README.md after the line that starts with `after`."""
    text = (Path(__file__).parents[1] / "README.md").read_text()
    rest = text[text.index("\n" + after) :]
    start = rest.index("```python\n") + len("```python\n")
    return rest[start : rest.index("```", start)]


def test_readme_session_example_prints_every_word(trained, held_out, capsys):
    """The README's Session example, run as written on 48 kHz chunks of held-out speech:
    it prints the whole transcript, the words flushed by finish() included."""
    from voxtral_mlx.audio import resample

    folder, utterances = held_out
    u = utterances[0]
    want = voxtral_mlx.transcribe(trained, u.audio).text
    at_48k = resample(u.audio, 16000, 48000)

    def microphone_chunks():
        for lo in range(0, len(at_48k), 4800):  # 100 ms at a time
            yield at_48k[lo : lo + 4800]

    exec(readme_block("Live audio goes through a `Session`"), {
        "model": trained, "microphone_chunks": microphone_chunks,
    })  # fmt: skip
    printed = capsys.readouterr().out
    text, stats = printed.rstrip("\n").rsplit("\n", 1)
    assert text.strip() == want and len(want.split()) >= 2
    assert "x real time, caches" in stats


def test_drafts_change_no_token(trained, held_out):
    """On real speech (85 % pads) drafted pads are verified several a pass, and the tokens
    are those of one position a pass."""
    _, utterances = held_out
    tokens = passes = 0
    for u in utterances[:8]:
        drafted = voxtral_mlx.transcribe(trained, u.audio)
        assert drafted.tokens == voxtral_mlx.transcribe(trained, u.audio, max_draft=1).tokens
        tokens += len(drafted.tokens)
        passes += drafted.stats.decoder_passes
    print(f"{tokens / passes:.2f} tokens per pass")
    assert tokens / passes > 3.5
