"""Text decoder: Mistral-style GQA transformer, conditioned on the delay through AdaRMSNorm."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.base import create_attention_mask
from mlx_lm.models.cache import RotatingKVCache

from .config import DecoderArgs
from .layers import Attention, FeedForward


class AdaNorm(nn.Module):
    """The per-layer MLP that turns the delay embedding into a pre-FFN scale (1 + ada)."""

    def __init__(self, dim: int, cond_dim: int):
        super().__init__()
        self.w_down = nn.Linear(dim, cond_dim, bias=False)
        self.w_up = nn.Linear(cond_dim, dim, bias=False)

    def __call__(self, t_cond: mx.array) -> mx.array:
        return self.w_up(nn.gelu(self.w_down(t_cond)))


class DecoderLayer(nn.Module):
    def __init__(self, args: DecoderArgs):
        super().__init__()
        self.attention_norm = nn.RMSNorm(args.dim, eps=args.norm_eps)
        self.attention = Attention(args)
        self.ffn_norm = nn.RMSNorm(args.dim, eps=args.norm_eps)
        self.ada_norm = AdaNorm(args.dim, args.ada_cond_dim)
        self.feed_forward = FeedForward(args)

    def __call__(self, x: mx.array, ffn_norm_weight: mx.array, mask, cache=None) -> mx.array:
        x = x + self.attention(self.attention_norm(x), mask, cache)
        # AdaRMSNorm: rms_norm(x) * w * (1 + ada) == rms_norm(x, w * (1 + ada)); only the FFN
        # branch is conditioned, and the product is precomputed per delay (ffn_norm_weights)
        h = mx.fast.rms_norm(x, ffn_norm_weight, self.ffn_norm.eps)
        return x + self.feed_forward(h)


def time_embedding(n_delay_tokens: int, dim: int, theta: float = 10000.0) -> mx.array:
    """Sinusoidal embedding of the number of delay tokens: cos first, then sin. [dim]"""
    half = dim // 2
    inv_freq = mx.exp(-math.log(theta) * mx.arange(half, dtype=mx.float32) / half)
    emb = n_delay_tokens * inv_freq
    return mx.concatenate([mx.cos(emb), mx.sin(emb)])


class TextDecoder(nn.Module):
    def __init__(self, args: DecoderArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = [DecoderLayer(args) for _ in range(args.n_layers)]
        self.norm = nn.RMSNorm(args.dim, eps=args.norm_eps)

    def ffn_norm_weights(self, n_delay_tokens: int) -> list[mx.array]:
        """ffn_norm.weight * (1 + ada_l) for every layer, in the model dtype. Constant for a
        given delay: compute it once per session (MODEL.md, AdaRMSNorm)."""
        t_cond = time_embedding(n_delay_tokens, self.args.dim)
        dtype = self.norm.weight.dtype
        return [
            (layer.ffn_norm.weight * (1 + layer.ada_norm(t_cond))).astype(dtype)
            for layer in self.layers
        ]

    def __call__(
        self, embeds: mx.array, ffn_norm_weights: list[mx.array], cache: list | None = None
    ) -> mx.array:
        """embeds: [B, L, dim] (audio + token embeddings) -> logits [B, L, vocab]."""
        h = embeds
        mask = create_attention_mask(h, cache[0] if cache else None, self.args.sliding_window)
        for i, layer in enumerate(self.layers):
            h = layer(h, ffn_norm_weights[i], mask, cache[i] if cache else None)
        # tied LM head (works for a quantized embedding too)
        return self.tok_embeddings.as_linear(self.norm(h))

    def make_cache(self) -> list[RotatingKVCache]:
        return [RotatingKVCache(max_size=self.args.sliding_window) for _ in self.layers]
