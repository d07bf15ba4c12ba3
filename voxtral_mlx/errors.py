class VoxtralError(Exception):
    """A user-facing error: bad input, a missing or broken model, an invalid setting.

    Its message is one complete sentence meant to be shown as is; the CLI prints it
    on one line without a traceback.
    """


class ModelUnavailable(VoxtralError):
    """A model that cannot be had (not in the cache, the hub unreachable): the message says
    what would help; a local model directory always would."""


class VoxtralWarning(UserWarning):
    """Something works, but not as well as it could: one sentence, shown as is (the CLI
    prints it on one line)."""
