"""Drafted pads verified in one pass: what a k-position pass costs against a one-position
pass, and what file transcription gains, before (one position a pass, max_draft=1) and
after (max_draft=16), alternating in one run, with every token compared.

    python benchmarks/drafts.py cost --dim 512 --layers 26
    python benchmarks/drafts.py files --dim 512 --layers 26 --pad-noise 1.3 --pad-seed 2
    python benchmarks/drafts.py trained --utterances 24

`cost`: a real-depth decoder (26 layers, vocabulary 131072, narrow width), one row, passes of
k = 1..16 positions (a pass is padded to a power of two), median of `--passes`.
`files`: a real-depth random checkpoint whose pad logit is raised: a random deep network
writes one token at every position; the [STREAMING_PAD] row of the tied embedding (which is
the LM head) becomes that token's row plus `--pad-noise` x its norm in the random direction
of seed `--pad-seed`. Where the pad and that token compete, the noise decides, and it also
changes what the pad feeds back as the next input, so its size sets the share: 1.3 with seed
2 gave 74 % pads on the bundled clip here (0.3 and 0.6 gave 100 %, 1.5 64 %; the share is
printed). A bare copy of the row would make exact ties, which a one-row and a k-row product
break differently (MODEL.md "Drafted pads").
`transcribe()` of the bundled 11 s clip and three more.
`trained`: the tiny trained test model on its held-out speech (espeak-ng, seed 987654).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import mlx.core as mx

import voxtral_mlx
from voxtral_mlx.bench import BUNDLED_SPEECH, architecture, backend_name, chip_name
from voxtral_mlx.decoder import DecoderBatch, TextDecoder
from voxtral_mlx.model import VoxtralRealtime
from voxtral_mlx.offline import encode_audio, pad_audio
from voxtral_mlx.testing import save_random, shared_audio

ROOT = Path(__file__).resolve().parents[1]
PAD = 32


def real_depth(dim: int, layers: int, vocab: int):
    heads = dim // 64
    return architecture((256, 4, 4, 1024), (dim, layers, heads, heads // 4, 3 * dim), vocab, 64)


def cost(a) -> None:
    decoder = TextDecoder(real_depth(a.dim, a.layers, a.vocab).decoder)
    mx.eval(decoder.parameters())
    VoxtralRealtime.use_backend_layout(decoder)
    batch = DecoderBatch(decoder)
    row = batch.add(6)
    audio = mx.random.normal((a.passes * 16 + 64, a.dim))
    batch.prefill(row, audio[:39], [1] + [PAD] * 38)
    times: dict[int, list[float]] = {k: [] for k in range(1, 17)}
    p = 39
    for _ in range(a.passes):
        for k in times:  # every k once a round: alternating
            tic = time.perf_counter()
            batch.run({row: (audio[p : p + k], [PAD] * k)}).tolist()
            times[k].append(time.perf_counter() - tic)
            batch.rewind(row, k)
    one = statistics.median(times[1][1:])
    machine = f"{chip_name()}, MLX {mx.__version__} ({backend_name()}), fp32"
    shape = f"decoder {a.layers} layers of {a.dim}, vocabulary {a.vocab}"
    print(f"{machine}; {shape}; median of {a.passes - 1} passes each")
    print(f"{'k':>3} {'ms/pass':>8} {'x one':>6}")
    for k, runs in times.items():
        ms = statistics.median(runs[1:])
        print(f"{k:>3} {1000 * ms:>8.1f} {ms / one:>6.2f}")


def compare(model, sources: list, rounds: int) -> None:
    """transcribe() of each source at max_draft 1 and 16, alternating: tokens must agree."""
    walls: dict[int, list[float]] = {1: [], 16: []}
    tokens = passes = pads = 0
    for _ in range(rounds):
        for max_draft in (1, 16):
            total = 0.0
            for source in sources:
                tic = time.perf_counter()
                result = voxtral_mlx.transcribe(model, source, max_draft=max_draft)
                total += time.perf_counter() - tic
                if max_draft == 16:
                    single = voxtral_mlx.transcribe(model, source, max_draft=1).tokens
                    if result.tokens != single:
                        sys.exit("a drafted token differs from one position a pass")
                    tokens += len(result.tokens)
                    passes += result.stats.decoder_passes
                    pads += result.tokens.count(PAD)
            walls[max_draft].append(total)
    before, after = statistics.median(walls[1][1:]), statistics.median(walls[16][1:])
    encoder = statistics.median(encoder_seconds(model, sources) for _ in range(3))
    share = f"pads {100 * pads / tokens:.0f} % of {tokens // rounds} tokens"
    print(f"{share}; {tokens / passes:.2f} tokens per pass; every token equal")
    print(
        f"wall: one position a pass {before:.2f} s, drafts {after:.2f} s: "
        f"{before / after:.2f}x (median of {rounds - 1} rounds after a warm-up)"
    )
    print(
        f"of which the mel and encoder (the same work either way) {encoder:.2f} s: the "
        f"decoder {before - encoder:.2f} s -> {after - encoder:.2f} s, "
        f"{(before - encoder) / (after - encoder):.2f}x"
    )


def encoder_seconds(model, sources: list) -> float:
    """The front end alone (mel, encoder, adapter: what every variant does the same)."""
    tic = time.perf_counter()
    for source in sources:
        mx.eval(encode_audio(model, pad_audio(source, model.args.schedule())))
    return time.perf_counter() - tic


def files(a) -> None:
    sources = [voxtral_mlx.load_audio(BUNDLED_SPEECH)]
    names = ("librivox-0870.wav", "librivox-0880.wav", "librivox-0890.wav")
    sources += [voxtral_mlx.load_audio(shared_audio(name)) for name in names]
    mx.random.seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        save_random(Path(tmp), real_depth(a.dim, a.layers, a.vocab))
        model = voxtral_mlx.load(tmp)
    counts = Counter(voxtral_mlx.transcribe(model, sources[0]).tokens)
    top = counts.most_common(1)[0][0]
    embeddings = model.decoder.tok_embeddings
    row = embeddings.weight[top]
    direction = mx.random.normal(row.shape, key=mx.random.key(a.pad_seed))
    noise = a.pad_noise * mx.linalg.norm(row) * direction / mx.linalg.norm(direction)
    embeddings.weight = embeddings.weight.at[PAD].add(row + noise - embeddings.weight[PAD])
    seconds = sum(len(s) for s in sources) / 16000
    machine = f"{chip_name()}, MLX {mx.__version__} ({backend_name()}), fp32"
    shape = f"decoder {a.layers} layers of {a.dim}, encoder 4 of 256, vocabulary {a.vocab}"
    pad = f"[STREAMING_PAD] row = token {top}'s + {a.pad_noise} x noise (seed {a.pad_seed})"
    print(f"{machine}; random checkpoint: {shape}, {pad}; {seconds:.1f} s of audio")
    compare(model, sources, a.rounds)


def trained(a) -> None:
    sys.path.insert(0, str(ROOT / "training"))
    from data import write_set

    with tempfile.TemporaryDirectory() as tmp:
        utterances = write_set(Path(tmp), a.utterances, 987654)
    model = voxtral_mlx.load(ROOT / "tests" / "assets" / "tiny-voxtral")
    seconds = sum(len(u.audio) for u in utterances) / 16000
    machine = f"{chip_name()}, MLX {mx.__version__} ({backend_name()})"
    print(f"{machine}; the tiny trained model, {a.utterances} held-out utterances, {seconds:.1f} s")
    compare(model, [u.audio for u in utterances], a.rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["cost", "files", "trained"])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--layers", type=int, default=26)
    parser.add_argument("--vocab", type=int, default=131072)
    parser.add_argument("--passes", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pad-noise", type=float, default=1.3)
    parser.add_argument("--pad-seed", type=int, default=2)
    parser.add_argument("--utterances", type=int, default=24)
    a = parser.parse_args()
    {"cost": cost, "files": files, "trained": trained}[a.what](a)


if __name__ == "__main__":
    main()
