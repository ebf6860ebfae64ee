"""Checkpoints on the Hugging Face Hub: resolve `hf://user/name[@revision]` to a local folder
through huggingface_hub's own download and cache, and push a checkpoint folder to a repo.

Only safetensors, JSON, the model card and its PNG plots are ever downloaded or uploaded; a
repo that holds pickles (.bin, .pt, .pth, .pkl, .ckpt) is refused: unpickling can run code.
huggingface_hub is optional (the `hub` extra) and imported only here, on first use.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accel_signs.core.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

HUB_PREFIX = "hf://"
HUB_HINT = "loading and pushing models on the Hugging Face Hub needs the hub extra: pip install 'accel-signs[hub]'"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# What a checkpoint repo holds: weights, descriptions, the card and its plots.
ALLOWED_PATTERNS = ["*.safetensors", "*.json", "README.md", "*.png"]
# `Path("hf://u/n")` collapses the double slash: both spellings are read.
_SPEC = re.compile(r"hf:/{1,2}(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[^\s@]+))?")


@dataclass(frozen=True)
class CheckpointSource:
    """Where a checkpoint was read from: a folder, or a Hub repo at a resolved commit."""

    path: Path  # the local folder (for a repo: its snapshot in the Hugging Face cache)
    repo_id: str | None = None
    revision: str | None = None  # as asked for (branch, tag or commit); None: the default branch
    commit: str | None = None  # the commit it resolved to

    def record(self) -> dict[str, Any]:
        if self.repo_id is None:
            return {"path": str(self.path.resolve())}
        return {"repo_id": self.repo_id, "revision": self.revision or "main", "commit": self.commit}

    def __str__(self) -> str:
        if self.repo_id is None:
            return str(self.path)
        return f"{HUB_PREFIX}{self.repo_id}@{self.commit or self.revision or 'main'}"


def is_hub_spec(spec: str | os.PathLike[str]) -> bool:
    return str(spec).startswith("hf:/")


def parse_hub_spec(spec: str) -> tuple[str, str | None]:
    """`hf://user/name[@revision]` -> (repo id, revision or None)."""
    m = _SPEC.fullmatch(str(spec).strip())
    if not m:
        raise ConfigError(f"{spec!r} is not a Hub model id: write hf://USER/NAME or hf://USER/NAME@REVISION")
    return m["repo"], m["revision"]


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise ConfigError(HUB_HINT) from None
    return huggingface_hub


def resolve_checkpoint(spec: str | os.PathLike[str]) -> CheckpointSource:
    """A checkpoint folder as given, or a Hub repo (`hf://user/name[@revision]`) downloaded
    into (or, offline with HF_HUB_OFFLINE=1, found in) the Hugging Face cache."""
    if not is_hub_spec(spec):
        return CheckpointSource(Path(spec))
    repo_id, revision = parse_hub_spec(str(spec))
    hub = _hub()
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{HUB_PREFIX}{repo_id}" + (f"@{revision}" if revision else "")
    try:
        pinned = revision if constants.HF_HUB_OFFLINE else _listed_commit(hub, where, repo_id, revision)
        folder = Path(hub.snapshot_download(repo_id, revision=pinned, allow_patterns=ALLOWED_PATTERNS))
    except RevisionNotFoundError:
        raise CheckpointError(f"{where}: the repo has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"{where}: no such model repo on the Hub (or it is private: log in first)") from None
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"{where}: not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and the Hub cannot be reached "
            "(HF_HUB_OFFLINE=1, or no network): download it once online"
        ) from None
    except (EntryNotFoundError, OSError, ValueError) as e:
        raise CheckpointError(f"{where}: cannot be downloaded ({e})") from None
    _refuse_pickles(where, _cached_files(hub, repo_id, revision, folder))
    source = CheckpointSource(folder, repo_id, revision, folder.name)
    logger.info("checkpoint %s: %s", source, folder)
    return source


def _listed_commit(hub: Any, where: str, repo_id: str, revision: str | None) -> str | None:
    """Online: refuse a repo with pickles before anything is downloaded, and pin the commit its
    revision points to now. Without a connection, the cache decides (snapshot_download's fallback)."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = hub.HfApi().model_info(repo_id, revision=revision)
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise
    except Exception as e:  # noqa: BLE001 - a connection error's type depends on the HTTP client
        logger.warning("%s: the Hub cannot be reached (%s); looking in the cache", where, e)
        return revision
    _refuse_pickles(where, [s.rfilename for s in info.siblings or ()])
    return info.sha or revision


def _cached_files(hub: Any, repo_id: str, revision: str | None, folder: Path) -> list[str]:
    """The repo's files as the cache knows them: its tree listing where huggingface_hub keeps one,
    and whatever the snapshot folder holds."""
    names = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()]
    cached_tree = getattr(hub, "get_cached_repo_tree", None)
    if cached_tree is not None:
        try:
            names += [f.path for f in cached_tree(repo_id, revision=folder.name)]
        except Exception:  # noqa: BLE001 - no tree listing cached: the folder is all there is
            pass
    return names


def _refuse_pickles(where: str, names: list[str]) -> None:
    pickles = sorted({n for n in names if n.lower().endswith(PICKLE_SUFFIXES)})
    if pickles:
        raise CheckpointError(
            f"{where} holds pickle files ({', '.join(pickles)}): accel_signs loads only safetensors and JSON "
            "and refuses repos with pickles (unpickling can run code)"
        )


@dataclass(frozen=True)
class PushFile:
    path_in_repo: str
    size: int
    source: Path | bytes  # a file, or the card's text generated for this repo


def push_files(checkpoint: Path, repo_id: str) -> list[PushFile]:
    """Exactly what `push` uploads: the weights, config.json, the model card (written for
    `repo_id`), the test evaluation's metrics.json and the plots; nothing else."""
    from accel_signs.model.card import CARD_FILE, CURVES, EVAL_DIR, EVAL_PLOTS, model_card
    from accel_signs.model.checkpoint import CONFIG_FILE, MODEL_FILE, read_checkpoint_meta

    parse_hub_spec(f"{HUB_PREFIX}{repo_id}")  # a valid USER/NAME
    if is_hub_spec(checkpoint):
        raise ConfigError(f"push takes a local checkpoint folder, not {checkpoint}")
    checkpoint = Path(checkpoint)
    read_checkpoint_meta(checkpoint)  # a valid checkpoint, or a CheckpointError
    if not (checkpoint / MODEL_FILE).is_file():
        raise CheckpointError(f"{checkpoint / MODEL_FILE}: missing")
    card = model_card(checkpoint, repo_id).encode("utf-8")
    names = [MODEL_FILE, CONFIG_FILE, f"{EVAL_DIR}/metrics.json", CURVES, *(f"{EVAL_DIR}/{p}" for p in EVAL_PLOTS)]
    files = [PushFile(n, (checkpoint / n).stat().st_size, checkpoint / n) for n in names if (checkpoint / n).is_file()]
    return sorted([*files, PushFile(CARD_FILE, len(card), card)], key=lambda f: f.path_in_repo)


def push_checkpoint(
    checkpoint: Path, repo_id: str, private: bool = False, revision: str | None = None, dry_run: bool = False
) -> list[PushFile]:
    """Upload a checkpoint folder to the Hub model repo `repo_id` (created if needed; `revision`:
    a branch, created from the default one if needed) in one commit. The token comes from where
    huggingface_hub looks (HF_TOKEN, `hf auth login`). `dry_run`: only list the files."""
    files = push_files(checkpoint, repo_id)
    if dry_run:
        return files
    hub = _hub()
    api = hub.HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        api.create_commit(
            repo_id,
            operations=[hub.CommitOperationAdd(f.path_in_repo, f.source) for f in files],
            commit_message=f"accel_signs: upload {Path(checkpoint).name}",
            revision=revision,
        )
    except Exception as e:  # noqa: BLE001 - network, auth and HTTP errors: each client has its own types
        raise CheckpointError(f"push to {HUB_PREFIX}{repo_id} failed: {e}") from None
    return files
