"""Finding, reading and checking checkpoints in any of the supported layouts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .config import DEFAULT_MODEL, ModelArgs
from .errors import ModelUnavailable, VoxtralError

if TYPE_CHECKING:
    from .model import VoxtralRealtime

CONFIG_FILES = ["params.json", "config.json", "tekken.json", "model.safetensors.index.json"]


def load(
    path_or_repo: str | Path = DEFAULT_MODEL,
    *,
    dtype: mx.Dtype | None = None,
    offline: bool | None = None,
) -> VoxtralRealtime:
    """Load a Voxtral Realtime checkpoint; the returned model carries its `.tokenizer`.

    `path_or_repo` is a local directory or a Hugging Face repo id (downloaded into the HF
    cache, or read from it alone when offline). `dtype` casts floating-point weights.
    """
    path = resolve_model_path(path_or_repo, offline=offline)
    tokenizer_file = path / "tekken.json"
    if not tokenizer_file.is_file():
        raise VoxtralError(f"{path} has no tekken.json (the tokenizer)")
    # the model code (MLX, mlx-lm) and the tokenizer (mistral-common) are imported only once
    # there is a model to load: a wrong path is reported at once
    from .model import VoxtralRealtime
    from .tokenizer import Tokenizer

    tokenizer = Tokenizer.from_file(tokenizer_file)
    args, weight_files, declared = read_config(path, tokenizer.audio_section)
    if tokenizer.vocab_size != args.decoder.vocab_size:
        raise VoxtralError(
            f"tokenizer vocabulary ({tokenizer.vocab_size}) does not match the model's "
            f"({args.decoder.vocab_size}) in {path}"
        )
    model = VoxtralRealtime(args)
    weights = model.sanitize(read_weights(weight_files))
    _quantize_like(model, weights, declared)
    check_weights(model, weights)
    model.load_weights(list(weights.items()), strict=True)
    del weights  # the model holds them now; the layout pass may replace them
    if dtype is not None:
        model.set_dtype(dtype)
    mx.eval(model.parameters())
    model.use_backend_layout()
    model.eval()
    model.tokenizer = tokenizer
    return model


def resolve_model_path(path_or_repo: str | Path, *, offline: bool | None = None) -> Path:
    """A local directory as is; a repo id through the Hugging Face cache."""
    local = Path(path_or_repo).expanduser()
    if local.is_dir():
        return local
    repo = str(path_or_repo)
    if local.exists() or repo.startswith((".", "/", "~")) or repo.count("/") != 1:
        raise VoxtralError(f"model not found: {repo} is neither a model directory nor a repo id")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if offline is None:
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
    try:
        # configs first, then only the weights of the layout they describe
        path = Path(snapshot_download(repo, allow_patterns=CONFIG_FILES, local_files_only=offline))
        pattern = (
            "consolidated.safetensors" if (path / "params.json").is_file() else "model*.safetensors"
        )
        return Path(snapshot_download(repo, allow_patterns=[pattern], local_files_only=offline))
    except LocalEntryNotFoundError as e:
        if offline:
            how = (
                "it is not in the Hugging Face cache and downloads are off (--offline or "
                f"HF_HUB_OFFLINE): fetch it once while online (`voxtral download {repo}`), "
                "or use a local model directory"
            )
        else:
            how = (
                "the Hugging Face hub cannot be reached and it is not in the cache: check the "
                "network (or HF_ENDPOINT for a mirror), or use a local model directory"
            )
        raise ModelUnavailable(f"model {repo} unavailable: {how}") from e
    except HfHubHTTPError as e:
        raise VoxtralError(f"cannot download model {repo}: {e}") from e


def read_config(
    path: Path, audio_section: dict | None
) -> tuple[ModelArgs, list[Path], dict | None]:
    """Detect the checkpoint layout; return the model config, its weight files and the
    quantization the config declares (mlx-lm's `quantization` entry), if any."""
    try:
        if (path / "params.json").is_file():  # official, or ours (voxtral convert)
            params = _read_json(path / "params.json")
            args = ModelArgs.from_params(params, audio_section)
            official = path / "consolidated.safetensors"
            files = [official] if official.is_file() else _weight_files(path)
            return args, files, params.get("quantization")
        if not (path / "config.json").is_file():
            raise VoxtralError(f"{path} has neither params.json nor config.json")
        config = _read_json(path / "config.json")
        if "text_config" in config:  # transformers
            args = ModelArgs.from_hf_config(config, audio_section)
        elif "encoder_args" in config:  # mlx-audio
            args = ModelArgs.from_mlx_audio_config(config, audio_section)
        elif "multimodal" in config:  # voxmlx: params.json saved as config.json
            args = ModelArgs.from_params(config, audio_section)
        else:
            raise VoxtralError(f"{path / 'config.json'} is not a Voxtral Realtime config")
    except (KeyError, TypeError) as e:
        raise VoxtralError(f"malformed model config in {path}: missing or bad field {e}") from e
    return args, _weight_files(path), config.get("quantization")


def _read_json(file: Path) -> dict:
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise VoxtralError(f"cannot read {file}: {e}") from e


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(_read_json(index)["weight_map"].values()))
        files = [path / n for n in names]
        for f in files:
            if not f.is_file():
                raise VoxtralError(f"weights file {f} listed in {index.name} is missing")
        return files
    files = sorted(path.glob("model*.safetensors"))
    if not files:
        raise VoxtralError(f"no weights (*.safetensors) in {path}")
    return files


def read_weights(files: list[Path]) -> dict[str, mx.array]:
    weights: dict[str, mx.array] = {}
    for file in files:
        try:
            weights.update(mx.load(str(file)))
        except Exception as e:  # mx.load raises plain exceptions for corrupt files
            raise VoxtralError(
                f"cannot read weights file {file}: truncated or corrupt ({e})"
            ) from e
    return weights


def _quantize_like(model: nn.Module, weights: dict[str, mx.array], declared: dict | None) -> None:
    """Quantize exactly the layers stored quantized; bits and group size from the shapes,
    checked against what the config declares (mlx-lm's `quantization`: bits and group size,
    optionally overridden per layer path)."""
    found = []

    def predicate(path: str, module: nn.Module):
        scales = weights.get(f"{path}.scales")
        if scales is None or not hasattr(module, "to_quantized"):
            return False
        in_dims = module.weight.shape[-1]
        packed = weights[f"{path}.weight"].shape[-1]  # in_dims * bits / 32 uint32 words
        stored = {"group_size": in_dims // scales.shape[-1], "bits": packed * 32 // in_dims}
        found.append((path, stored))
        return stored

    if any(name.endswith(".scales") for name in weights):
        nn.quantize(model, class_predicate=predicate)
    if declared is not None:
        _check_declared(declared, found)


def _check_declared(declared: dict, found: list[tuple[str, dict]]) -> None:
    if not found:
        raise VoxtralError(
            f"the config declares {_describe(declared)} quantization, but no weight is quantized"
        )
    for path, stored in found:
        want = declared.get(path) if isinstance(declared.get(path), dict) else declared
        if any(want.get(k) != stored[k] for k in ("bits", "group_size")):
            raise VoxtralError(
                f"the config declares {_describe(want)} quantization, but {path} is stored "
                f"with {_describe(stored)}"
            )


def _describe(q: dict) -> str:
    return f"{q.get('bits')}-bit, group {q.get('group_size')}"


def check_weights(model: nn.Module, weights: dict[str, mx.array]) -> None:
    """Strict: every parameter present with its shape, nothing unknown."""
    expected = dict(tree_flatten(model.parameters()))
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing:
        raise VoxtralError(f"checkpoint is missing {len(missing)} tensor(s), first: {missing[0]}")
    if unexpected:
        raise VoxtralError(
            f"checkpoint has {len(unexpected)} unexpected tensor(s), first: {unexpected[0]}"
        )
    for name, value in expected.items():
        if weights[name].shape != value.shape:
            raise VoxtralError(
                f"tensor {name} has shape {tuple(weights[name].shape)}, "
                f"expected {tuple(value.shape)}"
            )
