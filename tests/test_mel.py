"""Audio front end against transformers' feature extractor and mistral-common."""

import io
import os
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from mistral_common.audio import mel_filter_bank as mc_mel_filter_bank
from mistral_common.tokens.tokenizers.audio import Audio
from transformers import VoxtralRealtimeFeatureExtractor
from transformers.audio_utils import mel_filter_bank as hf_mel_filter_bank

import voxtral_mlx
from voxtral_mlx.errors import VoxtralError
from voxtral_mlx.mel import mel_filters
from voxtral_mlx.testing import shared_audio

SHARED = [
    "jfk.wav",
    "librivox-0870.wav",
    "librivox-0880.wav",
    "librivox-0890.wav",
    "librivox-0920.wav",
    "librivox-0930.wav",
]


@pytest.fixture(scope="module")
def extractor():
    return VoxtralRealtimeFeatureExtractor()


def reference_mel(extractor, samples):
    return extractor(samples, sampling_rate=16000, return_tensors="np")["input_features"][0].T


def exact_mel(samples):
    """The same recipe evaluated in float64 with torch (reflect-centred STFT, last frame
    dropped, mistral-common's filterbank, fixed log floor)."""
    x = torch.tensor(samples, dtype=torch.float64)
    window = torch.hann_window(400, dtype=torch.float64)
    power = torch.stft(x, 400, 160, window=window, return_complex=True)[..., :-1].abs() ** 2
    bank = torch.tensor(mc_mel_filter_bank(201, 128, 0.0, 8000.0, 16000))
    log_mel = torch.clamp(bank.T @ power, min=1e-10).log10()
    log_mel = torch.maximum(log_mel, torch.tensor(1.5 - 8.0, dtype=torch.float64))
    return ((log_mel + 4.0) / 4.0).numpy().T


def check_mel(extractor, samples):
    ours = voxtral_mlx.log_mel_spectrogram(samples)
    assert ours.dtype == np.float32
    assert ours.shape == (len(samples) // 160, 128)
    # the recipe itself: within 1e-5 of an exact evaluation
    np.testing.assert_allclose(ours, exact_mel(samples), rtol=0, atol=1e-5)
    # transformers' extractor runs its STFT in float32, which is itself up to ~4.4e-5 away
    # from the exact values in the quiet bins of speech; all else agrees to 1e-5
    ref = reference_mel(extractor, samples)
    assert ref.shape == ours.shape
    diff = np.abs(ours - ref)
    assert diff.max() < 1e-4
    assert np.mean(diff <= 1e-5) > 0.99


@pytest.mark.parametrize("name", SHARED)
def test_mel_matches_transformers_on_speech(extractor, name):
    path = shared_audio(name)
    if not path.is_file():
        pytest.skip(f"{path} not present")
    check_mel(extractor, voxtral_mlx.load_audio(path))


@pytest.mark.parametrize(
    "kind,length",
    [
        ("silence", 16000),
        ("noise", 16000),
        ("noise", 12345),
        ("noise", 1280 * 7 + 161),
        ("sine", 4003),
        ("noise", 401),
    ],
)
def test_mel_matches_transformers_on_synthetic(extractor, kind, length):
    rng = np.random.default_rng(length)
    if kind == "silence":
        x = np.zeros(length, np.float32)
    elif kind == "noise":  # full scale
        x = rng.uniform(-1, 1, length).astype(np.float32)
    else:
        x = (0.5 * np.sin(2 * np.pi * 440 * np.arange(length) / 16000)).astype(np.float32)
    check_mel(extractor, x)


def test_filterbank_identical_to_mistral_common_and_transformers():
    ours = mel_filters()
    mc = mc_mel_filter_bank(201, 128, 0.0, 8000.0, 16000)
    hf = hf_mel_filter_bank(201, 128, 0.0, 8000.0, 16000, norm="slaney", mel_scale="slaney")
    assert ours.shape == (201, 128)
    np.testing.assert_array_equal(ours, mc)
    np.testing.assert_allclose(ours, hf, rtol=0, atol=1e-8)


@pytest.mark.parametrize("rate,channels", [(44100, 1), (8000, 1), (48000, 2), (16000, 2)])
def test_load_audio_resamples_like_mistral_common(tmp_path, rate, channels):
    rng = np.random.default_rng(rate)
    x = (0.3 * rng.standard_normal((rate, channels))).astype(np.float32)
    path = tmp_path / "a.wav"
    sf.write(path, x, rate, subtype="FLOAT")
    ours = voxtral_mlx.load_audio(path)
    ref = Audio.from_file(str(path), strict=False)  # averages the channels, as we do
    ref.resample(16000)
    assert ours.dtype == np.float32 and ours.ndim == 1
    np.testing.assert_array_equal(ours, ref.audio_array.astype(np.float32))


@pytest.mark.parametrize("fmt,ext", [("FLAC", "flac"), ("OGG", "ogg"), ("MP3", "mp3")])
def test_load_audio_other_containers(tmp_path, fmt, ext):
    x = (0.3 * np.sin(np.arange(22050) / 10)).astype(np.float32)
    path = tmp_path / f"a.{ext}"
    sf.write(path, x, 22050, format=fmt)
    out = voxtral_mlx.load_audio(path)
    assert out.dtype == np.float32
    assert abs(len(out) - 16000) <= 1200  # mp3 adds encoder padding


def test_load_audio_through_ffmpeg(tmp_path, monkeypatch):
    """Containers soundfile cannot read go through `ffmpeg -i FILE ... OUT.wav`. A stand-in
    ffmpeg (a script) checks the command line and writes the decoded audio."""
    rate = 44100
    x = (0.25 * np.sin(2 * np.pi * 300 * np.arange(rate) / rate)).astype(np.float32)
    source = tmp_path / "talk.m4a"
    np.save(tmp_path / "payload.npy", x)
    source.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(64))
    fake = tmp_path / "bin" / "ffmpeg"
    fake.parent.mkdir()
    fake.write_text(
        f"#!{sys.executable}\n"
        "import sys, numpy as np, soundfile as sf\n"
        "args = sys.argv[1:]\n"
        "src = args[args.index('-i') + 1]\n"
        "if not src.endswith('.m4a'): sys.exit('bad input')\n"
        f"sf.write(args[-1], np.load({str(tmp_path / 'payload.npy')!r}), {rate}, subtype='FLOAT')\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    out = voxtral_mlx.load_audio(source)
    from voxtral_mlx.audio import resample

    np.testing.assert_array_equal(out, resample(x, rate))
    broken = tmp_path / "broken.webm"
    broken.write_bytes(b"junk")
    with pytest.raises(
        VoxtralError, match="broken.webm: not an audio file ffmpeg can read.*bad input"
    ):
        voxtral_mlx.load_audio(broken)


def test_load_audio_errors(tmp_path, monkeypatch):
    """Each broken input says what is wrong with it; ffmpeg is suggested only for what it
    would read, with the hint for macOS and Linux."""
    with pytest.raises(VoxtralError, match="no such audio file"):
        voxtral_mlx.load_audio(tmp_path / "missing.wav")
    monkeypatch.setattr("shutil.which", lambda name: None)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all\n")
    notes = tmp_path / "notes.txt"  # (ffmpeg reads .txt as no audio either)
    notes.write_text("Grüße, a transcript\n")
    damaged = tmp_path / "bad.wav"
    damaged.write_bytes(b"RIFF\x00\x00garbage")
    m4a = tmp_path / "talk.m4a"
    m4a.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(64))
    for path, message in [
        (empty, "empty.wav is empty \\(0 bytes\\)"),
        (text, "notes.wav: it is a text file, not audio"),
        (notes, "notes.txt: it is a text file, not audio"),
        (damaged, "bad.wav: damaged audio file"),
        (m4a, "talk.m4a: not WAV, FLAC, OGG or MP3, and ffmpeg.*brew install.*apt install"),
    ]:
        with pytest.raises(VoxtralError, match=message) as err:
            voxtral_mlx.load_audio(path)
        assert ("ffmpeg" in str(err.value)) == (path is m4a)
    with pytest.raises(VoxtralError, match="from stream: Format not recognised"):
        voxtral_mlx.load_audio(io.BytesIO(b"not audio"))


def test_stream_resampler_is_chunk_invariant():
    """Any chunking of a stream gives exactly the one-shot soxr HQ resampling."""
    from voxtral_mlx.audio import StreamResampler, resample

    x = (0.1 * np.random.default_rng(0).standard_normal(44100 * 2)).astype(np.float32)
    want = resample(x, 44100)
    rng = np.random.default_rng(1)
    for sizes in ([len(x)], [1] * 500 + [len(x)], rng.integers(1, 6000, 200).tolist()):
        stream, out, lo = StreamResampler(44100), [], 0
        for n in sizes:
            out.append(stream(x[lo : lo + n]))
            lo += n
        out.append(stream(x[lo:], last=True))
        np.testing.assert_array_equal(np.concatenate(out), want)
    same = StreamResampler(16000)
    np.testing.assert_array_equal(same(x[:100]), x[:100])


def test_sparse_filterbank_product_equals_the_dense_one():
    from voxtral_mlx.mel import apply_mel_filters, mel_filters

    power = np.random.default_rng(0).random((50, 201)) ** 4
    np.testing.assert_allclose(apply_mel_filters(power), power @ mel_filters(), rtol=1e-12)
