"""The `voxtral` command. The only place that touches the terminal; heavy imports
happen inside commands so `voxtral --help` stays instant."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="voxtral",
    help="Streaming speech-to-text with Voxtral Mini 4B Realtime on MLX.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)

DEFAULT_MODEL = "mistralai/Voxtral-Mini-4B-Realtime-2602"
VALID_DELAYS = ", ".join(str(d) for d in (*range(80, 1201, 80), 2400)) + " ms"


def parse_delay(value: str | int) -> int:
    """`480`, `480ms` and `0.48s` all mean 480 ms."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*", str(value))
    ms = float(match.group(1)) * (1000 if match.group(2) == "s" else 1) if match else None
    if ms is None or round(ms, 6) not in (*range(80, 1201, 80), 2400):
        raise typer.BadParameter(
            f"{value!r} is not a supported delay; valid delays: {VALID_DELAYS}"
        )
    return int(round(ms))


ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="Hugging Face repo id or local model directory.")
]
DelayOpt = Annotated[
    int,
    typer.Option(
        "--delay",
        "-d",
        parser=parse_delay,
        metavar="DELAY",
        help="Transcription delay: a multiple of 80 ms up to 1200, or 2400 (480, 480ms, 0.48s).",
    ),
]
OfflineOpt = Annotated[
    bool, typer.Option("--offline", help="Use only the Hugging Face cache; never download.")
]


def print_error(message: str) -> None:
    """One red line on stderr, never wrapped (VOXTRAL_DEBUG=1 re-raises for the traceback)."""
    if os.environ.get("VOXTRAL_DEBUG") and sys.exc_info()[0] is not None:
        raise
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(
        f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True
    )


def fail(message: str) -> None:
    """print_error, then exit code 1."""
    print_error(message)
    raise typer.Exit(1)


def load_model(model: str, offline: bool):
    if offline:
        # must be set before huggingface_hub reads its environment
        os.environ["HF_HUB_OFFLINE"] = "1"
    import voxtral_mlx

    return voxtral_mlx.load(model, offline=offline or None)


@app.command()
def transcribe(
    files: Annotated[list[Path], typer.Argument(help="Audio files to transcribe.")],
    model: ModelOpt = DEFAULT_MODEL,
    delay: DelayOpt = 480,
    offline: OfflineOpt = False,
) -> None:
    """Transcribe audio files and print their text."""
    from voxtral_mlx import VoxtralError
    from voxtral_mlx import transcribe as run

    try:
        loaded = load_model(model, offline)
    except VoxtralError as e:
        fail(str(e))
    failures = 0
    for file in files:
        try:
            result = run(loaded, file, delay_ms=delay)
        except VoxtralError as e:
            failures += 1
            print_error(str(e))
            continue
        print(result.text, flush=True)
    if failures:
        raise typer.Exit(1)


def version_callback(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"voxtral-mlx {version('voxtral-mlx')}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=version_callback, is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    """Streaming speech-to-text with Voxtral Mini 4B Realtime on MLX."""


def main() -> None:
    app(prog_name="voxtral")


if __name__ == "__main__":
    sys.exit(main())
