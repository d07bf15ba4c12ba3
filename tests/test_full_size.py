"""The real size's path at a size the suite can run: the official-layout writer streaming a
tensor at a time, `convert` to 4 bits, loading, and decoding past the prompt at bf16 and
4-bit, on a checkpoint of the real depth (the real 711 tensors), windows and GQA ratio at
narrow widths (`SMALL_SIZE`). benchmarks/full_size.py takes the same path at the real size
(benchmarks/RESULTS.md)."""

import json
import math
import struct
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from safetensors import safe_open

import voxtral_mlx
from voxtral_mlx.convert import convert
from voxtral_mlx.testing import (
    FULL_SIZE,
    SMALL_SIZE,
    official_from_transformers,
    official_shapes,
    params_json,
    write_random_official,
)

HUB_PARAMS = Path(__file__).parent / "assets" / "voxtral-mini-4b-realtime-params.json"


def test_full_size_is_the_hub_checkpoint(hf_model, spec):
    params = params_json(FULL_SIZE)
    assert params == json.loads(HUB_PARAMS.read_text())
    shapes = official_shapes(params)
    # MODEL_SPEC.md 1.5: 711 tensors, 4.4297 B parameters, 8.86 GB in bf16
    assert len(shapes) == 711
    assert sum(math.prod(s) for s in shapes.values()) == 4_429_679_360
    # the names and shapes that transformers' model converts to, at the tiny size
    tiny = official_from_transformers(hf_model, spec)
    assert {name: w.shape for name, w in tiny.items()} == official_shapes(params_json(spec))


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return write_random_official(tmp_path_factory.mktemp("small") / "bf16", params_json(SMALL_SIZE))


def test_the_streamed_file_is_safetensors(small):
    file = small / "consolidated.safetensors"
    shapes = official_shapes(params_json(SMALL_SIZE))
    assert len(shapes) == 711
    with safe_open(file, "np") as f:
        assert set(f.keys()) == set(shapes)
        for name, shape in shapes.items():
            sliced = f.get_slice(name)
            assert (sliced.get_dtype(), tuple(sliced.get_shape())) == ("BF16", shape)
    (header,) = struct.unpack("<Q", file.read_bytes()[:8])
    assert file.stat().st_size == 8 + header + 2 * sum(math.prod(s) for s in shapes.values())
    weights = mx.load(str(file))
    norm = weights["layers.3.ffn_norm.weight"].astype(mx.float32)
    wq = weights["layers.3.attention.wq.weight"].astype(mx.float32)
    assert abs(norm.mean().item() - 1) < 0.05 and abs(norm.std().item() - 0.1) < 0.03
    assert abs(wq.std().item() * math.sqrt(SMALL_SIZE.dec_dim) - 1) < 0.05


@pytest.fixture(scope="module")
def clip(jfk) -> np.ndarray:
    return jfk[:8000]  # half a second of speech


def decoded_positions(model, samples) -> int:
    """Decoder positions after the prompt for `samples` (the offline schedule)."""
    schedule = model.args.schedule()
    total = len(samples) + schedule.left_pad_samples + schedule.right_pad_samples(len(samples))
    return total // schedule.samples_per_token - schedule.prompt_length + 1


def test_convert_to_4_bits_and_decode_both(small, tmp_path, clip):
    bf16 = voxtral_mlx.load(small)
    assert bf16.dtype == mx.bfloat16
    result = voxtral_mlx.transcribe(bf16, clip)
    assert len(result.tokens) == decoded_positions(bf16, clip) > 10

    source = (small / "consolidated.safetensors").stat().st_size
    mx.synchronize()
    before = mx.get_active_memory()
    mx.reset_peak_memory()
    out = convert(small, tmp_path / "q4", bits=4)
    # it must not hold the bf16 source and the 4-bit copy at once (a 16 GB Mac converting
    # the 8.9 GB model must not swap)
    assert mx.get_peak_memory() - before < 1.3 * source
    written = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    assert written < 0.35 * source

    stored = mx.load(str(out / "model.safetensors"))
    assert stored["decoder.layers.25.feed_forward.w1.scales"].dtype == mx.bfloat16
    # MLX's CPU kernels for 4 bits with bf16 scales run about 10x slower than with fp32
    # scales (RESULTS.md): decoded with fp32 scales, through the same layers
    q4 = voxtral_mlx.load(out, dtype=mx.float32)
    w1 = q4.decoder.layers[25].feed_forward.w1
    assert isinstance(w1, nn.QuantizedLinear) and w1.bits == 4
    assert isinstance(q4.encoder.layers[31].attention.wq, nn.QuantizedLinear)
    assert isinstance(q4.decoder.tok_embeddings, nn.QuantizedEmbedding)
    quantized = voxtral_mlx.transcribe(q4, clip)
    assert len(quantized.tokens) == len(result.tokens)
