"""Context biasing (custom vocabulary): what a list does to speech the model gets wrong, and
what it costs per decoder step.

    python benchmarks/biasing.py quality --utterances 100 --snr 0 [--seed 2525]
    python benchmarks/biasing.py cost --dim 512 --layers 26 --passes 30

`quality`: the tiny trained model (tests/assets/tiny-voxtral) on held-out digit sequences
(espeak-ng, 4 to 6 digits, seeded, never trained on) under white noise at `--snr` dB, where
it misses about half the words. Each utterance gets its own list, as in the usual biasing
benchmarks: the words to find plus distractors, words the model knows that are not in the
audio. Two kinds of list:
  phrases: 3 consecutive digits of the utterance as one phrase ("three six seven", 3
           tokens for this model) + `--distractors` random 3-digit phrases not said;
  words:   the utterance's digits among three, six and seven (its worst) as words + 4
           command words (yes, stop, left, ...), never said in these clips.
Scored with the basic normalizer, words aligned with jiwer. B-WER: errors on the words of
the listed phrases where said (substituted, deleted, or inserted among them); U-WER: the
same for every other word; false alarms: listed phrases written where they were not said
(an occurrence in the transcript not aligned word for word to the same words in the
reference). For each rule (where the bonus applies, MODEL.md "Context biasing"; `RULES`:
the library's, "ours", and the alternatives measured against it) and strength (the logit
bonus of a phrase's first token; the tokens that continue it earn 2.5 times it), against no
list. `--seed` draws another set of clips and lists (the tables' first set is 2525): a rule
chosen on one set is confirmed on another.

`cost`: a real-depth decoder (26 layers, vocabulary 131072, narrow width, fp32, random
weights) with the real Tekken vocabulary; one row, one-position passes; median ms per pass
without a list and with 100 and 1000 phrases (the bonus of a stream at the tree's root: the
most tokens), alternating in one run.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import jiwer
import mlx.core as mx
import numpy as np

import voxtral_mlx
import voxtral_mlx.decoder
from voxtral_mlx.bench import architecture, backend_name, chip_name
from voxtral_mlx.biasing import BiasMatcher, Bonus, ContextBias
from voxtral_mlx.decoder import DecoderBatch, TextDecoder
from voxtral_mlx.evaluation import basic_normalize
from voxtral_mlx.model import VoxtralRealtime
from voxtral_mlx.testing import bundled_tekken_path, write_tekken
from voxtral_mlx.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
ASSET = ROOT / "tests" / "assets" / "tiny-voxtral"
SEED = 2525  # training used 1234 to 1238, the tests' held-out set 987654
HARD = ("three", "six", "seven")  # the digits the model misses most at 0 dB


# --- where the bonus applies: the library's rule and the alternatives measured ---


class TextOnly(BiasMatcher):
    """The bonus only where the model writes text: a pad never yields."""

    def bonus(self) -> Bonus:
        return (*self.bias.bonus(self.node), -1)


class Blind(BiasMatcher):
    """A pad always yields: the bonus everywhere the model would write a pad."""

    def bonus(self) -> Bonus:
        return (*self.bias.bonus(self.node), self.bias.pad_id)


class GiveBack(ContextBias):
    """Our rule for pads, but a break pays back in the decision what the match took: at
    depth k the continuation earns (k + 1) x weight over a breaking token, not one."""

    def bonus(self, n: int):
        ids, values = super().bonus(n)
        depth = self._depths()
        return ids, np.array(
            [w * (depth[self.goto(n, int(t))]) for t, w in zip(ids, values, strict=True)],
            np.float32,
        )

    def _depths(self) -> list[int]:
        if not hasattr(self, "_depth"):
            self._depth = [0] * len(self.nodes)
            for n, node in enumerate(self.nodes):
                for child in node.children.values():
                    self._depth[child] = self._depth[n] + 1
        return self._depth


class Flat(ContextBias):
    """Every token of a phrase earns its weight: the library's rule before continuations
    earned more (benchmarks/RESULTS.md "Starts and continuations")."""

    @staticmethod
    def share(depth: int) -> float:
        return 1.0


def decide(pad_scale: float = 1.0, mass: float | None = None):
    """A variant of biased_greedy (same arguments) for the rules that change the decision:
    `pad_scale` x the bonus where the announced word's pad may yield; with `mass`, that pad
    yields only where the model's text probability, all text tokens together, is within
    `mass` (natural log) of the pad's and the listed token with its bonus tops every text
    token: the model hears a word and the list names its best guess; the bonus no longer
    needs to beat the pad itself."""

    def rule(logits, ids, values, yields, text_from):
        greedy = mx.argmax(logits, axis=-1)
        top = mx.take_along_axis(logits, greedy[..., None], axis=-1)[..., 0]
        B, L, _ = logits.shape
        at_pad = greedy == yields
        listed_ids = mx.broadcast_to(ids[:, None], (B, L, ids.shape[-1]))
        bonus = mx.where(at_pad[..., None], pad_scale * values[:, None], values[:, None])
        listed = mx.take_along_axis(logits, listed_ids, axis=-1) + bonus
        k = mx.argmax(listed, axis=-1, keepdims=True)
        best = mx.take_along_axis(listed, k, axis=-1)[..., 0]
        pick = mx.take_along_axis(listed_ids, k, axis=-1)[..., 0].astype(greedy.dtype)
        wins = best > top
        if mass is not None:
            is_text = mx.arange(logits.shape[-1]) >= text_from
            text = mx.where(is_text, logits, -mx.inf)
            hears = mx.logsumexp(text, axis=-1) > top - mass
            wins = mx.where(at_pad, hears & (best > mx.max(text, axis=-1)), wins)
        may = (greedy >= text_from) | at_pad
        return mx.where(may & wins, pick, greedy)

    return rule


RULES = {  # name: (tree class, matcher class, decision: None for the library's)
    "ours": (ContextBias, BiasMatcher, None),
    "text only": (ContextBias, TextOnly, None),
    "blind": (ContextBias, Blind, None),
    "give-back": (GiveBack, BiasMatcher, None),
    "flat": (Flat, BiasMatcher, None),
    "pad half": (ContextBias, BiasMatcher, decide(pad_scale=0.5)),
    "text mass": (ContextBias, BiasMatcher, decide(mass=1.0)),
}


def biased(tree_class, matcher_class, _decision=None):
    class Tree(tree_class):
        def matcher(self, at_start: bool = True):
            return matcher_class(self, at_start)

    return Tree


# --- held-out speech ---


def digit_utterances(count: int, snr_db: float, seed: int = SEED) -> list[tuple]:
    """(audio, words) of `count` digit sequences with white noise at `snr_db` dB (the
    speech's power over the noise's), as training/data.py makes its clips."""
    sys.path.insert(0, str(ROOT / "training"))
    from data import PITCHES, RATE, SPEEDS, VOICES, WORDS, synthesize

    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(count):
        voice, speed, pitch = rng.choice(VOICES), int(rng.choice(SPEEDS)), int(rng.choice(PITCHES))
        words = [WORDS[i] for i in rng.integers(10, size=rng.integers(4, 7))]
        pieces = [np.zeros(int(rng.uniform(0.2, 0.6) * RATE), np.float32)]
        for word in words:
            pieces.append(synthesize(word, str(voice), speed, pitch) * rng.uniform(0.5, 1.0))
            pieces.append(np.zeros(int(rng.uniform(0.15, 0.5) * RATE), np.float32))
        audio = np.concatenate(pieces)
        power = np.mean(np.concatenate(pieces[1::2]) ** 2)
        noise = rng.standard_normal(len(audio)) * np.sqrt(power / 10 ** (snr_db / 10))
        clips.append((np.clip(audio + noise, -1, 1).astype(np.float32), words))
    return clips


def lists(clips, kind: str, distractors: int, seed: int = SEED) -> list[list[str]]:
    """Each clip's list: the phrases to find first, then the distractors."""
    sys.path.insert(0, str(ROOT / "training"))
    from data import WORDS

    rng = np.random.default_rng(seed + 1)
    out = []
    for _, words in clips:
        if kind == "words":
            targets = sorted(set(words) & set(HARD))
            out.append(targets + list(rng.choice(WORDS[10:], 4, replace=False)))
            continue
        i = int(rng.integers(len(words) - 2))
        said, phrases = " ".join(words), [" ".join(words[i : i + 3])]
        while len(phrases) < 1 + distractors:
            phrase = " ".join(rng.choice(WORDS[:10], 3))
            if phrase not in said and phrase not in phrases:
                phrases.append(phrase)
        out.append(phrases)
    return out


def occurrences(words: list[str], phrases: list[str]) -> list[range]:
    spans = []
    for phrase in phrases:
        p = phrase.split()
        spans += [range(i, i + len(p)) for i in range(len(words)) if words[i : i + len(p)] == p]
    return spans


def score(ref: list[str], hyp: list[str], phrases: list[str]) -> dict[str, int]:
    """Errors on the listed words (B) and the others (U), their counts, false alarms."""
    listed = {i for span in occurrences(ref, phrases) for i in span}
    out = dict(b_err=0, b_n=len(listed), u_err=0, u_n=len(ref) - len(listed), fa=0)
    if not hyp:
        out["b_err"], out["u_err"] = out["b_n"], out["u_n"]
        return out
    equal = {}  # hyp index -> ref index, where aligned as the same word
    for chunk in jiwer.process_words(" ".join(ref), " ".join(hyp)).alignments[0]:
        r, h = range(chunk.ref_start_idx, chunk.ref_end_idx), chunk.hyp_start_idx
        if chunk.type == "equal":
            equal.update({h + k: i for k, i in enumerate(r)})
        elif chunk.type == "insert":  # among listed words (both neighbours listed): B
            side = "b" if {r.start - 1, r.start} <= listed else "u"
            out[f"{side}_err"] += chunk.hyp_end_idx - chunk.hyp_start_idx
        for i in r if chunk.type != "equal" else ():
            out["b_err" if i in listed else "u_err"] += 1
    for span in occurrences(hyp, phrases):
        refs = [equal.get(h) for h in span]
        if None in refs or [ref[i] for i in refs] != [hyp[h] for h in span]:
            out["fa"] += 1
    return out


def quality(a) -> None:
    model = voxtral_mlx.load(ASSET)
    clips = digit_utterances(a.utterances, a.snr, a.seed)
    said = sum(len(words) for _, words in clips)
    print(f"{chip_name()}, MLX {mx.__version__} ({backend_name()}); the tiny trained model")
    print(
        f"{a.utterances} held-out digit sequences ({said} words, seed {a.seed}), "
        f"white noise at {a.snr:g} dB"
    )
    for kind in a.lists:
        phrase_lists = lists(clips, kind, a.distractors, a.seed)
        print(f"\nlists of {kind}: {np.mean([len(p) for p in phrase_lists]):.1f} items each")
        print("| rule | strength | B-WER | U-WER | false alarms | B errors | U errors | goal |")
        print("|---|---|---|---|---|---|---|---|")
        base = run(model, clips, phrase_lists, None, 0.0)
        row("no list", 0.0, base, base)
        for rule in a.rules:
            for strength in a.strengths:
                row(rule, strength, run(model, clips, phrase_lists, rule, strength), base)


def run(model, clips, phrase_lists, rule, strength) -> dict[str, int]:
    biases: list[ContextBias | None] = [None] * len(clips)
    if rule is not None:
        tree = biased(*RULES[rule])
        biases = [tree(model.tokenizer, [(p, strength) for p in ph]) for ph in phrase_lists]
    with decision(model, RULES[rule][2] if rule else None):
        texts = [
            voxtral_mlx.transcribe(model, audio, context_bias=bias).text
            for (audio, _), bias in zip(clips, biases, strict=True)
        ]
    totals = dict(b_err=0, b_n=0, u_err=0, u_n=0, fa=0)
    for (_, words), phrases, text in zip(clips, phrase_lists, texts, strict=True):
        for key, value in score(words, basic_normalize(text).split(), phrases).items():
            totals[key] += value
    return totals


@contextmanager
def decision(model, rule):
    """The decoder's biased greedy decides with `rule` (same arguments as biased_greedy)
    while in the block; None: the library's. Traced again on entry and on exit."""
    library = voxtral_mlx.decoder.biased_greedy
    voxtral_mlx.decoder.biased_greedy = rule or library
    model.decoder._compiled_biased = None
    try:
        yield
    finally:
        voxtral_mlx.decoder.biased_greedy = library
        model.decoder._compiled_biased = None


def row(rule: str, strength: float, t: dict[str, int], base: dict[str, int]) -> None:
    b, u = t["b_err"] / t["b_n"], t["u_err"] / t["u_n"]
    b0, u0 = base["b_err"] / base["b_n"], base["u_err"] / base["u_n"]
    met = b <= b0 / 2 and u <= 1.1 * u0 and t["fa"] <= max(1.1 * base["fa"], base["fa"])
    print(
        f"| {rule} | {strength:g} | {100 * b:.1f} % ({rel(b, b0)}) | {100 * u:.1f} % "
        f"({rel(u, u0)}) | {t['fa']} | {t['b_err']}/{t['b_n']} | {t['u_err']}/{t['u_n']} "
        f"| {'goal met' if met else ''} |",
        flush=True,
    )


def rel(x: float, x0: float) -> str:
    return f"{100 * (x - x0) / x0:+.0f} %" if x0 else "-"


# --- cost per step ---


def cost(a) -> None:
    heads = a.dim // 64
    dec = (a.dim, a.layers, heads, heads // 4, 3 * a.dim)
    args = architecture((256, 1, 4, 1024), dec, 131072, 64)
    mx.random.seed(0)
    decoder = TextDecoder(args.decoder)
    mx.eval(decoder.parameters())
    VoxtralRealtime.use_backend_layout(decoder)
    with tempfile.TemporaryDirectory() as tmp:
        write_tekken(Path(tmp) / "tekken.json", args.decoder.vocab_size)
        tokenizer = Tokenizer.from_file(Path(tmp) / "tekken.json")
    rng = np.random.default_rng(SEED)
    words = english_words()
    trees = {n: ContextBias(tokenizer, phrases(rng, words, n)) for n in a.phrases}
    batch = DecoderBatch(decoder, text_from=tokenizer.num_special_tokens)
    row_ = batch.add(6)
    audio = mx.random.normal((39 + (len(trees) + 1) * (a.passes + 1), a.dim))
    batch.prefill(row_, audio[:39], [1] + [32] * 38)
    cases = {"no list": None} | {f"{n} phrases": t.matcher() for n, t in trees.items()}
    times: dict[str, list[float]] = {name: [] for name in cases}
    token, p = 32, 39
    for _ in range(a.passes + 1):  # the first round traces each shape
        for name, matcher in cases.items():
            tic = time.perf_counter()
            bias = None if matcher is None else {row_: matcher.bonus()}
            token = batch.run({row_: (audio[p : p + 1], [token])}, bias=bias)[0, 0].item()
            if matcher is not None:
                matcher.advance(token)
            times[name].append(time.perf_counter() - tic)
            p += 1
    print(f"{chip_name()}, MLX {mx.__version__} ({backend_name()}), fp32")
    print(f"decoder {a.layers} layers of {a.dim}, vocabulary {args.decoder.vocab_size}; ")
    print(f"one row, one position a pass; median of {a.passes} passes each, alternating")
    base = statistics.median(times["no list"][1:])
    print("| list | tokens with a bonus (root) | ms per step | x no list |")
    print("|---|---|---|---|")
    for name, runs in times.items():
        ms = statistics.median(runs[1:])
        k = len(trees[int(name.split()[0])].bonus(0)[0]) if cases[name] else 0
        print(f"| {name} | {k} | {1000 * ms:.2f} | {ms / base:.3f} |")


def english_words() -> list[str]:
    """Words for phrases: the real Tekken's pieces that are a space and 4+ letters."""
    words = []
    for piece in json.loads(bundled_tekken_path().read_text())["vocab"]:
        text = base64.b64decode(piece["token_bytes"]).decode("utf-8", "ignore")
        if text.startswith(" ") and text[1:].isalpha() and len(text) > 4:
            words.append(text[1:])
    return words


def phrases(rng, words: list[str], n: int) -> list[tuple[str, float]]:
    """n phrases of 1 to 3 words, glued into names half the time (several tokens each)."""
    out = set()
    while len(out) < n:
        picked = list(rng.choice(words, rng.integers(1, 4)))
        out.add("".join(w.capitalize() for w in picked) if rng.random() < 0.5 else " ".join(picked))
    return [(p, 2.0) for p in sorted(out)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["quality", "cost"])
    parser.add_argument("--utterances", type=int, default=100)
    parser.add_argument("--snr", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--distractors", type=int, default=5)
    parser.add_argument("--lists", nargs="+", default=["phrases", "words"])
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    parser.add_argument("--strengths", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--layers", type=int, default=26)
    parser.add_argument("--phrases", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--passes", type=int, default=30)
    a = parser.parse_args()
    {"quality": quality, "cost": cost}[a.what](a)


if __name__ == "__main__":
    main()
