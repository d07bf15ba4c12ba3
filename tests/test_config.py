"""Config, derived schedule numbers, and the full-size architecture (built lazily)."""

import json
import re
from pathlib import Path

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

from voxtral_mlx import VALID_DELAYS_MS, ModelArgs, VoxtralError, VoxtralRealtime
from voxtral_mlx.config import check_delay, parse_delay

# params.json of mistralai/Voxtral-Mini-4B-Realtime-2602 as published (MODEL_SPEC 1.2)
FULL_PARAMS = json.loads(
    (Path(__file__).parent / "assets" / "voxtral-mini-4b-realtime-params.json").read_text()
)


def official_tensors() -> dict[str, tuple[int, ...]]:
    """MODEL_SPEC 1.5: every tensor of consolidated.safetensors with its shape."""
    E = "mm_streams_embeddings.embedding_module."
    W = E + "whisper_encoder."
    t = {
        E + "tok_embeddings.weight": (131072, 3072),
        W + "conv_layers.0.conv.weight": (1280, 128, 3),
        W + "conv_layers.0.conv.bias": (1280,),
        W + "conv_layers.1.conv.weight": (1280, 1280, 3),
        W + "conv_layers.1.conv.bias": (1280,),
        W + "transformer.norm.weight": (1280,),
        E + "audio_language_projection.0.weight": (3072, 5120),
        E + "audio_language_projection.2.weight": (3072, 3072),
        "norm.weight": (3072,),
    }
    for i in range(32):
        p = f"{W}transformer.layers.{i}."
        t |= {
            p + "attention.wq.weight": (2048, 1280),
            p + "attention.wq.bias": (2048,),
            p + "attention.wk.weight": (2048, 1280),
            p + "attention.wv.weight": (2048, 1280),
            p + "attention.wv.bias": (2048,),
            p + "attention.wo.weight": (1280, 2048),
            p + "attention.wo.bias": (1280,),
            p + "attention_norm.weight": (1280,),
            p + "feed_forward.w1.weight": (5120, 1280),
            p + "feed_forward.w2.weight": (1280, 5120),
            p + "feed_forward.w2.bias": (1280,),
            p + "feed_forward.w3.weight": (5120, 1280),
            p + "ffn_norm.weight": (1280,),
        }
    for i in range(26):
        p = f"layers.{i}."
        t |= {
            p + "attention_norm.weight": (3072,),
            p + "attention.wq.weight": (4096, 3072),
            p + "attention.wk.weight": (1024, 3072),
            p + "attention.wv.weight": (1024, 3072),
            p + "attention.wo.weight": (3072, 4096),
            p + "ffn_norm.weight": (3072,),
            p + "feed_forward.w1.weight": (9216, 3072),
            p + "feed_forward.w2.weight": (3072, 9216),
            p + "feed_forward.w3.weight": (9216, 3072),
            p + "ada_rms_norm_t_cond.0.weight": (32, 3072),
            p + "ada_rms_norm_t_cond.2.weight": (3072, 32),
        }
    return t


def test_full_size_model_has_the_711_official_tensors():
    """Built lazily: MLX allocates nothing until evaluated, so this costs no 17 GB."""
    model = VoxtralRealtime(ModelArgs.from_params(FULL_PARAMS))
    ours = {k: tuple(v.shape) for k, v in tree_flatten(model.parameters())}
    official = official_tensors()
    assert len(official) == 711 == len(ours)
    fake = {k: mx.zeros(shape) for k, shape in official.items()}  # lazy, never evaluated
    mapped = {k: tuple(v.shape) for k, v in model.sanitize(fake).items()}
    assert mapped == ours
    n_params = sum(int(mx.prod(mx.array(s)).item()) if s else 1 for s in ours.values())
    assert round(n_params / 1e9, 2) == 4.43


def test_derived_schedule_numbers():
    args = ModelArgs.from_params(FULL_PARAMS)
    assert args.audio.samples_per_token == 1280
    assert args.audio.mel_frames_per_token == 8
    schedule = args.schedule()  # the checkpoint's delay: 480 when tekken.json names none
    assert (schedule.delay_ms, schedule.n_delay_tokens, schedule.prompt_length) == (480, 6, 39)
    assert schedule.n_right_pad_tokens == 17 and schedule.seconds_per_token == 0.08
    assert schedule.left_pad_samples == 32 * 1280
    assert schedule.right_pad_samples(16000) == 640 + 17 * 1280  # 16000 = 12.5 tokens
    assert schedule.right_pad_samples(1280) == 17 * 1280
    assert schedule.end_pad_samples(16000) == 640 + 17 * 1280 + 200  # + half a mel window
    assert schedule.end_pad_samples(0) == 17 * 1280 + 200
    assert schedule.step_time(38) == 0.0 and schedule.step_time(39) == pytest.approx(0.08)
    assert schedule.decoded_seconds(32) == 0.0 and schedule.decoded_seconds(45) == pytest.approx(
        1.04
    )
    long = args.schedule(2400)
    assert (long.n_delay_tokens, long.prompt_length, long.n_right_pad_tokens) == (30, 63, 41)
    short = args.schedule(80)
    assert (short.n_delay_tokens, short.prompt_length, short.n_right_pad_tokens) == (1, 34, 12)
    assert args.encoder.sliding_window == 750 and args.decoder.sliding_window == 8192
    assert (args.decoder.n_heads, args.decoder.n_kv_heads) == (32, 8)
    assert not hasattr(args, "delay_ms")  # the architecture carries no per-session delay


def test_tekken_audio_section_sets_the_default_delay_and_left_pad():
    section = {
        "transcription_delay_ms": 960,
        "streaming_n_left_pad_tokens": 32,
        "sampling_rate": 16000,
        "frame_rate": 12.5,
        "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400},
    }
    args = ModelArgs.from_params(FULL_PARAMS, section)
    schedule = args.schedule()
    assert schedule.delay_ms == 960 and schedule.n_delay_tokens == 12
    assert schedule.prompt_length == 45 and args.schedule(480).prompt_length == 39
    with pytest.raises(VoxtralError, match="default delay is not supported"):
        ModelArgs.from_params(FULL_PARAMS, {**section, "transcription_delay_ms": 500})


def test_valid_delays():
    assert VALID_DELAYS_MS == (*range(80, 1201, 80), 2400)
    args = ModelArgs.from_params(FULL_PARAMS)
    for bad in (0, 40, 100, 1280, 2320, 4800, -80, 480.5, "480", None, True):
        with pytest.raises(VoxtralError) as err:
            args.schedule(bad) if bad is not None else check_delay(bad)
        assert "80, 160, 240" in str(err.value) and "1200, 2400" in str(err.value)
    assert re.search("invalid delay", str(err.value))


@pytest.mark.parametrize(
    "text,ms",
    [("480", 480), ("480ms", 480), ("0.48s", 480), ("2.4s", 2400), ("80ms", 80), ("1200", 1200)],
)
def test_parse_delay(text, ms):
    assert parse_delay(text) == ms


@pytest.mark.parametrize("text", ["500", "0", "abc", "1.5s", "2400s", "-80", ""])
def test_parse_delay_rejects(text):
    with pytest.raises(VoxtralError, match=f"invalid delay {text!r}.*80, 160, 240.*1200, 2400 ms"):
        parse_delay(text)
