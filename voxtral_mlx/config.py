"""Model configuration, read from the checkpoint's params.json (or another layout's config),
and the streaming schedule that a delay derives from it.

`ModelArgs` is the architecture and the checkpoint's audio settings; `Schedule` holds every
number that depends on the delay (prompt length, paddings, the time of a decoder position),
so the rest of the code never re-derives 1280, 0.08 or 32 + n_delay. See MODEL.md,
"Decode schedule". This module imports neither MLX nor numpy.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import VoxtralError

DEFAULT_MODEL = "mistralai/Voxtral-Mini-4B-Realtime-2602"
SAMPLE_RATE = 16000  # Hz: the rate the model hears; other rates are resampled to it
# Delays the model was trained for: every multiple of 80 ms up to 1200 ms, and 2400 ms.
VALID_DELAYS_MS: tuple[int, ...] = (*range(80, 1201, 80), 2400)
# The delay of a checkpoint whose tekken.json names none (the official one says 480).
DEFAULT_DELAY_MS = 480
# Tokens encoded per encoder call when audio is already there (7.5 s of audio, 376 frames):
# each call's queries attend over the 750-frame window plus the call's own frames, so
# shorter calls compute fewer scores (benchmarks/RESULTS.md "Encoder calls").
ENCODER_BATCH_TOKENS = 94
MAX_DRAFT = 16  # positions drafted as [STREAMING_PAD] and verified in one pass, at most
# MLX affine quantization as `voxtral convert -q` writes it.
QUANT_BITS = (4, 6, 8)
QUANT_GROUP_SIZES = (32, 64, 128)
# `voxtral bench --random-weights --size`: "full" is the real architecture; "small" keeps its
# structure, windows and vocabulary with narrow, shallow stacks, so any machine runs it.
# enc = (dim, layers, heads, hidden), dec = (dim, layers, heads, kv_heads, hidden)
BENCH_SIZES = {
    "full": dict(enc=(1280, 32, 32, 5120), dec=(3072, 26, 32, 8, 9216)),
    "small": dict(enc=(256, 2, 4, 1024), dec=(256, 2, 4, 1, 768)),
}


def _from_dict(cls: type, values: dict[str, Any]):
    """Build a dataclass from a dict, ignoring keys it does not know (as mlx-lm does)."""
    names = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in values.items() if k in names})


@dataclass(frozen=True)
class TransformerArgs:
    """Fields shared by the encoder and decoder stacks (names as in params.json)."""

    dim: int
    n_layers: int
    head_dim: int
    hidden_dim: int
    n_heads: int
    n_kv_heads: int
    rope_theta: float
    norm_eps: float
    sliding_window: int
    use_biases: bool


@dataclass(frozen=True)
class EncoderArgs(TransformerArgs):
    use_biases: bool = True


@dataclass(frozen=True)
class DecoderArgs(TransformerArgs):
    vocab_size: int = 131072
    use_biases: bool = False
    ada_cond_dim: int = 32  # width of the AdaRMSNorm bottleneck (ada_rms_norm_t_cond_dim)


@dataclass(frozen=True)
class AudioArgs:
    """The checkpoint's audio front end and streaming settings (params.json, tekken.json)."""

    sampling_rate: int = SAMPLE_RATE
    frame_rate: float = 12.5
    num_mel_bins: int = 128
    hop_length: int = 160
    window_size: int = 400
    global_log_mel_max: float = 1.5
    n_left_pad_tokens: int = 32  # tekken.json: streaming_n_left_pad_tokens
    default_delay_ms: int = DEFAULT_DELAY_MS  # tekken.json: transcription_delay_ms

    def __post_init__(self) -> None:
        try:
            check_delay(self.default_delay_ms)
        except VoxtralError as e:
            raise VoxtralError(f"the checkpoint's default delay is not supported: {e}") from None

    @property
    def samples_per_token(self) -> int:
        # 16000 / 12.5 = 1280 samples = 80 ms per decoder position
        return int(self.sampling_rate // self.frame_rate)

    @property
    def seconds_per_token(self) -> float:
        return self.samples_per_token / self.sampling_rate  # 0.08 s

    @property
    def mel_frames_per_token(self) -> int:
        return self.samples_per_token // self.hop_length


@dataclass(frozen=True)
class ModelArgs:
    """The architecture, and the audio settings it was trained with."""

    encoder: EncoderArgs
    decoder: DecoderArgs
    audio: AudioArgs = field(default_factory=AudioArgs)
    downsample_factor: int = 4

    def __post_init__(self) -> None:
        if self.audio.mel_frames_per_token != 2 * self.downsample_factor:
            raise VoxtralError(
                "inconsistent config: one token must span 2 x downsample_factor mel frames "
                f"(conv stride 2), got {self.audio.mel_frames_per_token} mel frames "
                f"and downsample_factor {self.downsample_factor}"
            )

    def schedule(self, delay_ms: int | None = None) -> Schedule:
        """The streaming schedule at `delay_ms` (None: the checkpoint's own delay)."""
        return Schedule(self.audio, self.audio.default_delay_ms if delay_ms is None else delay_ms)

    # --- constructors for the checkpoint layouts ---
    @classmethod
    def from_params(cls, params: dict[str, Any], audio_section: dict[str, Any] | None = None):
        """From the official params.json (and the `audio` section of tekken.json)."""
        whisper = params["multimodal"]["whisper_model_args"]
        enc = dict(whisper["encoder_args"])
        audio_args = dict(enc.get("audio_encoding_args", {}))
        decoder = _from_dict(DecoderArgs, params)
        if "ada_rms_norm_t_cond_dim" in params:
            decoder = dataclasses.replace(decoder, ada_cond_dim=params["ada_rms_norm_t_cond_dim"])
        return cls(
            encoder=_from_dict(EncoderArgs, enc),
            decoder=decoder,
            audio=_audio_args(audio_args, audio_section),
            downsample_factor=whisper.get("downsample_args", {}).get("downsample_factor", 4),
        )

    @classmethod
    def from_hf_config(cls, config: dict[str, Any], audio_section: dict[str, Any] | None = None):
        """From a transformers config.json (VoxtralRealtimeConfig)."""
        a, t = config["audio_config"], config["text_config"]

        def theta(c: dict[str, Any]) -> float:
            rope = c.get("rope_parameters") or {}
            return float(rope.get("rope_theta", c.get("rope_theta", 1e6)))

        encoder = EncoderArgs(
            dim=a["hidden_size"],
            n_layers=a["num_hidden_layers"],
            head_dim=a.get("head_dim") or a["hidden_size"] // a["num_attention_heads"],
            hidden_dim=a["intermediate_size"],
            n_heads=a["num_attention_heads"],
            n_kv_heads=a.get("num_key_value_heads") or a["num_attention_heads"],
            rope_theta=theta(a),
            norm_eps=a.get("rms_norm_eps", 1e-5),
            sliding_window=a.get("sliding_window", 750),
        )
        decoder = DecoderArgs(
            dim=t["hidden_size"],
            n_layers=t["num_hidden_layers"],
            head_dim=t.get("head_dim") or t["hidden_size"] // t["num_attention_heads"],
            hidden_dim=t["intermediate_size"],
            n_heads=t["num_attention_heads"],
            n_kv_heads=t["num_key_value_heads"],
            rope_theta=theta(t),
            norm_eps=t.get("rms_norm_eps", 1e-5),
            sliding_window=t.get("sliding_window", 8192),
            vocab_size=t["vocab_size"],
        )
        audio = _audio_args({"num_mel_bins": a.get("num_mel_bins", 128)}, audio_section)
        n_delay = config.get("default_num_delay_tokens")
        if n_delay is not None and not (audio_section or {}).get("transcription_delay_ms"):
            delay_ms = round(n_delay * audio.samples_per_token * 1000 / audio.sampling_rate)
            audio = dataclasses.replace(audio, default_delay_ms=delay_ms)
        return cls(
            encoder=encoder,
            decoder=decoder,
            audio=audio,
            downsample_factor=config.get("downsample_factor", 4),
        )

    @classmethod
    def from_mlx_audio_config(
        cls, config: dict[str, Any], audio_section: dict[str, Any] | None = None
    ):
        """From an mlx-audio config.json (model_type voxtral_realtime, encoder_args/decoder)."""
        enc = dict(config["encoder_args"])
        dec = dict(config["decoder"])
        decoder = _from_dict(DecoderArgs, dec)
        if "ada_rms_norm_t_cond_dim" in dec:
            decoder = dataclasses.replace(decoder, ada_cond_dim=dec["ada_rms_norm_t_cond_dim"])
        section = dict(audio_section or {})
        if "transcription_delay_ms" in config:
            section.setdefault("transcription_delay_ms", config["transcription_delay_ms"])
        return cls(
            encoder=_from_dict(EncoderArgs, enc),
            decoder=decoder,
            audio=_audio_args(dict(enc.get("audio_encoding_args", {})), section),
            downsample_factor=config.get("downsample_factor", 4),
        )

    def to_params(self) -> dict[str, Any]:
        """The official params.json form of this config (what `from_params` reads)."""
        enc = {k: v for k, v in dataclasses.asdict(self.encoder).items()}
        audio = dataclasses.asdict(self.audio)
        audio_encoding_args = {
            k: audio[k]
            for k in (
                "sampling_rate",
                "frame_rate",
                "num_mel_bins",
                "hop_length",
                "window_size",
                "global_log_mel_max",
            )
        }
        enc["audio_encoding_args"] = {**audio_encoding_args, "transcription_format": "streaming"}
        enc["causal"] = True
        dec = dataclasses.asdict(self.decoder)
        cond_dim = dec.pop("ada_cond_dim")
        return {
            **dec,
            "causal": True,
            "tied_embeddings": True,
            "ada_rms_norm_t_cond": True,
            "ada_rms_norm_t_cond_dim": cond_dim,
            "multimodal": {
                "whisper_model_args": {
                    "encoder_args": enc,
                    "downsample_args": {"downsample_factor": self.downsample_factor},
                }
            },
        }


def _audio_args(audio_encoding_args: dict[str, Any], section: dict[str, Any] | None) -> AudioArgs:
    values = dict(audio_encoding_args)
    if section:
        values.update({k: v for k, v in section.items() if k in ("sampling_rate", "frame_rate")})
        values.update(section.get("audio_encoding_config", {}))
        if "streaming_n_left_pad_tokens" in section:
            values["n_left_pad_tokens"] = section["streaming_n_left_pad_tokens"]
        if section.get("transcription_delay_ms") is not None:
            values["default_delay_ms"] = int(section["transcription_delay_ms"])
    return _from_dict(AudioArgs, values)


def check_delay(delay_ms: Any) -> int:
    """Return `delay_ms` as an int if the model supports it, else raise a VoxtralError."""
    number = isinstance(delay_ms, (int, float)) and not isinstance(delay_ms, bool)
    if not number or not -1e6 < delay_ms < 1e6 or float(delay_ms) not in VALID_DELAYS_MS:
        raise _invalid_delay(delay_ms)
    return int(delay_ms)


def parse_delay(text: str | int | float) -> int:
    """A delay written `480`, `480ms` or `0.48s`, in milliseconds; checked like check_delay."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*", str(text))
    ms = float(match.group(1)) * (1000 if match.group(2) == "s" else 1) if match else None
    if ms is None or round(ms, 6) not in VALID_DELAYS_MS:
        raise _invalid_delay(text)
    return int(round(ms))


def _invalid_delay(value: Any) -> VoxtralError:
    valid = ", ".join(str(d) for d in VALID_DELAYS_MS)
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
    return VoxtralError(f"invalid delay {shown}: valid delays are {valid} ms")


@dataclass(frozen=True)
class Schedule:
    """Every number of the streaming schedule at one delay (MODEL.md "Decode schedule").

    The stream the model hears is `n_left_pad_tokens` tokens of silence, the audio, then on
    `finish` the audio aligned to whole tokens and `n_right_pad_tokens` more of silence.
    Decoder position p holds the token for audio slot p; it speaks about `step_time(p)`.
    """

    audio: AudioArgs
    delay_ms: int

    def __post_init__(self) -> None:
        check_delay(self.delay_ms)

    @property
    def sample_rate(self) -> int:
        return self.audio.sampling_rate

    @property
    def samples_per_token(self) -> int:
        return self.audio.samples_per_token

    @property
    def seconds_per_token(self) -> float:
        return self.audio.seconds_per_token

    @property
    def n_left_pad_tokens(self) -> int:
        return self.audio.n_left_pad_tokens

    @property
    def n_delay_tokens(self) -> int:
        # mistral-common num_audio_tokens(delay samples); delay_ms / 80 for valid delays
        return self.delay_ms * self.sample_rate // 1000 // self.samples_per_token

    @property
    def prompt_length(self) -> int:
        # BOS + STREAMING_PAD x (left pad + delay)
        return 1 + self.n_left_pad_tokens + self.n_delay_tokens

    @property
    def n_right_pad_tokens(self) -> int:
        # the delay, the BOS shift, and 10 tokens (0.8 s) for the longest word (mistral-common)
        return self.n_delay_tokens + 1 + 10

    @property
    def left_pad_samples(self) -> int:
        return self.n_left_pad_tokens * self.samples_per_token

    def right_pad_samples(self, n_samples: int) -> int:
        """Silence after `n_samples` of audio: up to a whole token, then the right pad."""
        align = -n_samples % self.samples_per_token
        return align + self.n_right_pad_tokens * self.samples_per_token

    def end_pad_samples(self, n_samples: int) -> int:
        """Silence a stream gets after n_samples of audio so that its last words come out:
        `right_pad_samples`, plus half a mel window (the streaming mel's last frames then see
        silence where the offline mel reflects the padded signal). A turn of a live stream
        that goes on after it needs no alignment: `end_pad_samples(0)`."""
        return self.right_pad_samples(n_samples) + self.audio.window_size // 2

    def step_time(self, position: int) -> float:
        """The audio time (s) that the token output at decoder position p speaks about."""
        return (position - self.n_left_pad_tokens - self.n_delay_tokens) * self.seconds_per_token

    def decoded_seconds(self, next_position: int) -> float:
        """Audio (s) whose slots are decoded once positions before `next_position` are."""
        return max(next_position - self.n_left_pad_tokens, 0) * self.seconds_per_token
