"""`voxtral bench` smoke test: the real command, a small random model, JSON out."""

import json

from clirun import voxtral

from voxtral_mlx.testing import shared_audio

FIELDS = {
    "mel_ms_per_step",
    "encoder_ms_per_step_streamed",
    "encoder_ms_per_step_batched",
    "decoder_prefill_ms",
    "decoder_ms_per_step",
    "tokens_per_second",
    "tokens_per_pass",
    "real_time_factor",
    "first_token_latency_ms",
    "peak_memory_gb",
}


def test_bench_json_on_a_small_random_model():
    audio = shared_audio("librivox-0880.wav")
    done = voxtral(
        "bench", "--random-weights", "--size", "small", "--dtype", "float32", "--audio", audio,
        "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert FIELDS <= data.keys()
    for field in FIELDS:
        assert data[field] > 0, field
    assert data["audio_seconds"] == 2.99 or abs(data["audio_seconds"] - 2.99) < 0.01
    assert data["dtype"] == "float32" and data["quantization"] == "none"
    assert data["backend"] == "cpu" and data["mlx_version"] and data["chip"] and data["os"]


def test_bench_rejects_bad_options():
    done = voxtral("bench", "--random-weights", "--size", "huge")
    assert done.returncode == 2 and done.stderr == "error: --size 'huge': choose full, small\n"


def test_bench_refuses_options_that_would_be_ignored(official_dir):
    """--size is the size of random weights: with a model of one's own it would be ignored,
    as --model would be with --random-weights. One line each, exit code 2."""
    for args, message in (
        (["--size", "small", "--model", official_dir], "--size applies to --random-weights"),
        (["--random-weights", "--model", official_dir], "--model and --random-weights exclude"),
    ):
        done = voxtral("bench", *args)
        assert done.returncode == 2 and done.stderr.startswith(f"error: {message}"), done.stderr
        assert len(done.stderr.splitlines()) == 1


def test_bench_refuses_audio_too_short_for_a_first_token(official_dir, tmp_path):
    """Half a second at a delay of 2400 ms: a live stream ends before its first token, so
    there is no first-token latency to report: one line, exit 1, no 0 ms figure."""
    import numpy as np
    import soundfile as sf

    clip = tmp_path / "short.wav"
    sf.write(clip, np.zeros(8000, np.float32), 16000)
    done = voxtral("bench", "--model", official_dir, "--audio", clip, "--delay", "2400")
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: the audio is 500 ms long: at a delay of 2400 ms")
    assert len(done.stderr.splitlines()) == 1 and not done.stdout
