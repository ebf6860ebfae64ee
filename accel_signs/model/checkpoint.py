"""Checkpoints: what a best checkpoint describes about itself, and its format, written and read
here as a pair (save_checkpoint, load_checkpoint).

A checkpoint is a folder with model.safetensors (the weights; the description is also in its
metadata) and config.json: the model's class, size and input, the keypoint layout, the classes
(sign numbers and glosses), the epoch and metrics, and the data and training config. Reading one
needs nothing but safetensors and JSON; nothing here unpickles.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from accel_signs.config import InputConfig, ModelConfig, TrainConfig
from accel_signs.core import __version__
from accel_signs.core.errors import CheckpointError, ConfigError, DatasetError
from accel_signs.core.files import fresh_dir, fsync_file, readable_dir, replace_dir, write_json
from accel_signs.data.extractor import META_KEY, ExtractorRecord, record_from_meta
from accel_signs.data.layout import KeypointLayout, layout_from_record
from accel_signs.data.store import ClassInfo
from accel_signs.model.features import KeypointFeatures
from accel_signs.model.hub import PICKLE_SUFFIXES, CheckpointSource, resolve_checkpoint
from accel_signs.model.transformer import STTransformer, conv_options

CHECKPOINT_FORMAT = "accel_signs.checkpoint"
CHECKPOINT_VERSION = 1
MODEL_FILE, CONFIG_FILE = "model.safetensors", "config.json"


def checkpoint_meta(
    cfg: TrainConfig,
    classes: tuple[ClassInfo, ...],
    epoch: int,
    metrics: dict[str, float],
    data: dict[str, Any],
    runtime: dict[str, Any],
    layout: KeypointLayout,
    extractor: ExtractorRecord | None = None,
) -> dict[str, Any]:
    """The `config.json` of a checkpoint: enough to rebuild the model and name its classes, and
    the extractor that made its training keypoints (copied from the store; None: not known)."""
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
            **conv_options(cfg.model),  # the temporal convolution, only where it is on
        },
        "layout": layout.record(),
        META_KEY: extractor.to_json() if extractor is not None else None,
        "classes": [{"id": i, "sign": c.sign, "en": c.en, "ar": c.ar} for i, c in enumerate(classes)],
        "epoch": epoch,
        "metrics": metrics,
        "data": data,
        "train_config": cfg.to_dict(),
        "runtime": runtime,
    }


def save_checkpoint(folder: Path, weights: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write a checkpoint folder: `weights` (plain CPU tensors) as model.safetensors, with `meta`
    (checkpoint_meta) in its metadata and as config.json. Written as <folder>.tmp and swapped
    into place, so a failure leaves the previous checkpoint intact."""
    tmp = folder.with_name(folder.name + ".tmp")
    try:
        fresh_dir(tmp)
        save_file(
            weights,
            tmp / MODEL_FILE,
            metadata={"format": CHECKPOINT_FORMAT, "config": json.dumps(meta, ensure_ascii=False)},
        )
        fsync_file(tmp / MODEL_FILE)
        write_json(tmp / CONFIG_FILE, meta)
        replace_dir(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (eval mode, CPU) and its description."""

    model: STTransformer
    meta: dict[str, Any]
    path: Path
    source: CheckpointSource | None = None  # where it came from: the folder, or a Hub repo and commit

    @property
    def classes(self) -> list[dict[str, Any]]:
        return self.meta["classes"]

    @property
    def layout(self) -> KeypointLayout:
        return checkpoint_layout(self.meta)

    @property
    def extractor(self) -> ExtractorRecord | None:
        """The extractor that made the training keypoints; None where not recorded."""
        return record_from_meta(self.meta, str(self.path / CONFIG_FILE))


def checkpoint_folder(spec: str | os.PathLike[str]) -> CheckpointSource:
    """Where a checkpoint given as a folder or as `hf://user/name[@revision]` is on this machine:
    the one place every command and the Python API resolve a checkpoint."""
    source = resolve_checkpoint(spec)
    return dataclasses.replace(source, path=readable_dir(source.path))


def weights_id(path: Path) -> str:
    """A checkpoint's id: the sha256 of its model.safetensors."""
    digest = hashlib.sha256()
    with open(path / MODEL_FILE, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def init_source(record: dict[str, Any]) -> str:
    """One line for where a fine-tuned run started (`runtime.init_from`, transfer.py)."""
    where = (
        f"hf://{record['repo_id']}@{record.get('commit') or record.get('revision')}"
        if record.get("repo_id")
        else record.get("path", "?")
    )
    return (
        f"{where} (checkpoint {record.get('checkpoint_id', '?')}; {record.get('transferred', '?')} tensors taken "
        f"over, {len(record.get('new') or [])} new)"
    )


def read_checkpoint_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a checkpoint's config.json (a folder, or `hf://user/name[@revision]`)."""
    path = checkpoint_folder(path).path
    cfg_path = path / CONFIG_FILE
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a folder")
    try:
        meta = json.loads(cfg_path.read_text("utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"{cfg_path}: missing; an accel_signs checkpoint folder holds {MODEL_FILE} and {CONFIG_FILE}"
            + _pickle_hint(path)
        ) from None
    except OSError as e:
        raise CheckpointError(f"{cfg_path}: cannot be read ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: nested too deep
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
    _check_description(meta, cfg_path)
    return meta


# The longest seq_len a config.json may ask for: far beyond any model that can be trained
# (attention over T frames costs T^2), and a bound on what rebuilding the model allocates.
MAX_SEQ_LEN = 100_000
_MODEL_KEYS = {
    "size": ((str,), "a size name"),
    "num_classes": ((int,), "an integer"),
    "seq_len": ((int,), "an integer"),
    "dropout": ((int, float), "a number"),
    "part_sizes": ((list,), "a list"),
}


def _check_description(meta: dict[str, Any], cfg_path: Path) -> None:
    """The values that rebuilding the model and naming its classes read, with their types."""
    model = meta["model"]
    for key, (kinds, what) in _MODEL_KEYS.items():
        value = model.get(key)
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise CheckpointError(f"{cfg_path}: model.{key} is missing or not {what} (got {value!r})")
    if not 1 <= model["seq_len"] <= MAX_SEQ_LEN:
        raise CheckpointError(f"{cfg_path}: model.seq_len must be from 1 to {MAX_SEQ_LEN}, got {model['seq_len']}")
    if not isinstance(model.get("input", {}), (dict, type(None))):
        raise CheckpointError(f"{cfg_path}: model.input must be an object, got {model['input']!r}")
    for c in meta["classes"]:
        if not (
            isinstance(c, dict)
            and type(c.get("sign")) is int
            and isinstance(c.get("en"), str)
            and isinstance(c.get("ar"), str)
        ):
            raise CheckpointError(
                f'{cfg_path}: each class must be an object with an integer "sign" and "en", "ar" glosses, got {c!r}'
            )
    for key in ("metrics", "data", "train_config", "runtime"):
        if not isinstance(meta.get(key), (dict, type(None))):
            raise CheckpointError(f"{cfg_path}: {key} must be an object, got {type(meta[key]).__name__}")
    try:
        record_from_meta(meta, str(cfg_path))
    except DatasetError as e:
        raise CheckpointError(str(e)) from None


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
    """Rebuild the model from a checkpoint folder or a Hub repo (`hf://user/name[@revision]`):
    safetensors + JSON only, no pickles."""
    source = checkpoint_folder(path)
    path = source.path
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
            # Checkpoints without a temporal convolution record no conv_* keys; checked as a config's.
            **conv_options(ModelConfig(**{k: m[k] for k in ("conv_kernel", "conv_blocks", "conv_causal") if k in m})),
        )
        if model.part_sizes != list(m["part_sizes"]):
            raise ValueError(f"its input has parts of {m['part_sizes']} features, the rebuilt model {model.part_sizes}")
    except (KeyError, TypeError, ValueError, ConfigError) as e:
        raise CheckpointError(f"{path / CONFIG_FILE}: cannot rebuild the model ({e})") from None
    weights_path = path / MODEL_FILE
    try:
        state = load_file(weights_path)
    except FileNotFoundError:
        raise CheckpointError(f"{weights_path}: missing{_pickle_hint(path)}") from None
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
    return Checkpoint(model.eval(), meta, path, source)


def _pickle_hint(folder: Path) -> str:
    """Why the pickles a folder holds instead of a checkpoint's files are not read, or ""."""
    pickles = sorted(p.name for p in folder.iterdir() if p.name.lower().endswith(PICKLE_SUFFIXES))
    if not pickles:
        return ""
    return (
        f" (it holds {', '.join(pickles)}: accel_signs reads weights only from safetensors and never "
        "unpickles checkpoint files, they can run code)"
    )
