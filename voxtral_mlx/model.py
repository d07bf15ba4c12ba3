"""The whole model: audio encoder -> adapter -> text decoder, and checkpoint name mapping."""

from __future__ import annotations

import re
import time

import mlx.core as mx
import mlx.nn as nn

from .adapter import AudioAdapter
from .config import ModelArgs
from .decoder import TextDecoder
from .encoder import AudioEncoder

LAYOUT_MIN_BYTES = 4 * 2**20  # smaller matrices keep the checkpoint's layout
_layout_choice: dict[tuple, bool] = {}  # (shape, dtype) -> column-major is faster here


class VoxtralRealtime(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.encoder = AudioEncoder(args.encoder, args.audio.num_mel_bins)
        self.adapter = AudioAdapter(args.encoder.dim, args.decoder.dim, args.downsample_factor)
        self.decoder = TextDecoder(args.decoder)
        self.tokenizer = None  # set by voxtral_mlx.load

    @property
    def dtype(self) -> mx.Dtype:
        return self.decoder.norm.weight.dtype

    def use_backend_layout(self) -> None:
        """On the CPU backend, hold each large float matrix in the memory layout in which a
        one-row product `x @ W.T` (the decoding step) runs faster on this machine: the
        checkpoint's row-major [out, in], or the same logical array column-major (the
        transposed view of a contiguous [in, out]). Which one wins depends on the CPU and
        its BLAS (benchmarks/RESULTS.md), so it is timed once per shape and dtype in this
        process. Values, names and saved files are unchanged; GPU backends and matrices
        under LAYOUT_MIN_BYTES keep the checkpoint's layout. Idempotent."""
        if mx.default_device().type != mx.cpu:
            return
        for _, module in self.named_modules():
            if not isinstance(module, (nn.Linear, nn.Embedding)):
                continue
            w = module.weight
            if mx.issubdtype(w.dtype, mx.floating) and w.nbytes >= LAYOUT_MIN_BYTES:
                column_major = column_major_is_faster(w)
                module.weight = mx.contiguous(w.T).T if column_major else mx.contiguous(w)
                mx.eval(module.weight)  # one matrix at a time: the old copy is freed

    def sanitize(self, weights: dict[str, mx.array]) -> dict[str, mx.array]:
        """Map any supported checkpoint layout onto this module's names and array layouts.

        Idempotent: names already in our layout match no rule and pass through untouched,
        so raw and re-saved checkpoints both load. MODEL.md lists the layouts.
        """
        out = {}
        for name, value in weights.items():
            if name in ("output.weight", "lm_head.weight"):
                continue  # the LM head is tied to the token embedding
            transforms = []
            for pattern, replacement, transform in _RULES:
                name, hit = pattern.subn(replacement, name)
                if hit and transform is not None:
                    transforms.append(transform)
            for transform in transforms:
                value = transform(self.args, name, value)
            out[name] = value
        return out


def _conv_to_mlx(args: ModelArgs, name: str, w: mx.array) -> mx.array:
    # PyTorch conv weights are [out, in, kernel]; mx.conv1d wants [out, kernel, in]
    return w.swapaxes(1, 2) if name.endswith(".weight") else w


def _unpermute_rope(args: ModelArgs, name: str, w: mx.array) -> mx.array:
    """transformers stores q/k (and the encoder q bias) permuted for NeoX "rotate_half"
    RoPE; undo it to get the interleaved layout of the consolidated checkpoint."""
    stack = args.encoder if name.startswith("encoder.") else args.decoder
    n = stack.n_heads if ".wq." in name else stack.n_kv_heads
    shape = w.shape
    # [n * hd, ...] -> [n, 2, hd / 2, ...] -> [n, hd / 2, 2, ...] -> [n * hd, ...]
    w = w.reshape(n, 2, stack.head_dim // 2, -1).swapaxes(1, 2)
    return w.reshape(shape)


# (pattern, replacement, transform), applied in order, each to the result of the last.
# Prefix rules first (official Mistral, transformers, voxmlx, mlx-audio), then the names
# inside a layer. Our own names match none of them.
_E = r"^mm_(?:streams|whisper)_embeddings\.embedding_module\."
_RULES = [
    (re.compile(p), r, t)
    for p, r, t in [
        # official consolidated.safetensors
        (_E + r"whisper_encoder\.conv_layers\.0\.conv\.", "encoder.conv1.", _conv_to_mlx),
        (_E + r"whisper_encoder\.conv_layers\.1\.conv\.", "encoder.conv2.", _conv_to_mlx),
        (_E + r"whisper_encoder\.transformer\.", "encoder.", None),
        (_E + r"audio_language_projection\.0\.", "adapter.w_in.", None),
        (_E + r"audio_language_projection\.2\.", "adapter.w_out.", None),
        (_E + r"tok_embeddings\.", "decoder.tok_embeddings.", None),
        (r"^(layers|norm)\.", r"decoder.\1.", None),
        # transformers
        (r"^(?:model\.)?audio_tower\.embedder\.conv([12])\.", r"encoder.conv\1.", _conv_to_mlx),
        (r"^(?:model\.)?audio_tower\.", "encoder.", None),
        (r"^(?:model\.)?multi_modal_projector\.linear_1\.", "adapter.w_in.", None),
        (r"^(?:model\.)?multi_modal_projector\.linear_2\.", "adapter.w_out.", None),
        (r"^(?:model\.)?language_model\.(?:model\.)?", "decoder.", None),  # voxmlx too
        (r"^decoder\.embed_tokens\.", "decoder.tok_embeddings.", None),
        # mlx-audio (its convs are already in MLX layout)
        (r"^encoder\.conv_layers_0_conv\.conv\.", "encoder.conv1.", None),
        (r"^encoder\.conv_layers_1_conv\.conv\.", "encoder.conv2.", None),
        (r"^encoder\.transformer_layers\.", "encoder.layers.", None),
        (r"^encoder\.transformer_norm\.", "encoder.norm.", None),
        (r"^encoder\.audio_language_projection_0\.", "adapter.w_in.", None),
        (r"^encoder\.audio_language_projection_2\.", "adapter.w_out.", None),
        # inside a layer
        (r"\.self_attn\.([qk])_proj\.", r".attention.w\1.", _unpermute_rope),
        (r"\.(?:self_attn|attention)\.([qkvo])_proj\.", r".attention.w\1.", None),
        (r"\.(?:self_attn_layer_norm|input_layernorm|attn_norm)\.", ".attention_norm.", None),
        (r"\.(?:final_layer_norm|post_attention_layernorm)\.", ".ffn_norm.", None),
        (r"\.(?:mlp\.gate_proj|feed_forward_w1)\.", ".feed_forward.w1.", None),
        (r"\.(?:mlp\.down_proj|feed_forward_w2)\.", ".feed_forward.w2.", None),
        (r"\.(?:mlp\.up_proj|feed_forward_w3)\.", ".feed_forward.w3.", None),
        (
            r"\.(?:ada_rms_norm_t_cond\.(?:0|ada_down)|ada_rms_norm\.linear1|ada_norm\.linear_in)\.",
            ".ada_norm.w_down.",
            None,
        ),
        (
            r"\.(?:ada_rms_norm_t_cond\.(?:2|ada_up)|ada_rms_norm\.linear2|ada_norm\.linear_out)\.",
            ".ada_norm.w_up.",
            None,
        ),
    ]
]


def column_major_is_faster(w: mx.array) -> bool:
    """Whether a one-row product with `w` held column-major beats row-major on this
    machine: best of 3 timings each, alternating; cached per shape and dtype."""
    key = (tuple(w.shape), w.dtype)
    if key not in _layout_choice:
        layouts = [mx.contiguous(w), mx.contiguous(w.T).T]  # row-major, column-major
        x = mx.ones((1, w.shape[-1]), w.dtype)
        mx.eval(x, *layouts)
        times: list[list[float]] = [[], []]
        for _ in range(4):
            for i, layout in enumerate(layouts):
                tic = time.perf_counter()
                mx.eval(x @ layout.T)
                times[i].append(time.perf_counter() - tic)
        row, column = (min(t[1:]) for t in times)  # the first round warms up
        _layout_choice[key] = column < row
    return _layout_choice[key]
