"""Evaluations for the page: run through `evaluate`'s own code (training/evaluate.py) on a
worker thread, with progress, and cached outside the run folders by what decides their
numbers: the checkpoint's files, the store's meta.json, the split and the signers."""

from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import json
import logging
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accel_signs.config import EvalConfig
from accel_signs.core.errors import AccelSignsError, CheckpointError
from accel_signs.model.checkpoint import read_checkpoint_meta

logger = logging.getLogger(__name__)
CACHE_VERSION = 1  # bumped when what a cache entry holds changes


@dataclass
class Job:
    key: str
    state: str = "running"  # running, done, failed
    done: int = 0
    total: int = 0
    message: str = ""

    def status(self) -> dict[str, Any]:
        return {"key": self.key, "state": self.state, "done": self.done, "total": self.total, "message": self.message}


class _Hashes:
    """sha256 of files, remembered by (path, size, mtime) so a cached evaluation is found without
    reading a checkpoint's weights again."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, int, int], str] = {}

    def of(self, path: Path) -> str:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in self._seen:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            self._seen[key] = h.hexdigest()
        return self._seen[key]


def recorded_store(checkpoint: Path) -> str | None:
    """The store a checkpoint was trained on, as its config.json records it."""
    return read_checkpoint_meta(checkpoint).data.store


class Evaluations:
    """Cached evaluations and the one that is running (one at a time: each uses every core)."""

    def __init__(self, cache_dir: Path):
        self.cache_dir = Path(cache_dir)
        self.jobs: dict[str, Job] = {}
        self.hashes = _Hashes()
        self.lock = threading.Lock()
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="evaluate")

    def key(self, checkpoint: Path, data: str | None, split: str, signers: tuple[str, ...] | None) -> str:
        """What decides an evaluation's numbers, hashed. Raises CheckpointError/DatasetError for
        a checkpoint or store that is not there."""
        store = data or recorded_store(checkpoint)
        if store is None:
            raise CheckpointError(f"checkpoint {checkpoint} does not record its data store: give the store's folder")
        meta = Path(store) / "meta.json"
        if not meta.is_file():
            raise CheckpointError(f"store {store} (the data to evaluate on) has no meta.json: is it a clip store?")
        parts = {
            "version": CACHE_VERSION,
            "weights": self.hashes.of(checkpoint / "model.safetensors"),
            "config": self.hashes.of(checkpoint / "config.json"),
            "store": self.hashes.of(meta),
            "store_path": str(Path(store).resolve()),
            "split": split,
            "signers": list(signers) if signers else None,
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]

    def folder(self, key: str) -> Path:
        return self.cache_dir / key / "eval"

    def start(self, checkpoint: Path, data: str | None, split: str, signers: tuple[str, ...] | None = None) -> Job:
        """The job for this checkpoint, data and split: done at once when cached, else started
        (or the one already running)."""
        cfg = EvalConfig(checkpoint=checkpoint, data=data, split=split, signers=signers, plots=False, num_workers=0)
        key = self.key(checkpoint, data, split, signers)
        with self.lock:
            job = self.jobs.get(key)
            if job is not None and job.state in ("running", "done"):
                return job
            if (self.folder(key) / "metrics.json").is_file():
                job = self.jobs[key] = Job(key, "done")
                return job
            job = self.jobs[key] = Job(key)
        cfg.output = self.folder(key)
        self.pool.submit(self._run, job, cfg)
        return job

    def _run(self, job: Job, cfg: EvalConfig) -> None:
        from accel_signs.training.evaluate import evaluate_checkpoint

        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        try:
            evaluate_checkpoint(cfg, progress=progress, card=False)
            job.state = "done"
        except AccelSignsError as e:
            job.state, job.message = "failed", str(e)
        except Exception as e:  # noqa: BLE001 - the server stays up; the page shows what broke
            logger.exception("evaluation of %s failed", cfg.checkpoint)
            job.state, job.message = "failed", f"the evaluation failed unexpectedly: {type(e).__name__}: {e}"
        if job.state == "failed":
            shutil.rmtree(self.cache_dir / job.key, ignore_errors=True)

    def status(self, key: str) -> Job:
        job = self.jobs.get(key)
        if job is None:
            if (self.folder(key) / "metrics.json").is_file():
                return Job(key, "done")
            raise CheckpointError(
                f"no evaluation {key} (the server restarted, or its cache was removed): start it again"
            )
        return job

    def result(self, key: str) -> dict[str, Any]:
        """Everything the page draws, read from the files `evaluate` wrote: metrics.json as it is,
        the per-class table, the confusion matrix (row-major) and every clip's prediction."""
        folder = self.folder(key)
        if not (folder / "metrics.json").is_file():
            raise CheckpointError(f"evaluation {key} is not finished or not cached")
        metrics = json.loads((folder / "metrics.json").read_text("utf-8"))
        with open(folder / "per_class.csv", encoding="utf-8", newline="") as f:
            classes = [_per_class_row(r) for r in csv.DictReader(f)]
        with open(folder / "confusion.csv", encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))[1:]
        confusion = [int(v) for row in rows for v in row[1:]]
        with open(folder / "predictions.csv", encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            next(reader)
            predictions = [
                [int(c), s, int(t), int(p), float(q), [int(x) for x in top.split()]] for c, s, t, p, q, top in reader
            ]
        return {
            "key": key,
            "metrics": metrics,
            "classes": classes,
            "confusion": confusion,
            "predictions": {
                "columns": ["clip", "signer", "true_sign", "pred_sign", "confidence", "top_signs"],
                "rows": predictions,
            },
        }

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _per_class_row(row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"class_id": int(row["class_id"]), "sign": int(row["sign"]), "en": row["en"], "ar": row["ar"]}
    out |= {k: int(row[k]) for k in ("support", "predicted")}
    out |= {k: float(row[k]) if row[k] else None for k in ("precision", "recall", "f1")}
    return out
