"""First-token latency alone, as `voxtral bench` measures it, for models too large to bench
whole on a CPU (the full size: `bench` runs every stage and takes most of an hour here).

    python benchmarks/first_token.py MODEL_DIR [MODEL_DIR ...] [--audio FILE]

For each model: load, trace the prompt's pass once (bench has traced it before it measures),
then feed the audio in 80 ms chunks to a Session as fast as they are processed; the feed
call that yields the first token is the first-token latency (the delay comes on top). Also
prints the load time, that call's parts are not separated, and MLX's peak memory.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import mlx.core as mx

import voxtral_mlx
from voxtral_mlx.bench import BUNDLED_SPEECH
from voxtral_mlx.decoder import DecoderBatch
from voxtral_mlx.offline import encode_audio, pad_audio


def first_token(model_dir: Path, audio_path: Path) -> dict:
    tic = time.perf_counter()
    model = voxtral_mlx.load(model_dir)
    load_s = time.perf_counter() - tic
    audio = voxtral_mlx.load_audio(audio_path)
    schedule = model.args.schedule(None)
    L = schedule.prompt_length
    embeds = encode_audio(model, pad_audio(audio[: schedule.samples_per_token * (L + 1)], schedule))
    batch = DecoderBatch(model.decoder)
    row = batch.add(schedule.n_delay_tokens)
    batch.prefill(row, embeds[:L], model.tokenizer.prompt(L)).item()  # the trace, as bench's
    session = voxtral_mlx.Session(model, schedule.delay_ms)
    chunk, first, fed = schedule.samples_per_token, None, 0
    for lo in range(0, len(audio), chunk):
        tic = time.perf_counter()
        session.feed(audio[lo : lo + chunk])
        elapsed = time.perf_counter() - tic
        fed += 1
        if session.tokens:
            first = elapsed
            break
    return {
        "model": str(model_dir),
        "load_s": round(load_s, 1),
        "chunks_fed": fed,
        "first_token_s": None if first is None else round(first, 2),
        "delay_ms": schedule.delay_ms,
        "mlx_peak_gb": round(mx.get_peak_memory() / 1e9, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--audio", type=Path, default=BUNDLED_SPEECH)
    args = parser.parse_args()
    for model_dir in args.models:
        print(first_token(model_dir, args.audio), flush=True)


if __name__ == "__main__":
    main()
