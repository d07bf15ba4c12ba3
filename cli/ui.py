"""Terminal helpers shared by the commands: one-line errors, spinners, plurals."""

from __future__ import annotations

import os
import sys
from contextlib import nullcontext

import typer

USAGE_EXIT = 2  # the command line itself is wrong (as Click's own usage errors)
ERROR_EXIT = 1  # the command could not do its work
INTERRUPTED_EXIT = 130  # Ctrl+C


def print_error(message: str, label: str = "error") -> None:
    """One red line on stderr, never wrapped (VOXTRAL_DEBUG=1 re-raises for the traceback)."""
    if os.environ.get("VOXTRAL_DEBUG") and sys.exc_info()[0] is not None:
        raise
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(
        f"[red]{label}:[/red] {escape(message)}", highlight=False, soft_wrap=True
    )


def about(name: str, message: str) -> str:
    """`message` about the file `name`, which it names once: prefixed only if it does not
    already ("empty.wav is empty", not "empty.wav: empty.wav is empty")."""
    from pathlib import Path

    name = "stdin" if name == "-" else name
    named = name in message or str(Path(name)) in message  # as typed, or as a Path prints it
    return message if named else f"{name}: {message}"


def fail(message: str) -> None:
    """print_error, then exit code 1."""
    print_error(message)
    raise typer.Exit(ERROR_EXIT)


def bad_usage(message: str) -> None:
    """A wrong option or argument: print_error, then exit code 2."""
    print_error(message)
    raise typer.Exit(USAGE_EXIT)


def status_spinner(message: str):
    from rich.console import Console

    console = Console(stderr=True)
    return console.status(message) if console.is_terminal else nullcontext()


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
