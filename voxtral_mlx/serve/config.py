"""What a server is configured with (`ServerConfig`, which checks its own limits) and the
defaults it resolves from the machine. Light: it imports neither MLX nor the web framework,
so a command line is checked before either loads."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..biasing import DEFAULT_STRENGTH, check_weight, parse_context_bias
from ..config import check_delay
from ..errors import VoxtralError, VoxtralWarning

POSITIVE = "must be a positive number"
# Mistral's cloud name of the checkpoint this project ports, which code written for the cloud
# passes (Pipecat's default, the SDK's examples): another name of the served model when it is
# that checkpoint (its repo id or folder name holds CHECKPOINT_STEM)
MISTRAL_NAMES = ("voxtral-mini-transcribe-realtime-2602",)
CHECKPOINT_STEM = "voxtral-mini-4b-realtime"
AT_LEAST_ONE = "at least 1"


class ConfigError(VoxtralError):
    """A ServerConfig value out of its range: `field`, the value given and the `rule`."""

    def __init__(self, field: str, value, rule: str):
        super().__init__(f"{field} {value!r}: {rule}")
        self.field, self.value, self.rule = field, value, rule


@dataclass
class ServerConfig:
    model_name: str  # what was loaded: a hub repo id or a local folder
    delay_ms: int | None = None  # None: the model's own
    api_key: str | None = None
    max_sessions: int | None = None  # None: session.streams_that_fit(model)
    max_message_bytes: int = 4 * 2**20
    max_backlog_seconds: float = 30.0
    max_upload_bytes: int = 200 * 2**20
    cors_origins: tuple[str, ...] = ()
    served_model_name: str | None = None  # None: the repo id, or the local folder's name
    idle_timeout: float = 60.0  # seconds a realtime connection may idle (Connection.idle_seconds)
    read_timeout: float = 20.0  # seconds for a request's headers, and between upload reads
    max_connections: int | None = None  # open connections, at most; None: from the file limit
    # the custom vocabulary of every request and session that sends none of its own:
    # (phrase, weight) pairs, or anything biasing.parse_context_bias reads
    context_bias: tuple[tuple[str, float], ...] = ()
    context_bias_strength: float = DEFAULT_STRENGTH  # of the phrases clients send unweighted

    def __post_init__(self) -> None:
        """ConfigError (a VoxtralError) for a limit out of its range."""
        if self.delay_ms is not None:
            try:
                check_delay(self.delay_ms)
            except VoxtralError as e:
                raise ConfigError("delay_ms", self.delay_ms, str(e)) from None
        for name in (
            "max_message_bytes",
            "max_backlog_seconds",
            "max_upload_bytes",
            "idle_timeout",
            "read_timeout",
        ):
            value = getattr(self, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not 0 < value < math.inf:
                raise ConfigError(name, value, POSITIVE)
        for name in ("max_sessions", "max_connections"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(name, value, AT_LEAST_ONE)
        if self.served_model_name is not None and not self.served_model_name.strip():
            raise ConfigError("served_model_name", self.served_model_name, "give a name")
        try:
            check_weight(self.context_bias_strength)
        except VoxtralError as e:
            raise ConfigError("context_bias_strength", self.context_bias_strength, str(e)) from None
        try:
            phrases = parse_context_bias(list(self.context_bias), self.context_bias_strength)
        except VoxtralError as e:
            raise ConfigError("context_bias", self.context_bias, str(e)) from None
        self.context_bias = tuple(phrases)

    @property
    def model_id(self) -> str:
        """The name /v1/models announces (never a path on this machine)."""
        if self.served_model_name:
            return self.served_model_name
        return Path(self.model_name).name if _is_local(self.model_name) else self.model_name

    @property
    def model_names(self) -> tuple[str, ...]:
        """The names a client may ask for: the served name, then its aliases."""
        return (self.model_id, *self.aliases)

    @property
    def aliases(self) -> tuple[str, ...]:
        """The served model's other names: the repo id it stands for, and Mistral's cloud name
        when it is Voxtral Mini 4B Realtime (MISTRAL_NAMES)."""
        names = [] if _is_local(self.model_name) else [self.model_name]
        if CHECKPOINT_STEM in Path(self.model_name).name.lower():
            names += MISTRAL_NAMES
        return tuple(n for n in dict.fromkeys(names) if n != self.model_id)


def _is_local(name: str) -> bool:
    return Path(name).expanduser().exists() or name.startswith(("/", ".", "~"))


OPEN_FILES = 4096  # what a server of many connections asks for (as mlx-lm does)


def raise_open_file_limit() -> None:
    """Raise this process's soft open-file limit to OPEN_FILES, or as far as the hard limit
    allows (a warning then says so): every connection holds a file."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = OPEN_FILES if hard == resource.RLIM_INFINITY else min(OPEN_FILES, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < OPEN_FILES:
        warnings.warn(
            f"the open-file limit stays at {max(soft, want)} (hard limit {hard}; a server asks "
            f"for {OPEN_FILES}): with many connections it can run out of files",
            VoxtralWarning,
            stacklevel=2,
        )


def default_max_connections() -> int:
    """Open connections the process's file limit leaves room for (some files stay for the
    model, the libraries and the sockets being closed), 16 to 1000."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = 4096 if soft == resource.RLIM_INFINITY else soft
    return max(16, min(1000, soft - 128))
