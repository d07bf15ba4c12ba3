"""`voxtral transcribe` over many files: progress, output files, skip-and-continue."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from voxtral_mlx import VoxtralError, load_audio
from voxtral_mlx.formats import render

if TYPE_CHECKING:
    from voxtral_mlx import Transcript

# engine(name, progress) -> Transcript; progress(seconds_done, seconds_total)
Engine = Callable[[str, Callable[[float, float], None]], "Transcript"]


def read_input(name: str, remote: bool = False):
    """The audio of a file, or of `-` (stdin): samples, or the file's bytes for a server."""
    if name == "-":
        data = sys.stdin.buffer.read()
        if not data:
            raise VoxtralError("no audio on stdin")
        return data if remote else load_audio(io.BytesIO(data))
    return Path(name) if remote else load_audio(Path(name))


def transcribe_files(
    engine: Engine,
    files: list[str],
    formats: list[str] | None,
    output_dir: Path,
    word_timestamps: bool,
) -> int:
    """Transcribe each file; returns how many failed (each failure is one line on stderr)."""
    from .app import print_error

    err = Console(stderr=True)
    failures = 0
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[rtf]}"),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    if formats:
        output_dir.mkdir(parents=True, exist_ok=True)
    with progress:
        for name in files:
            task = progress.add_task(Path(name).name if name != "-" else "stdin", total=1.0, rtf="")
            tic = time.perf_counter()

            def update(done: float, total: float, task=task, tic=tic) -> None:
                rtf = (time.perf_counter() - tic) / done if done else 0.0
                progress.update(
                    task, completed=done / total if total else 1.0, rtf=f"RTF {rtf:.2f}"
                )

            try:
                result = engine(name, update)
            except VoxtralError as e:
                failures += 1
                progress.remove_task(task)
                print_error(f"{name}: {e}")
                continue
            progress.remove_task(task)
            if not formats:
                print(result.text, flush=True)
                continue
            stem = "stdin" if name == "-" else Path(name).stem
            for fmt in formats:
                target = output_dir / f"{stem}.{fmt}"
                target.write_text(render(result, fmt, name, word_timestamps), encoding="utf-8")
                err.print(f"wrote {target}", highlight=False)
    return failures
