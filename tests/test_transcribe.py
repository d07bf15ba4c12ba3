"""The file transcription API."""

import numpy as np
import pytest
import soundfile as sf

import voxtral_mlx
from voxtral_mlx import VoxtralError
from voxtral_mlx.offline import pad_audio


def test_pad_arithmetic(model):
    args = model.args.schedule(480)
    for n in (1, 1279, 1280, 16000, 16001):
        padded = pad_audio(np.ones(n, np.float32), args)
        assert len(padded) % args.samples_per_token == 0
        assert padded[: 32 * 1280].max() == 0 and padded[32 * 1280] == 1
        right = len(padded) - 32 * 1280 - n
        assert right == (1280 - n % 1280) % 1280 + 17 * 1280


def test_path_and_array_give_the_same_result(model, jfk, tmp_path):
    path = tmp_path / "jfk.flac"
    sf.write(path, jfk, 16000, format="FLAC", subtype="PCM_24")
    from_path = voxtral_mlx.transcribe(model, path, delay_ms=480)
    from_array = voxtral_mlx.transcribe(model, voxtral_mlx.load_audio(path), delay_ms=480)
    assert from_path.tokens == from_array.tokens
    assert from_path.text == model.tokenizer.decode(from_path.tokens).strip()
    assert from_path.audio_seconds == pytest.approx(len(jfk) / 16000, abs=1e-3)
    assert all(0 <= w.start <= w.end <= from_path.audio_seconds for w in from_path.words)


def test_decoding_never_passes_the_audio(model):
    audio = np.zeros(16000, np.float32)
    for delay in (80, 2400):
        args = model.args.schedule(delay)
        n_audio = len(pad_audio(audio, args)) // args.samples_per_token
        result = voxtral_mlx.transcribe(model, audio, delay_ms=delay)
        assert len(result.tokens) <= n_audio - args.prompt_length + 1


def test_bad_input(model):
    with pytest.raises(VoxtralError, match="valid delays are 80, 160"):
        voxtral_mlx.transcribe(model, np.zeros(1600, np.float32), delay_ms=500)
    with pytest.raises(VoxtralError, match="1-D"):
        voxtral_mlx.transcribe(model, np.zeros((1600, 2), np.float32))
    with pytest.raises(VoxtralError, match="floating point"):
        voxtral_mlx.transcribe(model, np.zeros(1600, np.int16))
    with pytest.raises(VoxtralError, match="no such audio file"):
        voxtral_mlx.transcribe(model, "/no/such/file.wav")
