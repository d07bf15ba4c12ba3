"""File transcription: pad, encode, then greedy decoding on the offline schedule."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from .audio import check_samples, load_audio
from .config import DEFAULT_DELAY_MS, ModelArgs
from .mel import log_mel_spectrogram
from .model import VoxtralRealtime
from .words import Word, words_from_tokens

# Encoder frames per batched encoder call (30 s of audio); a multiple of the 4 frames of a token.
ENCODER_CHUNK_FRAMES = 1500


@dataclass(frozen=True)
class TranscriptionResult:
    text: str
    tokens: list[int]  # every generated id in order, pads (and a final EOS) included
    words: list[Word]
    delay_ms: int
    audio_seconds: float
    decode_seconds: float


def pad_audio(samples: np.ndarray, args: ModelArgs) -> np.ndarray:
    """Left pad 32 tokens of silence; right pad to a whole token, plus (n_delay + 1) + 10
    tokens so the words still behind the delay come out (mistral-common OFFLINE mode)."""
    per_token = args.samples_per_token
    align = (per_token - len(samples) % per_token) % per_token
    left = args.n_left_pad_tokens * per_token
    right = align + args.n_right_pad_tokens * per_token
    return np.pad(samples, (left, right))


def encode_audio(model: VoxtralRealtime, samples: np.ndarray) -> mx.array:
    """Padded samples -> adapter outputs [n_tokens, dim], the encoder run in large chunks."""
    mel = log_mel_spectrogram(samples, model.args.audio)  # [T_mel, n_mels], T_mel % 8 == 0
    cache = model.encoder.make_cache()
    step = 2 * ENCODER_CHUNK_FRAMES  # mel frames per chunk
    outputs = []
    for start in range(0, mel.shape[0], step):
        # 4 mel frames of overlap give the conv stem its left context (MODEL.md "Conv stem")
        lo = max(start - 4, 0)
        frames = model.encoder.conv_stem(mx.array(mel[lo : start + step], dtype=model.dtype)[None])
        frames = frames[:, (start - lo) // 2 :]
        frames = model.encoder.transformer(frames, cache)
        outputs.append(model.adapter(frames)[0])
        mx.eval(outputs[-1])
    return mx.concatenate(outputs)


def transcribe(
    model: VoxtralRealtime,
    audio: str | Path | np.ndarray,
    delay_ms: int = DEFAULT_DELAY_MS,
) -> TranscriptionResult:
    """Transcribe a whole file or 16 kHz float32 array, greedily."""
    args = model.args.with_delay(delay_ms)
    tokenizer = model.tokenizer
    samples = load_audio(audio) if isinstance(audio, (str, Path)) else check_samples(audio)
    tic = time.perf_counter()
    audio_embeds = encode_audio(model, pad_audio(samples, args))
    n_audio, prompt_len = audio_embeds.shape[0], args.prompt_length

    decoder = model.decoder
    scales = decoder.ffn_scales(args.n_delay_tokens)
    cache = decoder.make_cache()
    prompt = mx.array([tokenizer.bos_id] + [tokenizer.streaming_pad_id] * (prompt_len - 1))
    embeds = audio_embeds[:prompt_len] + decoder.tok_embeddings(prompt)
    token = mx.argmax(decoder(embeds[None], scales, cache)[0, -1])
    tokens = [token.item()]
    # one step per remaining audio token; never past the audio, stop at EOS
    for position in range(prompt_len, n_audio):
        if tokens[-1] == tokenizer.eos_id:
            break
        x = audio_embeds[position] + decoder.tok_embeddings(token)
        token = mx.argmax(decoder(x[None, None], scales, cache)[0, -1])
        tokens.append(token.item())
    elapsed = time.perf_counter() - tic

    duration = len(samples) / args.audio.sampling_rate
    words = words_from_tokens(
        tokens, prompt_len - 1, tokenizer, args.n_left_pad_tokens, args.n_delay_tokens, duration
    )
    return TranscriptionResult(
        text=tokenizer.decode(tokens).strip(),
        tokens=tokens,
        words=words,
        delay_ms=args.delay_ms,
        audio_seconds=duration,
        decode_seconds=elapsed,
    )
