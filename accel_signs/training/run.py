"""The run folder's lifecycle: create or resume a run, save its best checkpoint and its state,
log its epochs. The CLI and the Python API (`train(cfg, resume=...)`) both go through here,
so a resumed run follows one policy whichever way it was started.

A run folder::

    config.json          the resolved TrainConfig and what it resolved to at run time (`runtime`)
    split.json           the store, split, signs, signers and the train/val clip ids
    metrics.jsonl        one JSON line per epoch
    best/                the best model so far: model.safetensors + config.json
    state/               the resumable training state (state.py)
    stopped.json         only while the run stands stopped by a signal with its state saved: why,
                         where, and the command that resumes it (StopRecord; what a requeue
                         script reads, whatever exit code the launcher returned)

Only the main process writes files, except the state, where every process writes its own RNG
state; every write that can fail reports to all processes alike (collective.py). Folders are
written under a temporary name and renamed into place (files.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from accel_signs.config import TrainConfig, config_options, load_config_file
from accel_signs.core.collective import on_main
from accel_signs.core.errors import CheckpointError, ConfigError
from accel_signs.core.files import append_line, readable_dir, recover_dir, write_json, write_text
from accel_signs.data.training import RunPartition
from accel_signs.model.checkpoint import CheckpointMeta, save_checkpoint
from accel_signs.training.average import WeightAverage
from accel_signs.training.state import load_state, plain_weights, save_state


@dataclass
class Runtime:
    """What a run's config resolved to on its launch (config.json's `runtime`)."""

    num_processes: int
    device: str
    mixed_precision: str  # "no", "bf16" or "fp16": what auto became
    lr: float  # the peak lr after scaling for the number of processes
    num_workers: int
    data_on_device: bool
    global_batch_size: int
    init_from: dict[str, Any] | None = None  # --init-from: the source and what was taken over (transfer.py)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def of(
        cls, accelerator: Accelerator, lr: float, num_workers: int, data_on_device: bool, batch_size: int
    ) -> Runtime:
        n = accelerator.num_processes
        return cls(
            n, accelerator.device.type, accelerator.mixed_precision, lr, num_workers, data_on_device, batch_size * n
        )


STOP_RECORD = "stopped.json"


@dataclass(frozen=True)
class StopRecord:
    """Why and where a run stopped on a signal, with its state saved (the run folder's
    stopped.json). A requeue script checks for this file instead of the exit code: the ranks exit
    75, but what `accelerate launch` returns after a signal depends on its version (75 up to
    1.15, 128 + the signal from 1.16)."""

    signal: str  # "SIGTERM" or "SIGUSR1"
    epoch: int  # the epoch the run stopped in (step < steps) or after (step == steps)
    step: int  # the training steps of that epoch done and saved
    steps: int  # the epoch's steps (per process)
    processes: int
    run: str  # the run folder
    reason: str = "signal"
    exit_code: int = 75  # what every rank (and a run without a launcher) exits with

    @property
    def resume_args(self) -> list[str]:
        return ["train", "--resume", self.run]

    @property
    def resume_command(self) -> str:
        """Without a launcher; under one, its own command takes the place of `accel-signs`
        (`accelerate launch [its options] -m accel_signs train --resume RUN`)."""
        return "accel-signs " + " ".join(self.resume_args)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": 1,
            **dataclasses.asdict(self),
            "state": str(Path(self.run) / "state"),
            "resume_args": self.resume_args,
            "resume_command": self.resume_command,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


# Settings a resumed run takes from its first launch when they were left to "auto": they decide
# how it trains (which generator draws the sampling points; the numeric precision), and "auto"
# might pick otherwise on the new launch (other free memory; another accelerate config). Each
# maps a config field to the `runtime` key of config.json that records what auto became.
_PINNED = {("data", "data_on_device"): "data_on_device", ("mixed_precision",): "mixed_precision"}
# Where a run lives is the folder being resumed, whatever the changes say.
_PLACE = {("run_name",), ("output_dir",)}

FieldPath = tuple[str, ...]


@dataclass(frozen=True)
class ResumePlan:
    """A run folder to continue and how (plan_resume): the config it continues with, and what
    its first launch took over with --init-from (its weights come from the state, not again)."""

    run_dir: Path
    config: TrainConfig
    init_from: dict[str, Any] | None = None


def plan_resume(run_dir: str | os.PathLike[str], changes: Mapping[str, Any] | TrainConfig | None = None) -> ResumePlan:
    """How to continue `run_dir`: its saved config, with `changes` applied where a resume may
    change things (more epochs, other workers, trackers...). The one place that decides it.

    `changes` maps dotted field paths ("num_epochs", "data.num_workers") to values, or is a
    whole TrainConfig that must equal the run's apart from those fields. Anything else that
    differs is refused with one line naming the option. Settings the run left to "auto"
    (precision, data path) keep what they resolved to; an explicit other value is refused.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise CheckpointError(f"nothing to resume in {run_dir}: no config.json (is it a run folder?)")
    # Read only: Run.resume puts a state.old left by a crash back in place, on the main process.
    if not (readable_dir(run_dir / "state") / "trainer.json").exists():
        raise CheckpointError(
            f"nothing to resume in {run_dir}: it has no complete state/ (the run stopped before its first epoch ended)"
        )
    record = load_config_file(run_dir / "config.json")
    runtime = record.get("runtime") or {}
    loaded = TrainConfig.from_dict(record)
    pinned = {
        path: ("yes" if value else "no") if isinstance(value, bool) else value
        for path, key in _PINNED.items()
        if (value := runtime.get(key)) is not None and _get(loaded, path) == "auto"
    }
    saved = _replace(loaded, {("run_name",): run_dir.name, ("output_dir",): run_dir.parent, **pinned})
    if changes is None:
        return ResumePlan(run_dir, saved, runtime.get("init_from"))
    if not isinstance(changes, TrainConfig):  # one typed build checks and converts every value
        given = {tuple(k.split(".")): v for k, v in changes.items()}
        unknown = sorted(".".join(p) for p in set(given) - {p for p, _ in _leaves(saved)})
        if unknown:
            raise ConfigError(f"--resume: unknown setting(s) {', '.join(unknown)}")
        changes = _replace(saved, {p: v for p, v in given.items() if p not in _PLACE})
    resumable = {o.path for o in config_options(TrainConfig) if o.resumable}
    allowed: dict[FieldPath, Any] = {}
    for path, new in _leaves(changes):
        old = _get(saved, path)
        if path in _PLACE or new == old or (path in _PINNED and new == "auto"):
            continue  # "auto" keeps what the run resolved to
        if path not in resumable:
            raise _refusal(run_dir, path, old, new, resumable, pinned=path in _PINNED)
        allowed[path] = new
    return ResumePlan(run_dir, _replace(saved, allowed), runtime.get("init_from"))


def resume_config(
    run_dir: str | os.PathLike[str], changes: Mapping[str, Any] | TrainConfig | None = None
) -> TrainConfig:
    """The config plan_resume continues `run_dir` with (to adjust and pass to train())."""
    return plan_resume(run_dir, changes).config


def _refusal(
    run_dir: Path, path: FieldPath, old: Any, new: Any, resumable: set[FieldPath], pinned: bool
) -> ConfigError:
    flags = {o.path: o.flag.split("/")[0] for o in config_options(TrainConfig)}
    name = flags.get(path, ".".join(path))
    allowed = ", ".join(sorted(flags[p] for p in resumable))
    why = " (the run resolved auto to it)" if pinned else ""
    return ConfigError(
        f"--resume continues {run_dir} with its own config: {name} was {old!r} there{why}, not {new!r} "
        f"(only {allowed} may change)"
    )


def _get(cfg: Any, path: FieldPath) -> Any:
    for name in path:
        cfg = getattr(cfg, name)
    return cfg


def _leaves(cfg: Any, prefix: FieldPath = ()) -> list[tuple[FieldPath, Any]]:
    """(path, value) of every setting of a config, nested sections included."""
    out = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        is_section = dataclasses.is_dataclass(value) and not isinstance(value, type)
        out += _leaves(value, (*prefix, f.name)) if is_section else [((*prefix, f.name), value)]
    return out


def _replace(cfg: Any, changes: Mapping[FieldPath, Any]) -> Any:
    """`cfg` with the fields at `changes`' paths set: one dataclasses.replace per section, so
    each section validates its values (and their combinations) once."""
    top = {path[0]: value for path, value in changes.items() if len(path) == 1}
    nested: dict[str, dict[FieldPath, Any]] = {}
    for path, value in changes.items():
        if len(path) > 1:
            nested.setdefault(path[0], {})[path[1:]] = value
    top.update({name: _replace(getattr(cfg, name), sub) for name, sub in nested.items()})
    return dataclasses.replace(cfg, **top) if top else cfg


def _config_record(cfg: TrainConfig, runtime: Runtime, run_name: str) -> dict[str, Any]:
    """A run's config.json: the config, and what it resolved to on this launch."""
    return {**cfg.to_dict(), "runtime": {**runtime.to_dict(), "run_name": run_name}}


def latest_run(output_dir: Path) -> Path:
    """The run folder in `output_dir` whose state was saved last."""
    runs = [*output_dir.glob("*/state/trainer.json"), *output_dir.glob("*/state.old/trainer.json")]
    if not runs:
        raise CheckpointError(f"--resume: nothing to resume in {output_dir} (no run folder with a saved state)")
    return max(runs, key=lambda p: p.stat().st_mtime).parent.parent


class Run:
    """An open run folder. Every method is called on every process (they line up with the
    collectives inside); only the main process writes, and failures reach all processes."""

    def __init__(self, accelerator: Accelerator, path: Path):
        self.accelerator, self.path = accelerator, path
        self.average: WeightAverage | None = None  # the weight average, saved and restored with the state

    @property
    def best_dir(self) -> Path:
        return self.path / "best"

    @classmethod
    def create(cls, accelerator: Accelerator, cfg: TrainConfig, runtime: Runtime, split: RunPartition) -> Run:
        """A new run folder with config.json (the config, plus `runtime`) and split.json. The main
        process picks the name and creates the folder; every process gets the same path."""

        def make() -> str:
            name = cfg.run_name
            if name is None:
                base = f"{datetime.now():%Y%m%d-%H%M%S}-signs{len(split.signs)}-{cfg.model.size}"
                name, suffix = base, 2
                while (cfg.output_dir / name).exists():
                    name, suffix = f"{base}-{suffix}", suffix + 1
            path = cfg.output_dir / name
            cfg.output_dir.mkdir(parents=True, exist_ok=True)
            try:
                path.mkdir()  # fails if it exists, even if it appeared after the name was chosen
            except FileExistsError:
                raise ConfigError(
                    f"run folder {path} already exists; choose another --run-name or --output-dir"
                ) from None
            try:
                write_json(path / "config.json", _config_record(cfg, runtime, name))
                write_json(path / "split.json", split.to_dict())
            except OSError:
                shutil.rmtree(path, ignore_errors=True)  # ours: created just above
                raise
            return name

        name = on_main(accelerator, make, f"cannot create run folder in {cfg.output_dir}", ConfigError)
        return cls(accelerator, cfg.output_dir / name)

    @classmethod
    def resume(
        cls, accelerator: Accelerator, path: Path, cfg: TrainConfig, runtime: Runtime, split: RunPartition
    ) -> Run:
        """An existing run folder to continue (plan_resume checked that it holds a complete state):
        it must have been trained on exactly this data; its config.json becomes the resumed
        config (e.g. more epochs)."""

        def recover() -> None:  # a crash between the two renames of a swap left only <name>.old
            recover_dir(path / "state")
            recover_dir(path / "best")

        on_main(accelerator, recover, f"cannot recover the saved folders of {path}", CheckpointError)
        try:
            saved = json.loads((path / "split.json").read_text("utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path / 'split.json'}: unreadable ({e})") from None
        if saved.get("train_ids") != split.train_ids or saved.get("val_ids") != split.val_ids:
            raise CheckpointError(
                f"the data differs from what {path} was trained on (other clips in train/val): "
                f"resume with the run's store {saved.get('store')}"
            )
        run = cls(accelerator, path)
        # The resumed config (e.g. more epochs) becomes the run's, so a second resume keeps it.
        run.write_json("config.json", _config_record(cfg, runtime, path.name))
        # Resumed: no longer stopped. A stop before this line (a signal during start-up) leaves the
        # record, so the job is requeued again.
        on_main(
            accelerator,
            lambda: (path / STOP_RECORD).unlink(missing_ok=True),
            f"cannot remove {path / STOP_RECORD}",
            CheckpointError,
        )
        return run

    def write_json(self, name: str, data: Any) -> None:
        on_main(
            self.accelerator,
            lambda: write_json(self.path / name, data),
            f"cannot write {self.path / name}",
            CheckpointError,
        )

    def record_stop(self, record: StopRecord) -> None:
        """Write stopped.json (after the state it points to is saved)."""
        self.write_json(STOP_RECORD, record.to_dict())

    def load_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, Any]:
        """Restore the saved state; drop metrics.jsonl lines of epochs after it. Returns the progress."""
        progress = load_state(self.accelerator, self.path / "state", model, optimizer, scheduler, self.average)
        self._truncate_metrics(int(progress["epoch"]))
        return progress

    def _truncate_metrics(self, last_epoch: int) -> None:
        """Lines of later epochs (written before a crash), or one torn by a crash mid-write, go."""
        path = self.path / "metrics.jsonl"

        def truncate() -> None:
            if not path.exists():
                return
            lines = [line for line in path.read_text("utf-8", errors="replace").splitlines() if line.strip()]
            keep = [line for line in lines if (_epoch_of(line) or last_epoch + 1) <= last_epoch]
            if len(keep) != len(lines):
                write_text(path, "".join(line + "\n" for line in keep))

        on_main(self.accelerator, truncate, f"cannot rewrite {path}", CheckpointError)

    def log_epoch(self, metrics: dict[str, Any]) -> None:
        """Append one line to metrics.jsonl."""
        path = self.path / "metrics.jsonl"
        on_main(
            self.accelerator, lambda: append_line(path, json.dumps(metrics)), f"cannot write {path}", CheckpointError
        )

    def save_best(self, model: torch.nn.Module, meta: CheckpointMeta) -> None:
        """The best checkpoint into best/, atomically (the previous best stays intact if anything
        fails, and every process learns of the failure)."""
        try:
            on_main(
                self.accelerator,
                lambda: save_checkpoint(self.best_dir, plain_weights(self.accelerator, model), meta),
                f"cannot write the best checkpoint to {self.best_dir}",
                CheckpointError,
            )
        except CheckpointError as e:
            raise CheckpointError(f"{e}; the previous best checkpoint is intact") from None

    def save_state(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, progress: dict[str, Any]
    ) -> None:
        average = self.average.state() if self.average is not None else None
        save_state(self.accelerator, self.path / "state", model, optimizer, scheduler, progress, average)


def _epoch_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["epoch"])
    except (ValueError, KeyError, TypeError):
        return None
