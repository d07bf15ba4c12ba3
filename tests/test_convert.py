"""`voxtral convert`: our MLX layout, float or quantized, read back by voxtral_mlx.load."""

import json
import os

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from test_cli import voxtral
from test_loading import probe_logits

import voxtral_mlx
from voxtral_mlx.convert import convert


@pytest.fixture(scope="module")
def float_logits(model):
    return probe_logits(model)


def rms_rel(out, ref) -> float:
    return float(np.sqrt(np.mean((out - ref) ** 2)) / np.sqrt(np.mean(ref**2)))


def test_float_roundtrip_is_exact(official_dir, tmp_path, float_logits):
    out = convert(official_dir, tmp_path / "f32")
    params = json.loads((out / "params.json").read_text())
    assert "quantization" not in params
    np.testing.assert_array_equal(probe_logits(voxtral_mlx.load(out)), float_logits)
    # converting our own layout again changes nothing (sanitize is idempotent)
    again = convert(out, tmp_path / "again")
    np.testing.assert_array_equal(probe_logits(voxtral_mlx.load(again)), float_logits)


def test_dtype_cast(official_dir, tmp_path):
    folder = convert(official_dir, tmp_path / "bf16", dtype=mx.bfloat16)
    # readable as any folder made here would be (not the temporary folder's private mode)
    mask = os.umask(0o022)
    os.umask(mask)
    assert folder.stat().st_mode & 0o777 == 0o777 & ~mask
    model = voxtral_mlx.load(folder)
    assert model.decoder.layers[0].attention.wq.weight.dtype == mx.bfloat16
    assert model.encoder.conv1.weight.dtype == mx.bfloat16


def test_quantized_error_shrinks_with_bits(official_dir, tmp_path, float_logits):
    """The error figures quoted in MODEL.md ("Quantization") come from this test."""
    errors = {}
    for bits in (8, 6, 4):
        out = convert(official_dir, tmp_path / f"q{bits}", bits=bits, group_size=32)
        params = json.loads((out / "params.json").read_text())
        assert params["quantization"] == {"group_size": 32, "bits": bits}
        model = voxtral_mlx.load(out)
        dec = model.decoder
        assert isinstance(dec.tok_embeddings, nn.QuantizedEmbedding)
        assert isinstance(dec.layers[0].feed_forward.w1, nn.QuantizedLinear)
        assert isinstance(model.adapter.w_in, nn.QuantizedLinear)
        assert isinstance(dec.layers[0].ada_norm.w_down, nn.Linear)  # kept in float
        assert not isinstance(dec.layers[0].ada_norm.w_down, nn.QuantizedLinear)
        assert model.encoder.conv1.weight.dtype == mx.float32
        errors[bits] = rms_rel(probe_logits(model), float_logits)
    print("relative RMS logit error by bits:", {b: round(e, 4) for b, e in errors.items()})
    assert errors[8] < errors[6] < errors[4]
    assert errors[8] < 0.05 and errors[4] < 0.5


def test_convert_refuses_a_non_empty_destination(official_dir, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(voxtral_mlx.VoxtralError, match="not empty"):
        convert(official_dir, tmp_path / "busy")


def test_convert_never_leaves_a_half_written_checkpoint(official_dir, tmp_path, monkeypatch):
    """The checkpoint is written beside the destination and renamed once complete: a write
    that fails midway (a full disk) leaves neither the destination nor the partial folder."""
    import errno

    import voxtral_mlx.convert as conversion

    def full_disk(folder, *args):
        (folder / "model.safetensors").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(conversion, "_write", full_disk)
    with pytest.raises(voxtral_mlx.VoxtralError, match="No space left on device"):
        convert(official_dir, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "empty").mkdir()  # an empty folder given as the destination is kept as it was
    with pytest.raises(voxtral_mlx.VoxtralError):
        convert(official_dir, tmp_path / "empty")
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]


def test_cli_convert_checks_the_destination_before_loading(tmp_path):
    """A destination that cannot be written is one line and exit code 1 before the model is
    looked for (the source here does not exist: its error would come first otherwise)."""
    (tmp_path / "file").write_text("x")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    for destination, why in (
        (tmp_path / "file" / "out", f"{tmp_path / 'file'} is not a folder"),
        (tmp_path / "file", "it exists and is not an empty folder"),
        (tmp_path / "busy", "it exists and is not empty"),
    ):
        done = voxtral("convert", "--hf-path", tmp_path / "nowhere", "--mlx-path", destination)
        assert done.returncode == 1, done.stderr
        assert done.stderr.splitlines() == [f"error: cannot write to {destination}: {why}"]


def test_cli_convert_q_bits_implies_quantize(official_dir, tmp_path):
    done = voxtral(
        "convert", "--hf-path", official_dir, "--mlx-path", tmp_path / "q8", "--q-bits", 8
    )
    assert done.returncode == 0, done.stderr
    params = json.loads((tmp_path / "q8" / "params.json").read_text())
    assert params["quantization"] == {"group_size": 64, "bits": 8}
    assert [p.name for p in tmp_path.iterdir()] == ["q8"]  # no partial folder left beside it
