"""Text decoder: Mistral-style GQA transformer, conditioned on the delay through AdaRMSNorm."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.base import create_attention_mask
from mlx_lm.models.cache import RotatingKVCache

from .config import DecoderArgs
from .layers import Attention, FeedForward, rope_angles, sinusoid_frequencies


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
    emb = n_delay_tokens * sinusoid_frequencies(dim // 2, theta)
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

    def step(
        self, audio: mx.array, token: mx.array, ffn_norm_weights: list[mx.array], cache: StepCache
    ) -> mx.array:
        """One decoding step: audio embedding [dim] + the previous token -> the greedy next
        token (not evaluated). The step is traced once per cache capacity by mx.compile and
        replayed; `cache` is updated."""
        cache.make_room()
        if self._compiled_step is None:
            self._compiled_step = mx.compile(self._step)
        offset = mx.array(cache.offset, dtype=mx.int32)
        token, cache.keys, cache.values = self._compiled_step(
            audio, token, ffn_norm_weights, cache.keys, cache.values, offset
        )
        cache.offset += 1
        return token

    _compiled_step = None

    def _step(self, *args):
        logits, keys, values = self.step_logits(*args)
        return mx.argmax(logits), keys, values

    def step_logits(self, audio, token, ffn_norm_weights, keys, values, offset, fused=None):
        """The traced step: logits [vocab] and the updated buffers (see StepCache).

        `fused` (default: on GPU backends) uses mx.fast.rope and the fused attention
        kernel; otherwise (the CPU backend) RoPE's cos/sin are computed once for all layers
        and applied elementwise, and attention is two grouped matrix products: measured
        11 % faster per step on the CPU (MODEL.md, "Streaming")."""
        if fused is None:
            fused = mx.default_device().type != mx.cpu
        capacity = keys[0].shape[2]
        slot = (offset % capacity).reshape(1)
        mask = mx.arange(capacity) <= offset  # all true once the ring has wrapped
        rotation = None
        if not fused:
            rotation = rope_angles(offset, self.args.head_dim, self.args.rope_theta)
        # a [1] index: a quantized embedding cannot gather with a 0-d one
        h = (audio + self.tok_embeddings(token.reshape(1)))[None]
        keys, values = list(keys), list(values)
        for i, layer in enumerate(self.layers):
            attention = layer.attention
            q, k, v = attention.project(layer.attention_norm(h), offset, rotation)
            keys[i] = mx.slice_update(keys[i], k, slot, axes=(2,))
            values[i] = mx.slice_update(values[i], v, slot, axes=(2,))
            attend = attention.attend if fused else attention.attend_one
            h = h + attend(q, keys[i], values[i], mask)
            h = h + layer.feed_forward(mx.fast.rms_norm(h, ffn_norm_weights[i], layer.ffn_norm.eps))
        return self.tok_embeddings.as_linear(self.norm(h))[0, 0], keys, values


class StepCache:
    """The decoder's KV cache for one-token steps, in fixed-shape buffers so that the step
    can be compiled: position p lives in slot p % capacity. Capacity grows by `grow` slots up
    to the sliding window (each size is traced once); from then on it is a ring holding
    exactly the last `window` positions, the same keys a RotatingKVCache(window) attends to.
    """

    def __init__(self, prompt: list[RotatingKVCache], window: int, grow: int = 256):
        """Take over from the caches the prompt was prefilled into: one call from empty, so
        they hold every prompt position in order."""
        self.window, self.grow = window, grow
        self.offset = offset = prompt[0].offset
        self.keys, self.values = [], []
        for cache in prompt:
            if cache.keys.shape[2] != offset:
                raise ValueError("StepCache takes over from a one-call prefill only")
            for out, x in ((self.keys, cache.keys), (self.values, cache.values)):
                if offset < window:  # slots = positions
                    room = min(window, -(-(offset + 1) // grow) * grow) - offset
                    out.append(_pad(x[..., -offset:, :], room))
                else:  # positions offset-window+1 .. offset, rotated into their slots
                    ring = _pad(x[..., -(window - 1) :, :], 1)
                    out.append(mx.roll(ring, (offset - window + 1) % window, axis=2))

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def make_room(self) -> None:
        """Before writing position `offset`: grow the buffers while they are not a ring."""
        if self.offset >= self.capacity and self.capacity < self.window:
            room = min(self.window, self.capacity + self.grow) - self.capacity
            self.keys = [_pad(k, room) for k in self.keys]
            self.values = [_pad(v, room) for v in self.values]


def _pad(x: mx.array, n: int) -> mx.array:
    """n empty positions after x (axis 2)."""
    if n <= 0:
        return x
    shape = list(x.shape)
    shape[2] = n
    return mx.concatenate([x, mx.zeros(shape, x.dtype)], axis=2)
