"""Downsampling adapter: 4 encoder frames (20 ms each) -> one decoder embedding (80 ms)."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


class AudioAdapter(nn.Module):
    def __init__(self, encoder_dim: int, decoder_dim: int, downsample_factor: int):
        super().__init__()
        self.downsample_factor = downsample_factor
        self.w_in = nn.Linear(encoder_dim * downsample_factor, decoder_dim, bias=False)
        self.w_out = nn.Linear(decoder_dim, decoder_dim, bias=False)

    def __call__(self, frames: mx.array) -> mx.array:
        # [B, T_enc, D_enc] -> [B, T_enc / 4, 4 * D_enc]: token k = frames 4k..4k+3 side by side
        B, T, D = frames.shape
        if T % self.downsample_factor:
            raise ValueError(
                f"adapter needs a multiple of {self.downsample_factor} frames, got {T}"
            )
        grouped = frames.reshape(B, T // self.downsample_factor, D * self.downsample_factor)
        return self.w_out(nn.gelu(self.w_in(grouped)))
