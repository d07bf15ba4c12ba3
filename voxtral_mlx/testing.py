"""Checkpoints in every layout voxtral_mlx.load reads, for tests, benchmarks and training.

Random Voxtral Realtime models are built in transformers (or in MLX) and written in the
official, transformers, voxmlx and mlx-audio layouts; random bf16 checkpoints of any size,
up to the real one (`FULL_SIZE`), are written in the official layout a slice at a time. The
writers are deliberately independent of voxtral_mlx's own name mapping
(`VoxtralRealtime.sanitize`), so a mapping bug fails the tests. torch and transformers are
imported only by the functions that build transformers models; nothing in voxtral_mlx
imports this module.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import mistral_common
import numpy as np
from mlx.utils import tree_flatten

if TYPE_CHECKING:
    import mlx.nn as nn
    from transformers import VoxtralRealtimeConfig, VoxtralRealtimeForConditionalGeneration

N_SPECIAL = 1000  # special tokens before the first vocabulary piece, as in the real Tekken
VOCAB_SIZE = 1500  # 1000 special tokens + 500 byte pieces of the real Tekken vocabulary
DELAY_MS = 480  # transcription_delay_ms of the real tekken.json
SPECIAL_NAMES = {
    0: "<unk>",
    1: "<s>",
    2: "</s>",
    11: "<pad>",
    24: "[AUDIO]",
    25: "[BEGIN_AUDIO]",
    32: "[STREAMING_PAD]",
    33: "[STREAMING_WORD]",
    34: "[REPEAT_AUDIO_TEXT]",
}
_E = "mm_streams_embeddings.embedding_module."  # prefix of the official audio tensors


@dataclass(frozen=True)
class TinySpec:
    enc_dim: int = 64
    enc_layers: int = 2
    enc_heads: int = 4
    enc_head_dim: int = 8
    enc_hidden: int = 128
    enc_window: int = 12  # encoder frames (3 tokens): crossed by any real clip
    dec_dim: int = 64
    dec_layers: int = 2
    dec_heads: int = 4
    dec_kv_heads: int = 2
    dec_head_dim: int = 16
    dec_hidden: int = 128
    dec_window: int = 24  # decoder positions: shorter than every prompt
    vocab_size: int = VOCAB_SIZE
    seed: int = 0


# the real model's shapes (MODEL_SPEC.md): params_json(FULL_SIZE) is the hub's params.json
FULL_SIZE = TinySpec(
    enc_dim=1280,
    enc_layers=32,
    enc_heads=32,
    enc_head_dim=64,
    enc_hidden=5120,
    enc_window=750,
    dec_dim=3072,
    dec_layers=26,
    dec_heads=32,
    dec_kv_heads=8,
    dec_head_dim=128,
    dec_hidden=9216,
    dec_window=8192,
    vocab_size=131072,
)
# the real depth (32 + 26 layers: the real 711 tensors), windows and GQA ratio at narrow
# widths, each quantizable in 64-groups: the full size's code paths in seconds
SMALL_SIZE = TinySpec(
    enc_dim=64,
    enc_layers=32,
    enc_heads=2,
    enc_head_dim=32,
    enc_hidden=256,
    enc_window=750,
    dec_dim=128,
    dec_layers=26,
    dec_heads=4,
    dec_kv_heads=1,
    dec_head_dim=32,
    dec_hidden=384,
    dec_window=8192,
    vocab_size=4096,
)


# --- tekken.json ---


def bundled_tekken_path() -> Path:
    """The real Tekken vocabulary that mistral-common ships."""
    return Path(mistral_common.__file__).parent / "data" / "tekken_240911.json"


def audio_section(delay_ms: int = DELAY_MS) -> dict:
    """The `audio` section of a Voxtral Realtime tekken.json."""
    return {
        "sampling_rate": 16000,
        "frame_rate": 12.5,
        "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400},
        "transcription_delay_ms": delay_ms,
        "streaming_look_ahead_ms": 2.5,
        "streaming_look_back_ms": 52.5,
        "streaming_n_left_pad_tokens": 32,
        "transcription_format": "streaming",
    }


def tekken_json(
    vocab_size: int = VOCAB_SIZE, delay_ms: int = DELAY_MS, pieces: list[dict] | None = None
) -> dict:
    """A tekken.json in the Voxtral Realtime format: 1000 special tokens (the Voxtral ones
    named), then `vocab_size - 1000` vocabulary `pieces` (by default the first byte pieces of
    the real Tekken vocabulary), and the audio section with `delay_ms`."""
    base = json.loads(bundled_tekken_path().read_text())
    if pieces is None:
        pieces = base["vocab"][: vocab_size - N_SPECIAL]
    assert len(pieces) == vocab_size - N_SPECIAL
    special = [
        {"rank": i, "token_str": SPECIAL_NAMES.get(i, f"<SPECIAL_{i}>"), "is_control": True}
        for i in range(N_SPECIAL)
    ]
    config = dict(
        base["config"],
        version="v13",
        default_vocab_size=vocab_size,
        num_vocab_tokens=vocab_size - N_SPECIAL,
        default_num_special_tokens=N_SPECIAL,
    )
    return {
        "config": config,
        "vocab": pieces,
        "special_tokens": special,
        "audio": audio_section(delay_ms),
    }


def write_tekken(path: Path, vocab_size: int = VOCAB_SIZE, delay_ms: int = DELAY_MS) -> None:
    """`tekken_json` with the real Tekken byte pieces, written to `path`."""
    path.write_text(json.dumps(tekken_json(vocab_size, delay_ms)))


# --- configs ---


def hf_config(spec: TinySpec) -> VoxtralRealtimeConfig:
    """The transformers config of `spec`."""
    from transformers import VoxtralRealtimeConfig

    return VoxtralRealtimeConfig(
        audio_config=dict(_hf_stack(spec, "enc"), num_mel_bins=128),
        text_config=dict(
            _hf_stack(spec, "dec"),
            num_key_value_heads=spec.dec_kv_heads,
            vocab_size=spec.vocab_size,
        ),
    )


def _hf_stack(spec: TinySpec, stack: str) -> dict:
    """The fields transformers' audio and text configs share, from `spec`'s `enc_` or `dec_`
    fields."""

    def get(name: str) -> int:
        return getattr(spec, f"{stack}_{name}")

    return dict(
        hidden_size=get("dim"),
        intermediate_size=get("hidden"),
        num_hidden_layers=get("layers"),
        num_attention_heads=get("heads"),
        head_dim=get("head_dim"),
        sliding_window=get("window"),
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
    )


def params_json(spec: TinySpec) -> dict:
    """params.json as the official checkpoint has it."""
    return {
        "dim": spec.dec_dim,
        "n_layers": spec.dec_layers,
        "head_dim": spec.dec_head_dim,
        "hidden_dim": spec.dec_hidden,
        "n_heads": spec.dec_heads,
        "n_kv_heads": spec.dec_kv_heads,
        "use_biases": False,
        "causal": True,
        "rope_theta": 1e6,
        "norm_eps": 1e-5,
        "vocab_size": spec.vocab_size,
        "model_parallel": 1,
        "tied_embeddings": True,
        "sliding_window": spec.dec_window,
        "model_max_length": 131072,
        "multimodal": {
            "whisper_model_args": {
                "encoder_args": {
                    "audio_encoding_args": {
                        "sampling_rate": 16000,
                        "frame_rate": 12.5,
                        "num_mel_bins": 128,
                        "hop_length": 160,
                        "window_size": 400,
                        "chunk_length_s": None,
                        "global_log_mel_max": 1.5,
                        "transcription_format": "streaming",
                    },
                    "dim": spec.enc_dim,
                    "n_layers": spec.enc_layers,
                    "head_dim": spec.enc_head_dim,
                    "hidden_dim": spec.enc_hidden,
                    "n_heads": spec.enc_heads,
                    "vocab_size": 131072,
                    "n_kv_heads": spec.enc_heads,
                    "use_biases": True,
                    "use_cache": False,
                    "rope_theta": 1e6,
                    "causal": True,
                    "norm_eps": 1e-5,
                    "pos_embed": "rope",
                    "max_source_positions": None,
                    "ffn_type": "swiglu",
                    "norm_type": "rms_norm",
                    "sliding_window": spec.enc_window,
                },
                "downsample_args": {"downsample_factor": 4},
            }
        },
        "ada_rms_norm_t_cond": True,
        "ada_rms_norm_t_cond_dim": 32,
    }


def mlx_audio_config(params: dict, delay_ms: int = DELAY_MS) -> dict:
    """mlx-audio's config.json for the model that the official `params` describe."""
    enc = dict(params["multimodal"]["whisper_model_args"]["encoder_args"], downsample_factor=4)
    dec_keys = [
        "dim",
        "n_layers",
        "n_heads",
        "n_kv_heads",
        "head_dim",
        "hidden_dim",
        "vocab_size",
        "norm_eps",
        "rope_theta",
        "sliding_window",
        "tied_embeddings",
        "ada_rms_norm_t_cond",
        "ada_rms_norm_t_cond_dim",
    ]
    return {
        "model_type": "voxtral_realtime",
        "encoder_args": enc,
        "decoder": {k: params[k] for k in dec_keys},
        "transcription_delay_ms": delay_ms,
    }


# --- models and their weights under the official names ---


def tiny_hf_model(spec: TinySpec = TinySpec()) -> VoxtralRealtimeForConditionalGeneration:
    """A transformers model with random weights scaled so that greedy choices are decisive."""
    import torch
    from transformers import VoxtralRealtimeForConditionalGeneration

    torch.manual_seed(spec.seed)
    model = VoxtralRealtimeForConditionalGeneration(hf_config(spec)).float().eval()
    gen = torch.Generator().manual_seed(spec.seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and p.ndim == 1:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
        model.lm_head.weight = model.model.language_model.embed_tokens.weight
    return model


def _permute_back(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Inverse of transformers' conversion permutation: NeoX halves -> interleaved pairs."""
    hd = w.shape[0] // n_heads
    rest = w.shape[1:]
    return w.reshape(n_heads, 2, hd // 2, *rest).swapaxes(1, 2).reshape(w.shape)


def official_from_transformers(model, spec: TinySpec) -> dict[str, np.ndarray]:
    """transformers state dict -> consolidated.safetensors names and layouts."""
    out = {}
    sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    enc_attn = {"q": "wq", "k": "wk", "v": "wv", "o": "wo"}
    mlp = {"gate_proj": "w1", "down_proj": "w2", "up_proj": "w3"}
    for name, w in sd.items():
        parts = name.split(".")
        if name == "lm_head.weight":
            continue
        if name.startswith("model.audio_tower.embedder.conv"):
            i = int(parts[3][-1]) - 1
            out[f"{_E}whisper_encoder.conv_layers.{i}.conv.{parts[-1]}"] = w
        elif name.startswith("model.audio_tower.layers."):
            i, sub = parts[3], ".".join(parts[4:])
            pre = f"{_E}whisper_encoder.transformer.layers.{i}."
            if sub.startswith("self_attn."):
                proj = parts[5][0]
                if proj in "qk":
                    w = _permute_back(w, spec.enc_heads)
                out[pre + f"attention.{enc_attn[proj]}.{parts[-1]}"] = w
            elif sub.startswith("mlp."):
                out[pre + f"feed_forward.{mlp[parts[5]]}.{parts[-1]}"] = w
            elif sub.startswith("self_attn_layer_norm"):
                out[pre + "attention_norm.weight"] = w
            elif sub.startswith("final_layer_norm"):
                out[pre + "ffn_norm.weight"] = w
        elif name == "model.audio_tower.norm.weight":
            out[f"{_E}whisper_encoder.transformer.norm.weight"] = w
        elif name.startswith("model.multi_modal_projector."):
            idx = {"linear_1": 0, "linear_2": 2}[parts[2]]
            out[f"{_E}audio_language_projection.{idx}.weight"] = w
        elif name == "model.language_model.embed_tokens.weight":
            out[f"{_E}tok_embeddings.weight"] = w
        elif name == "model.language_model.norm.weight":
            out["norm.weight"] = w
        elif name.startswith("model.language_model.layers."):
            i = parts[3]
            pre = f"layers.{i}."
            if parts[4] == "self_attn":
                proj = parts[5][0]
                if proj == "q":
                    w = _permute_back(w, spec.dec_heads)
                if proj == "k":
                    w = _permute_back(w, spec.dec_kv_heads)
                out[pre + f"attention.{enc_attn[proj]}.weight"] = w
            elif parts[4] == "mlp":
                out[pre + f"feed_forward.{mlp[parts[5]]}.weight"] = w
            elif parts[4] == "input_layernorm":
                out[pre + "attention_norm.weight"] = w
            elif parts[4] == "post_attention_layernorm":
                out[pre + "ffn_norm.weight"] = w
            elif parts[4] == "ada_rms_norm":
                idx = {"linear1": 0, "linear2": 2}[parts[5]]
                out[pre + f"ada_rms_norm_t_cond.{idx}.weight"] = w
        else:
            raise AssertionError(f"unmapped transformers tensor {name}")
    return out


# voxtral_mlx's module names -> official, written out here rather than taken from sanitize
OURS_TO_OFFICIAL = [
    (r"^encoder\.conv1\.", _E + "whisper_encoder.conv_layers.0.conv."),
    (r"^encoder\.conv2\.", _E + "whisper_encoder.conv_layers.1.conv."),
    (r"^encoder\.", _E + "whisper_encoder.transformer."),
    (r"^adapter\.w_in\.", _E + "audio_language_projection.0."),
    (r"^adapter\.w_out\.", _E + "audio_language_projection.2."),
    (r"^decoder\.tok_embeddings\.", _E + "tok_embeddings."),
    (r"^decoder\.", ""),
    (r"\.ada_norm\.w_down\.", ".ada_rms_norm_t_cond.0."),
    (r"\.ada_norm\.w_up\.", ".ada_rms_norm_t_cond.2."),
]


def official_from_mlx(model: nn.Module) -> dict[str, np.ndarray]:
    """A voxtral_mlx VoxtralRealtime's parameters (our names, MLX conv layout) under the
    consolidated.safetensors names and layouts. Quantized layers keep their quantized
    tensors (weight, scales, biases) under the official layer names. numpy has no bfloat16:
    the model must be float32 or float16 (or quantized)."""
    ours = {k: np.array(v) for k, v in tree_flatten(model.parameters())}
    return _swap_conv_layout(_rename(ours, OURS_TO_OFFICIAL))


# --- the other layouts' names ---

# official -> voxmlx (awni/voxmlx weights.py)
VOXMLX_NAMES = [
    (
        r"^mm_streams_embeddings\.embedding_module\.whisper_encoder\.conv_layers\.(\d)\.conv\.",
        "encoder.convX\\1.",
    ),
    (r"convX0", "conv1"),
    (r"convX1", "conv2"),
    (r"^mm_streams_embeddings\.embedding_module\.whisper_encoder\.transformer\.", "encoder."),
    (r"^mm_streams_embeddings\.embedding_module\.audio_language_projection\.0", "adapter.w_in"),
    (r"^mm_streams_embeddings\.embedding_module\.audio_language_projection\.2", "adapter.w_out"),
    (r"^mm_streams_embeddings\.embedding_module\.tok_embeddings", "language_model.embed_tokens"),
    (r"^layers\.", "language_model.layers."),
    (r"^norm\.", "language_model.norm."),
    (r"\.attention\.w([qkvo])\.", r".attention.\1_proj."),
    (r"\.attention_norm\.", ".attn_norm."),
    (r"\.feed_forward\.w1\.", ".mlp.gate_proj."),
    (r"\.feed_forward\.w2\.", ".mlp.down_proj."),
    (r"\.feed_forward\.w3\.", ".mlp.up_proj."),
    (r"\.ada_rms_norm_t_cond\.0\.", ".ada_norm.linear_in."),
    (r"\.ada_rms_norm_t_cond\.2\.", ".ada_norm.linear_out."),
]

# official -> mlx-audio (Blaizzy/mlx-audio voxtral_realtime sanitize)
MLX_AUDIO_NAMES = [
    (
        r"^mm_streams_embeddings\.embedding_module\.whisper_encoder\.conv_layers\.(\d)\.conv\.",
        r"encoder.conv_layers_\1_conv.conv.",
    ),
    (
        r"^mm_streams_embeddings\.embedding_module\.whisper_encoder\.transformer\.layers\.",
        "encoder.transformer_layers.",
    ),
    (
        r"^mm_streams_embeddings\.embedding_module\.whisper_encoder\.transformer\.norm\.",
        "encoder.transformer_norm.",
    ),
    (
        r"^mm_streams_embeddings\.embedding_module\.audio_language_projection\.(\d)\.",
        r"encoder.audio_language_projection_\1.",
    ),
    (r"^mm_streams_embeddings\.embedding_module\.tok_embeddings", "decoder.tok_embeddings"),
    (r"^layers\.", "decoder.layers."),
    (r"^norm\.", "decoder.norm."),
    (r"\.feed_forward\.w(\d)\.", r".feed_forward_w\1."),
    (r"\.ada_rms_norm_t_cond\.0\.", ".ada_rms_norm_t_cond.ada_down."),
    (r"\.ada_rms_norm_t_cond\.2\.", ".ada_rms_norm_t_cond.ada_up."),
]


def _rename(weights: dict, table: list[tuple[str, str]]) -> dict:
    """Apply every (pattern, replacement) of `table`, in order, to every name."""
    out = {}
    for name, w in weights.items():
        for pattern, repl in table:
            name = re.sub(pattern, repl, name)
        out[name] = w
    return out


def _swap_conv_layout(weights: dict) -> dict:
    """Conv weights PyTorch [out, in, kernel] <-> MLX [out, kernel, in] (its own inverse)."""
    return {k: (w.swapaxes(1, 2) if "conv" in k and w.ndim == 3 else w) for k, w in weights.items()}


# --- writers: official-layout weights in, a checkpoint folder out ---


def _save_safetensors(weights: dict[str, np.ndarray], file: Path, **metadata: str) -> None:
    """Write `weights` to a safetensors `file`, each array made contiguous."""
    from safetensors.numpy import save_file

    weights = {k: np.ascontiguousarray(w) for k, w in weights.items()}
    save_file(weights, str(file), metadata=metadata or None)


def save_random(path: Path, args, scale: float = 4.0, delay_ms: int = DELAY_MS) -> Path:
    """A random-weight checkpoint of `args` (a ModelArgs) in the official layout, with the
    real Tekken vocabulary; matrices scaled by `scale` for livelier logits (benchmarks)."""
    from .model import VoxtralRealtime

    official = official_from_mlx(VoxtralRealtime(args))
    weights = {k: w * scale if w.ndim == 2 else w for k, w in official.items()}
    return save_official(
        path, weights, args.to_params(), tekken_json(args.decoder.vocab_size, delay_ms)
    )


def save_official(
    path: Path, weights: dict[str, np.ndarray], params: dict, tekken: dict | None = None
) -> Path:
    """Write the official layout: consolidated.safetensors, params.json and tekken.json (by
    default `write_tekken`'s for the vocabulary size in `params`)."""
    path.mkdir(parents=True, exist_ok=True)
    _save_safetensors(weights, path / "consolidated.safetensors")
    (path / "params.json").write_text(json.dumps(params, indent=2) + "\n")
    if tekken is None:
        write_tekken(path / "tekken.json", params["vocab_size"])
    else:
        (path / "tekken.json").write_text(json.dumps(tekken))
    return path


def _save_mlx(
    path: Path, weights: dict, config: dict, vocab_size: int, quantization: dict | None
) -> Path:
    """Write model.safetensors (MLX conv layout), config.json and tekken.json, as the MLX
    peers save them."""
    path.mkdir(parents=True, exist_ok=True)
    _save_safetensors(_swap_conv_layout(weights), path / "model.safetensors", format="mlx")
    if quantization is not None:
        config = dict(config, quantization=quantization)
    (path / "config.json").write_text(json.dumps(config, sort_keys=True))
    write_tekken(path / "tekken.json", vocab_size)
    return path


def save_voxmlx(
    path: Path, weights: dict[str, np.ndarray], params: dict, quantization: dict | None = None
) -> Path:
    """voxmlx's layout of official-layout `weights`: its names, params.json as config.json.
    `quantization` ({"group_size", "bits"}) describes weights already quantized."""
    weights = _rename(weights, VOXMLX_NAMES)
    return _save_mlx(path, weights, params, params["vocab_size"], quantization)


def save_mlx_audio(
    path: Path, weights: dict[str, np.ndarray], params: dict, quantization: dict | None = None
) -> Path:
    """mlx-audio's layout of official-layout `weights`: its names and its config.json.
    `quantization` ({"group_size", "bits"}) describes weights already quantized."""
    weights, config = _rename(weights, MLX_AUDIO_NAMES), mlx_audio_config(params)
    return _save_mlx(path, weights, config, params["vocab_size"], quantization)


# --- writers: a tiny transformers model in, a checkpoint folder out ---


def write_official(model, spec: TinySpec, path: Path) -> Path:
    """The official layout of a `tiny_hf_model`."""
    return save_official(path, official_from_transformers(model, spec), params_json(spec))


def write_transformers(model, spec: TinySpec, path: Path) -> Path:
    """The transformers layout (save_pretrained) of a `tiny_hf_model`."""
    model.save_pretrained(path)
    write_tekken(path / "tekken.json", spec.vocab_size)
    return path


def write_voxmlx(model, spec: TinySpec, path: Path) -> Path:
    """The voxmlx layout of a `tiny_hf_model`."""
    return save_voxmlx(path, official_from_transformers(model, spec), params_json(spec))


def write_mlx_audio(model, spec: TinySpec, path: Path) -> Path:
    """The mlx-audio layout of a `tiny_hf_model`."""
    return save_mlx_audio(path, official_from_transformers(model, spec), params_json(spec))


# --- random checkpoints of any size, written one tensor at a time ---


def official_shapes(params: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor of consolidated.safetensors for an official `params` (params.json), in
    the PyTorch layout ([out, in]; convs [out, in, kernel]), read from params alone
    (MODEL_SPEC.md 1.5): the encoder, the adapter, the embedding, the decoder layers."""
    enc = params["multimodal"]["whisper_model_args"]["encoder_args"]
    factor = params["multimodal"]["whisper_model_args"]["downsample_args"]["downsample_factor"]
    mels = enc["audio_encoding_args"]["num_mel_bins"]
    e_dim, d_dim = enc["dim"], params["dim"]
    e_q, e_kv = enc["n_heads"] * enc["head_dim"], enc["n_kv_heads"] * enc["head_dim"]
    d_q, d_kv = params["n_heads"] * params["head_dim"], params["n_kv_heads"] * params["head_dim"]
    w = _E + "whisper_encoder."
    shapes = {
        f"{w}conv_layers.0.conv.weight": (e_dim, mels, 3),
        f"{w}conv_layers.0.conv.bias": (e_dim,),
        f"{w}conv_layers.1.conv.weight": (e_dim, e_dim, 3),
        f"{w}conv_layers.1.conv.bias": (e_dim,),
    }
    for i in range(enc["n_layers"]):
        pre = f"{w}transformer.layers.{i}."
        shapes |= {
            pre + "attention.wq.weight": (e_q, e_dim),
            pre + "attention.wq.bias": (e_q,),
            pre + "attention.wk.weight": (e_kv, e_dim),  # no bias
            pre + "attention.wv.weight": (e_kv, e_dim),
            pre + "attention.wv.bias": (e_kv,),
            pre + "attention.wo.weight": (e_dim, e_q),
            pre + "attention.wo.bias": (e_dim,),
            pre + "attention_norm.weight": (e_dim,),
            pre + "feed_forward.w1.weight": (enc["hidden_dim"], e_dim),
            pre + "feed_forward.w2.weight": (e_dim, enc["hidden_dim"]),
            pre + "feed_forward.w2.bias": (e_dim,),
            pre + "feed_forward.w3.weight": (enc["hidden_dim"], e_dim),
            pre + "ffn_norm.weight": (e_dim,),
        }
    shapes |= {
        f"{w}transformer.norm.weight": (e_dim,),
        f"{_E}audio_language_projection.0.weight": (d_dim, e_dim * factor),
        f"{_E}audio_language_projection.2.weight": (d_dim, d_dim),
        f"{_E}tok_embeddings.weight": (params["vocab_size"], d_dim),
    }
    cond = params["ada_rms_norm_t_cond_dim"]
    for i in range(params["n_layers"]):
        pre = f"layers.{i}."
        shapes |= {
            pre + "attention_norm.weight": (d_dim,),
            pre + "attention.wq.weight": (d_q, d_dim),
            pre + "attention.wk.weight": (d_kv, d_dim),
            pre + "attention.wv.weight": (d_kv, d_dim),
            pre + "attention.wo.weight": (d_dim, d_q),
            pre + "ffn_norm.weight": (d_dim,),
            pre + "feed_forward.w1.weight": (params["hidden_dim"], d_dim),
            pre + "feed_forward.w2.weight": (d_dim, params["hidden_dim"]),
            pre + "feed_forward.w3.weight": (params["hidden_dim"], d_dim),
            pre + "ada_rms_norm_t_cond.0.weight": (cond, d_dim),
            pre + "ada_rms_norm_t_cond.2.weight": (d_dim, cond),
        }
    shapes["norm.weight"] = (d_dim,)
    return shapes


def write_random_official(path: Path, params: dict, seed: int = 0) -> Path:
    """A random-weight bfloat16 checkpoint of `params` in the official layout (params.json,
    consolidated.safetensors, tekken.json with the real Tekken pieces), at any size: the
    weights are generated and written a slice at a time, so memory stays at tens of MB
    even for the real 8.9 GB model. Matrices are normal / sqrt(fan in), norms 1 + 0.1
    normal, biases 0.1 normal; tensor i of `official_shapes` from seed (seed, i)."""
    path.mkdir(parents=True, exist_ok=True)
    shapes = official_shapes(params)

    def fill(i: int, name: str, shape: tuple[int, ...]):
        rng = np.random.default_rng([seed, i])
        rows = max(1, 2**22 // math.prod(shape[1:]))  # about 4 M values (16 MB) a slice
        for lo in range(0, shape[0], rows):
            x = rng.standard_normal((min(rows, shape[0] - lo), *shape[1:]), dtype=np.float32)
            if len(shape) > 1:
                x *= 1 / math.sqrt(math.prod(shape[1:]))
            else:
                x = 1 + 0.1 * x if "norm" in name else 0.1 * x
            yield _bfloat16_bits(x)

    _stream_safetensors(path / "consolidated.safetensors", shapes, "BF16", 2, fill)
    (path / "params.json").write_text(json.dumps(params, indent=2) + "\n")
    write_tekken(path / "tekken.json", params["vocab_size"])
    return path


def _bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16, as the uint16 bit patterns (round to nearest even)."""
    bits = x.view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def _stream_safetensors(file: Path, shapes: dict, dtype: str, itemsize: int, fill) -> None:
    """A safetensors file written tensor by tensor: the header (an 8-byte little-endian
    length, then JSON with each tensor's dtype, shape and byte range, padded to 8 bytes),
    then each tensor's bytes as `fill(i, name, shape)` yields them. safetensors and MLX
    save only whole dicts of arrays held in memory, 8.9 GB for the real model."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape) * itemsize
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(file, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for i, (name, shape) in enumerate(shapes.items()):
            written = 0
            for chunk in fill(i, name, shape):
                f.write(chunk.tobytes())
                written += chunk.nbytes
            assert written == header[name]["data_offsets"][1] - header[name]["data_offsets"][0]


def shared_audio(name: str) -> Path:
    """A file of the shared audio folder ($VOXTRAL_SHARED/audio, by default the `shared`
    folder beside this checkout)."""
    root = Path(os.environ.get("VOXTRAL_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    return root / "audio" / name
