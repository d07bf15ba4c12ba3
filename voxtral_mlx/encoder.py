"""Causal audio encoder: conv stem (stride 2) + causal transformer with a 750-frame window.

`AudioEncoder` encodes one signal (whole, or a stream through `EncoderState`: the offline
reference); `EncoderBatch` encodes the next tokens of many streams in one call, each row
with its own conv tails and key/value ring (MODEL.md "Encoder rows").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn

from ._mlx_lm import RotatingKVCache, create_attention_mask
from .config import EncoderArgs
from .layers import Attention, FeedForward, Rotation, pass_rotation
from .rings import GROW, RingPass, RowRings


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

    def over_rows(
        self, x: mx.array, starts: mx.array, rings: RingPass, i: int, rotation: Rotation | None
    ) -> mx.array:
        """x [B, L, dim], row b at frames starts[b].., keys and values in the rows' rings;
        `rotation`: the call's RoPE (None: mx.fast.rope)."""
        q, k, v = self.attention.project(self.attention_norm(x), starts, rotation)
        x = x + self.attention.wo(rings.attend(i, q, k, v, self.attention.heads))
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
        self._compiled_rows = None

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

    def rows(
        self,
        x: mx.array,
        starts: mx.array,
        keys: list[list[mx.array]],
        values: list[list[mx.array]],
    ) -> tuple[mx.array, list[list[mx.array]], list[list[mx.array]]]:
        """The transformer over rows (EncoderBatch): x [B, L, dim] (conv-stem frames), row
        b at frames starts[b].., over the rows' rings (rings.py). Returns the normed frames
        [B, L, dim] and the updated rings."""
        rings = RingPass(keys, values, starts, x.shape[1], self.args.sliding_window)
        rotation = pass_rotation(starts, x.shape[1], self.args)
        for i, layer in enumerate(self.layers):
            x = layer.over_rows(x, starts, rings, i, rotation)
        return self.norm(x), rings.keys, rings.values

    def rows_compiled(self, x, starts, keys, values):
        """`rows` compiled with the parameters declared as inputs (as TextDecoder.greedy):
        a model changed later is traced again. Retraced per shape (B, L, capacity)."""
        if self._compiled_rows is None:
            self._compiled_rows = mx.compile(self.rows, inputs=self.state)
        return self._compiled_rows(x, starts, keys, values)

    def make_state(self) -> EncoderState:
        n_mels = self.conv1.weight.shape[-1]
        dtype = self.conv1.weight.dtype
        return EncoderState(
            conv1_tail=mx.zeros((1, self.conv1.left_pad, n_mels), dtype),
            conv2_tail=mx.zeros((1, self.conv2.left_pad, self.args.dim), dtype),
            cache=[RotatingKVCache(max_size=self.args.sliding_window) for _ in self.layers],
        )


@dataclass(eq=False)
class EncoderRow:
    """One stream in an EncoderBatch: the frames it has encoded (its position) and its conv
    inputs still needed (the last 2 mel frames, the last conv1 output; zeros at the start)."""

    conv1_tail: mx.array  # [2, n_mels]
    conv2_tail: mx.array  # [1, dim]
    position: int = 0  # encoder frames so far


class EncoderBatch(RowRings):
    """The encoders of many streams, run together: each call gives the rows it is given their
    next whole tokens (8 mel frames -> 4 encoder frames each, up to `max_tokens`; rows with
    fewer are padded) and reads the weights once for all of them. Rows given nothing are
    left out of the call (their rings taken out and written back), not padded through it.

    The rows' rings are the decoder's (rings.py; MODEL.md): a row's C doubles from GROW
    frames while slots are frames, up to `full` = window + 4 * max_tokens - 1, a ring in
    which padded frames never overwrite a frame that a query still reads. The outputs equal
    the offline encoder's (`AudioEncoder` with `EncoderState`) to float rounding (tested)."""

    def __init__(self, encoder: AudioEncoder, max_tokens: int):
        super().__init__(encoder.args.sliding_window + 4 * max_tokens - 1)
        self.encoder, self.max_tokens = encoder, max_tokens

    @property
    def dtype(self) -> mx.Dtype:
        return self.encoder.conv1.weight.dtype

    def add(self) -> EncoderRow:
        args, n_mels = self.encoder.args, self.encoder.conv1.weight.shape[-1]
        row = EncoderRow(
            conv1_tail=mx.zeros((self.encoder.conv1.left_pad, n_mels), self.dtype),
            conv2_tail=mx.zeros((self.encoder.conv2.left_pad, args.dim), self.dtype),
        )
        empty = mx.zeros((1, args.n_kv_heads, min(GROW, self.full), args.head_dim), self.dtype)
        rings = [empty] * len(self.encoder.layers)
        self._insert([row], rings, rings)
        return row

    def remove(self, row: EncoderRow) -> None:
        self._drop(row)

    def run(self, mels: dict[EncoderRow, mx.array]) -> dict[EncoderRow, mx.array]:
        """One call: for each row given, its next mel frames [8 n, n_mels] (n whole tokens,
        1 to max_tokens). Returns each given row's encoder frames [4 n, dim] (lazy)."""
        enc = self.encoder
        frames = {row: mel.shape[0] for row, mel in mels.items()}
        F = max(frames.values())
        if F % 8 or not 0 < min(frames.values()) <= F <= 8 * self.max_tokens:
            raise ValueError(f"whole tokens, 1 to {self.max_tokens} per row, got {frames}")
        n_mels = enc.conv1.weight.shape[-1]
        self._reserve(F // 2)  # may reorder the rows
        # the rows given, alone: a row with nothing to encode is not padded through the call
        parts = self._some(set(mels))
        rows = [ring.rows[b] for ring, picks in parts for b in picks]
        rings = [ring.take(picks) for ring, picks in parts]
        mel = mx.stack([_padded(mels[row], F, n_mels) for row in rows])
        tails1 = mx.stack([row.conv1_tail for row in rows])
        tails2 = mx.stack([row.conv2_tail for row in rows])
        h = nn.gelu(enc.conv1(mel, tails1))  # [B, F, dim]
        x = nn.gelu(enc.conv2(h, tails2))  # [B, F / 2, dim]
        for b, row in enumerate(rows):
            n = frames[row]
            row.conv1_tail = mels[row][n - enc.conv1.left_pad :]
            row.conv2_tail = h[b, n - enc.conv2.left_pad : n]
        starts = mx.array([row.position for row in rows], dtype=mx.int32)
        # one token a row (the live stream): compiled, its per-call cost is the stream's
        run = enc.rows_compiled if F == 8 else enc.rows
        keys, values = [k for k, _ in rings], [v for _, v in rings]
        x, keys, values = run(x, starts, keys, values)
        self._store_some(parts, keys, values)
        out = {}
        for b, row in enumerate(rows):
            out[row] = x[b, : frames[row] // 2]
            row.position += frames[row] // 2
        return out


def _padded(mel: mx.array, F: int, n_mels: int) -> mx.array:
    if mel.shape[0] < F:
        return mx.concatenate([mel, mx.zeros((F - mel.shape[0], n_mels), mel.dtype)])
    return mel
