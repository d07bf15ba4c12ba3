"""Causal audio encoder: conv stem (stride 2) + causal transformer with a 750-frame window."""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.base import create_attention_mask
from mlx_lm.models.cache import RotatingKVCache

from .config import EncoderArgs
from .layers import Attention, FeedForward


class CausalConv1d(nn.Module):
    """Conv1d that only looks back: (kernel - stride) zeros of left padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__()
        self.stride = stride
        self.left_pad = kernel_size - stride
        # MLX layout [out, kernel, in]; the checkpoint's [out, in, kernel] is transposed in sanitize
        self.weight = mx.zeros((out_channels, kernel_size, in_channels))
        self.bias = mx.zeros((out_channels,))

    def __call__(self, x: mx.array, tail: mx.array | None = None) -> mx.array:
        """x: [B, T, C_in] -> [B, T / stride, C_out]. `tail` holds the last `left_pad`
        inputs of the previous call (zeros at the start: the causal padding)."""
        if tail is None:
            x = mx.pad(x, [(0, 0), (self.left_pad, 0), (0, 0)])
        else:
            x = mx.concatenate([tail, x], axis=1)
        return mx.conv1d(x, self.weight, stride=self.stride) + self.bias


class EncoderLayer(nn.Module):
    def __init__(self, args: EncoderArgs):
        super().__init__()
        self.attention_norm = nn.RMSNorm(args.dim, eps=args.norm_eps)
        self.attention = Attention(args)
        self.ffn_norm = nn.RMSNorm(args.dim, eps=args.norm_eps)
        self.feed_forward = FeedForward(args)

    def __call__(self, x: mx.array, mask, cache=None) -> mx.array:
        x = x + self.attention(self.attention_norm(x), mask, cache)
        return x + self.feed_forward(self.ffn_norm(x))


@dataclass
class EncoderState:
    """Streaming state of the encoder: the conv inputs still needed, and the KV ring.

    Chunks are always whole tokens (8 mel frames -> 4 encoder frames), so conv2 (stride 2)
    always starts on an even conv1 frame and needs exactly one frame of history.
    """

    conv1_tail: mx.array  # last 2 mel frames   [1, 2, n_mels]
    conv2_tail: mx.array  # last conv1 output    [1, 1, dim]
    cache: list[RotatingKVCache] = field(default_factory=list)


class AudioEncoder(nn.Module):
    def __init__(self, args: EncoderArgs, num_mel_bins: int):
        super().__init__()
        self.args = args
        self.conv1 = CausalConv1d(num_mel_bins, args.dim, 3, stride=1)
        self.conv2 = CausalConv1d(args.dim, args.dim, 3, stride=2)
        self.layers = [EncoderLayer(args) for _ in range(args.n_layers)]
        self.norm = nn.RMSNorm(args.dim, eps=args.norm_eps)

    def conv_stem(self, mel: mx.array, state: EncoderState | None = None) -> mx.array:
        """mel: [B, T_mel, n_mels] -> [B, T_mel / 2, dim] (exact erf GELU after each conv)."""
        if state is None:
            return nn.gelu(self.conv2(nn.gelu(self.conv1(mel))))
        h = nn.gelu(self.conv1(mel, state.conv1_tail))
        state.conv1_tail = mel[:, -self.conv1.left_pad :]
        out = nn.gelu(self.conv2(h, state.conv2_tail))
        state.conv2_tail = h[:, -self.conv2.left_pad :]
        return out

    def transformer(self, x: mx.array, cache: list | None = None) -> mx.array:
        """Causal transformer over conv-stem frames. Positions continue from the cache
        offset; every query sees at most `sliding_window` frames, itself included."""
        window = self.args.sliding_window
        mask = create_attention_mask(x, cache[0] if cache else None, window_size=window)
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, cache[i] if cache else None)
        return self.norm(x)

    def __call__(self, mel: mx.array, state: EncoderState | None = None) -> mx.array:
        """Whole signal (no state) or the next whole tokens of a stream (with state)."""
        return self.transformer(self.conv_stem(mel, state), state.cache if state else None)

    def make_state(self) -> EncoderState:
        n_mels = self.conv1.weight.shape[-1]
        dtype = self.conv1.weight.dtype
        return EncoderState(
            conv1_tail=mx.zeros((1, self.conv1.left_pad, n_mels), dtype),
            conv2_tail=mx.zeros((1, self.conv2.left_pad, self.args.dim), dtype),
            cache=[RotatingKVCache(max_size=self.args.sliding_window) for _ in self.layers],
        )
