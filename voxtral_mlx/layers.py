"""Blocks shared by the encoder and decoder stacks: attention with interleaved RoPE, SwiGLU."""

from __future__ import annotations

import math
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from ._mlx_lm import swiglu
from .config import TransformerArgs


class Attention(nn.Module):
    """Multi-head / grouped-query attention with Mistral naming (wq, wk, wv, wo).

    RoPE is interleaved (`traditional=True`): the consolidated checkpoint rotates
    consecutive pairs (2j, 2j+1) of each head. With biases (the encoder), wk has none.
    """

    def __init__(self, args: TransformerArgs):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        self.rope_theta = args.rope_theta
        self.scale = args.head_dim**-0.5
        bias = args.use_biases
        self.wq = nn.Linear(args.dim, args.n_heads * args.head_dim, bias=bias)
        self.wk = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=bias)
        self.wo = nn.Linear(args.n_heads * args.head_dim, args.dim, bias=bias)

    def project(
        self, x: mx.array, offset: int | mx.array, rotation: Rotation | None = None
    ) -> tuple[mx.array, ...]:
        """[B, L, dim] at positions offset.. (an int, or one per row [B]) -> q, k, v as
        [B, heads, L, head_dim], rotated: by `rotation` (a `Rotation` of the same
        positions) when given, else by mx.fast.rope."""
        B, L, _ = x.shape
        q = self.wq(x).reshape(B, L, self.n_heads, -1).transpose(0, 2, 1, 3)
        k = self.wk(x).reshape(B, L, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        v = self.wv(x).reshape(B, L, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        if rotation is not None:
            return rotation.apply(q), rotation.apply(k), v
        rope = dict(traditional=True, base=self.rope_theta, scale=1.0, offset=offset)
        return mx.fast.rope(q, self.head_dim, **rope), mx.fast.rope(k, self.head_dim, **rope), v

    def attend(self, q: mx.array, k: mx.array, v: mx.array, mask, grouped=None) -> mx.array:
        """Attention of q over k, v, then the output projection: [B, L, dim]."""
        return self.wo(self.heads(q, k, v, mask, grouped))

    def heads(self, q: mx.array, k: mx.array, v: mx.array, mask, grouped=None) -> mx.array:
        """Attention of q [B, heads, L, D] over k, v, before the output projection: the
        heads side by side, [B, L, heads * D].

        `grouped` (default: on the CPU backend, for the decoder's [B, 1, L, C] boolean
        masks) computes it as two matrix products with the query heads of each KV head side
        by side: the CPU has no fused attention kernel and its generic one is about half as
        fast for few queries. Elsewhere the fused kernel."""
        B, _, L, _ = q.shape
        if grouped is None:
            grouped = mx.default_device().type == mx.cpu and getattr(mask, "ndim", 0) == 4
        if grouped:
            o = self._grouped(q, k, v, mask)
        else:
            o = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        return o.transpose(0, 2, 1, 3).reshape(B, L, -1)

    def _grouped(self, q: mx.array, k: mx.array, v: mx.array, mask) -> mx.array:
        B, _, L, D = q.shape
        n_kv, group = self.n_kv_heads, self.n_heads // self.n_kv_heads
        # [B, heads, L, D] -> [B, n_kv, group * L, D]: head h reads KV head h // group
        scores = (q * self.scale).reshape(B, n_kv, group * L, D) @ k.swapaxes(-1, -2)
        # mask [B, 1, L, C] -> [B, 1, 1, L, C] against scores [B, n_kv, group, L, C]
        scores = scores.reshape(B, n_kv, group, L, -1)
        scores = mx.where(mask[:, :, None], scores, mx.array(-mx.inf, scores.dtype))
        scores = scores.reshape(B, n_kv, group * L, -1)
        o = mx.softmax(scores, axis=-1, precise=True) @ v  # [B, n_kv, group * L, D]
        return o.reshape(B, self.n_heads, L, D)

    def __call__(self, x: mx.array, mask: mx.array | str | None, cache: Any = None) -> mx.array:
        q, k, v = self.project(x, cache.offset if cache is not None else 0)
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        return self.attend(q, k, v, mask)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x); with biases (the encoder) only w2 has one."""

    def __init__(self, args: TransformerArgs):
        super().__init__()
        self.w1 = nn.Linear(args.dim, args.hidden_dim, bias=False)
        self.w2 = nn.Linear(args.hidden_dim, args.dim, bias=args.use_biases)
        self.w3 = nn.Linear(args.dim, args.hidden_dim, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        return self.w2(swiglu(self.w1(x), self.w3(x)))  # compiled silu(gate) * up


def sinusoid_frequencies(n: int, theta: float) -> mx.array:
    """theta ** (-j / n) for j < n, in float32: the frequencies of RoPE (n = head_dim / 2)
    and of the decoder's delay embedding (n = dim / 2)."""
    return mx.exp(-math.log(theta) * mx.arange(n, dtype=mx.float32) / n)


class Rotation:
    """Interleaved RoPE (pairs 2j, 2j + 1, as mx.fast.rope with traditional=True) of the
    positions of one pass, by elementwise products with cos and sin computed once for every
    layer. On the CPU backend mx.fast.rope has no kernel: each call is a chain of ops that
    recomputes the angles, per layer and for q and k (MODEL.md "Decoder passes")."""

    def __init__(self, starts: mx.array, L: int, head_dim: int, theta: float):
        """Row b's positions starts[b] .. starts[b] + L - 1; angles in float32, as tables
        of head_dim: cos of pair j at 2j and 2j + 1, -sin at 2j and sin at 2j + 1."""
        positions = (starts[:, None] + mx.arange(L)).astype(mx.float32)  # [B, L]
        angles = positions[:, None, :, None] * sinusoid_frequencies(head_dim // 2, theta)
        cos, sin = mx.cos(angles), mx.sin(angles)  # [B, 1, L, head_dim / 2]
        self.cos = mx.repeat(cos, 2, axis=-1)  # [B, 1, L, head_dim]
        self.sin = mx.stack([-sin, sin], axis=-1).reshape(self.cos.shape)
        self.partner = (mx.arange(head_dim) ^ 1)[None, None, None]  # 2j <-> 2j + 1

    def apply(self, x: mx.array) -> mx.array:
        """x [B, heads, L, head_dim] rotated, computed in float32, returned in x's dtype:
        x * cos + (x with each pair's two values swapped) * sin, a gather and one fused
        product (the same values as the pairs' rotation written out, bit for bit, in a
        third of the graph's nodes: each node costs its own dispatch on the CPU)."""
        f = x.astype(mx.float32)
        swapped = mx.take_along_axis(f, self.partner, axis=-1)
        return (f * self.cos + swapped * self.sin).astype(x.dtype)


def pass_rotation(starts: mx.array, L: int, args: TransformerArgs) -> Rotation | None:
    """The Rotation of a pass over rows on the CPU backend; None elsewhere, where
    mx.fast.rope has a kernel."""
    if mx.default_device().type != mx.cpu:
        return None
    return Rotation(starts, L, args.head_dim, args.rope_theta)
