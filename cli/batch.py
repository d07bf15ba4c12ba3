"""`voxtral transcribe` over many files: checks first, progress, output files written whole,
skip-and-continue, and a clean stop on Ctrl+C."""

from __future__ import annotations

import io
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from voxtral_mlx.errors import VoxtralError

from .files import check_not_replaced, writable_folder, write_whole
from .ui import INTERRUPTED_EXIT, about, bad_usage, plural, print_error

if TYPE_CHECKING:
    from voxtral_mlx import Transcript

# engine(name, audio, progress) -> Transcript; progress(seconds_done, seconds_total)
Engine = Callable[[str, Any, Callable[[float, float], None]], "Transcript"]


def read_input(name: str, remote: bool = False):
    """The audio of a file, or of `-` (stdin): samples, or the file's bytes for a server."""
    from voxtral_mlx import load_audio

    if name == "-":
        data = sys.stdin.buffer.read()
        if not data:
            raise VoxtralError("no audio on stdin")
        return data if remote else load_audio(io.BytesIO(data))
    return Path(name) if remote else load_audio(Path(name))


class Batch:
    """Files in, text out: printed (one line per file, named when there are several), or
    written as NAME.FORMAT into `output_dir`. Each failure is one line on stderr."""

    def __init__(
        self,
        files: list[str],
        formats: list[str] | None,
        output_dir: Path,
        words: bool,
        overwrite: bool = False,
    ):
        self.files, self.formats, self.output_dir, self.words = files, formats, output_dir, words
        self.named = len(files) > 1  # lines named by the inputs given, not those that exist
        self.overwrite = overwrite
        self.failures = 0
        self.done = 0
        self.err = Console(stderr=True)

    def check(self) -> None:
        """Report missing inputs (they are skipped), two inputs that would write one output
        file, output files that exist (unless overwrite) and an unwritable output folder,
        before any model is loaded. Nothing left to do is an error."""
        from voxtral_mlx.audio import check_audio_file

        if self.files.count("-") > 1:
            bad_usage("stdin (-) can be read only once")
        if self.formats and (why := writable_folder(self.output_dir)):
            raise VoxtralError(f"cannot write to {self.output_dir}: {why}")
        present = []
        for name in self.files:
            try:
                if name != "-":
                    check_audio_file(Path(name))
                present.append(name)
            except VoxtralError as e:
                self.fail(name, str(e))
        if not present:
            raise typer.Exit(1)
        self.files = present
        if self.formats:
            self._check_targets()

    def _check_targets(self) -> None:
        by_target: dict[Path, str] = {}
        for name in self.files:
            for target in self._targets(name):
                if (other := by_target.setdefault(target, name)) != name:
                    bad_usage(
                        f"{other} and {name} would both be written to {target}: transcribe "
                        "them into different folders (-o)"
                    )
        check_not_replaced(list(by_target), self.overwrite)

    def _targets(self, name: str) -> list[Path]:
        stem = "stdin" if name == "-" else Path(name).stem
        return [self.output_dir / f"{stem}.{fmt}" for fmt in self.formats]

    def fail(self, name: str, message: str) -> None:
        self.failures += 1
        print_error(about(name, message))

    def run_pooled(self, model, delay_ms: int | None, batch: int, context_bias=None) -> None:
        """Local transcription, `batch` files at a time through one batched decoder."""
        from voxtral_mlx import transcribe_many

        progress = self._progress()
        names = self.files
        sources = (read_input(name) if name == "-" else Path(name) for name in names)
        with self._interruptible(), progress:
            label = f"{plural(len(names), 'file')}, {batch} at a time"
            task = progress.add_task(label, total=len(names), rtf="")
            results = transcribe_many(model, sources, delay_ms, batch, context_bias=context_bias)
            for index, result in results:
                progress.advance(task)
                name = names[index]
                if isinstance(result, VoxtralError):
                    self.fail(name, str(result))
                else:
                    self._finish(name, result)

    def run(self, engine: Engine, remote: bool = False) -> None:
        progress = self._progress()
        with self._interruptible(), progress:
            for name in self.files:
                self._one(engine, name, progress, remote)

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[rtf]}"),
            console=self.err,
            transient=True,
            disable=not self.err.is_terminal,
        )

    @contextmanager
    def _interruptible(self):
        """Ctrl+C: say so, keep what is finished, exit 130."""
        try:
            yield
        except KeyboardInterrupt:
            total = plural(len(self.files), "file")
            if not self.formats:  # texts printed as each file was done
                said = "the texts of those in progress were not printed"
            elif self.done:
                said = "the finished ones are kept, nothing of those in progress was written"
            else:
                said = "nothing was written"
            print_error(f"stopped after {self.done} of {total}; {said}", label="interrupted")
            raise typer.Exit(INTERRUPTED_EXIT) from None

    def _one(self, engine: Engine, name: str, progress: Progress, remote: bool) -> None:
        label = "stdin" if name == "-" else Path(name).name
        task = progress.add_task(escape(label), total=1.0, rtf="")
        tic = time.perf_counter()

        def update(done: float, total: float) -> None:
            rtf = (time.perf_counter() - tic) / done if done else 0.0
            progress.update(task, completed=done / total if total else 1.0, rtf=f"RTF {rtf:.2f}")

        try:
            result = engine(name, read_input(name, remote), update)
        except VoxtralError as e:
            self.fail(name, str(e))
            return
        finally:
            progress.remove_task(task)
        self._finish(name, result)

    def _finish(self, name: str, result: Transcript) -> None:
        """Write a file's outputs and count it done, Ctrl+C held until both are: a file's
        outputs are all written or none, and the count said on Ctrl+C is what was kept."""
        with _ctrl_c_deferred():
            if self._output(name, result):
                self.done += 1

    def _output(self, name: str, result: Transcript) -> bool:
        """Print the text or write the files; False when a file could not be written."""
        if not self.formats:
            print(f"{name}: {result.text}" if self.named else result.text, flush=True)
            return True
        return self._write(name, result)

    def _write(self, name: str, result: Transcript) -> bool:
        from voxtral_mlx.formats import render

        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            for fmt, target in zip(self.formats, self._targets(name), strict=True):
                write_whole(target, render(result, fmt, name, self.words))
                self.err.print(f"wrote {escape(str(target))}", highlight=False)
        except OSError as e:
            self.fail(name, f"cannot write {e.filename or self.output_dir}: {e.strerror}")
            return False
        return True


@contextmanager
def _ctrl_c_deferred():
    """Ctrl+C (SIGINT) inside the block is raised as it ends (main thread only; elsewhere
    the block runs as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *_: caught.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt
