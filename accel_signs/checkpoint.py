"""Everything a run writes, and reading checkpoints back.

A run folder::

    config.json          the resolved TrainConfig
    split.json           the store, split and clip ids used for training and validation
    metrics.jsonl        one JSON line per epoch
    best/                the best model so far: model.safetensors + config.json
    state/               the resumable training state (Accelerator.save_state)

Only the main process writes files, except `save_state`, which every process must call
(each saves its own RNG state). Every folder is written under a temporary name and renamed
into place, so a crash never leaves a half-written `best/` or `state/`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .config import InputConfig, TrainConfig
from .data.store import ClassInfo
from .errors import CheckpointError, ConfigError
from .features import KeypointFeatures
from .layout import KeypointLayout, layout_from_record
from .model import STTransformer

CHECKPOINT_FORMAT = "accel_signs.checkpoint"
CHECKPOINT_VERSION = 1
MODEL_FILE, CONFIG_FILE = "model.safetensors", "config.json"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a temporary file, fsynced, renamed over `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
    _fsync_dir(tmp)
    old = final.with_name(final.name + ".old")
    recover_dir(final)
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def checkpoint_meta(
    cfg: TrainConfig,
    classes: tuple[ClassInfo, ...],
    epoch: int,
    metrics: dict[str, float],
    data: dict[str, Any],
    runtime: dict[str, Any],
    layout: KeypointLayout,
) -> dict[str, Any]:
    """The `config.json` of a checkpoint: enough to rebuild the model and name its classes."""
    features = KeypointFeatures(layout, cfg.model.input)
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "accel_signs_version": __version__,
        "model": {
            "class": STTransformer.__name__,
            "size": cfg.model.size,
            "num_classes": len(classes),
            "dropout": cfg.model.dropout,
            "drop_path": cfg.model.drop_path,
            "seq_len": cfg.data.seq_len,
            # How the model turns keypoints into its input (features.py); a checkpoint without
            # it predates the features and reads raw image coordinates.
            "input": dataclasses.asdict(cfg.model.input),
            "part_sizes": features.part_sizes(),
        },
        "layout": layout.record(),
        "classes": [{"id": i, "sign": c.sign, "en": c.en, "ar": c.ar} for i, c in enumerate(classes)],
        "epoch": epoch,
        "metrics": metrics,
        "data": data,
        "train_config": cfg.to_dict(),
        "runtime": runtime,
    }


class RunWriter:
    """Owns a run folder. Methods that write check `is_main_process` themselves; call them
    on every process so the collective ones (`create`, `save_state`) line up."""

    def __init__(self, accelerator: Accelerator, path: Path):
        self.accelerator, self.path = accelerator, path

    @classmethod
    def create(cls, accelerator: Accelerator, cfg: TrainConfig, num_classes: int, runtime: dict[str, Any]) -> RunWriter:
        """Make a new run folder and write its config.json (the config as given, plus what it
        resolved to at run time: processes, precision, scaled lr...). The main process picks the
        name and creates the folder; every process gets the same path, or the same error."""
        name, error = cfg.run_name, None
        if accelerator.is_main_process:
            if name is None:
                base = f"{datetime.now():%Y%m%d-%H%M%S}-signs{num_classes}-{cfg.model.size}"
                name, suffix = base, 2
                while (cfg.output_dir / name).exists():
                    name, suffix = f"{base}-{suffix}", suffix + 1
            path = cfg.output_dir / name
            try:
                cfg.output_dir.mkdir(parents=True, exist_ok=True)
                path.mkdir()  # fails if it exists, even if it appeared after the name was chosen
            except FileExistsError:
                error = f"run folder {path} already exists; choose another --run-name or --output-dir"
            except OSError as e:
                error = f"cannot create run folder {path}: {e.strerror or e}"
            else:
                try:
                    _write_json(path / "config.json", {**cfg.to_dict(), "runtime": {**runtime, "run_name": name}})
                except OSError as e:
                    shutil.rmtree(path, ignore_errors=True)  # ours: created just above
                    error = f"cannot write to run folder {path}: {e.strerror or e}"
        name, error = broadcast_object_list([name, error], from_process=0)
        if error:
            raise ConfigError(error)
        return cls(accelerator, cfg.output_dir / name)

    @property
    def best_dir(self) -> Path:
        return self.path / "best"

    def write_json(self, name: str, data: Any) -> None:
        if self.accelerator.is_main_process:
            _write_json(self.path / name, data)

    def log_epoch(self, metrics: dict[str, Any]) -> None:
        """Append one line to metrics.jsonl and pass the metrics to the Accelerate trackers."""
        if self.accelerator.is_main_process:
            with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(metrics) + "\n")
                f.flush()
                os.fsync(f.fileno())
        self.accelerator.log({k: v for k, v in metrics.items() if k != "epoch"}, step=metrics["epoch"])

    def draw_training_curves(self) -> None:
        if self.accelerator.is_main_process:
            from .plots import plot_training_curves

            plot_training_curves(self.path)

    def save_best(self, model: torch.nn.Module, meta: dict[str, Any]) -> None:
        """Write model.safetensors + config.json to best/ (the main process writes, atomically;
        call on every process so that a failed write stops all of them)."""
        error = None
        if self.accelerator.is_main_process:
            tmp = self.path / "best.tmp"
            try:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                weights = {
                    k: v.detach().to("cpu").contiguous()
                    for k, v in self.accelerator.unwrap_model(model, keep_torch_compile=False).state_dict().items()
                }
                save_file(
                    weights,
                    tmp / MODEL_FILE,
                    metadata={"format": CHECKPOINT_FORMAT, "config": json.dumps(meta, ensure_ascii=False)},
                )
                with open(tmp / MODEL_FILE, "rb") as f:
                    os.fsync(f.fileno())
                _write_json(tmp / CONFIG_FILE, meta)
                replace_dir(tmp, self.best_dir)
            except (OSError, SafetensorError) as e:  # safetensors reports I/O errors as SafetensorError
                shutil.rmtree(tmp, ignore_errors=True)
                error = f"cannot write the best checkpoint to {self.best_dir}: {getattr(e, 'strerror', None) or e}"
        error = broadcast_object_list([error], from_process=0)[0]
        if error:
            raise CheckpointError(f"{error}; the previous best checkpoint is intact")

    @classmethod
    def open(cls, accelerator: Accelerator, path: Path, split_info: dict[str, Any]) -> RunWriter:
        """An existing run folder to resume: it must hold a complete state/ and have been
        trained on exactly this data (the same clips in train and val)."""
        if accelerator.is_main_process:
            recover_dir(path / "state")
            recover_dir(path / "best")
        accelerator.wait_for_everyone()
        if not (path / "state" / "trainer.json").exists():
            raise CheckpointError(
                f"nothing to resume in {path}: it has no complete state/ "
                "(the run stopped before its first epoch ended, or this is not a run folder)"
            )
        try:
            saved = json.loads((path / "split.json").read_text("utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path / 'split.json'}: unreadable ({e})") from None
        if saved.get("train_ids") != split_info["train_ids"] or saved.get("val_ids") != split_info["val_ids"]:
            raise CheckpointError(
                f"the data differs from what {path} was trained on (other clips in train/val): "
                f"resume with the run's store {saved.get('store')}"
            )
        return cls(accelerator, path)

    def truncate_metrics(self, last_epoch: int) -> None:
        """Drop metrics.jsonl lines of epochs after the saved state (written before a crash)."""
        path = self.path / "metrics.jsonl"
        if self.accelerator.is_main_process and path.exists():
            lines = [line for line in path.read_text("utf-8", errors="replace").splitlines() if line.strip()]
            keep = [line for line in lines if _epoch_of(line) is not None and _epoch_of(line) <= last_epoch]
            if len(keep) != len(lines):  # lines of later epochs, or one torn by a crash mid-write
                tmp = path.with_name(f".{path.name}.tmp")
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write("".join(line + "\n" for line in keep))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
        self.accelerator.wait_for_everyone()

    def save_state(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, progress: dict[str, Any]
    ) -> None:
        """Resumable state into state/: model, optimizer, scheduler, progress and every process's
        RNG state, in safetensors and JSON only (nothing that runs code when read). Collective:
        every process calls it and writes its own RNG file; the main process writes the rest and
        swaps the folder into place."""
        tmp = self.path / "state.tmp"
        error = None
        if self.accelerator.is_main_process:
            try:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                weights = {
                    k: v.detach().to("cpu").contiguous()
                    for k, v in self.accelerator.unwrap_model(model, keep_torch_compile=False).state_dict().items()
                }
                _save_tensors(weights, tmp / "model.safetensors")
                opt_tensors, opt_rest = _split_tensors(optimizer.state_dict())
                _save_tensors(opt_tensors, tmp / "optimizer.safetensors")
                _write_json(
                    tmp / "trainer.json",
                    {
                        "format": STATE_FORMAT,
                        "version": STATE_VERSION,
                        "progress": progress,
                        "optimizer": opt_rest,
                        "scheduler": scheduler.state_dict(),
                        "grad_scaler": _scaler_state(self.accelerator),
                        "num_processes": self.accelerator.num_processes,
                    },
                )
            except (OSError, SafetensorError) as e:
                error = f"cannot write the training state to {tmp}: {getattr(e, 'strerror', None) or e}"
        error = broadcast_object_list([error], from_process=0)[0]
        if error is None:
            try:
                rank = self.accelerator.process_index
                rng_tensors, rng_rest = _rng_state()
                _save_tensors(rng_tensors, tmp / f"rng_{rank}.safetensors")
                _write_json(tmp / f"rng_{rank}.json", rng_rest)
            except (OSError, SafetensorError) as e:
                error = f"cannot write the RNG state to {tmp}: {getattr(e, 'strerror', None) or e}"
        errors = gather_object([error])
        error = next((e for e in errors if e), None)
        if error is None and self.accelerator.is_main_process:
            try:
                replace_dir(tmp, self.path / "state")
            except OSError as e:
                error = f"cannot move the training state into place in {self.path}: {e.strerror or e}"
        error = broadcast_object_list([error], from_process=0)[0]
        if error:
            if self.accelerator.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(f"{error}; the previous state and best checkpoint are intact")


STATE_FORMAT, STATE_VERSION = "accel_signs.state", 1


def _epoch_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["epoch"])
    except (ValueError, KeyError, TypeError):
        return None


def _scaler_state(accelerator: Accelerator) -> dict[str, Any] | None:
    """fp16's loss scale and its growth tracker (plain numbers), so a resume keeps them."""
    scaler = accelerator.scaler
    return {k: (float(v) if isinstance(v, float) else v) for k, v in scaler.state_dict().items()} if scaler else None


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file(tensors, path)
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _split_tensors(tree: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Tensors of a nested state dict into a flat {dotted key: tensor} dict for safetensors,
    the rest (with {"__tensor__": key} where a tensor was) for JSON."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, key: str) -> Any:
        if torch.is_tensor(node):
            tensors[key] = node.detach().to("cpu").contiguous()
            return {"__tensor__": key}
        if isinstance(node, dict):
            return {"__dict__": [[k, walk(v, f"{key}.{k}")] for k, v in node.items()]}  # keeps int keys
        if isinstance(node, (list, tuple)):
            return {
                "__tuple__" if isinstance(node, tuple) else "__list__": [
                    walk(v, f"{key}.{i}") for i, v in enumerate(node)
                ]
            }
        return node

    return tensors, walk(tree, prefix or "t")


def _join_tensors(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            return tensors[tree["__tensor__"]]
        if "__dict__" in tree:
            return {k: _join_tensors(v, tensors) for k, v in tree["__dict__"]}
        if "__tuple__" in tree:
            return tuple(_join_tensors(v, tensors) for v in tree["__tuple__"])
        if "__list__" in tree:
            return [_join_tensors(v, tensors) for v in tree["__list__"]]
    return tree


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = state
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return tensors, {"python": [version, list(mt), gauss], "numpy": [kind, keys.tolist(), pos, has_gauss, cached]}


def _set_rng_state(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, mt, gauss = rest["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = rest["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def load_state(
    accelerator: Accelerator, state_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> dict[str, Any]:
    """Restore what save_state wrote (safetensors + JSON only); returns the saved progress."""
    try:
        meta = json.loads((state_dir / "trainer.json").read_text("utf-8"))
        if meta.get("format") != STATE_FORMAT or meta.get("version") != STATE_VERSION:
            raise CheckpointError(f"{state_dir / 'trainer.json'}: not an accel_signs training state")
        if meta["num_processes"] != accelerator.num_processes:
            raise CheckpointError(
                f"{state_dir} was saved by {meta['num_processes']} process(es); resume it with the same "
                f"number (this launch has {accelerator.num_processes})"
            )
        accelerator.unwrap_model(model, keep_torch_compile=False).load_state_dict(
            load_file(state_dir / "model.safetensors")
        )
        optimizer.load_state_dict(_join_tensors(meta["optimizer"], load_file(state_dir / "optimizer.safetensors")))
        scheduler.load_state_dict(meta["scheduler"])
        if meta.get("grad_scaler") and accelerator.scaler is not None:  # fp16 only
            accelerator.scaler.load_state_dict(meta["grad_scaler"])
        rank = accelerator.process_index
        _set_rng_state(
            load_file(state_dir / f"rng_{rank}.safetensors"),
            json.loads((state_dir / f"rng_{rank}.json").read_text("utf-8")),
        )
    except FileNotFoundError as e:
        raise CheckpointError(f"{state_dir}: incomplete training state ({Path(e.filename).name} is missing)") from None
    except OSError as e:
        raise CheckpointError(f"{state_dir}: cannot read the training state ({e.strerror or e})") from None
    except (
        json.JSONDecodeError,
        UnicodeDecodeError,
        SafetensorError,
        KeyError,
        TypeError,
        ValueError,
        RuntimeError,
    ) as e:
        raise CheckpointError(f"{state_dir}: unreadable training state ({type(e).__name__}: {e})") from None
    return meta["progress"]


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (eval mode, CPU) and its description."""

    model: STTransformer
    meta: dict[str, Any]
    path: Path

    @property
    def classes(self) -> list[dict[str, Any]]:
        return self.meta["classes"]

    @property
    def layout(self) -> KeypointLayout:
        return checkpoint_layout(self.meta)


def read_checkpoint_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a checkpoint's config.json."""
    path = readable_dir(Path(path))
    cfg_path = path / CONFIG_FILE
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a folder")
    try:
        meta = json.loads(cfg_path.read_text("utf-8"))
    except FileNotFoundError:
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in (".pth", ".pt", ".bin", ".pkl", ".ckpt"))
        hint = (
            f" ({', '.join(pickles)} are pickles, which accel_signs never loads: they can run code)" if pickles else ""
        )
        raise CheckpointError(
            f"{cfg_path}: missing; an accel_signs checkpoint folder holds {MODEL_FILE} and {CONFIG_FILE}{hint}"
        ) from None
    except OSError as e:
        raise CheckpointError(f"{cfg_path}: cannot be read ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{cfg_path}: not an accel_signs checkpoint description")
    if meta.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{cfg_path}: checkpoint version {meta.get('version')!r} is not supported")
    model = meta.get("model")
    if not isinstance(model, dict) or model.get("class") != STTransformer.__name__:
        raise CheckpointError(
            f"{cfg_path}: unknown model class {model.get('class') if isinstance(model, dict) else model!r}"
        )
    try:
        layout_from_record(meta.get("layout"), str(cfg_path))
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    if not isinstance(meta.get("classes"), list) or len(meta["classes"]) != model.get("num_classes"):
        raise CheckpointError(f"{cfg_path}: the class list does not match num_classes")
    return meta


def checkpoint_layout(meta: dict[str, Any]) -> KeypointLayout:
    """The keypoint layout a checkpoint's model reads (checked by read_checkpoint_meta)."""
    return layout_from_record(meta["layout"], "checkpoint")


def checkpoint_input(meta: dict[str, Any]) -> InputConfig:
    """The input a checkpoint's model computes; checkpoints from before the input features
    (no `input` key) read raw image coordinates."""
    raw = meta["model"].get("input")
    if raw is None:
        return InputConfig(kind="raw", handedness=False)
    if not isinstance(raw, dict):
        raise ValueError(f"model.input must be a mapping, got {raw!r}")
    return InputConfig(**raw)


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Rebuild the model from a checkpoint folder (safetensors + JSON only; no pickles)."""
    path = readable_dir(Path(path))
    meta = read_checkpoint_meta(path)
    m = meta["model"]
    try:
        model = STTransformer(
            m["num_classes"],
            m["size"],
            layout=checkpoint_layout(meta),
            input=checkpoint_input(meta),
            seq_len=m["seq_len"],
            dropout=m["dropout"],
            drop_path=m.get("drop_path", 0.0),
        )
        if model.part_sizes != list(m["part_sizes"]):
            raise ValueError(f"its input has parts of {m['part_sizes']} features, the rebuilt model {model.part_sizes}")
    except (KeyError, TypeError, ValueError, ConfigError) as e:
        raise CheckpointError(f"{path / CONFIG_FILE}: cannot rebuild the model ({e})") from None
    weights_path = path / MODEL_FILE
    try:
        state = load_file(weights_path)
    except FileNotFoundError:
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in (".pth", ".pt", ".bin", ".pkl", ".ckpt"))
        if pickles:
            raise CheckpointError(
                f"{path} holds {', '.join(pickles)} but no {MODEL_FILE}: accel_signs reads weights "
                "only from safetensors and never unpickles checkpoint files (they can run code)"
            ) from None
        raise CheckpointError(f"{weights_path}: missing") from None
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights_path}: not a readable safetensors file ({e})") from None
    expected = model.state_dict()
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [
        f"{k}: shape {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if problems:
        raise CheckpointError(
            f"{weights_path} does not match {CONFIG_FILE} ({len(problems)} problems, first: {problems[0]})"
        )
    model.load_state_dict(state)
    return Checkpoint(model.eval(), meta, path)


def split_ids(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) clip ids a run used, from its split.json."""
    raw = json.loads((run_dir / "split.json").read_text("utf-8"))
    return np.asarray(raw["train_ids"], dtype=np.int64), np.asarray(raw["val_ids"], dtype=np.int64)
