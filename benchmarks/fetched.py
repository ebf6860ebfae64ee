"""Files of a fetched public repository (a bare git directory), for the real-data converters."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path


def archive(git_dir: Path, commit: str, paths: tuple[str, ...], dest: Path) -> None:
    """`git archive` `paths` at `commit` of the bare repository `git_dir` into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    tar = subprocess.run(
        ["git", f"--git-dir={git_dir}", "archive", commit, *paths], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(dest, filter="data")
