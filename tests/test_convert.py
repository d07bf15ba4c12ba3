"""`voxtral convert`: our MLX layout, float or quantized, read back by voxtral_mlx.load."""

import json

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
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
    model = voxtral_mlx.load(convert(official_dir, tmp_path / "bf16", dtype=mx.bfloat16))
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
