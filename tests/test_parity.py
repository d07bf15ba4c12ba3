"""Tier (c): the MLX port against transformers' VoxtralRealtimeForConditionalGeneration on a
tiny random fp32 checkpoint (encoder window 12 frames, decoder window 24 positions)."""

import mlx.core as mx
import numpy as np
import pytest
import torch
from transformers import VoxtralRealtimeFeatureExtractor

import voxtral_mlx
from voxtral_mlx.decoder import DecoderBatch
from voxtral_mlx.offline import encode_audio, pad_audio

EOS = 2  # Tekken's </s>


def rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def features():
    return VoxtralRealtimeFeatureExtractor()


def reference_inputs(model, audio, delay_ms, features):
    args = model.args.schedule(delay_ms)
    padded = pad_audio(audio, args)
    feats = features(padded, sampling_rate=16000, return_tensors="pt")["input_features"]
    prompt = [1] + [32] * (args.prompt_length - 1)
    return args, padded, feats, prompt


def test_jfk_crosses_both_windows(model, jfk, spec):
    args = model.args.schedule(480)
    n_tokens = len(pad_audio(jfk, args)) // args.samples_per_token
    assert n_tokens * 4 > 3 * spec.enc_window  # encoder frames
    assert n_tokens > 3 * spec.dec_window  # decoder positions


def test_encoder_and_adapter_match(model, hf_model, jfk, features):
    _, padded, feats, _ = reference_inputs(model, jfk, 480, features)
    with torch.no_grad():
        ref_enc = hf_model.model.audio_tower(feats).last_hidden_state[0].numpy()
        ref_adapter = hf_model.model.get_audio_features(feats).pooler_output[0].numpy()
    mel = voxtral_mlx.log_mel_spectrogram(padded)
    ours_enc = model.encoder(mx.array(mel)[None])[0]
    assert ours_enc.shape == ref_enc.shape
    assert rel_err(ours_enc, ref_enc) < 1e-4
    # the batched file path (chunked conv stem + cached encoder) gives the same adapter output
    ours_adapter = encode_audio(model, padded)
    assert ours_adapter.shape == ref_adapter.shape
    assert rel_err(ours_adapter, ref_adapter) < 1e-4


@pytest.mark.parametrize("delay_ms", [80, 480, 2400])
def test_decoder_logits_match(model, hf_model, jfk, features, spec, delay_ms):
    """Teacher-forced logits over the whole audio span: prompt, then the reference's tokens."""
    args, padded, feats, prompt = reference_inputs(model, jfk, delay_ms, features)
    n_audio = feats.shape[-1] // 8
    rng = np.random.default_rng(delay_ms)
    ids = prompt + rng.integers(1000, model.args.decoder.vocab_size, n_audio - len(prompt)).tolist()
    with torch.no_grad():
        ref = (
            hf_model(
                input_ids=torch.tensor([ids]),
                input_features=feats,
                num_delay_tokens=args.n_delay_tokens,
            )
            .logits[0]
            .numpy()
        )
    audio_embeds = encode_audio(model, padded)
    decoder = model.decoder
    embeds = audio_embeds + decoder.tok_embeddings(mx.array(ids))
    scales = decoder.ffn_norm_weights(args.n_delay_tokens)
    uncached = decoder(embeds[None], scales)[0]
    assert rel_err(uncached, ref) < 1e-4
    # the prefill, then one position per pass, or several, through a row's ring (which wraps:
    # the window is 24 positions): the same logits
    L = args.prompt_length
    for per_pass in (1, 7):
        batch = DecoderBatch(decoder, max_pass=L)
        row = batch.add(args.n_delay_tokens)
        audio = audio_embeds
        passes = [batch.run({row: (audio[:L], ids[:L])}, logits=True)[0]]
        for p in range(L, n_audio, per_pass):
            chunk = slice(p, min(p + per_pass, n_audio))
            out = batch.run({row: (audio[chunk], ids[chunk])}, logits=True)[0]
            passes.append(out[: chunk.stop - chunk.start])  # the pass is padded to 2^k
        assert batch.capacity == spec.dec_window + L - 1  # a ring
        assert rel_err(mx.concatenate(passes), ref) < 1e-4


@pytest.mark.parametrize("delay_ms", [80, 480, 2400])
def test_transcribe_tokens_equal_reference_generation(
    model, jfk, features, delay_ms, reference_tokens
):
    args, _, feats, prompt = reference_inputs(model, jfk, delay_ms, features)
    ref = reference_tokens(delay_ms)  # transformers' generate()
    result = voxtral_mlx.transcribe(model, jfk, delay_ms=delay_ms)
    assert len(ref) > 100
    assert len(set(ref)) > 3  # the comparison is not over a constant sequence
    assert result.tokens[: len(ref)] == ref
    # transformers stops one position before the end of the audio; we decode that one too
    n_audio = feats.shape[-1] // 8
    if EOS in ref:  # the reference stopped at EOS: so does transcribe, at the same one
        assert result.tokens == ref and ref.index(EOS) == len(ref) - 1
    else:
        assert len(result.tokens) == n_audio - len(prompt) + 1 and EOS not in result.tokens
