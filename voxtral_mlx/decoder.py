"""Text decoder: Mistral-style GQA transformer, conditioned on the delay through AdaRMSNorm.

One forward path (MODEL.md "Decoder passes"): `TextDecoder.forward` runs B rows, each a
stream with L new positions from its own start, over the rows' key/value rings (rings.py).
The prompt prefill, the one-token step, B streams at once and several positions of one
stream are all calls of it; `DecoderBatch` keeps the rows and runs passes.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .biasing import Bonus, biased_greedy, bonus_rows
from .config import DecoderArgs
from .layers import Attention, FeedForward, Rotation, pass_rotation, sinusoid_frequencies
from .rings import GROW, RingPass, RowRings, ring_slots

MAX_PASS = 64  # positions a row may take in one pass (the longest prompt, at 2400 ms, is 63)


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

    def __call__(
        self,
        x: mx.array,
        ffn_norm: mx.array,
        starts: mx.array,
        rings: RingPass,
        i: int,
        rotation: Rotation | None = None,
    ) -> mx.array:
        """x [B, L, dim]; `ffn_norm` [B, 1, dim]: the rows' AdaRMSNorm-folded FFN weights;
        `rotation`: the pass's RoPE (None: mx.fast.rope)."""
        q, k, v = self.attention.project(self.attention_norm(x), starts, rotation)
        x = x + self.attention.wo(rings.attend(i, q, k, v, self.attention.heads))
        # AdaRMSNorm: rms_norm(x) * w * (1 + ada); w * (1 + ada) is precomputed per delay
        h = mx.fast.rms_norm(x, None, self.ffn_norm.eps) * ffn_norm
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
        self._compiled = None
        self._compiled_biased = None

    def ffn_norm_weights(self, n_delay_tokens: int) -> mx.array:
        """ffn_norm.weight * (1 + ada_l) of every layer [n_layers, dim], in the model dtype.
        Constant for a given delay: computed once per stream (MODEL.md, AdaRMSNorm)."""
        t_cond = time_embedding(n_delay_tokens, self.args.dim)
        dtype = self.norm.weight.dtype
        return mx.stack(
            [(layer.ffn_norm.weight * (1 + layer.ada_norm(t_cond))) for layer in self.layers]
        ).astype(dtype)

    def forward(
        self,
        x: mx.array,
        starts: mx.array,
        ffn_norms: list[mx.array],
        keys: list[list[mx.array]],
        values: list[list[mx.array]],
    ) -> tuple[mx.array, list[list[mx.array]], list[list[mx.array]]]:
        """The one forward path. x [B, L, dim] (audio + token embeddings) at positions
        starts[b] .. starts[b] + L - 1 of each row; ffn_norms per layer [B, 1, dim]; keys and
        values per ring, per layer [B_g, n_kv, C_g, head_dim], ring g holding the next B_g
        rows (RingPass). Returns the normed hidden states [B, L, dim] and the updated rings."""
        rings = RingPass(keys, values, starts, x.shape[1], self.args.sliding_window)
        rotation = pass_rotation(starts, x.shape[1], self.args)
        for i, layer in enumerate(self.layers):
            x = layer(x, ffn_norms[i], starts, rings, i, rotation)
        return self.norm(x), rings.keys, rings.values

    def __call__(self, x: mx.array, ffn_norms: mx.array) -> mx.array:
        """Logits of whole sequences x [B, L, dim] from position 0 (teacher forcing): one
        pass over empty rings. `ffn_norms` [n_layers, dim] (one delay for all rows)."""
        B, L, _ = x.shape
        empty = mx.zeros((B, self.args.n_kv_heads, L, self.args.head_dim), x.dtype)
        rings = [[empty] * len(self.layers)]
        norms = [mx.broadcast_to(w, (B, 1, w.shape[-1])) for w in ffn_norms]
        h, _, _ = self.forward(x, mx.zeros((B,), mx.int32), norms, rings, rings)
        return self.head(h)

    def head(self, h: mx.array) -> mx.array:
        """Logits of the tied LM head (works for a quantized embedding too)."""
        return self.tok_embeddings.as_linear(h)

    def greedy(self, x, starts, ffn_norms, keys, values, last: bool = False):
        """`forward`, then the greedy token at every position [B, L] (with `last`, at the
        last position only [B, 1]: the LM head reads one position); compiled with the
        model's parameters declared as inputs, so a model changed later (quantized, cast)
        is traced again, never replayed stale. Retraced per shape (B, L, capacity) and
        `last`."""
        if self._compiled is None:
            self._compiled = mx.compile(self._greedy, inputs=self.state)
        return self._compiled(x, starts, ffn_norms, keys, values, last)

    def _greedy(self, x, starts, ffn_norms, keys, values, last):
        h, keys, values = self.forward(x, starts, ffn_norms, keys, values)
        return mx.argmax(self.head(h[:, -1:] if last else h), axis=-1), keys, values

    def greedy_biased(self, x, starts, ffn_norms, keys, values, bias, last: bool = False):
        """`greedy` with the rows' context-bias bonuses, `bias` = (ids, values, yields,
        text_from) as `biasing.biased_greedy` takes them (MODEL.md "Context biasing").
        Compiled like `greedy`, as a function of its own so that `greedy` is unchanged;
        retraced per shape (B, L, capacity, K) and `last`."""
        if self._compiled_biased is None:
            self._compiled_biased = mx.compile(self._greedy_biased, inputs=self.state)
        return self._compiled_biased(x, starts, ffn_norms, keys, values, last, *bias)

    def _greedy_biased(self, x, starts, ffn_norms, keys, values, last, *bias):
        h, keys, values = self.forward(x, starts, ffn_norms, keys, values)
        return biased_greedy(self.head(h[:, -1:] if last else h), *bias), keys, values


class DecoderBatch(RowRings):
    """Rows of streams decoded together: each row's key/value ring, its next position and
    its AdaRMSNorm weights. The rows whose rings have one size share one array per layer
    (rings.py): a pass reads each row's ring at about its own length.

    Rows join (`add`, then their first pass) and leave (`remove`) at any pass; a pass
    (`run`) gives each row any number of new positions up to `max_pass` (or none) and
    returns the greedy token at every position. Before it wraps, a row's ring doubles from
    GROW slots (slot = position); from window + max_pass - 1 on it is a ring (MODEL.md
    "Decoder passes")."""

    def __init__(self, decoder: TextDecoder, max_pass: int = MAX_PASS, text_from: int = 0):
        super().__init__(decoder.args.sliding_window + max_pass - 1)
        self.decoder, self.max_pass = decoder, max_pass
        self.text_from = text_from  # the first text id (the tokenizer's; for context bias)
        args = decoder.args
        self.dtype = decoder.norm.weight.dtype
        self.shape = (args.n_kv_heads, args.head_dim)
        self._norms: tuple[list[Row], list[mx.array]] = ([], [])  # of the rows in order

    def add(self, n_delay_tokens: int) -> Row:
        """A new row (a stream at position 0) conditioned on its delay. It joins the batch
        with its first pass: `prefill` (a pass of its own), or any `run`."""
        return Row(self.decoder.ffn_norm_weights(n_delay_tokens))

    def prefill(self, row: Row, audio: mx.array, tokens, bias: Bonus | None = None) -> mx.array:
        """A new row's first positions (the prompt) in a pass of its own, so that the
        other rows are not padded to its length; then it joins. Returns the greedy token
        after the prompt, at its last position [1] (lazy): the only output a prompt has."""
        solo = DecoderBatch(self.decoder, self.max_pass, self.text_from)
        L = audio.shape[0]
        solo._join(row, 1 << (L - 1).bit_length())  # a ring the prompt's size: its attention
        out = solo.run({row: (audio, tokens)}, bias={row: bias} if bias else None, last=True)
        # then it joins with the ring of GROW slots or more that every row has
        self._insert_padded([row], *solo.rings[0].take([0]), ring_slots(L, self.full))
        return out[:, 0]

    def remove(self, row: Row) -> None:
        if row in self.rows:
            self._drop(row)

    def _join(self, row: Row, slots: int = GROW) -> None:
        """Add a row with an empty ring of `slots` (at most the full ring; its first pass
        may enlarge it)."""
        empty = mx.zeros((1, self.shape[0], min(slots, self.full), self.shape[1]), self.dtype)
        rings = [empty] * len(self.decoder.layers)
        self._insert([row], rings, rings)

    def run(
        self,
        inputs: dict[Row, tuple[mx.array, list[int] | mx.array]],
        logits: bool = False,
        bias: dict[Row, Bonus] | None = None,
        last: bool = False,
    ) -> mx.array:
        """One pass: for each row given, audio embeddings [n, dim] and the n token ids that
        go with them (the previous output, then any drafted continuation); the rows not
        given take no new position. Returns the greedy tokens [B, L] (lazy; row order of
        `rows`, L the longest n), or with `logits` the logits [B, L, vocab] (uncompiled: for
        tests; no bias); the rows' positions advance by `n` (see `rewind`). `bias`: the
        context-bias bonus of the rows that have one, the same at each of their positions
        (a draft's pads do not move it); the other rows' tokens are the unbiased ones.
        `last` (a prompt: every row given has n = L): only the outputs at position L - 1,
        [B, 1], and the pass is not padded."""
        for row in inputs:
            if row not in self.rows:
                self._join(row)
        n = {row: audio.shape[0] for row, (audio, _) in inputs.items()}
        if not 0 < min(n.values()) <= max(n.values()) <= self.max_pass:
            raise ValueError(f"1 to {self.max_pass} positions per row and pass, got {n}")
        # the pass is padded to a power of two: a few shapes to trace (1, 2, 4, ..., max_pass);
        # a prompt's is not (one length per delay): padding costs rows of every product
        longest = max(n.values())
        L = longest if last else min(self.max_pass, 1 << (longest - 1).bit_length())
        self._reserve(L)  # may reorder the rows
        rows, dim = self.rows, self.decoder.args.dim
        x = mx.stack([self._row_input(inputs.get(row), L, dim) for row in rows])
        starts = mx.array([row.position for row in rows], dtype=mx.int32)
        state = (x, starts, self._ffn_norms(rows), self.keys, self.values)
        if logits:
            h, keys, values = self.decoder.forward(*state)
            out = self.decoder.head(h[:, -1:] if last else h)
        elif bias:
            bonuses = bonus_rows(bias.get(row) for row in rows)
            text_from = mx.array(self.text_from, dtype=mx.int32)
            out, keys, values = self.decoder.greedy_biased(*state, (*bonuses, text_from), last)
        else:
            out, keys, values = self.decoder.greedy(*state, last)
        self._store(keys, values)
        for row, count in n.items():
            row.position += count
        return out if last else out[:, :longest]

    def rewind(self, row: Row, count: int) -> None:
        """Forget the last `count` positions of a row (rejected drafts): their keys stay in
        slots no query reads before the positions are written again."""
        row.position -= count

    def _row_input(self, given, L: int, dim: int) -> mx.array:
        if given is None:
            return mx.zeros((L, dim), self.dtype)
        audio, tokens = given
        ids = tokens if isinstance(tokens, mx.array) else mx.array(tokens)
        x = audio + self.decoder.tok_embeddings(ids)
        if x.shape[0] < L:
            x = mx.concatenate([x, mx.zeros((L - x.shape[0], dim), x.dtype)])
        return x

    def _ffn_norms(self, rows: list[Row]) -> list[mx.array]:
        """Per layer [B, 1, dim] of the rows in this order (kept while the order is): a
        list, so that the compiled pass takes each layer's as an input, not a slice."""
        if self._norms[0] != rows:
            layers = list(mx.stack([row.ffn_norms for row in rows], axis=1)[:, :, None])
            mx.eval(layers)
            self._norms = (rows, layers)
        return self._norms[1]


class Row:
    """One stream's place in a DecoderBatch: its next position and its conditioning."""

    def __init__(self, ffn_norms: mx.array):
        self.ffn_norms = ffn_norms  # [n_layers, dim]
        self.position = 0
