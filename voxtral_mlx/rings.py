"""Key/value rings of many streams (rows) in one array per layer, as the decoder's and the
encoder's batches keep them (MODEL.md "Decoder passes", "Encoder rows").

`RowRings` holds the rows' rings between passes, growing them while slots are still positions;
`RingPass` writes one pass's new keys and values into them and says which slots each query
sees. The rows themselves (their positions) are the batch's.
"""

from __future__ import annotations

import mlx.core as mx

GROW = 256  # ring slots added at a time until the ring is full


class RingPass:
    """The rings of one pass (inside the decoder's or the encoder's forward): writes each
    row's new keys and values into slot `position % capacity`, and the mask that says which
    slots each query sees.

    Slot s of row b holds, after the write, the latest position p < end_b with
    p = s (mod C); a query at position q sees it when p >= 0, p <= q and p > q - window.
    Padded positions (a row with fewer new positions than L, or none) write into future
    positions' slots, which no query reads before they are written again: the capacity is
    window + L - 1 or more once the ring wraps (MODEL.md)."""

    def __init__(self, keys: list[mx.array], values: list[mx.array], starts, L: int, window):
        self.keys, self.values = list(keys), list(values)
        capacity = keys[0].shape[2]
        positions = starts[:, None] + mx.arange(L)  # [B, L]
        slots = positions % capacity
        B, n_kv, _, head_dim = keys[0].shape
        self.index = mx.broadcast_to(slots[:, None, :, None], (B, n_kv, L, head_dim))
        end = starts[:, None] + L  # [B, 1]
        held = end - 1 - ((end - 1 - mx.arange(capacity)) % capacity)  # [B, C]
        q, p = positions[:, :, None], held[:, None, :]  # [B, L, 1], [B, 1, C]
        self.mask = ((p >= 0) & (p <= q) & (p > q - window))[:, None]  # [B, 1, L, C]

    def update_and_fetch(self, i: int, k: mx.array, v: mx.array) -> tuple[mx.array, mx.array]:
        self.keys[i] = mx.put_along_axis(self.keys[i], self.index, k, axis=2)
        self.values[i] = mx.put_along_axis(self.values[i], self.index, v, axis=2)
        return self.keys[i], self.values[i]


class RowRings:
    """The rows' key/value rings of a batch (decoder or encoder): per layer one
    `[B, n_kv, C, head_dim]` array for all rows. C grows GROW slots at a time while slots
    are positions, up to `full`, from where it is a ring (RingPass, MODEL.md)."""

    def __init__(self, full: int):
        self.full = full
        self.rows: list = []
        self.keys: list[mx.array] = []
        self.values: list[mx.array] = []

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.keys + self.values)

    def _reserve(self, L: int) -> None:
        """Room for every row's next L positions: grow while slots are positions."""
        need = max(row.position for row in self.rows) + L
        capacity = self.capacity
        if need <= capacity or capacity == self.full:
            return
        self._grow(min(self.full, -(-need // GROW) * GROW))  # full: a ring from here on

    def _grow(self, capacity: int) -> None:
        self.keys = [pad_slots(k, capacity) for k in self.keys]
        self.values = [pad_slots(v, capacity) for v in self.values]

    def _drop(self, row) -> None:
        """Remove a row and its rings."""
        i = self.rows.index(row)
        del self.rows[i]
        if not self.rows:
            self.keys, self.values = [], []
        else:
            keep = mx.array([j for j in range(len(self.rows) + 1) if j != i])
            self.keys = [k[keep] for k in self.keys]
            self.values = [v[keep] for v in self.values]


def pad_slots(x: mx.array, capacity: int) -> mx.array:
    """Empty slots after x's [.., C, ..] up to `capacity`."""
    extra = capacity - x.shape[2]
    return mx.pad(x, [(0, 0), (0, 0), (0, extra), (0, 0)]) if extra > 0 else x
