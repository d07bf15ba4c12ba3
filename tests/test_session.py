"""Tiers (a) and (b): the streaming Session against transcribe() and transformers."""

import mlx.core as mx
import numpy as np
import pytest

import voxtral_mlx
from voxtral_mlx import Session, TextDelta, Transcript, VoxtralError, WordDone
from voxtral_mlx.mel import StreamingMel, log_mel_spectrogram
from voxtral_mlx.offline import encode_audio, pad_audio
from voxtral_mlx.testing import shared_audio


@pytest.fixture(scope="module")
def file_result(model, jfk):
    return voxtral_mlx.transcribe(model, jfk, delay_ms=480)


def stream(model, audio, chunk, delay_ms=480, **kwargs):
    session = Session(model, delay_ms, **kwargs)
    events = []
    for lo in range(0, len(audio), chunk):
        events += session.feed(audio[lo : lo + chunk])
    events += session.finish()
    return session, events


@pytest.mark.parametrize("chunk", [1, 37, 160, 1279, 1280, 1281, 4000, 16000, 10 * 16000])
def test_any_chunking_gives_the_file_and_reference_tokens(
    model, jfk, chunk, file_result, reference_tokens
):
    session, events = stream(model, jfk, chunk)
    final = session.result
    assert isinstance(final, Transcript) and not any(isinstance(e, Transcript) for e in events)
    assert final.tokens == file_result.tokens
    reference = reference_tokens(480)  # transformers' (one position shorter: MODEL.md)
    assert final.tokens[: len(reference)] == reference
    assert final.text == file_result.text


def test_random_chunk_sizes(model, jfk, file_result):
    rng = np.random.default_rng(7)
    session = Session(model, 480)
    lo = 0
    while lo < len(jfk):
        n = int(rng.integers(1, 5000))
        session.feed(jfk[lo : lo + n])
        lo += n
    session.finish()
    assert session.result.tokens == file_result.tokens


def test_streaming_mel_is_the_offline_grid(model, jfk):
    args = model.args.schedule(480)
    offline = log_mel_spectrogram(pad_audio(jfk, args))
    mel = StreamingMel(args)
    rng = np.random.default_rng(0)
    pieces, lo = [], 0
    while lo < len(jfk):
        n = int(rng.integers(1, 3000))
        mel.push(jfk[lo : lo + n])
        lo += n
        pieces.append(mel.pull(mel.available_tokens()))
        assert len(mel._buffer) < 1280 + 400 + 3000  # history is dropped
    per_token = args.samples_per_token
    right = (per_token - len(jfk) % per_token) % per_token + args.n_right_pad_tokens * per_token
    mel.push(np.zeros(right + 200, np.float32))
    pieces.append(mel.pull(mel.available_tokens()))
    streamed = np.concatenate(pieces)
    assert streamed.shape == offline.shape
    np.testing.assert_allclose(streamed, offline, rtol=0, atol=1e-6)


def test_batched_and_streamed_encoder_are_equal(model, jfk):
    padded = pad_audio(jfk, model.args.schedule(480))
    mel = log_mel_spectrogram(padded)
    whole = model.adapter(model.encoder(mx.array(mel)[None]))[0]  # one call, banded mask
    for batch in (1, 3, 50, 94, 375):
        np.testing.assert_allclose(
            np.array(encode_audio(model, padded, batch)), np.array(whole), rtol=0, atol=1e-5
        )


def test_events_are_append_only_and_complete(model, jfk, file_result):
    session, events = stream(model, jfk, 3000)
    deltas = [e for e in events if isinstance(e, TextDelta)]
    words = [e.word for e in events if isinstance(e, WordDone)]
    final = session.result
    assert "".join(d.text for d in deltas) == session.text
    assert session.text.strip() == final.text
    assert words == final.words == file_result.words
    assert all(d.start <= d.end for d in deltas)
    assert [d.start for d in deltas] == sorted(d.start for d in deltas)
    stats = final.stats
    assert stats.decoder_steps == len(final.tokens)
    assert stats.audio_seconds == pytest.approx(len(jfk) / 16000)
    assert stats.tokens_per_second > 0 and stats.real_time_factor > 0
    assert stats.peak_memory_bytes > 0
    # the caches of this session: encoder ring + decoder step buffers, all layers
    assert 0 < stats.state_bytes == session.state_bytes < stats.peak_memory_bytes


@pytest.mark.parametrize(("clip", "delay"), [("jfk", 960), ("librivox-0880", 80)])
def test_deltas_carry_every_text_token(model, clip, delay):
    """Every text id is in some delta, in order: those of text held back too (the first
    bytes of a character, with random weights), in the delta that completes it or in the
    last one. (Both clips lost one id before.)"""
    session, events = stream(
        model, voxtral_mlx.load_audio(shared_audio(f"{clip}.wav")), 4000, delay
    )
    text_ids = [t for t in session.result.tokens if not model.tokenizer.is_special(t)]
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert [t for d in deltas for t in d.token_ids] == text_ids
    assert "".join(d.text for d in deltas) == session.text


def test_last_words_come_out_on_finish(model, jfk, file_result):
    session = Session(model, 2400)
    session.feed(jfk)
    before = len(session.tokens)
    session.finish()
    final = session.result
    # at 2400 ms the last 30 + 1 positions of text need the right pad
    assert len(final.tokens) - before >= 30
    assert final.tokens == voxtral_mlx.transcribe(model, jfk, delay_ms=2400).tokens


def test_reset_starts_a_new_utterance(model, jfk, file_result):
    session = Session(model, 480)
    session.feed(jfk[:20000])
    session.reset()
    session.feed(jfk)
    session.finish()
    assert session.result.tokens == file_result.tokens


@pytest.fixture(scope="module")
def eos_model(official_dir):
    """The tiny model with a huge EOS embedding row: the tied head then emits EOS often."""
    model = voxtral_mlx.load(official_dir)
    w = model.decoder.tok_embeddings.weight
    model.decoder.tok_embeddings.weight = w.at[2].multiply(25.0)
    return model


def test_eos_ends_a_file_but_not_a_live_session(eos_model, jfk):
    args = eos_model.args.schedule(480)
    n_audio = len(pad_audio(jfk, args)) // args.samples_per_token
    offline = voxtral_mlx.transcribe(eos_model, jfk, delay_ms=480)
    assert offline.tokens[-1] == 2 and len(offline.tokens) < n_audio - args.prompt_length + 1
    session, _ = stream(eos_model, jfk, 1280)
    live = session.result.tokens
    assert len(live) == n_audio - args.prompt_length + 1  # ran to the end of the audio
    assert live[: len(offline.tokens)] == offline.tokens
    assert live.count(2) >= 1


def test_eos_after_the_prompt_ends_a_file_there(model, jfk, monkeypatch):
    """EOS output by a pass after the prompt (a step or a draft) ends a file: its transcript
    stops with it (the session used to fail there with a TypeError)."""
    tokens = voxtral_mlx.transcribe(model, jfk, delay_ms=480).tokens
    pad = model.tokenizer.streaming_pad_id
    eos = next(t for t in tokens[1:] if t not in (pad, tokens[0]))  # a token of a later pass
    monkeypatch.setattr(model.tokenizer, "eos_id", eos)
    result = voxtral_mlx.transcribe(model, jfk, delay_ms=480)
    assert result.tokens == tokens[: tokens.index(eos) + 1]


def test_caches_stay_within_their_windows(model, spec):
    rng = np.random.default_rng(3)
    audio = (0.1 * rng.standard_normal(16000 * 12)).astype(np.float32)
    session = Session(model, 480)
    batch, encoders = session.pool.batch, session.pool.encoders
    # the encoder's ring: window - 1 frames of history and the largest call's frames
    ring = spec.enc_window - 1 + 4 * encoders.max_tokens
    for lo in range(0, len(audio), 1280):
        session.feed(audio[lo : lo + 1280])
        assert all(k.shape[2] <= encoders.full == ring for k in encoders.arrays)
        assert batch.capacity <= batch.full == spec.dec_window + batch.max_pass - 1
    assert session.lane.encoder.position > ring  # it wrapped
    assert encoders.capacity == ring
    assert session.lane.row.position > 4 * spec.dec_window
    assert batch.capacity == batch.full  # a ring of window + max_pass - 1 slots


def ring_reference(model, spec, n, seed):
    """Random decoder inputs and their teacher-forced logits in one uncached pass."""
    rng = np.random.default_rng(seed)
    audio = mx.array(rng.standard_normal((n, spec.dec_dim)).astype(np.float32))
    tokens = rng.integers(0, spec.vocab_size, size=n).tolist()
    dec = model.decoder
    x = audio + dec.tok_embeddings(mx.array(tokens))
    return audio, tokens, np.array(dec(x[None], dec.ffn_norm_weights(6))[0])


@pytest.mark.parametrize("chunks", [(10, 1), (30, 1), (30, 5), (3, 13)])
def test_rows_passes_equal_the_uncached_pass(model, spec, chunks):
    """A row's ring (growing GROW slots at a time, then wrapping) gives the logits of the
    uncached pass, one position per pass or several, from a prompt shorter or longer than
    the window, and padded beside a busier row."""
    from voxtral_mlx.decoder import DecoderBatch

    first, per_pass = chunks
    n = first + 4 * spec.dec_window
    audio, tokens, want = ring_reference(model, spec, n, seed=sum(chunks))
    other_audio, other_tokens, other_want = ring_reference(model, spec, n, seed=99)
    batch = DecoderBatch(model.decoder, max_pass=max(first, 16))
    row, other = batch.add(6), batch.add(6)
    got, got_other, p = [], [], 0
    while p < n:
        size = first if p == 0 else min(per_pass, n - p)
        inputs = {row: (audio[p : p + size], tokens[p : p + size])}
        q = len(got_other)
        if p and q < n:  # the other row takes 16 positions a pass: this one is padded
            inputs[other] = (other_audio[q : q + 16], other_tokens[q : q + 16])
        out = np.array(batch.run(inputs, logits=True))
        got.append(out[0, :size])
        if other in inputs:
            got_other.extend(out[1, : min(16, n - q)])
        p += size
    np.testing.assert_allclose(np.concatenate(got), want, rtol=1e-4, atol=1e-4)
    q = len(got_other)
    np.testing.assert_allclose(np.stack(got_other), other_want[:q], rtol=1e-4, atol=1e-4)
    assert batch.capacity == batch.full


def test_rewound_positions_are_written_again(model, spec):
    """Positions taken back (rejected drafts) leave keys no query reads: the logits of what
    is written over them equal the uncached pass, through the ring's wrap."""
    from voxtral_mlx.decoder import DecoderBatch

    n = 6 * spec.dec_window
    audio, tokens, want = ring_reference(model, spec, n, seed=5)
    rng = np.random.default_rng(6)
    batch = DecoderBatch(model.decoder, max_pass=8)
    row = batch.add(6)
    got, p = [], 0
    while p < n:
        size = min(int(rng.integers(1, 9)), n - p)
        junk = rng.integers(0, spec.vocab_size, size=size).tolist()
        batch.run({row: (audio[p : p + size][::-1], junk)})  # a draft to throw away
        batch.rewind(row, size)
        out = np.array(batch.run({row: (audio[p : p + size], tokens[p : p + size])}, logits=True))
        got.append(out[0, :size])
        p += size
    np.testing.assert_allclose(np.concatenate(got), want, rtol=1e-4, atol=1e-4)


def args_prompt(model):
    return model.args.schedule(480).prompt_length


def test_feed_errors(model):
    session = Session(model, 480)
    with pytest.raises(VoxtralError, match="floating point.*int16.*32768"):
        session.feed(np.zeros(100, np.int16))
    with pytest.raises(VoxtralError, match="mono"):
        session.feed(np.zeros((100, 2), np.float32))
    with pytest.raises(VoxtralError, match="1 non-finite"):
        session.feed(np.array([0.0, np.nan, 0.1], np.float32))
    with pytest.raises(VoxtralError, match="2 non-finite"):
        session.feed(np.array([np.inf, -np.inf], np.float64))
    session.finish()
    with pytest.raises(VoxtralError, match="finished"):
        session.feed(np.zeros(100, np.float32))
    with pytest.raises(VoxtralError, match="finished"):
        session.finish()
    with pytest.raises(VoxtralError, match="valid delays"):
        Session(model, 500)
    for rate in (0, -16000, 44100.0, "16000"):
        with pytest.raises(VoxtralError, match="sample rate"):
            Session(model, 480, sample_rate=rate)


def test_one_input_rule_for_feed_and_transcribe(model, jfk, file_result):
    """float64, float16, lists and MLX arrays are all taken, by both front doors alike."""
    clip = jfk[: 16000 * 4]
    want = voxtral_mlx.transcribe(model, clip).tokens
    for same in (clip.astype(np.float64), clip.tolist(), mx.array(clip)):
        assert voxtral_mlx.transcribe(model, same).tokens == want
        session = Session(model)
        session.feed(same)
        session.finish()
        assert session.result.tokens == want
    half = clip.astype(np.float16)
    assert voxtral_mlx.transcribe(model, half).tokens == stream(model, half, 4000)[0].result.tokens
    with pytest.raises(VoxtralError, match="non-finite"):
        voxtral_mlx.transcribe(model, np.full(16000, np.nan))
    with pytest.raises(VoxtralError, match="int16"):
        voxtral_mlx.transcribe(model, (clip * 32767).astype(np.int16))


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_other_sample_rates_are_resampled_in_the_stream(model, jfk, rate, tmp_path):
    """A session at 44.1 kHz hears what a 44.1 kHz file gives once loaded (soxr HQ both),
    however the stream is chunked."""
    import soundfile as sf

    from voxtral_mlx.audio import resample

    audio = resample(jfk[: 16000 * 5], 16000, rate)
    path = tmp_path / f"at{rate}.wav"
    sf.write(path, audio, rate, subtype="FLOAT")
    want = voxtral_mlx.transcribe(model, path).tokens
    assert voxtral_mlx.transcribe(model, audio, sample_rate=rate).tokens == want
    for chunk in (441, 4800, 10**6):
        session, _ = stream(model, audio, chunk, sample_rate=rate)
        assert session.result.tokens == want
        assert session.result.audio_seconds == pytest.approx(5.0, abs=1e-3)


def test_one_dtype_through_the_graph(official_dir, jfk):
    """bf16 weights: mel, time conditioning and caches must not promote anything to fp32."""
    model = voxtral_mlx.load(official_dir, dtype=mx.bfloat16)
    session = Session(model, 480)
    session.feed(jfk[: 16000 * 3])
    batch = session.pool.batch
    assert session.lane.row.ffn_norms.dtype == mx.bfloat16
    encoders = session.pool.encoders
    assert all(k.dtype == mx.bfloat16 for k in encoders.arrays)
    assert all(k.dtype == mx.bfloat16 for k in batch.arrays)
    assert session.lane.encoder.conv1_tail.dtype == mx.bfloat16
    assert session.lane.encoder.conv2_tail.dtype == mx.bfloat16
    x = model.decoder.tok_embeddings(mx.array([[1, 32]]))
    assert model.decoder(x, session.lane.row.ffn_norms).dtype == mx.bfloat16
    session.finish()
    assert len(session.result.tokens) > 0


@pytest.mark.parametrize("shape", [(1, 1, 50), (3, 5, 64), (2, 39, 39)])
def test_grouped_attention_equals_the_fused_kernel(model, shape):
    """The CPU formulation of attention (grouped matrix products) against MLX's fused one."""
    B, L, C = shape
    attention = model.decoder.layers[0].attention
    H, n_kv, D = attention.n_heads, attention.n_kv_heads, attention.head_dim
    q = mx.random.normal((B, H, L, D))
    k, v = mx.random.normal((B, n_kv, C, D)), mx.random.normal((B, n_kv, C, D))
    mask = (mx.random.uniform(shape=(B, 1, L, C)) > 0.3) | (mx.arange(C) == 0)
    grouped = attention.attend(q, k, v, mask, grouped=True)
    fused = attention.attend(q, k, v, mask, grouped=False)
    np.testing.assert_allclose(np.array(grouped), np.array(fused), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_the_pass_rotation_equals_fast_rope(dtype):
    """RoPE by one table of cos and sin a pass (the CPU path) against mx.fast.rope in
    float32, bit for bit, at each row's own positions (the last one far into the window);
    in bf16 it is that result rounded (as the GPU kernels compute it)."""
    from voxtral_mlx.layers import Rotation

    starts = mx.array([0, 37, 8191], dtype=mx.int32)
    x = mx.random.normal((3, 4, 5, 64)).astype(dtype)
    got = Rotation(starts, 5, 64, 1e6).apply(x)
    assert got.dtype == dtype
    for b in range(3):
        rope = dict(traditional=True, base=1e6, scale=1.0, offset=starts[b].item())
        want = mx.fast.rope(x[b : b + 1].astype(mx.float32), 64, **rope).astype(dtype)
        assert mx.array_equal(got[b : b + 1], want).item()


def test_forget_keeps_a_live_stream_bounded_and_its_outputs_the_same(model, jfk):
    """A stream that never ends drops its history (forget) after every chunk: the same
    outputs at the same times as a session that keeps everything, and nothing piles up."""
    audio = jfk[: 16000 * 6]
    kept, forgetting = Session(model), Session(model)
    seen, outputs, most = 0, [], 0
    for lo in range(0, len(audio), 3200):
        kept.feed(audio[lo : lo + 3200])
        forgetting.feed(audio[lo : lo + 3200])
        new = forgetting.outputs(seen)
        seen += len(new)
        outputs += new
        forgetting.forget(seen)
        most = max(most, len(forgetting.tokens))
        assert forgetting.transcribed_seconds == kept.transcribed_seconds
    assert outputs == kept.outputs() and len(outputs) > 50
    assert most <= 3 and forgetting.text == ""  # nothing kept beyond the last chunk's outputs
    assert forgetting.outputs(0) == []  # what was forgotten is gone
