"""Every checkpoint layout loads to the same function; every broken checkpoint is a clear error."""

import json
import shutil
import subprocess
import sys

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten
from safetensors.numpy import load_file, save_file

import voxtral_mlx
from voxtral_mlx import VoxtralError
from voxtral_mlx.offline import pad_audio
from voxtral_mlx.testing import (
    official_from_mlx,
    save_mlx_audio,
    save_official,
    save_voxmlx,
    write_mlx_audio,
    write_tekken,
    write_transformers,
    write_voxmlx,
)


def probe_logits(model, seed=0):
    """Decoder logits on a fixed audio + prompt input, through the whole model."""
    rng = np.random.default_rng(seed)
    audio = (0.1 * rng.standard_normal(16000 * 3)).astype(np.float32)
    from voxtral_mlx.offline import encode_audio

    args = model.args.schedule(480)
    embeds = encode_audio(model, pad_audio(audio, args))
    ids = mx.array([1] + [32] * (embeds.shape[0] - 1))
    x = embeds + model.decoder.tok_embeddings(ids)
    return np.array(model.decoder(x[None], model.decoder.ffn_norm_weights(6))[0])


@pytest.fixture(scope="module")
def reference_logits(model):
    return probe_logits(model)


@pytest.mark.parametrize("writer", [write_transformers, write_voxmlx, write_mlx_audio])
def test_layouts_load_to_the_same_logits(writer, hf_model, spec, tmp_path, reference_logits):
    model = voxtral_mlx.load(writer(hf_model, spec, tmp_path / writer.__name__))
    np.testing.assert_allclose(probe_logits(model), reference_logits, rtol=0, atol=1e-5)


def _quantized_mlx_checkpoint(official_dir, tmp_path, save, bits, group_size, skip):
    """Quantize like the peer's converter does, then save under the peer's names."""
    model = voxtral_mlx.load(official_dir)

    def predicate(path, module):
        return (
            hasattr(module, "to_quantized")
            and module.weight.shape[-1] % group_size == 0
            and not any(s in path for s in skip)
        )

    nn.quantize(model, group_size=group_size, bits=bits, class_predicate=predicate)
    params = json.loads((official_dir / "params.json").read_text())
    quantization = {"group_size": group_size, "bits": bits}
    path = save(tmp_path / "quantized", official_from_mlx(model), params, quantization)
    return path, model


@pytest.mark.parametrize(
    "layout,bits,group_size",
    [("voxmlx", 4, 32), ("voxmlx", 8, 64), ("mlx-audio", 6, 32), ("mlx-audio", 4, 64)],
)
def test_quantized_mlx_layouts(official_dir, tmp_path, jfk, layout, bits, group_size):
    """Random-weight quantized checkpoints of the MLX peers load, and decode a whole clip
    (past the prompt: every step reads the quantized embedding) to the same tokens."""
    if layout == "voxmlx":
        save, skip = save_voxmlx, ()
    else:
        save, skip = save_mlx_audio, ("norm", "ada_norm", "conv")
    path, expected = _quantized_mlx_checkpoint(official_dir, tmp_path, save, bits, group_size, skip)
    loaded = voxtral_mlx.load(path)
    assert isinstance(loaded.decoder.tok_embeddings, nn.QuantizedEmbedding)
    assert loaded.decoder.layers[0].attention.wq.bits == bits
    assert loaded.decoder.layers[0].attention.wq.group_size == group_size
    np.testing.assert_allclose(probe_logits(loaded), probe_logits(expected), rtol=0, atol=1e-5)
    clip = jfk[: 16000 * 4]
    got = voxtral_mlx.transcribe(loaded, clip)
    schedule = loaded.args.schedule()
    positions = len(pad_audio(clip, schedule)) // schedule.samples_per_token
    assert len(got.tokens) == positions - schedule.prompt_length + 1  # every position decoded
    assert got.tokens == voxtral_mlx.transcribe(expected, clip).tokens


def test_declared_quantization_is_checked_against_the_weights(official_dir, tmp_path):
    """A config's `quantization` entry (ours and mlx-lm's) must describe the weights."""
    path, _ = _quantized_mlx_checkpoint(official_dir, tmp_path, save_voxmlx, 4, 32, ())
    config = json.loads((path / "config.json").read_text())
    assert config["quantization"] == {"group_size": 32, "bits": 4}
    (path / "config.json").write_text(
        json.dumps({**config, "quantization": {"group_size": 32, "bits": 8}})
    )
    with pytest.raises(VoxtralError, match="declares 8-bit, group 32 quantization, but .* 4-bit"):
        voxtral_mlx.load(path)
    plain = tmp_path / "plain"
    shutil.copytree(official_dir, plain)
    params = json.loads((plain / "params.json").read_text())
    (plain / "params.json").write_text(
        json.dumps({**params, "quantization": {"group_size": 64, "bits": 4}})
    )
    with pytest.raises(VoxtralError, match="declares 4-bit, group 64 quantization, but no weight"):
        voxtral_mlx.load(plain)


def test_official_from_mlx_loads_back_to_the_same_parameters(official_dir, model, tmp_path):
    """official_from_mlx inverts the loader's name and layout mapping: it gives back the
    official file tensor for tensor, and what it writes loads to identical parameters."""
    official = official_from_mlx(model)
    original = load_file(str(official_dir / "consolidated.safetensors"))
    assert official.keys() == original.keys()
    for k in original:
        assert np.array_equal(official[k], original[k]), k
    params = json.loads((official_dir / "params.json").read_text())
    loaded = voxtral_mlx.load(save_official(tmp_path / "from-mlx", official, params))
    ours = dict(tree_flatten(model.parameters()))
    theirs = dict(tree_flatten(loaded.parameters()))
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert np.array_equal(np.array(ours[k]), np.array(theirs[k])), k


def test_testing_module_is_light_and_apart():
    """voxtral_mlx.testing imports torch and transformers only when a function needs them,
    and no other module of the package imports it."""
    probe = """
import pkgutil, sys
import voxtral_mlx, voxtral_mlx.testing
assert not {"torch", "transformers"} & set(sys.modules), "heavy import"
del sys.modules["voxtral_mlx.testing"], voxtral_mlx.testing
for m in pkgutil.iter_modules(voxtral_mlx.__path__):
    if m.name != "testing":
        __import__(f"voxtral_mlx.{m.name}")
assert "voxtral_mlx.testing" not in sys.modules
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr


def test_sanitize_is_idempotent(official_dir, model):
    raw = {
        k: mx.array(v) for k, v in load_file(str(official_dir / "consolidated.safetensors")).items()
    }
    once = model.sanitize(raw)
    twice = model.sanitize(once)
    assert once.keys() == twice.keys()
    for k in once:
        assert np.array_equal(np.array(once[k]), np.array(twice[k])), k
    assert set(once) == {k for k, _ in tree_flatten(model.parameters())}


def test_cpu_layout_is_timed_keeps_values_and_saves_the_checkpoint_layout(
    official_dir, tmp_path, monkeypatch
):
    """On the CPU backend each large float matrix is held in whichever layout its one-row
    product ran faster in (timed once per shape and dtype); small ones keep the checkpoint's.
    Either way the values are the checkpoint's and a saved copy is row-major."""
    from voxtral_mlx import model as model_module

    assert mx.default_device().type == mx.cpu
    small = voxtral_mlx.load(official_dir)
    assert all(
        np.array(w, copy=False).flags["C_CONTIGUOUS"]
        for name, w in tree_flatten(small.parameters())
        if w.ndim == 2 and not name.endswith("norm.weight")
    )
    monkeypatch.setattr(model_module, "LAYOUT_MIN_BYTES", 0)  # time every matrix
    timed = []
    real = model_module.column_major_is_faster
    monkeypatch.setattr(
        model_module, "column_major_is_faster", lambda w: timed.append(w.shape) or real(w)
    )
    model = voxtral_mlx.load(official_dir)
    raw = model.sanitize(
        {
            k: mx.array(v)
            for k, v in load_file(str(official_dir / "consolidated.safetensors")).items()
        }
    )
    matrices = {
        name: w
        for name, w in tree_flatten(model.parameters())
        if w.ndim == 2 and not name.endswith("norm.weight")
    }
    assert "decoder.tok_embeddings.weight" in matrices and len(timed) == len(matrices) > 10
    for name, w in matrices.items():
        held = np.array(w, copy=False)
        column = model_module._layout_choice[(tuple(w.shape), w.dtype)]
        assert held.flags["F_CONTIGUOUS" if column else "C_CONTIGUOUS"], name
        assert np.array_equal(held, np.array(raw[name])), name
    mx.save_safetensors(str(tmp_path / "w.safetensors"), dict(tree_flatten(model.parameters())))
    saved = load_file(str(tmp_path / "w.safetensors"))
    for name in matrices:
        assert saved[name].flags["C_CONTIGUOUS"]
        assert np.array_equal(saved[name], np.array(raw[name])), name
    before = {name: np.array(w, copy=False).flags["F_CONTIGUOUS"] for name, w in matrices.items()}
    model.use_backend_layout()  # idempotent
    after = dict(tree_flatten(model.parameters()))
    assert before == {n: np.array(after[n], copy=False).flags["F_CONTIGUOUS"] for n in before}


def test_layout_choice_is_timed_once_per_shape():
    from voxtral_mlx.model import _layout_choice, column_major_is_faster

    w = mx.random.normal((512, 2048))
    first = column_major_is_faster(w)
    assert _layout_choice[((512, 2048), mx.float32)] == first
    _layout_choice[((512, 2048), mx.float32)] = not first  # a cached answer is not re-timed
    assert column_major_is_faster(mx.zeros((512, 2048))) is (not first)
    del _layout_choice[((512, 2048), mx.float32)]


def _copy(official_dir, tmp_path):
    path = tmp_path / "ckpt"
    shutil.copytree(official_dir, path)
    return path


def _edit_weights(path, edit):
    file = path / "consolidated.safetensors"
    weights = load_file(str(file))
    edit(weights)
    save_file(weights, str(file))


def test_missing_tensor(official_dir, tmp_path):
    path = _copy(official_dir, tmp_path)
    _edit_weights(path, lambda w: w.pop("layers.1.feed_forward.w3.weight"))
    with pytest.raises(
        VoxtralError, match=r"missing 1 tensor.*decoder\.layers\.1\.feed_forward\.w3"
    ):
        voxtral_mlx.load(path)


def test_unexpected_tensor(official_dir, tmp_path):
    path = _copy(official_dir, tmp_path)
    _edit_weights(
        path, lambda w: w.update({"layers.0.attention.extra.weight": np.zeros(3, np.float32)})
    )
    with pytest.raises(VoxtralError, match=r"unexpected tensor.*layers\.0\.attention\.extra"):
        voxtral_mlx.load(path)


def test_misshaped_tensor(official_dir, tmp_path):
    path = _copy(official_dir, tmp_path)
    _edit_weights(path, lambda w: w.update({"norm.weight": np.ones(7, np.float32)}))
    with pytest.raises(VoxtralError, match=r"decoder\.norm\.weight has shape \(7,\), expected"):
        voxtral_mlx.load(path)


def test_truncated_weights_file(official_dir, tmp_path):
    path = _copy(official_dir, tmp_path)
    file = path / "consolidated.safetensors"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    with pytest.raises(VoxtralError, match="consolidated.safetensors.*truncated or corrupt"):
        voxtral_mlx.load(path)


def test_corrupt_weights_file(official_dir, tmp_path):
    path = _copy(official_dir, tmp_path)
    (path / "consolidated.safetensors").write_bytes(b"\xff" * 100)
    with pytest.raises(VoxtralError, match="consolidated.safetensors.*truncated or corrupt"):
        voxtral_mlx.load(path)


def test_corrupt_config_and_missing_tokenizer(official_dir, tmp_path):
    path = _copy(official_dir, tmp_path)
    (path / "params.json").write_text("{not json")
    with pytest.raises(VoxtralError, match="params.json"):
        voxtral_mlx.load(path)
    (path / "params.json").unlink()
    (path / "tekken.json").unlink()
    with pytest.raises(VoxtralError, match="no tekken.json"):
        voxtral_mlx.load(path)


def test_tokenizer_model_vocab_mismatch(official_dir, tmp_path):
    path = _copy(official_dir, tmp_path)
    write_tekken(path / "tekken.json", vocab_size=1400)
    with pytest.raises(VoxtralError, match="vocabulary"):
        voxtral_mlx.load(path)


def test_missing_model_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(
        VoxtralError, match="not in the Hugging Face cache.*voxtral download.*directory"
    ):
        voxtral_mlx.load("someone/not-a-cached-model", offline=True)
    with pytest.raises(VoxtralError, match="neither a model directory nor a repo id"):
        voxtral_mlx.load(tmp_path / "no-such-dir")


def test_repo_id_from_the_hub_cache(official_dir, tmp_path, monkeypatch):
    """A repo id resolves through a (pre-populated) Hugging Face cache, offline."""
    hub = tmp_path / "hub"
    repo = hub / "models--tiny--voxtral"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(official_dir, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    model = voxtral_mlx.load("tiny/voxtral", offline=True)
    assert model.args.decoder.vocab_size == 1500
