"""The run folders under the dashboard's folder, read without ever writing to them: config,
state, best metrics and per-epoch curves. A broken file is a message on its run, never an
exception out of a listing, so one bad run cannot take the page down."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accel_signs.core.errors import AccelSignsError, CheckpointError
from accel_signs.model.checkpoint import CONFIG_FILE, CheckpointMeta, read_checkpoint_meta

# A run whose metrics.jsonl changed this recently is shown as training (an epoch of a big
# run can take longer; the page says "last epoch N min ago" beside it).
ACTIVE_SECONDS = 600


class RunError(AccelSignsError):
    """A run the dashboard cannot show (not found, or not a run)."""


@dataclass
class Curves:
    """metrics.jsonl as columns, and what was wrong with it (a torn last line, bad lines)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_curves(path: Path) -> Curves:
    """Every complete line of a metrics.jsonl. A torn last line (a run killed, or writing it right
    now) is left out with a note; a bad line elsewhere is left out and named."""
    out = Curves()
    try:
        text = path.read_text("utf-8", errors="replace")
    except FileNotFoundError:
        out.problems.append(f"{path.name}: missing (no epoch finished yet)")
        return out
    except OSError as e:
        out.problems.append(f"{path.name}: cannot be read ({e.strerror})")
        return out
    lines = text.split("\n")
    torn_tail = not text.endswith("\n") and bool(lines[-1].strip())
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
                raise ValueError("not an object with an integer epoch")
        except ValueError as e:
            if torn_tail and number == len(lines):
                out.problems.append(
                    f"{path.name}: the last line is torn (line {number}: an epoch being written, or a run killed "
                    "mid-write); the curves stop at the line before it"
                )
            else:
                out.problems.append(f"{path.name}: line {number} is not a JSON epoch record ({e}); left out")
            continue
        out.rows.append(row)
    return out


def _read_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None, f"{path.name}: missing"
    except (OSError, UnicodeDecodeError) as e:
        return None, f"{path.name}: cannot be read ({e})"
    except ValueError as e:
        return None, f"{path.name}: not valid JSON ({e})"
    if not isinstance(data, dict):
        return None, f"{path.name}: not a JSON object"
    return data, None


def _read_best(folder: Path) -> tuple[CheckpointMeta | None, str | None]:
    """The best checkpoint's description, or what is wrong with it (None, None: no best/ yet)."""
    if not folder.exists():
        return None, None
    try:
        return read_checkpoint_meta(folder), None
    except CheckpointError as e:
        return None, f"best/{CONFIG_FILE}: " + str(e).removeprefix(f"{folder / CONFIG_FILE}: ")


def is_run(path: Path) -> bool:
    """A folder train wrote (or began to write): it has config.json, metrics.jsonl or state/."""
    return path.is_dir() and any((path / name).exists() for name in ("config.json", "metrics.jsonl", "state"))


def find_runs(root: Path) -> list[Path]:
    """The runs under `root` (its subfolders), or `root` itself when it is a run."""
    if is_run(root):
        return [root]
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if is_run(p)), key=lambda p: p.name)


def run_summary(path: Path) -> dict[str, Any]:
    """One run for the runs list: name, state, config highlights, best metrics, problems."""
    problems: list[str] = []
    config, problem = _read_json(path / "config.json")
    if problem:
        problems.append(problem)
    curves = read_curves(path / "metrics.jsonl")
    problems += curves.problems
    best, problem = _read_best(path / "best")
    if problem:
        problems.append(problem)
    epochs = curves.rows[-1]["epoch"] if curves.rows else 0
    total = (config or {}).get("num_epochs")
    model = (config or {}).get("model", {})
    data = (config or {}).get("data", {})
    return {
        "name": path.name,
        "state": _state(path, epochs, total, curves),
        "epochs": epochs,
        "num_epochs": total,
        "model_size": model.get("size") if isinstance(model, dict) else None,
        "store": data.get("path") if isinstance(data, dict) else None,
        "best_epoch": best.epoch if best else None,
        "best": dict(best.metrics) if best else {},
        "has_checkpoint": best is not None and (path / "best" / "model.safetensors").exists(),
        "problems": problems,
    }


def _state(path: Path, epochs: int, total: Any, curves: Curves) -> str:
    if isinstance(total, int) and epochs >= total:
        return "finished"
    metrics = path / "metrics.jsonl"
    fresh = metrics.exists() and time.time() - metrics.stat().st_mtime < ACTIVE_SECONDS
    if fresh:
        return "training"
    if (path / "state").exists() or (path / "state.old").exists():
        return f"stopped at epoch {epochs}" + (f" of {total}" if isinstance(total, int) else "")
    return "no epoch saved" if not curves.rows else f"stopped at epoch {epochs}"


class Runs:
    """The runs under one folder, by name (the page never sends a path)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, name: str) -> Path:
        for run in find_runs(self.root):
            if run.name == name:
                return run
        raise RunError(f"no run {name!r} in {self.root} (it may have been moved or deleted; reload the runs list)")

    def listing(self) -> dict[str, Any]:
        if not self.root.exists():
            return {"root": str(self.root), "runs": [], "problem": f"{self.root} does not exist"}
        runs = [run_summary(p) for p in find_runs(self.root)]
        problem = None if runs else f"no run folders in {self.root} (a run has config.json, metrics.jsonl or state/)"
        return {"root": str(self.root), "runs": runs, "problem": problem}

    def curves(self, name: str) -> dict[str, Any]:
        curves = read_curves(self.path(name) / "metrics.jsonl")
        keys = sorted({k for row in curves.rows for k, v in row.items() if isinstance(v, (int, float))})
        columns = {k: [row.get(k) for row in curves.rows] for k in keys}
        return {"name": name, "columns": columns, "problems": curves.problems}

    def config(self, name: str) -> dict[str, Any]:
        config, problem = _read_json(self.path(name) / "config.json")
        if problem:
            raise RunError(f"run {name}: {problem}")
        return config

    def diff(self, a: str, b: str) -> dict[str, Any]:
        """The config fields (dotted) whose values differ between runs a and b; `runtime` (where
        and when it ran) is left out."""
        left, right = flatten(self.config(a)), flatten(self.config(b))
        keys = sorted(k for k in left.keys() | right.keys() if not k.startswith("runtime."))
        rows = [{"key": k, "a": left.get(k), "b": right.get(k)} for k in keys if left.get(k) != right.get(k)]
        return {"a": a, "b": b, "rows": rows, "same": len(keys) - len(rows)}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out
