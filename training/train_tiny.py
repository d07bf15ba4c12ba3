"""Train the tiny Voxtral Realtime test model that really transcribes a small vocabulary.

    python training/train_tiny.py --out DIR [--init PREVIOUS_DIR ...]   # one stage
    training/reproduce.sh                                                # the committed model

Same architecture as the real model (causal conv stem + encoder, 4x adapter, GQA decoder with
AdaRMSNorm delay conditioning, tied head), tiny widths, trained with transformers'
VoxtralRealtimeForConditionalGeneration on CPU, exported in the official layout
(params.json, consolidated.safetensors, tekken.json). Targets follow the streaming format:
one target per 80 ms position, STREAMING_PAD when nothing is due, [STREAMING_WORD] `delay`
after a word starts and the word's token `delay` after it ends (MODEL.md, "Word timings").
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from data import WORDS, Utterance, augment, make_utterance  # beside this script

from voxtral_mlx.config import AudioArgs, Schedule
from voxtral_mlx.mel import log_mel_spectrogram
from voxtral_mlx.offline import pad_audio
from voxtral_mlx.testing import (
    TinySpec,
    bundled_tekken_path,
    official_from_transformers,
    params_json,
    save_official,
    tekken_json,
    tiny_hf_model,
)

ROOT = Path(__file__).resolve().parents[1]
PAD, WORD, BOS = 32, 33, 1
DELAYS_MS = (240, 480, 720, 960, 1200)
SCHEDULES = {delay: Schedule(AudioArgs(), delay) for delay in DELAYS_MS}
SILENCE_MEL = (1.5 - 8.0 + 4.0) / 4.0  # log-mel of digital silence
SPEC = TinySpec(
    enc_dim=128,
    enc_layers=3,
    enc_heads=4,
    enc_head_dim=32,
    enc_hidden=384,
    enc_window=750,
    dec_dim=128,
    dec_layers=3,
    dec_heads=4,
    dec_kv_heads=2,
    dec_head_dim=32,
    dec_hidden=384,
    dec_window=8192,
    vocab_size=1000 + 256 + len(WORDS),
)


def tiny_tekken() -> dict:
    """1000 named special tokens; the 256 single bytes; then the real Tekken piece " word"."""
    base = json.loads(bundled_tekken_path().read_text())
    by_bytes = {base64.b64decode(v["token_bytes"]): v for v in base["vocab"]}
    vocab = [dict(v) for v in base["vocab"][:256]]
    for word in WORDS:
        entry = dict(by_bytes[f" {word}".encode()])
        entry["rank"] = len(vocab)
        vocab.append(entry)
    return tekken_json(SPEC.vocab_size, pieces=vocab)


def word_id(word: str) -> int:
    return 1000 + 256 + WORDS.index(word)


def features(u: Utterance) -> np.ndarray:
    """Log-mel [T, 128] of the utterance padded for the longest delay."""
    return log_mel_spectrogram(pad_audio(u.audio, SCHEDULES[max(DELAYS_MS)]))


def targets(u: Utterance, n_tokens: int, schedule: Schedule) -> np.ndarray:
    """The output expected at every decoder position: the marker where a word starts and
    its text where it ends (the inverse of Schedule.step_time)."""
    first = schedule.n_left_pad_tokens + schedule.n_delay_tokens  # step_time(first) == 0
    y = np.full(n_tokens, PAD, np.int64)
    for word, (start, end) in zip(u.words, u.spans, strict=True):
        p_start = first + round(start / schedule.seconds_per_token)
        p_end = max(first + math.ceil(end / schedule.seconds_per_token), p_start + 1)
        y[p_start] = WORD
        y[p_end] = word_id(word)
    return y


def batch(items, schedule: Schedule):
    n = max(f.shape[0] // 8 for f, _ in items)
    L = schedule.prompt_length
    mel = np.full((len(items), 128, 8 * n), SILENCE_MEL, np.float32)
    ids = np.full((len(items), n), PAD, np.int64)
    labels = np.full((len(items), n), -100, np.int64)
    for i, (f, u) in enumerate(items):
        mel[i, :, : f.shape[0]] = f.T
        y = targets(u, n, schedule)
        ids[i, 0] = BOS
        ids[i, L:] = y[L - 1 : -1]  # the previous output is the next input
        labels[i, L - 1 :] = y[L - 1 :]
    return torch.from_numpy(mel), torch.from_numpy(ids), torch.from_numpy(labels)


def load_official(model, path: Path) -> None:
    """Load an official-layout checkpoint written by this script back into the transformers
    model: number every parameter element, map the numbers through the export, invert."""
    from safetensors.numpy import load_file

    weights = load_file(str(path / "consolidated.safetensors"))
    params = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    offsets, total = {}, 0
    with torch.no_grad():
        for name, p in params.items():
            offsets[name] = total
            p.copy_(torch.arange(total, total + p.numel(), dtype=torch.float64).reshape(p.shape))
            total += p.numel()
        assert total < 2**24, "element numbers must be exact in float32"
        flat = np.empty(total, np.float32)
        for name, index in official_from_transformers(model, SPEC).items():
            flat[index.astype(np.int64).reshape(-1)] = weights[name].reshape(-1)
        for name, p in params.items():
            chunk = flat[offsets[name] : offsets[name] + p.numel()]
            p.copy_(torch.from_numpy(chunk.reshape(tuple(p.shape))))
        model.lm_head.weight = model.model.language_model.embed_tokens.weight


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "assets" / "tiny-voxtral")
    parser.add_argument("--utterances", type=int, default=2500)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--init", type=Path, help="continue from a checkpoint this script wrote")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--augment", type=float, default=0.0, help="share of utterances augmented")
    parser.add_argument("--max-words", type=int, default=6)
    opts = parser.parse_args()

    torch.manual_seed(opts.seed)
    torch.set_num_threads(2)
    rng = np.random.default_rng(opts.seed)
    tic = time.time()
    data = [make_utterance(rng, max_words=opts.max_words) for _ in range(opts.utterances)]
    if opts.augment > 0:  # (no draws otherwise: the earlier stages reproduce exactly)
        data = [augment(u, rng) if rng.random() < opts.augment else u for u in data]
    feats = [features(u) for u in data]
    print(
        f"{len(data)} utterances, {sum(len(u.audio) for u in data) / 16000 / 60:.1f} min "
        f"of speech, generated in {time.time() - tic:.0f} s",
        flush=True,
    )

    model = tiny_hf_model(SPEC)
    if opts.init is not None:
        load_official(model, opts.init)
    model.train()
    weights = torch.ones(SPEC.vocab_size)
    weights[PAD] = 0.2  # most positions are pads: let the rare ones count
    optimizer = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=0.01)
    warmup = opts.warmup
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * s / opts.steps)))
    )
    order = np.argsort([f.shape[0] for f in feats])  # batches of similar lengths
    tic = time.time()
    for step in range(opts.steps):
        start = rng.integers(0, len(order) - opts.batch)
        items = [(feats[i], data[i]) for i in order[start : start + opts.batch]]
        schedule = SCHEDULES[int(rng.choice(DELAYS_MS))]
        mel, ids, labels = batch(items, schedule)
        n_delay = schedule.n_delay_tokens
        logits = model(input_ids=ids, input_features=mel, num_delay_tokens=n_delay).logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, SPEC.vocab_size),
            labels.reshape(-1),
            weight=weights,
            ignore_index=-100,
        )
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_schedule.step()
        if step % 100 == 0 or step == opts.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  {time.time() - tic:.0f} s", flush=True)

    model.eval()
    out = opts.out
    save_official(out, official_from_transformers(model, SPEC), params_json(SPEC), tiny_tekken())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
