"""Output files, as every command writes them: checked before the model loads (a folder
that can be written, no file replaced without --overwrite), written whole."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from voxtral_mlx.errors import VoxtralError

from .ui import plural


def writable_folder(folder: Path) -> str | None:
    """Why files cannot be written into `folder` (created if missing), or None."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    try:  # what the permission bits do not say (root, a read-only or pseudo file system)
        os.rmdir(tempfile.mkdtemp(prefix=".voxtral-check-", dir=existing))
    except OSError as e:
        return f"{existing} is not writable ({e.strerror.lower()})"
    return None


def check_writable(path: Path) -> None:
    """Raise VoxtralError unless a file can be written at `path`: no folder in its place,
    and its folder writable (or creatable)."""
    if path.is_dir():
        raise VoxtralError(f"cannot write {path}: it is a folder")
    if why := writable_folder(path.parent):
        raise VoxtralError(f"cannot write {path}: {why}")


def check_not_replaced(paths: list[Path], overwrite: bool) -> None:
    """Raise VoxtralError if a file is already at one of `paths`, unless `overwrite`."""
    existing = [path for path in paths if path.is_file()]
    if existing and not overwrite:
        others = f" and {plural(len(existing) - 1, 'other file')}" if len(existing) > 1 else ""
        they = "them" if len(existing) > 1 else "it"
        raise VoxtralError(
            f"{existing[0]}{others} already exist{'' if others else 's'}: add --overwrite to "
            f"replace {they}"
        )


def write_whole(path: Path, text: str) -> None:
    """Write `text` to `path` so that it is never seen half written: a temporary file in the
    same folder, renamed over the target once complete."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
