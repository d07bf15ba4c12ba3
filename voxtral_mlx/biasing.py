"""Custom vocabulary: decode-time context biasing (MODEL.md "Context biasing").

A list of phrases, each with a weight, becomes a token prefix tree (`ContextBias`), built
once with the checkpoint's Tekken from the forms a phrase takes in the output: after a space,
and, before any text is written, as written. Each stream walks the tree with its own
`BiasMatcher` as its text tokens come out. Failure arcs (Aho-Corasick) make a broken
partial match fall back to the longest suffix that is still a phrase's prefix, the root if
none, so a broken prefix earns nothing more (no lock-in); a completed phrase may start
again. Control tokens ([STREAMING_PAD], [STREAMING_WORD], EOS) carry no text and do not
move the tree.

At each position, the tokens that start or continue a phrase from the stream's place get
their phrase's weight added to their logit (`ContextBias.bonus`; 2.5 times it for the tokens
that continue a begun phrase), where the rule of `biased_greedy` allows: where the unbiased
token is text, and where it is a [STREAMING_PAD] while a word announced by [STREAMING_WORD]
has no text yet.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import VoxtralError

if TYPE_CHECKING:  # MLX is imported where it is used: parsing a list (the CLI) stays light
    import mlx.core as mx

    from .tokenizer import Tokenizer

MAX_PHRASES = 1000  # Mistral's API takes 100; the cost per step is measured at 1000
MAX_PHRASE_CHARS = 100
MAX_WEIGHT = 20.0  # a logit bonus per token; far beyond it the list writes itself
DEFAULT_STRENGTH = 2.0  # the weight of a phrase given without one (benchmarks/RESULTS.md)
# A phrase's first token earns its weight, each token that continues a begun phrase this many
# times it: a begun phrase is favoured more than a new one starts (benchmarks/RESULTS.md
# "Starts and continuations")
CONTINUATION = 2.5
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
ROOT, START = 0, 1  # the tree's two roots (ContextBias)

# One position's bonus for one stream: token ids [K] int32, their bonuses [K] float32, and
# the control token allowed to yield to them (-1: none); see BiasMatcher.bonus.
Bonus = tuple[np.ndarray, np.ndarray, int]
# What `context_bias=` takes: phrases, (phrase, weight) pairs, a string (parse_context_bias)
ContextBiasInput = str | Sequence[str | tuple[str, float]] | None


def parse_context_bias(
    value: object, strength: float = DEFAULT_STRENGTH
) -> list[tuple[str, float]]:
    """A context-bias list from what a user gives: None or [] (none); a string (a JSON list,
    or phrases separated by commas); a list whose items are phrases, (phrase, weight) pairs
    or JSON lists of either. Phrases without a weight get `strength`. Returns (phrase,
    weight) pairs, white space runs made one space, duplicates merged (the larger weight
    kept), in first-seen order. Raises VoxtralError (one sentence) for anything else."""
    check_weight(strength, "the context-bias strength")
    phrases: dict[str, float] = {}
    for item in _items(value):
        phrase, weight = _phrase(item, strength)
        phrases[phrase] = max(weight, phrases.get(phrase, 0.0))
    if len(phrases) > MAX_PHRASES:
        raise VoxtralError(f"context bias: at most {MAX_PHRASES} phrases, got {len(phrases)}")
    return list(phrases.items())


def read_context_bias_file(
    path: str | Path, strength: float = DEFAULT_STRENGTH
) -> list[tuple[str, float]]:
    """A phrase per line, optionally a tab and its weight; blank lines are skipped. A UTF-8
    byte-order mark (Windows editors write one) is not part of the first phrase."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except OSError as e:
        raise VoxtralError(f"cannot read the context-bias file {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise VoxtralError(
            f"the context-bias file {path} is not UTF-8 text (byte {e.object[e.start]:#x} at "
            f"offset {e.start}): save it as UTF-8"
        ) from e
    items: list[str | tuple[str, float]] = []
    for number, line in enumerate(lines, 1):
        phrase, tab, weight = line.partition("\t")
        if not tab:
            items += [phrase] if phrase.strip() else []
            continue
        if not phrase.strip():
            raise VoxtralError(f"{path}, line {number}: no phrase before the tab")
        try:
            items.append((phrase, check_weight(float(weight), "the weight after the tab")))
        except ValueError:
            raise VoxtralError(
                f"{path}, line {number}: the weight after the tab must be a number, got {weight!r}"
            ) from None
        except VoxtralError as e:
            raise VoxtralError(f"{path}, line {number}: {e}") from None
    return parse_context_bias(items, strength)


def check_weight(weight: object, what: str = "a context-bias weight") -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise VoxtralError(f"{what} must be a number, got {weight!r}")
    if not (math.isfinite(weight) and 0 < weight <= MAX_WEIGHT):
        raise VoxtralError(f"{what} must be above 0 and at most {MAX_WEIGHT:g}, got {weight}")
    return float(weight)


def _items(value: object) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return _items(json.loads(text))
            except json.JSONDecodeError:
                raise VoxtralError("context bias: not a valid JSON list") from None
        return [p for p in text.split(",") if p.strip()]
    if isinstance(value, (list, tuple)):
        items = []
        for item in value:  # a repeated form field may itself hold a JSON list
            nested = isinstance(item, str) and item.strip().startswith("[")
            items += _items(item) if nested else [item]
        return items
    raise VoxtralError(f"context bias must be a list of phrases, got {type(value).__name__}")


def _phrase(item: object, strength: float) -> tuple[str, float]:
    if isinstance(item, str):
        phrase, weight = item, strength
    elif isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str):
        phrase, weight = item[0], check_weight(item[1])
    else:
        raise VoxtralError(
            f"context bias: each item must be a phrase or a [phrase, weight] pair, got {item!r}"
        )
    phrase = " ".join(phrase.split())
    if not phrase:
        raise VoxtralError("context bias: a phrase is empty")
    if len(phrase) > MAX_PHRASE_CHARS or _CONTROL_CHARACTERS.search(phrase):
        shown = phrase[:40] + ("..." if len(phrase) > 40 else "")
        raise VoxtralError(
            f"context bias: a phrase must be at most {MAX_PHRASE_CHARS} characters of "
            f"printable text, got {shown!r}"
        )
    return phrase, weight


@dataclass
class _Node:
    children: dict[int, int] = field(default_factory=dict)
    fail: int = 0  # the node of the longest proper suffix of this path that is a path
    weight: float = 0.0  # the bonus of the token that leads here


class ContextBias:
    """The prefix tree of a list's token sequences, with failure arcs. Built once per list
    and tokenizer; any number of streams walk it (`matcher`)."""

    def __init__(self, tokenizer: Tokenizer, phrases: list[tuple[str, float]]):
        self.phrases = phrases
        self.text_from = tokenizer.num_special_tokens  # ids below are control tokens
        self.word_id = tokenizer.streaming_word_id
        self.pad_id = tokenizer.streaming_pad_id
        self._tokenizer = tokenizer
        # two roots: ROOT, for a phrase after a space; START, where no text is written yet,
        # also for a phrase as written (mid-text that form would glue onto a word: "HTMLX")
        self.nodes = [_Node(), _Node()]
        encode = tokenizer.tekken.encode
        for phrase, weight in phrases:
            self._insert(ROOT, encode(f" {phrase}", bos=False, eos=False), weight)
            self._insert(START, encode(phrase, bos=False, eos=False), weight)
        self._link()
        self._bonuses: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def build(cls, tokenizer: Tokenizer, value: object) -> ContextBias | None:
        """A ContextBias from a list (`parse_context_bias`), or the one given; None if empty."""
        if isinstance(value, ContextBias):
            return value if value.phrases else None
        phrases = parse_context_bias(value)
        return cls(tokenizer, phrases) if phrases else None

    def _insert(self, node: int, tokens: list[int], weight: float) -> None:
        for depth, token in enumerate(tokens):
            bonus = weight * self.share(depth)
            child = self.nodes[node].children.get(token)
            if child is None:
                child = len(self.nodes)
                self.nodes.append(_Node(weight=bonus))
                self.nodes[node].children[token] = child
            else:  # a prefix shared by phrases of different weights: the larger
                self.nodes[child].weight = max(self.nodes[child].weight, bonus)
            node = child

    @staticmethod
    def share(depth: int) -> float:
        """The share of a phrase's weight its token at `depth` earns (0: its first)."""
        return 1.0 if depth == 0 else CONTINUATION

    def _link(self) -> None:
        """Failure arcs, breadth first (a node's arc needs its parent's); the roots' children
        and START itself fall back to ROOT."""
        queue = [*self.nodes[ROOT].children.values(), *self.nodes[START].children.values()]
        for n in queue:
            node = self.nodes[n]
            for token, child in node.children.items():
                self.nodes[child].fail = self.goto(node.fail, token)
                queue.append(child)

    def goto(self, n: int, token: int) -> int:
        """The node after text `token` from node n: a child, else along the failure arcs."""
        while True:
            child = self.nodes[n].children.get(token)
            if child is not None:
                return child
            if n == ROOT:
                return ROOT
            n = self.nodes[n].fail

    def bonus(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """At node n: the text tokens that start or continue a phrase (the children of n and
        of the nodes on its failure chain, the root's last) and the bonus each earns (ids
        [K] int32, values [K] float32; a token that both continues a phrase and starts one
        earns the continuation's). Every other token earns nothing."""
        cached = self._bonuses.get(n)
        if cached is None:
            tokens: dict[int, float] = {}
            m = n
            while True:
                for token, child in self.nodes[m].children.items():
                    tokens.setdefault(token, self.nodes[child].weight)
                if m == ROOT:
                    break
                m = self.nodes[m].fail
            cached = (
                np.fromiter(tokens.keys(), np.int32, len(tokens)),
                np.fromiter(tokens.values(), np.float32, len(tokens)),
            )
            self._bonuses[n] = cached
        return cached

    def starts_word(self, token: int) -> bool:
        """A text token that starts a new word (its text begins with a space)."""
        return token >= self.text_from and self._tokenizer.byte_piece(token)[:1] == b" "

    def matcher(self, at_start: bool = True) -> BiasMatcher:
        """A stream's place in the tree: at the start of its text, or after some."""
        return BiasMatcher(self, at_start)


class BiasMatcher:
    """One stream's place in a ContextBias, moved by each output token (`advance`)."""

    def __init__(self, bias: ContextBias, at_start: bool = True):
        self.bias = bias
        self.node = START if at_start else ROOT  # START: no text written yet
        self.announced = False  # a [STREAMING_WORD] came and its word has no text yet
        # a listed token gave an announced word its text (perhaps before the model would
        # have: a pad yielded); until the next [STREAMING_WORD], no new word may start
        self.guarded = False

    def advance(self, token: int) -> None:
        bias = self.bias
        if token >= bias.text_from:
            if self.announced:
                listed, _ = bias.bonus(self.node)
                self.guarded = token in listed
            self.node = bias.goto(self.node, token)
            self.announced = False
        elif token == bias.word_id:
            self.announced, self.guarded = True, False

    def settle(self, token: int) -> int:
        """The output as the stream takes it: while guarded, a token that starts a new word
        (text after a space) is a [STREAMING_PAD]: the model writes its own text of the word
        a listed token already wrote, and one announced word gets one word. Pads do not move
        the guard: every position of a draft settles alike (MODEL.md "Context biasing")."""
        return self.bias.pad_id if self.guarded and self.bias.starts_word(token) else token

    def bonus(self) -> Bonus:
        """The bonus at the next position: (ids, values) of ContextBias.bonus, and the
        control token that may yield to them (the pad while a word is announced, else -1).
        A [STREAMING_PAD] moves nothing, so this is also the bonus at every position of a
        draft of pads (MODEL.md "Context biasing")."""
        ids, values = self.bias.bonus(self.node)
        return ids, values, self.bias.pad_id if self.announced else -1


def bonus_rows(bonuses: Iterable[Bonus | None]) -> tuple[mx.array, mx.array, mx.array]:
    """The bonuses of a pass's rows as arrays: ids and values [B, K] (K a power of two, 16
    at least; padded with id 0 and value -inf, and a row without a list is all padding, so
    its tokens are the unbiased ones) and the control token that may yield [B, 1]."""
    import mlx.core as mx

    bonuses = list(bonuses)
    longest = max((len(b[0]) for b in bonuses if b is not None), default=1)
    K = max(16, 1 << (longest - 1).bit_length())
    ids = np.zeros((len(bonuses), K), np.int32)
    values = np.full((len(bonuses), K), -np.inf, np.float32)
    yields = np.full((len(bonuses), 1), -1, np.int32)
    for row, bonus in enumerate(bonuses):
        if bonus is not None:
            n = len(bonus[0])
            ids[row, :n], values[row, :n], yields[row, 0] = bonus
    return mx.array(ids), mx.array(values), mx.array(yields)


def biased_greedy(
    logits: mx.array, ids: mx.array, values: mx.array, yields: mx.array, text_from: mx.array
) -> mx.array:
    """The token at every position [B, L] of logits [B, L, V] with the rows' bonuses
    (`bonus_rows`): where the unbiased greedy token is text (id >= text_from) or the row's
    yielding control token, the listed token with the highest logit + bonus if that beats
    the greedy token's logit; elsewhere the greedy token."""
    import mlx.core as mx

    greedy = mx.argmax(logits, axis=-1)  # [B, L]
    top = mx.take_along_axis(logits, greedy[..., None], axis=-1)[..., 0]
    B, L, _ = logits.shape
    listed_ids = mx.broadcast_to(ids[:, None], (B, L, ids.shape[-1]))  # [B, L, K]
    listed = mx.take_along_axis(logits, listed_ids, axis=-1) + values[:, None]
    k = mx.argmax(listed, axis=-1, keepdims=True)  # [B, L, 1]
    best = mx.take_along_axis(listed, k, axis=-1)[..., 0]
    pick = mx.take_along_axis(listed_ids, k, axis=-1)[..., 0]
    may = (greedy >= text_from) | (greedy == yields)
    return mx.where(may & (best > top), pick.astype(greedy.dtype), greedy)
