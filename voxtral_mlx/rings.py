"""Key/value rings of many streams (rows), as the decoder's and the encoder's batches keep
them (MODEL.md "Decoder passes", "Encoder rows").

`RowRings` holds the rows' rings between passes: the rows whose rings have one size share one
array per layer (a `Ring`), so a pass reads each row's ring at about its own length, not the
longest row's. `RingPass` writes one pass's new keys and values into them and computes each
ring's attention. The rows themselves (their positions) are the batch's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx

GROW = 256  # the slots of a new row's ring; it doubles from there until it is full


def ring_slots(need: int, full: int) -> int:
    """The slots of a ring that holds `need` positions: GROW x 2^k up to half of `full`,
    then `full` (a ring): 256, 512, ..., 4096, 8255 for the decoder, 256, 512, 1125 for the
    encoder, so a pass has at most 6 rings."""
    slots = GROW
    while slots < need:
        slots *= 2
    return slots if 2 * slots <= full else full


@dataclass
class Ring:
    """Rows whose rings have one size: per layer one [B, n_kv, C, head_dim] array of keys
    and one of values, row b of them being rows[b]'s."""

    rows: list
    keys: list[mx.array]
    values: list[mx.array]

    @property
    def slots(self) -> int:
        return self.keys[0].shape[2]

    @property
    def arrays(self) -> list[mx.array]:
        return self.keys + self.values

    def take(self, picks: list[int]) -> tuple[list[mx.array], list[mx.array]]:
        """The keys and values of rows[picks] (no copy when that is every row)."""
        if self._every(picks):
            return self.keys, self.values
        index = mx.array(picks)
        return [k[index] for k in self.keys], [v[index] for v in self.values]

    def put(self, picks: list[int], keys: list[mx.array], values: list[mx.array]) -> None:
        """`take`'s reverse: keys and values written back as rows[picks]' (the other rows'
        left as they were; when that is every row, the arrays themselves)."""
        if self._every(picks):
            self.keys, self.values = keys, values
            return
        index = mx.array(picks)
        for i in range(len(self.keys)):
            self.keys[i][index] = keys[i]
            self.values[i][index] = values[i]

    def _every(self, picks: list[int]) -> bool:
        return picks == list(range(len(self.rows)))


class RingPass:
    """The rings of one pass (inside the decoder's or the encoder's forward): writes each
    row's new keys and values into slot `position % capacity` of its ring, and computes
    attention ring by ring, each over its own slots.

    keys[g][i] and values[g][i] are ring g's arrays of layer i; ring g holds the next
    keys[g][0].shape[0] rows of the pass, in order. Slot s of row b holds, after the write,
    the latest position p < end_b with p = s (mod C); a query at position q sees it when
    p >= 0, p <= q and p > q - window. Padded positions (a row with fewer new positions than
    L, or none) write into future positions' slots, which no query reads before they are
    written again: the capacity is window + L - 1 or more once the ring wraps (MODEL.md)."""

    def __init__(self, keys: list[list[mx.array]], values, starts, L: int, window: int):
        self.keys, self.values = [list(k) for k in keys], [list(v) for v in values]
        self.parts = []  # per ring: its rows' span in the pass, write index, mask
        lo = 0
        for ring in keys:
            B, n_kv, capacity, head_dim = ring[0].shape
            positions = starts[lo : lo + B, None] + mx.arange(L)  # [B, L]
            slots = (positions % capacity)[:, None, :, None]
            index = mx.broadcast_to(slots, (B, n_kv, L, head_dim))
            end = positions[:, -1:] + 1  # [B, 1]
            held = end - 1 - ((end - 1 - mx.arange(capacity)) % capacity)  # [B, C]
            q, p = positions[:, :, None], held[:, None, :]  # [B, L, 1], [B, 1, C]
            mask = ((p >= 0) & (p <= q) & (p > q - window))[:, None]  # [B, 1, L, C]
            self.parts.append((lo, lo + B, index, mask))
            lo += B

    def attend(self, i: int, q: mx.array, k: mx.array, v: mx.array, attention: Callable):
        """Layer i: the new k, v [B, n_kv, L, head_dim] into each ring, then
        `attention(q, keys, values, mask)` of each ring's rows, concatenated in pass order."""
        out = []
        for g, (lo, hi, index, mask) in enumerate(self.parts):
            if len(self.parts) > 1:
                q_g, k_g, v_g = q[lo:hi], k[lo:hi], v[lo:hi]
            else:
                q_g, k_g, v_g = q, k, v
            self.keys[g][i] = mx.put_along_axis(self.keys[g][i], index, k_g, axis=2)
            self.values[g][i] = mx.put_along_axis(self.values[g][i], index, v_g, axis=2)
            out.append(attention(q_g, self.keys[g][i], self.values[g][i], mask))
        return out[0] if len(out) == 1 else mx.concatenate(out)


class RowRings:
    """The rows' key/value rings of a batch (decoder or encoder). A row's ring starts at
    GROW slots and doubles while slots are positions, up to `full`, from where it is a ring
    (RingPass, MODEL.md); the rows of one size share a `Ring`, smallest first. `rows` is the
    order of the rows in a pass."""

    def __init__(self, full: int):
        self.full = full
        self.rings: list[Ring] = []

    @property
    def rows(self) -> list:
        return [row for ring in self.rings for row in ring.rows]

    @property
    def keys(self) -> list[list[mx.array]]:
        return [ring.keys for ring in self.rings]

    @property
    def values(self) -> list[list[mx.array]]:
        return [ring.values for ring in self.rings]

    @property
    def arrays(self) -> list[mx.array]:
        """Every key and value array of every ring."""
        return [a for ring in self.rings for a in ring.arrays]

    @property
    def capacity(self) -> int:
        """The slots of the largest ring (0 without rows)."""
        return max((ring.slots for ring in self.rings), default=0)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays)

    def row_bytes(self, row) -> int:
        """The memory of one row's ring (0 before its first pass)."""
        ring = next((ring for ring in self.rings if row in ring.rows), None)
        return sum(a.nbytes for a in ring.arrays) // len(ring.rows) if ring else 0

    def _store(self, keys: list[list[mx.array]], values: list[list[mx.array]]) -> None:
        """The rings a pass wrote (RingPass.keys, .values), in the order of `rings`."""
        for ring, k, v in zip(self.rings, keys, values, strict=True):
            ring.keys, ring.values = k, v

    def _some(self, chosen) -> list[tuple[Ring, list[int]]]:
        """The rings that hold rows of `chosen` (a set), each with its rows' indices: the
        rings of a pass over those rows alone, in pass order (`Ring.take` of each)."""
        parts = [
            (ring, [b for b, row in enumerate(ring.rows) if row in chosen]) for ring in self.rings
        ]
        return [(ring, picks) for ring, picks in parts if picks]

    def _store_some(self, parts: list[tuple[Ring, list[int]]], keys, values) -> None:
        """The rings a pass over some rows wrote (`_some`'s parts, RingPass.keys, .values):
        written back into those rows of each ring, the other rows' left as they were."""
        for (ring, picks), k, v in zip(parts, keys, values, strict=True):
            ring.put(picks, k, v)

    def _insert(self, rows: list, keys: list[mx.array], values: list[mx.array]) -> None:
        """Rows join with their rings ([n, n_kv, C, head_dim] per layer): the Ring of C."""
        ring = next((ring for ring in self.rings if ring.slots == keys[0].shape[2]), None)
        if ring is None:
            self.rings.append(Ring(list(rows), list(keys), list(values)))
            self.rings.sort(key=lambda ring: ring.slots)
            return
        ring.rows += rows
        ring.keys = [mx.concatenate(pair) for pair in zip(ring.keys, keys, strict=True)]
        ring.values = [mx.concatenate(pair) for pair in zip(ring.values, values, strict=True)]

    def _keep(self, ring: Ring, picks: list[int]) -> None:
        """Only rows[picks] stay in `ring` (none: the ring goes)."""
        if not picks:
            self.rings.remove(ring)
            return
        ring.keys, ring.values = ring.take(picks)
        ring.rows = [ring.rows[i] for i in picks]

    def _reserve(self, L: int) -> None:
        """Room for every row's next L positions: a row whose ring is too small moves to a
        larger one while slots are positions (its ring padded at the end)."""
        for ring in list(self.rings):
            sizes = [self._slots(row.position + L, ring.slots) for row in ring.rows]
            moving = {
                s: [b for b, t in enumerate(sizes) if t == s] for s in sizes if s > ring.slots
            }
            if not moving:
                continue
            moved = [
                ([ring.rows[b] for b in picks], *ring.take(picks), s) for s, picks in moving.items()
            ]
            self._keep(ring, [b for b, s in enumerate(sizes) if s <= ring.slots])
            for rows, keys, values, slots in moved:
                self._insert_padded(rows, keys, values, slots)

    def _insert_padded(self, rows: list, keys, values, slots: int) -> None:
        """Rows join with their rings padded at the end to `slots` (where slots are still
        positions): a ring outgrown, or a prompt's own."""
        pad = [pad_slots(a, slots) for a in keys + values]
        self._insert(rows, pad[: len(keys)], pad[len(keys) :])

    def _slots(self, need: int, slots: int) -> int:
        """The slots of the ring a row needs for positions up to `need`, in a ring of
        `slots`: that one while it holds them (a prompt's ring may be smaller than GROW),
        else `ring_slots`."""
        return slots if need <= slots else ring_slots(need, self.full)

    def _drop(self, row) -> None:
        """Remove a row and its ring."""
        ring = next(ring for ring in self.rings if row in ring.rows)
        self._keep(ring, [b for b, other in enumerate(ring.rows) if other is not row])


def pad_slots(x: mx.array, capacity: int) -> mx.array:
    """Empty slots after x's [.., C, ..] up to `capacity`."""
    extra = capacity - x.shape[2]
    return mx.pad(x, [(0, 0), (0, 0), (0, extra), (0, 0)]) if extra > 0 else x
