"""An 8-bit key/value ring, measured with a prototype (issue 27, part 5): memory per stream,
attention speed, and token agreement with the model's own ring.

Agreement: every key and value written to a ring is quantized and dequantized
(`mx.quantize` / `mx.dequantize`: affine, 8 bits, groups of `--group` along head_dim, what
mlx-lm's QuantizedKVCache stores), so each pass attends over exactly the values an 8-bit
ring would hold. Tokens of `transcribe` are compared with those of the unquantized ring, at
the checkpoint's dtype (fp32) and at bf16, on (a) a parity checkpoint (transformers' tiny
random model as tests/test_parity.py builds it, with head_dim 32 so that a group fits;
jfk.wav at 80, 480 and 2400 ms) and (b) the tiny trained model over 24 held-out utterances
(with their WER). Speed: one decoder layer's attention of the real shapes (32/8 heads of
128) over B rows' rings of C positions, as `Attention.heads` computes it, against mlx-lm's
quantized attention (`mx.quantized_matmul` over the packed ring), alternating. Memory: from
the shapes, the real model's ring.

    python benchmarks/kv8.py
    python benchmarks/kv8.py --skip-speed --bits 4   # the check that the prototype acts
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import mlx.core as mx
import numpy as np

import voxtral_mlx
from voxtral_mlx import decoder
from voxtral_mlx.bench import backend_name, chip_name
from voxtral_mlx.rings import RingPass

ROOT = Path(__file__).resolve().parents[1]
TRAINED = ROOT / "tests" / "assets" / "tiny-voxtral"
HELD_OUT_SEED = 987654  # tests/conftest.py's: utterances training never saw
BITS = 8  # --bits: 4 or 2 show that the prototype reaches the compiled passes


@contextmanager
def eight_bit_rings(group: int):
    """Every decoder ring write quantized to 8 bits and back while inside (the encoder's
    rings untouched; models loaded inside: a compiled pass keeps its first trace's graph)."""

    class EightBit(RingPass):
        def attend(self, i, q, k, v, attention):
            k, v = (mx.dequantize(*mx.quantize(a, group, BITS), group, BITS) for a in (k, v))
            return super().attend(i, q, k, v, attention)

    decoder.RingPass = EightBit
    try:
        yield
    finally:
        decoder.RingPass = RingPass


def agreement(ours: list[list[int]], theirs: list[list[int]]) -> tuple[int, float]:
    """(sequences equal, fraction of positions equal up to the longer sequence)."""
    pairs = list(zip(ours, theirs, strict=True))
    equal = sum(sum(x == y for x, y in zip(a, b, strict=False)) for a, b in pairs)
    total = sum(max(len(a), len(b)) for a, b in pairs)
    return sum(a == b for a, b in pairs), equal / total


def tokens(path: Path, dtype, clips: list[tuple[np.ndarray, int]], group: int | None):
    with eight_bit_rings(group) if group else _nothing():
        model = voxtral_mlx.load(path, dtype=dtype)
        return [voxtral_mlx.transcribe(model, audio, delay).tokens for audio, delay in clips]


@contextmanager
def _nothing():
    yield


def logit_change(path: Path, dtype, group: int) -> float:
    """max |logit change| / max |logit| of a 32-position pass over a ring the 32 positions
    before it wrote, 8-bit ring against the plain one (random inputs): the prototype acts."""
    rng = np.random.default_rng(0)
    logits = []
    for g in (None, group):
        with eight_bit_rings(g) if g else _nothing():
            model = voxtral_mlx.load(path, dtype=dtype)
        args = model.args.decoder
        audio = mx.array(rng.standard_normal((64, args.dim)).astype(np.float32)).astype(dtype)
        ids = rng.integers(0, args.vocab_size, 64).tolist()
        rng = np.random.default_rng(0)  # the same inputs for both
        with eight_bit_rings(g) if g else _nothing():  # the uncompiled pass reads it now
            batch = decoder.DecoderBatch(model.decoder)
            row = batch.add(6)
            batch.run({row: (audio[:32], ids[:32])})
            out = batch.run({row: (audio[32:], ids[32:])}, logits=True)
        logits.append(np.array(out.astype(mx.float32)))
    return float(np.abs(logits[1] - logits[0]).max() / np.abs(logits[0]).max())


def parity_checkpoint(folder: Path) -> Path:
    from voxtral_mlx.testing import TinySpec, tiny_hf_model, write_official

    spec = TinySpec(dec_head_dim=32)
    return write_official(tiny_hf_model(spec), spec, folder)


def held_out(folder: Path):
    sys.path.insert(0, str(ROOT / "training"))
    from data import write_set

    return write_set(folder, 24, HELD_OUT_SEED)


def wer(model_tokens: list[list[int]], texts: list[str]) -> float:
    from voxtral_mlx.evaluation import score

    tokenizer = voxtral_mlx.load(TRAINED).tokenizer
    scores = [
        score(ref, tokenizer.decode(t), normalizer="basic")
        for ref, t in zip(texts, model_tokens, strict=True)
    ]
    return sum(s.word_errors for s in scores) / sum(s.words for s in scores)


def attention_ms(rows: int, slots: int, dtype, group: int, repeat: int) -> dict[str, float]:
    """ms of one layer's attention (L = 1) over `rows` rings of `slots` positions."""
    from voxtral_mlx.bench import architecture
    from voxtral_mlx.config import BENCH_SIZES
    from voxtral_mlx.layers import Attention

    args = architecture(BENCH_SIZES["full"]["enc"], BENCH_SIZES["full"]["dec"]).decoder
    attention = Attention(args)
    n_kv, D = args.n_kv_heads, args.head_dim
    q = mx.random.normal((rows, args.n_heads, 1, D)).astype(dtype)
    k, v = (mx.random.normal((rows, n_kv, slots, D)).astype(dtype) for _ in range(2))
    qk, qv = (mx.quantize(a, group, BITS) for a in (k, v))
    mask = mx.ones((rows, 1, 1, slots), mx.bool_)
    mx.eval(q, k, v, qk, qv)

    def plain():
        return attention.heads(q, k, v, mask)

    def quantized():
        return quantized_heads(q, qk, qv, mask, attention.scale, group)

    runs = {"ring": [], "quantized ring": []}
    for r in range(repeat):
        for name, fn in list(zip(runs, (plain, quantized), strict=True))[:: 1 if r % 2 else -1]:
            mx.eval(fn())
            tic = time.perf_counter()
            for _ in range(5):
                mx.eval(fn())
            runs[name].append(1000 * (time.perf_counter() - tic) / 5)
    return {name: statistics.median(v) for name, v in runs.items()}


def quantized_heads(q, qk, qv, mask, scale, group):
    """Attention over a packed 8-bit ring, as mlx-lm's quantized_scaled_dot_product_attention
    computes it: [B, heads, L, D] -> [B, L, heads * D]."""
    B, n_heads, L, D = q.shape
    n_kv = qk[0].shape[1]
    q = (q * scale).reshape(B, n_kv, n_heads // n_kv, L, D)
    qk, qv = ([a[:, :, None] for a in t] for t in (qk, qv))
    scores = mx.quantized_matmul(q, *qk, transpose=True, group_size=group, bits=BITS)
    scores = mx.where(mask[:, :, None], scores, mx.array(-mx.inf, scores.dtype))
    probs = mx.softmax(scores, axis=-1, precise=True)
    out = mx.quantized_matmul(probs, *qv, transpose=False, group_size=group, bits=BITS)
    return out.reshape(B, n_heads, L, D).transpose(0, 2, 1, 3).reshape(B, L, -1)


def ring_bytes(group: int) -> dict[str, float]:
    """GB of the real model's decoder ring at its full window, and of a whole stream."""
    from voxtral_mlx.bench import architecture
    from voxtral_mlx.config import BENCH_SIZES
    from voxtral_mlx.decoder import MAX_PASS
    from voxtral_mlx.model import VoxtralRealtime
    from voxtral_mlx.session import stream_bytes

    real = VoxtralRealtime(architecture(BENCH_SIZES["full"]["enc"], BENCH_SIZES["full"]["dec"]))
    real.set_dtype(mx.bfloat16)  # lazily built: nothing allocated
    dec = real.args.decoder
    slots = dec.sliding_window + MAX_PASS - 1
    per_vector = {
        "bf16": 2 * dec.head_dim,
        "quantized": dec.head_dim * BITS // 8 + 4 * dec.head_dim // group,
    }
    # a packed vector: head_dim bytes, plus a bf16 scale and bias per group (checked below)
    packed = mx.quantize(mx.zeros((1, dec.head_dim), mx.bfloat16), group, BITS)
    assert sum(a.nbytes for a in packed) == per_vector["quantized"]
    vectors = dec.n_layers * 2 * dec.n_kv_heads * slots
    ring = {name: vectors * b / 1e9 for name, b in per_vector.items()}
    stream = stream_bytes(real) / 1e9
    return {
        "decoder ring bf16 (GB)": ring["bf16"],
        "decoder ring quantized (GB)": ring["quantized"],
        "stream bf16 (GB)": stream,
        "stream, quantized ring (GB)": stream - ring["bf16"] + ring["quantized"],
    }


def main() -> None:
    global BITS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--group", type=int, default=64, help="real model's group (mlx-lm)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--bits", type=int, default=8, choices=[2, 4, 8])
    a = parser.parse_args()
    BITS = a.bits
    print(f"{chip_name()}, MLX {mx.__version__} ({backend_name()}); {BITS}-bit ring")
    for name, value in ring_bytes(a.group).items():
        print(f"  {name}: {value:.3f}")
    if not a.skip_speed:
        print("attention of one layer, real shapes (32/8 heads of 128), L = 1, median ms:")
    for dtype in () if a.skip_speed else (mx.float32, mx.bfloat16):
        for rows, slots in ((1, 8192), (8, 8192), (8, 1024)):
            ms = attention_ms(rows, slots, dtype, a.group, a.rounds)
            cells = ", ".join(f"{k} {v:.2f}" for k, v in ms.items())
            print(f"  {dtype}, B = {rows}, C = {slots}: {cells}")
    jfk = voxtral_mlx.load_audio(ROOT / "voxtral_mlx" / "assets" / "jfk.wav")
    with tempfile.TemporaryDirectory() as tmp:
        parity = parity_checkpoint(Path(tmp) / "parity")
        utterances = held_out(Path(tmp) / "held-out")
        sets = {
            "parity checkpoint, jfk.wav x 3 delays": (
                parity,
                [(jfk, d) for d in (80, 480, 2400)],
                32,  # head_dim 32: one group a vector
            ),
            "tiny trained model, 24 held-out utterances": (
                TRAINED,
                [(u.audio, 480) for u in utterances],
                32,
            ),
        }
        print("token agreement, quantized ring against the unquantized ring (and bf16 weights")
        print("and ring against fp32, for scale):")
        for name, (path, clips, group) in sets.items():
            fp32 = None
            for dtype in (mx.float32, mx.bfloat16):
                base = tokens(path, dtype, clips, None)
                eight = tokens(path, dtype, clips, group)
                same, fraction = agreement(eight, base)
                change = logit_change(path, dtype, group)
                print(
                    f"  {name}, {dtype}: {same}/{len(clips)} identical, {fraction:.4f} of "
                    f"tokens (logits change by {change:.1e} of their range)"
                )
                if path == TRAINED:
                    texts = [u.text for u in utterances]
                    print(f"    WER {wer(base, texts):.3f} -> {wer(eight, texts):.3f}")
                if fp32 is None:
                    fp32 = base
                else:
                    same, fraction = agreement(base, fp32)
                    print(f"    bf16 against fp32: {same}/{len(clips)}, {fraction:.4f} of tokens")


if __name__ == "__main__":
    main()
