"""The `voxtral` command for tests: in this process by default, or as a real process.

In this process, `voxtral_cli.app.main()` runs as the console script does (its one-line errors,
exit codes and warnings), with its own argv, standard streams (pipes, never terminals, as a
subprocess's captured streams are) and environment, all restored afterwards. Importing MLX
and the CLI once instead of in every subprocess saves seconds per command.

`process=True` runs it as `python -m voxtral_cli.app` instead: for what needs a process of its
own (signals, closed descriptors, a reader that leaves, what is imported at start-up, the
environment huggingface_hub reads as it is imported).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

VOXTRAL = [sys.executable, "-m", "voxtral_cli.app"]


def sigint_default() -> None:
    """Popen's preexec_fn for a process a test stops with SIGINT: SIGINT at its default, as
    a terminal starts it. A pytest-xdist worker was once seen with SIGINT ignored (SIG_IGN),
    which a child inherits and Python then keeps: Ctrl+C would do nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def voxtral(
    *args: object,
    input: bytes | None = None,
    timeout: float = 300,
    env: dict[str, str] | None = None,
    process: bool = False,
) -> subprocess.CompletedProcess:
    """Run `voxtral ARGS`: returncode, stdout and stderr (text; bytes when `input` is given,
    as subprocess.run gives them)."""
    argv = [str(a) if isinstance(a, Path) else str(a) for a in args]
    if process:
        return subprocess.run(
            [*VOXTRAL, *argv],
            capture_output=True,
            text=input is None,
            input=input,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )
    return _in_process(argv, input, env or {})


def _in_process(argv: list[str], input: bytes | None, env: dict[str, str]):
    from voxtral_cli.app import main

    saved = (sys.argv, sys.stdin, sys.stdout, sys.stderr, warnings.showwarning)
    saved_env = dict(os.environ)
    saved_sigint = signal.getsignal(signal.SIGINT)
    out, err = io.BytesIO(), io.BytesIO()
    streams = [
        io.TextIOWrapper(io.BytesIO(input or b""), encoding="utf-8"),
        io.TextIOWrapper(out, encoding="utf-8", write_through=True),
        io.TextIOWrapper(err, encoding="utf-8", write_through=True),
    ]
    sys.argv = ["voxtral", *argv]
    sys.stdin, sys.stdout, sys.stderr = streams
    os.environ.update(env)
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        for stream in streams:  # (a collected wrapper would close the buffer under it)
            stream.flush()
            stream.detach()
        sys.argv, sys.stdin, sys.stdout, sys.stderr, warnings.showwarning = saved
        os.environ.clear()
        os.environ.update(saved_env)
        signal.signal(signal.SIGINT, saved_sigint)
    stdout, stderr = out.getvalue(), err.getvalue()
    if input is None:
        stdout, stderr = stdout.decode(), stderr.decode()
    return subprocess.CompletedProcess(["voxtral", *argv], code, stdout, stderr)
