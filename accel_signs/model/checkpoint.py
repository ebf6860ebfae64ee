"""Checkpoints: what a best checkpoint describes about itself, and its format, written and read
here as a pair (save_checkpoint, load_checkpoint).

A checkpoint is a folder with model.safetensors (the weights; the description is also in its
metadata) and config.json: the model's family (`class`) and hyperparameters, the keypoint layout,
the classes (sign numbers and glosses), the epoch and metrics, the data, the training config and
the recipe. config.json is read and written only here: everything else uses its parsed form,
CheckpointMeta. Reading one needs nothing but safetensors and JSON; nothing here unpickles.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from accel_signs.config import InputConfig, ModelConfig, TrainConfig, from_dict
from accel_signs.core import __version__
from accel_signs.core.errors import CheckpointError, ConfigError, DatasetError
from accel_signs.core.files import fresh_dir, fsync_file, readable_dir, replace_dir, write_json
from accel_signs.data.extractor import META_KEY, ExtractorRecord, record_from_meta
from accel_signs.data.layout import KeypointLayout, layout_from_record
from accel_signs.data.store import ClassInfo
from accel_signs.model.features import KeypointFeatures
from accel_signs.model.hub import PICKLE_SUFFIXES, CheckpointSource, resolve_checkpoint
from accel_signs.model.recipe import Recipe, recipe_of
from accel_signs.model.registry import FAMILIES, build_model, get_family, known_families

CHECKPOINT_FORMAT = "accel_signs.checkpoint"
CHECKPOINT_VERSION = 1
MODEL_FILE, CONFIG_FILE = "model.safetensors", "config.json"


@dataclass(frozen=True)
class ModelRecord:
    """The model a checkpoint holds: its family (config.json's `model.class`), the hyperparameters
    that rebuild it (as a ModelConfig; an older checkpoint's as its model was built), and its
    classes, input length and input features per part."""

    family: str
    config: ModelConfig
    num_classes: int
    seq_len: int
    part_sizes: tuple[int, ...]

    @property
    def size(self) -> str:
        return self.config.size

    @property
    def input(self) -> InputConfig:
        return self.config.input

    def to_json(self) -> dict[str, Any]:
        hyper = get_family(self.family).hyperparameters(self.config)
        return {
            "class": self.family,
            **hyper,
            "num_classes": self.num_classes,
            "seq_len": self.seq_len,
            "part_sizes": list(self.part_sizes),
        }


@dataclass(frozen=True)
class DataRecord:
    """What a checkpoint records about its training data (the run's partition without the clip
    ids, and a profile of the training clips); `raw` is the record as written."""

    store: str | None
    split: str | None
    signs: tuple[int, ...]
    signers: tuple[str, ...]
    val_signers: tuple[str, ...]
    test_signers: tuple[str, ...]
    seed: int | None
    profile: Mapping[str, Any]
    raw: Mapping[str, Any]


@dataclass(frozen=True)
class CheckpointMeta:
    """A checkpoint's description (its config.json), parsed and checked once by
    read_checkpoint_meta and written by save_checkpoint; nothing else reads config.json."""

    model: ModelRecord
    layout: KeypointLayout
    classes: tuple[ClassInfo, ...]
    extractor: ExtractorRecord | None  # what made the training keypoints; None: not recorded
    epoch: int | None
    metrics: Mapping[str, Any]  # the best epoch's (val_acc, val_loss, ...; "weights": "ema" for the average)
    data: DataRecord
    train_config: Mapping[str, Any]  # the resolved TrainConfig as the training's version saved it
    runtime: Mapping[str, Any]  # what the run resolved its config to (training/run.py's Runtime)
    recipe: Recipe | None  # None: a checkpoint from before recipes were recorded
    accel_signs_version: str = __version__

    @property
    def ema_weights(self) -> bool:
        """Whether the weights are the training's moving average (OptimConfig.ema_decay)."""
        return self.metrics.get("weights") == "ema"

    @property
    def init_from(self) -> Mapping[str, Any] | None:
        """--init-from: where a fine-tuned run started (transfer.py's record), else None."""
        return self.runtime.get("init_from") or None

    def classes_json(self) -> list[dict[str, Any]]:
        return [{"id": i, "sign": c.sign, "en": c.en, "ar": c.ar} for i, c in enumerate(self.classes)]

    def to_json(self) -> dict[str, Any]:
        """config.json: the format of every version so far, with the recipe added."""
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "accel_signs_version": self.accel_signs_version,
            "model": self.model.to_json(),
            "layout": self.layout.record(),
            META_KEY: self.extractor.to_json() if self.extractor is not None else None,
            "classes": self.classes_json(),
            "epoch": self.epoch,
            "metrics": dict(self.metrics),
            "data": dict(self.data.raw),
            "train_config": dict(self.train_config),
            "runtime": dict(self.runtime),
            **({"recipe": self.recipe.to_json()} if self.recipe is not None else {}),
        }


def checkpoint_meta(
    cfg: TrainConfig,
    classes: tuple[ClassInfo, ...],
    epoch: int,
    metrics: dict[str, float],
    data: dict[str, Any],
    runtime: dict[str, Any],
    layout: KeypointLayout,
    extractor: ExtractorRecord | None = None,
) -> CheckpointMeta:
    """The description of a checkpoint trained with `cfg`: enough to rebuild the model and name
    its classes, the extractor that made its training keypoints (copied from the store; None: not
    known), and the recipe."""
    features = KeypointFeatures(layout, cfg.model.input)
    model = ModelRecord(
        get_family(cfg.model.family).name, cfg.model, len(classes), cfg.data.seq_len, tuple(features.part_sizes())
    )
    return CheckpointMeta(
        model=model,
        layout=layout,
        classes=tuple(classes),
        extractor=extractor,
        epoch=epoch,
        metrics=metrics,
        data=_data_record(data, "checkpoint data"),
        train_config=cfg.to_dict(),
        runtime=runtime,
        recipe=recipe_of(cfg, runtime),
    )


def save_checkpoint(folder: Path, weights: dict[str, torch.Tensor], meta: CheckpointMeta) -> None:
    """Write a checkpoint folder: `weights` (plain CPU tensors) as model.safetensors, with `meta`
    in its metadata and as config.json. Written as <folder>.tmp and swapped into place, so a
    failure leaves the previous checkpoint intact."""
    tmp = folder.with_name(folder.name + ".tmp")
    record = meta.to_json()
    try:
        fresh_dir(tmp)
        save_file(
            weights,
            tmp / MODEL_FILE,
            metadata={"format": CHECKPOINT_FORMAT, "config": json.dumps(record, ensure_ascii=False)},
        )
        fsync_file(tmp / MODEL_FILE)
        write_json(tmp / CONFIG_FILE, record)
        replace_dir(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (eval mode, CPU) and its description."""

    model: nn.Module
    meta: CheckpointMeta
    path: Path
    source: CheckpointSource | None = None  # where it came from: the folder, or a Hub repo and commit

    @property
    def classes(self) -> tuple[ClassInfo, ...]:
        return self.meta.classes

    @property
    def layout(self) -> KeypointLayout:
        return self.meta.layout

    @property
    def extractor(self) -> ExtractorRecord | None:
        """The extractor that made the training keypoints; None where not recorded."""
        return self.meta.extractor

    @property
    def seq_len(self) -> int:
        return self.meta.model.seq_len


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


def init_source(record: Mapping[str, Any]) -> str:
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


def read_checkpoint_meta(path: str | os.PathLike[str]) -> CheckpointMeta:
    """Read and check a checkpoint's config.json (a folder, or `hf://user/name[@revision]`)."""
    path = checkpoint_folder(path).path
    cfg_path = path / CONFIG_FILE
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a folder")
    try:
        raw = json.loads(cfg_path.read_text("utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"{cfg_path}: missing; an accel_signs checkpoint folder holds {MODEL_FILE} and {CONFIG_FILE}"
            + _pickle_hint(path)
        ) from None
    except OSError as e:
        raise CheckpointError(f"{cfg_path}: cannot be read ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: nested too deep
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from None
    return parse_checkpoint_meta(raw, cfg_path)


def parse_checkpoint_meta(raw: Any, cfg_path: Path) -> CheckpointMeta:
    """A config.json's dict as a CheckpointMeta; a CheckpointError naming `cfg_path` says what
    is wrong. Keys older versions did not write get the values their checkpoints meant."""
    if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{cfg_path}: not an accel_signs checkpoint description")
    if raw.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{cfg_path}: checkpoint version {raw.get('version')!r} is not supported")
    model = raw.get("model")
    if not isinstance(model, dict):
        raise CheckpointError(
            f"{cfg_path}: unknown model class (model must be an object with its class, got {model!r})"
        )
    family = model.get("class")
    if not isinstance(family, str) or family not in FAMILIES:
        raise CheckpointError(
            f"{cfg_path}: unknown model class {family!r} (known model families: {', '.join(known_families())})"
        )
    try:
        layout = layout_from_record(raw.get("layout"), str(cfg_path))
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    if not isinstance(raw.get("classes"), list) or len(raw["classes"]) != model.get("num_classes"):
        raise CheckpointError(f"{cfg_path}: the class list does not match num_classes")
    _check_description(raw, cfg_path)
    try:
        extractor = record_from_meta(raw, str(cfg_path))
    except DatasetError as e:
        raise CheckpointError(str(e)) from None
    try:
        recipe = Recipe.from_json(raw["recipe"]) if raw.get("recipe") is not None else None
    except ValueError as e:
        raise CheckpointError(f"{cfg_path}: recipe: {e}") from None
    return CheckpointMeta(
        model=_model_record(model, cfg_path),
        layout=layout,
        classes=tuple(ClassInfo(c["sign"], c["en"], c["ar"]) for c in raw["classes"]),
        extractor=extractor,
        epoch=raw.get("epoch"),
        metrics=raw.get("metrics") or {},
        data=_data_record(raw.get("data") or {}, str(cfg_path)),
        train_config=raw.get("train_config") or {},
        runtime=raw.get("runtime") or {},
        recipe=recipe,
        accel_signs_version=str(raw.get("accel_signs_version", "")),
    )


def _model_record(model: dict[str, Any], cfg_path: Path) -> ModelRecord:
    """The model record, its hyperparameters as a ModelConfig: what the checkpoint records, and
    its family's values for what an older checkpoint does not."""
    family = get_family(model["class"])
    given = {
        k: v
        for k, v in model.items()
        if k not in ("class", "num_classes", "seq_len", "part_sizes") and (v is not None or k not in family.absent)
    }
    try:
        cfg = from_dict(ModelConfig, {**family.absent, **given, "family": family.name}, "model")
    except ConfigError as e:
        raise CheckpointError(f"{cfg_path}: cannot rebuild the model ({e})") from None
    if not all(type(n) is int for n in model["part_sizes"]):
        raise CheckpointError(f"{cfg_path}: model.part_sizes must be a list of integers, got {model['part_sizes']!r}")
    return ModelRecord(family.name, cfg, model["num_classes"], model["seq_len"], tuple(model["part_sizes"]))


def _data_record(data: Any, where: str) -> DataRecord:
    """The `data` record; its lists checked, since evaluate and the dashboard choose signers by them."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{where}: data must be an object, got {type(data).__name__}")

    def texts(key: str) -> tuple[str, ...]:
        value = data.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise CheckpointError(f"{where}: a malformed record: data.{key} must be a list of text, got {value!r}")
        return tuple(value)

    signs = data.get("signs") or []
    if not isinstance(signs, list) or not all(type(s) is int for s in signs):
        raise CheckpointError(f"{where}: a malformed record: data.signs must be a list of integers, got {signs!r}")
    store, split, seed, profile = (data.get(k) for k in ("store", "split", "seed", "profile"))
    if not isinstance(store, (str, type(None))) or not isinstance(split, (str, type(None))):
        raise CheckpointError(f"{where}: a malformed record: data.store and data.split must be text")
    if not isinstance(seed, (int, type(None))) or not isinstance(profile, (dict, type(None))):
        raise CheckpointError(f"{where}: a malformed record: data.seed must be an integer, data.profile an object")
    return DataRecord(
        store,
        split,
        tuple(signs),
        texts("signers"),
        texts("val_signers"),
        texts("test_signers"),
        seed,
        profile or {},
        data,
    )


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
    if not isinstance(meta.get("epoch"), (int, type(None))) or isinstance(meta.get("epoch"), bool):
        raise CheckpointError(f"{cfg_path}: epoch must be an integer, got {meta['epoch']!r}")


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Rebuild the model from a checkpoint folder or a Hub repo (`hf://user/name[@revision]`):
    safetensors + JSON only, no pickles."""
    source = checkpoint_folder(path)
    path = source.path
    meta = read_checkpoint_meta(path)
    m = meta.model
    try:
        model = build_model(m.config, m.num_classes, meta.layout, m.seq_len)
        rebuilt = getattr(model, "part_sizes", list(m.part_sizes))
        if list(rebuilt) != list(m.part_sizes):
            raise ValueError(f"its input has parts of {list(m.part_sizes)} features, the rebuilt model {rebuilt}")
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
