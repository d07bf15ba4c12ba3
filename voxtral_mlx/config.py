"""Model configuration, read from the checkpoint's params.json (or another layout's config).

All derived numbers of the streaming schedule live here as properties, so the rest of
the code never re-derives 1280 or 32 + n_delay by hand. See MODEL.md, "Decode schedule".
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any

from .errors import VoxtralError

# Delays the model was trained for: every multiple of 80 ms up to 1200 ms, and 2400 ms.
VALID_DELAYS_MS: tuple[int, ...] = (*range(80, 1201, 80), 2400)
DEFAULT_DELAY_MS = 480
# Tokens encoded per encoder call when audio is already there (30 s of audio).
ENCODER_BATCH_TOKENS = 375


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
    sampling_rate: int = 16000
    frame_rate: float = 12.5
    num_mel_bins: int = 128
    hop_length: int = 160
    window_size: int = 400
    global_log_mel_max: float = 1.5
    n_left_pad_tokens: int = 32  # tekken.json: streaming_n_left_pad_tokens
    default_delay_ms: int = DEFAULT_DELAY_MS  # tekken.json: transcription_delay_ms

    @property
    def samples_per_token(self) -> int:
        # 16000 / 12.5 = 1280 samples = 80 ms per decoder position
        return int(self.sampling_rate // self.frame_rate)

    @property
    def mel_frames_per_token(self) -> int:
        return self.samples_per_token // self.hop_length


@dataclass(frozen=True)
class ModelArgs:
    encoder: EncoderArgs
    decoder: DecoderArgs
    audio: AudioArgs = field(default_factory=AudioArgs)
    downsample_factor: int = 4
    delay_ms: int = DEFAULT_DELAY_MS

    def __post_init__(self) -> None:
        check_delay(self.delay_ms)
        if self.audio.mel_frames_per_token != 2 * self.downsample_factor:
            raise VoxtralError(
                "inconsistent config: one token must span 2 x downsample_factor mel frames "
                f"(conv stride 2), got {self.audio.mel_frames_per_token} mel frames "
                f"and downsample_factor {self.downsample_factor}"
            )

    # --- the streaming schedule (MODEL.md, "Decode schedule") ---
    @property
    def samples_per_token(self) -> int:
        return self.audio.samples_per_token

    @property
    def n_left_pad_tokens(self) -> int:
        return self.audio.n_left_pad_tokens

    @property
    def n_delay_tokens(self) -> int:
        # mistral-common num_audio_tokens(delay samples); equals delay_ms / 80 for valid delays
        return self.delay_ms * self.audio.sampling_rate // 1000 // self.samples_per_token

    @property
    def prompt_length(self) -> int:
        # BOS + STREAMING_PAD x (left pad + delay)
        return 1 + self.n_left_pad_tokens + self.n_delay_tokens

    @property
    def n_right_pad_tokens(self) -> int:
        # the delay, the BOS shift, and 10 tokens (0.8 s) for the longest word (mistral-common)
        return self.n_delay_tokens + 1 + 10

    def with_delay(self, delay_ms: int) -> ModelArgs:
        return dataclasses.replace(self, delay_ms=check_delay(delay_ms))

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
            delay_ms=_delay_from(audio_section),
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
        audio = {"num_mel_bins": a.get("num_mel_bins", 128)}
        return cls(
            encoder=encoder,
            decoder=decoder,
            audio=_audio_args(audio, audio_section),
            downsample_factor=config.get("downsample_factor", 4),
            delay_ms=_delay_from(audio_section, config.get("default_num_delay_tokens")),
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
            delay_ms=_delay_from(section),
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
        if "transcription_delay_ms" in section:
            values["default_delay_ms"] = int(section["transcription_delay_ms"])
    return _from_dict(AudioArgs, values)


def _delay_from(section: dict[str, Any] | None, n_delay_tokens: int | None = None) -> int:
    if section and section.get("transcription_delay_ms") is not None:
        return int(section["transcription_delay_ms"])
    if n_delay_tokens is not None:
        return int(n_delay_tokens) * 80
    return DEFAULT_DELAY_MS


def check_delay(delay_ms: int | float) -> int:
    """Return `delay_ms` as an int if the model supports it, else raise a VoxtralError."""
    if isinstance(delay_ms, bool) or float(delay_ms) not in VALID_DELAYS_MS:
        valid = ", ".join(str(d) for d in VALID_DELAYS_MS)
        raise VoxtralError(f"invalid delay {delay_ms!r} ms: valid delays are {valid} ms")
    return int(delay_ms)
