"""Atomic writes: a file or folder is there complete, or not at all, whenever a process dies."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (new names, renames) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a temporary file, fsynced, renamed over `path`."""
    write_text(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write text atomically: a temporary file, fsynced, renamed over `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append_line(path: Path, line: str) -> None:
    """Append one line and fsync it (a crash mid-write leaves at most a torn last line)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def recover_dir(final: Path) -> Path:
    """After a crash between replace_dir's two renames only `<final>.old` exists, complete:
    put it back. Safe to call from several processes at once."""
    old = final.with_name(final.name + ".old")
    if not final.exists() and old.exists():
        try:
            os.replace(old, final)
        except FileNotFoundError:  # another process recovered it first
            pass
    return final


def readable_dir(final: Path) -> Path:
    """`final`, or its complete `.old` copy if a crash left only that (read-only callers)."""
    old = final.with_name(final.name + ".old")
    return old if not final.exists() and old.exists() else final


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished folder `tmp` to `final`, replacing what was there. The old folder is
    renamed aside first and removed last, so at every instant one complete copy exists
    (`final`, or `final.old` between the renames: see recover_dir)."""
    fsync_dir(tmp)
    old = final.with_name(final.name + ".old")
    recover_dir(final)
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def fresh_dir(path: Path) -> Path:
    """An empty folder at `path` (what was there is removed); for a write that ends in replace_dir."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        raise FileExistsError(f"{path} is in the way (a file where a temporary folder goes)")
    path.mkdir(parents=True)
    return path
