"""One clip for the page: its skeleton, what the model sampled and predicted (the inspector),
and its augmented version through the training code's own sampling and Augmenter (the lab).

The lab's controls are made from AugmentConfig's fields (their types, defaults and help), and a
value is valid exactly when AugmentConfig accepts it, so an augmentation added to the config
appears on the page without a change here."""

from __future__ import annotations

import dataclasses
import json
import threading
import typing
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from accel_signs.config import AugmentConfig
from accel_signs.core.errors import ConfigError, DatasetError
from accel_signs.data.augment import Augmenter
from accel_signs.data.layout import KeypointLayout
from accel_signs.data.pipeline import ClipBatches
from accel_signs.data.sampling import tsn_positions
from accel_signs.data.store import ClipStore, open_store
from accel_signs.model.checkpoint import Checkpoint, CheckpointMeta, load_checkpoint
from accel_signs.model.features import KeypointFeatures
from accel_signs.tools.inference import classify


class Cache:
    """The last few checkpoints and stores opened (a page asks for clip after clip of one)."""

    def __init__(self, size: int = 4):
        self.size, self.lock = size, threading.Lock()
        self._items: OrderedDict[tuple[str, str, int], Any] = OrderedDict()

    def get(self, kind: str, path: Path, load: Any) -> Any:
        path = Path(path)
        key = (kind, str(path.resolve()), _mtime(path))
        with self.lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = load(path)
        with self.lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def checkpoint(self, path: Path) -> Checkpoint:
        return self.get("checkpoint", path, load_checkpoint)

    def store(self, path: Path) -> ClipStore:
        return self.get("store", path, open_store)


def _mtime(path: Path) -> int:
    files = [path / "config.json", path / "model.safetensors", path / "meta.json"]
    return max((f.stat().st_mtime_ns for f in files if f.exists()), default=0)


def layout_info(layout: KeypointLayout) -> dict[str, Any]:
    """The layout as the page draws it: bones, and each point's part."""
    part_of = {i: part for part, points in layout.parts.items() for i in points}
    return {
        "name": layout.name,
        "points": layout.num_points,
        "parts": list(layout.part_names),
        "bones": [list(b) for b in layout.bones],
        "part_of_point": [part_of.get(i, "other") for i in range(layout.num_points)],
    }


def _clip_index(store: ClipStore, split: str, clip: int) -> int:
    n = len(store.split(split))
    if not 0 <= clip < n:
        raise DatasetError(f"split {split!r} of store {store.path} has clips 0..{n - 1}, not {clip}")
    return clip


def _xy(frames: np.ndarray | torch.Tensor, present: np.ndarray | torch.Tensor) -> list:
    """(T, P, >=2) -> nested lists of x, y rounded to 4 places, None where a point is missing
    (JSON has no NaN); a few hundred kB at most."""
    xy = np.round(np.asarray(frames[..., :2], dtype=np.float64), 4).astype(object)
    xy[~np.asarray(present, dtype=bool)] = None
    return xy.tolist()


def _presence(present: np.ndarray, layout: KeypointLayout) -> dict[str, list[float]]:
    """Per part, the share of its points detected in each frame."""
    return {part: np.round(present[:, list(points)].mean(axis=1), 3).tolist() for part, points in layout.parts.items()}


def inspect_clip(ckpt: Checkpoint, store: ClipStore, split: str, clip: int) -> dict[str, Any]:
    """A clip with its true sign, the model's top-5 (through `classify`, as predict and serve),
    the frame positions evaluation samples, and each part's presence per frame."""
    store_split = store.split(split)
    clip = _clip_index(store, split, clip)
    frames = np.array(store_split.clip(clip))  # (T, P, 4), a copy: torch wants writable arrays
    aspect = float(store_split.aspects[clip])
    label = int(store_split.labels[clip])
    true = store.classes[label]
    seq_len = ckpt.seq_len
    top = classify(ckpt, frames, (aspect, 1.0), 5)
    positions = tsn_positions(torch.tensor([len(frames)]), seq_len, random=False)[0]
    known = {c.sign for c in ckpt.classes}
    return {
        "clip": clip,
        "split": split,
        "signer": store.signers[int(store_split.signer_index[clip])],
        "frames": len(frames),
        "aspect": aspect,
        "true": {"sign": true.sign, "en": true.en, "ar": true.ar, "in_model": true.sign in known},
        "top": top,
        "correct": bool(top and top[0]["sign"] == true.sign),
        "sampled": np.round(positions.numpy(), 2).tolist(),
        "presence": _presence((frames != 0).any(-1), store.layout),
        "xy": _xy(frames, (frames != 0).any(-1)),
        "layout": layout_info(store.layout),
    }


def _choices(hint: Any) -> tuple | None:
    return typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None


def _accepts(name: str, value: Any) -> bool:
    try:
        AugmentConfig(**{name: value})
    except (ConfigError, TypeError, ValueError):
        return False
    return True


def augment_controls(current: AugmentConfig | None = None) -> list[dict[str, Any]]:
    """One control per AugmentConfig field: kind (number, bool, choice), default, the value in
    `current`, help, and a slider's range found by asking the config what it accepts."""
    current = current or AugmentConfig()
    hints = typing.get_type_hints(AugmentConfig)
    out = []
    for f in dataclasses.fields(AugmentConfig):
        hint, default = hints[f.name], f.default
        control: dict[str, Any] = {
            "name": f.name,
            "key": AugmentConfig.label(f.name),
            "help": f.metadata.get("help", ""),
            "default": default,
            "value": getattr(current, f.name),
        }
        if hint is bool:
            control["kind"] = "bool"
        elif _choices(hint):
            control |= {"kind": "choice", "choices": list(_choices(hint))}
        elif hint in (int, float):
            low = 0.0 if _accepts(f.name, 0.0) else 0.05
            high = 1.0 if not _accepts(f.name, 1.0 + 1e-6) else max(3.0 * float(default), 1.0)
            step = 1 if hint is int else (0.5 if high >= 10 else 0.01)
            control |= {"kind": "number", "min": low, "max": high, "step": step, "integer": hint is int}
        else:
            control["kind"] = "text"
        out.append(control)
    return out


def augment_config(values: dict[str, Any]) -> AugmentConfig:
    """The config the controls describe; ConfigError names the first bad value."""
    fields = {f.name for f in dataclasses.fields(AugmentConfig)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"unknown augmentation setting(s): {', '.join(unknown)}")
    try:
        return AugmentConfig(**values)
    except TypeError as e:
        raise ConfigError(f"augmentation settings: {e}") from None


def config_snippet(cfg: AugmentConfig) -> str:
    """The settings as a `train --config` file holds them."""
    return json.dumps({"data": {"augment": dataclasses.asdict(cfg)}}, indent=2)


def augment_clip(
    meta: CheckpointMeta, store: ClipStore, split: str, clip: int, cfg: AugmentConfig, seed: int
) -> dict[str, Any]:
    """The clip as evaluation samples it and as one training step could see it with `cfg`: the
    same ClipBatches sampling (temporal crop and speed) and the same Augmenter the training loop
    uses, on the model's canonical coordinates (KeypointFeatures.canonical). `seed` picks the draw."""
    store_split = store.split(split)
    clip = _clip_index(store, split, clip)
    layout = store.layout
    input_cfg = meta.model.input
    features = KeypointFeatures(layout, input_cfg)
    seq_len = meta.model.seq_len
    label = np.array([int(store_split.labels[clip])])
    ids = np.array([clip])

    def batch(train: bool):
        crop, speed = (cfg.crop_min, (cfg.speed_min, cfg.speed_max)) if train else (1.0, (1.0, 1.0))
        return ClipBatches(store_split, ids, label, seq_len, train, crop_min=crop, speed=speed, seed=seed).collate([0])

    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        original = batch(False)
        coords, present = features.canonical(original.keypoints, original.aspect)
        moved = batch(True)
        aug_coords, aug_present = features.canonical(moved.keypoints, moved.aspect)
        aug_coords, aug_present = Augmenter(cfg, layout, input_cfg.kind)(aug_coords, aug_present)
    return {
        "clip": clip,
        "seed": seed,
        "space": "raw image coordinates" if input_cfg.kind == "raw" else "body frame (shoulder widths)",
        "original": _xy(coords[0], present[0]),
        "augmented": _xy(aug_coords[0], aug_present[0]),
        "snippet": config_snippet(cfg),
        "layout": layout_info(layout),
    }
