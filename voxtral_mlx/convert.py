"""Writing MLX checkpoints: any supported layout in, our layout out, optionally quantized.

Our layout: `params.json` (the official config, plus `quantization` when quantized),
`model.safetensors` (+ index) with our parameter names (MODEL.md "Tensor layout"), and
`tekken.json`. `voxtral_mlx.load` reads it back like any other layout.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

from .config import QUANT_BITS, QUANT_GROUP_SIZES
from .errors import VoxtralError
from .loader import load, resolve_model_path


def keep_in_float(path: str) -> bool:
    """Norms, the AdaRMSNorm MLPs and the conv stem stay in float: small, and sensitive."""
    return "norm" in path or "conv" in path


def check_quantization(bits: int, group_size: int) -> None:
    if bits not in QUANT_BITS or group_size not in QUANT_GROUP_SIZES:
        raise VoxtralError(
            f"unsupported quantization {bits} bits / group {group_size}: bits must be one of "
            f"{QUANT_BITS}, group size one of {QUANT_GROUP_SIZES}"
        )


def quantize(model: nn.Module, bits: int, group_size: int) -> None:
    """Quantize every linear layer and the tied embedding/LM head, in place."""
    check_quantization(bits, group_size)

    def predicate(path: str, module: nn.Module) -> bool:
        return (
            hasattr(module, "to_quantized")
            and not keep_in_float(path)
            and module.weight.shape[-1] % group_size == 0
        )

    nn.quantize(model, group_size=group_size, bits=bits, class_predicate=predicate)


def convert(
    source: str | Path,
    destination: str | Path,
    *,
    bits: int | None = None,
    group_size: int = 64,
    dtype: mx.Dtype | None = None,
    offline: bool | None = None,
) -> Path:
    """Read a checkpoint (local or hub, any layout), cast and/or quantize it, write ours.
    The checkpoint is written into a temporary folder beside `destination`, renamed to it
    once complete: never half written."""
    if bits is not None:
        check_quantization(bits, group_size)
    destination = Path(destination)
    if destination.exists() and not destination.is_dir():
        raise VoxtralError(f"cannot write to {destination}: it exists and is not an empty folder")
    if destination.is_dir() and any(destination.iterdir()):
        raise VoxtralError(f"cannot write to {destination}: it exists and is not empty")
    source_path = resolve_model_path(source, offline=offline)
    model = load(source_path, dtype=dtype)
    params = model.args.to_params()
    if bits is not None:
        quantize(model, bits, group_size)
        params["quantization"] = {"group_size": group_size, "bits": bits}
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
        partial.chmod(0o777 & ~_umask())  # a folder as mkdir makes it (mkdtemp's is private)
    except OSError as e:
        raise VoxtralError(f"cannot write to {destination}: {e.strerror}") from None
    try:
        _write(partial, model, params, source_path)
        if destination.is_dir():
            destination.rmdir()  # empty (checked above): the checkpoint takes its place
        partial.rename(destination)
    except OSError as e:
        raise VoxtralError(f"cannot write to {destination}: {e.strerror}") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return destination


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write(folder: Path, model: nn.Module, params: dict, source: Path) -> None:
    from ._mlx_lm import save_model

    save_model(folder, model)
    (folder / "params.json").write_text(json.dumps(params, indent=2) + "\n")
    shutil.copy(source / "tekken.json", folder / "tekken.json")
