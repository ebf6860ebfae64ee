"""What a training run reads: the store, the protocol (which signs and signers train,
validate and test), the train/val split, where the clips live, and the loaders.

Everything that can reject the input runs here, before the run folder exists.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather
from torch.utils.data import DataLoader

from accel_signs.config import TrainConfig, default_cache_dir
from accel_signs.core.errors import DatasetError
from accel_signs.data.extractor import ExtractorRecord, record_from_meta
from accel_signs.data.layout import KeypointLayout
from accel_signs.data.pipeline import (
    ClassMap,
    class_map,
    make_loader,
    select_clips,
    signer_indices,
    split_summary,
    stratified_split,
)
from accel_signs.data.resident import ResidentClips, keep_on_device, resident_bytes
from accel_signs.data.store import ClipStore, StoreSplit, open_store
from accel_signs.data.synth import ensure_synthetic

logger = logging.getLogger(__name__)

# Fewer validation clips than this cannot rank epochs: an accuracy p measured on n clips has a
# standard error of sqrt(p(1-p)/n), 5 points at p=0.5 and n=100, so below 100 clips two epochs
# whose true accuracies differ by 10 points are often measured in the wrong order, ties are common
# (one clip is more than a point), and the best epoch is partly chance (docs/training.md).
MIN_VAL_CLIPS = 100


@dataclass
class RunPartition:
    """Which clips of a store split a run trains and validates on: the run's train/val
    partition, saved as its split.json (the field names are that file's keys)."""

    store: str
    split: str  # the store split the clips come from (StoreSplit.name)
    signs: list[int]
    signers: list[str]
    val_signers: list[str]
    test_signers: list[str]
    seed: int
    val_fraction: float
    val_split: str  # the rule that allocated val_fraction (DataConfig.val_split); unused with val_signers
    train_ids: list[int]
    val_ids: list[int]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> dict[str, Any]:
        """Without the clip ids: what a checkpoint records about its data."""
        return {k: v for k, v in self.to_dict().items() if not k.endswith("_ids")}


@dataclass
class TrainData:
    """The store, chosen and split, and its loaders."""

    classes: ClassMap
    train_loader: DataLoader
    val_loader: DataLoader
    partition: RunPartition
    has_test: bool  # the store has a test split to evaluate the best checkpoint on
    on_device: bool  # the clips are held in the device's memory (--data-on-device)
    layout: KeypointLayout  # the store's keypoint layout: the model is built for it
    profile: dict[str, Any] = dataclasses.field(default_factory=dict)  # data_profile of the training clips
    extractor: ExtractorRecord | None = None  # what made the store's keypoints (its meta.json), if known

    def record(self) -> dict[str, Any]:
        """What a checkpoint records about its data (its config.json's `data`)."""
        return {**self.partition.summary(), "profile": self.profile}

    @property
    def split(self) -> RunPartition:
        """The old name of `partition` (the tests' probe scripts read it)."""
        return self.partition

    @property
    def loaders(self) -> tuple[DataLoader, DataLoader]:
        return self.train_loader, self.val_loader


def default_num_workers(device: torch.device, num_processes: int) -> int:
    """Loader workers per process when --num-workers is not given: none on a CPU (the model step
    dominates and workers would take its cores); on a GPU up to 4, sharing the cores this process
    may use (its CPU affinity) among the processes of its machine (LOCAL_WORLD_SIZE, set by the
    launcher; the global number of processes would leave none at many nodes)."""
    if device.type == "cpu":
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE") or num_processes)
    return max(0, min(4, cores // max(1, local)))


def data_profile(split: StoreSplit, ids: np.ndarray, layout: KeypointLayout, max_clips: int = 200) -> dict[str, Any]:
    """What a user of the model must know about its training clips: the share of frames in which
    each part was detected (on up to `max_clips` clips, seeded), and the videos' frame sizes."""
    pick = np.sort(np.random.default_rng(0).permutation(ids)[:max_clips])
    seen = {part: 0 for part in layout.parts}
    frames = 0
    for i in pick:
        clip = split.clip(int(i))
        frames += len(clip)
        for part, points in layout.parts.items():
            seen[part] += int((clip[:, list(points)] != 0).any(axis=(1, 2)).sum())
    sizes: dict[str, int] = {}
    if split.frame_sizes is not None:
        for w, h in split.frame_sizes[ids]:
            key = f"{int(w)}x{int(h)}" if w > 0 and h > 0 else "unknown"
            sizes[key] = sizes.get(key, 0) + 1
    else:
        sizes["unknown"] = len(ids)
    return {
        "train_clips": len(ids),
        "detection": {part: round(n / max(1, frames), 4) for part, n in seen.items()},
        "detection_clips": len(pick),
        "frame_sizes": dict(sorted(sizes.items(), key=lambda kv: -kv[1])),
    }


def protocol_signers(cfg: TrainConfig, store: ClipStore) -> tuple[list[str], list[str], list[str]]:
    """(train, val, test) signers. Val/test signers, when given, are held out of training; the
    test defaults to the val signers (signer-independent throughout), else the training signers."""
    val, test = list(cfg.data.val_signers or ()), list(cfg.data.test_signers or ())
    for option, names in (("--signers", cfg.data.signers), ("--val-signers", val), ("--test-signers", test)):
        signer_indices(store, names or None, option)  # unknown signers: one error, naming the option
    train = [s for s in (cfg.data.signers or store.signers) if s not in val and s not in test]
    if not train:
        raise DatasetError(
            f"no signer left to train on: --signers {','.join(cfg.data.signers or store.signers)} minus "
            f"--val-signers/--test-signers {','.join(dict.fromkeys(val + test))}"
        )
    return train, val, test or val


def training_data(cfg: TrainConfig, accelerator: Accelerator) -> TrainData:
    """Open and validate the store, choose signs and signers, split train/val, place the clips
    and build the loaders (not yet prepared by Accelerate)."""
    path = cfg.data.path
    if path is None:
        with accelerator.main_process_first():
            path = ensure_synthetic(cfg.data.cache_dir or default_cache_dir())
    store = open_store(path)
    classes = class_map(store, cfg.data.signs)
    partition = _partition(cfg, store, classes, str(Path(path).resolve()))
    store_split = store.split(partition.split)
    train_ids, val_ids = np.asarray(partition.train_ids, dtype=np.int64), np.asarray(partition.val_ids, dtype=np.int64)
    if accelerator.is_main_process:
        _log_split(partition, store_split, train_ids, val_ids)
    if cfg.limit_batches:  # a fixed, seeded subset: whole loader passes keep Accelerate's bookkeeping intact
        rng = np.random.default_rng(cfg.seed)
        n = cfg.limit_batches * cfg.batch_size * accelerator.num_processes
        train_ids = np.sort(rng.permutation(train_ids)[:n])
        val_ids = np.sort(rng.permutation(val_ids)[: 2 * n])
        partition.train_ids, partition.val_ids = train_ids.tolist(), val_ids.tolist()
    if accelerator.is_main_process:
        _warn_small_validation(len(val_ids), classes.num_classes)
    resident = resident_clips(cfg, accelerator, store_split, np.concatenate([train_ids, val_ids]))
    workers = 0 if cfg.debug else cfg.data.num_workers
    if workers is None:
        workers = default_num_workers(accelerator.device, accelerator.num_processes)
    common = dict(
        seq_len=cfg.data.seq_len, num_workers=workers, pin_memory=accelerator.device.type == "cuda", resident=resident
    )
    aug = cfg.data.augment
    profile = data_profile(store_split, train_ids, store.layout)
    unknown = profile["frame_sizes"].get("unknown", 0)
    if unknown and accelerator.is_main_process:
        logger.warning(
            "frame size unknown for %d of %d training clips: their x/y are taken as if the video were square, so "
            "the hands of 16:9 (or any non-square) recordings come out stretched. Give the size when preparing "
            "the store: `prepare --frame-size WxH` (npz, seed-mmap) or width/height columns (a clips manifest)",
            unknown,
            len(train_ids),
        )
    return TrainData(
        classes=classes,
        on_device=resident is not None,
        train_loader=make_loader(
            store_split,
            train_ids,
            classes,
            batch_size=cfg.batch_size,
            train=True,
            crop_min=aug.crop_min,
            speed=(aug.speed_min, aug.speed_max),
            seed=cfg.seed,
            **common,
        ),
        val_loader=make_loader(store_split, val_ids, classes, batch_size=2 * cfg.batch_size, train=False, **common),
        has_test="test" in store.splits,
        layout=store.layout,
        profile=profile,
        partition=partition,
        extractor=record_from_meta(store.meta, str(Path(path) / "meta.json")),
    )


def _partition(cfg: TrainConfig, store: ClipStore, classes: ClassMap, store_path: str) -> RunPartition:
    """The train/val partition of the store's train split (whole signers held out, or a
    stratified share of each group); the clips it and the test split use are checked finite."""
    store_split = store.split("train")
    train_signers, val_signers, test_signers = protocol_signers(cfg, store)
    if val_signers:  # signer-independent validation: whole signers held out
        train_ids = select_clips(store_split, classes, signer_indices(store, train_signers))
        val_ids = select_clips(store_split, classes, signer_indices(store, val_signers))
    else:
        ids = select_clips(store_split, classes, signer_indices(store, train_signers))
        train_ids, val_ids = stratified_split(ids, store_split, cfg.data.val_fraction, cfg.seed, cfg.data.val_split)
    store_split.check_finite()
    if cfg.evaluate and "test" in store.splits:  # fail now, not after hours of training
        test = store.split("test")
        select_clips(test, classes, signer_indices(store, test_signers or train_signers))
        test.check_finite()
    return RunPartition(
        store=store_path,
        split=store_split.name,
        signs=[c.sign for c in classes.classes],
        signers=list(train_signers),
        val_signers=list(val_signers),
        test_signers=list(test_signers),
        seed=cfg.seed,
        val_fraction=cfg.data.val_fraction,
        val_split=cfg.data.val_split,
        train_ids=train_ids.tolist(),
        val_ids=val_ids.tolist(),
    )


def _log_split(partition: RunPartition, split: StoreSplit, train_ids: np.ndarray, val_ids: np.ndarray) -> None:
    """Say what the train/val split did."""
    if partition.val_signers:
        logger.info(
            "validation: signers %s, %d clips (training: %d clips)",
            ",".join(partition.val_signers),
            len(val_ids),
            len(train_ids),
        )
    else:
        logger.info(
            "%s (rule %s, seed %d)",
            split_summary(train_ids, val_ids, split, partition.val_fraction),
            partition.val_split,
            partition.seed,
        )


def _warn_small_validation(n: int, num_classes: int) -> None:
    """Warn when the n validation clips are too few to rank epochs (MIN_VAL_CLIPS)."""
    if n < MIN_VAL_CLIPS:
        # The standard error of an accuracy near 0.5 on n clips; one clip moves it by 1/n.
        logger.warning(
            "validation has only %d clips (%.1f per class for %d classes): one clip moves val_acc by %.1f points "
            "and its standard error is up to %.0f points, so epochs closer than that cannot be ranked and the best "
            "checkpoint is partly chance. Hold out more (--val-fraction, or whole signers with --val-signers) or "
            "add data; at least %d clips are needed for a standard error of 5 points",
            n,
            n / max(1, num_classes),
            num_classes,
            100 / max(1, n),
            50 / max(1, n) ** 0.5,
            MIN_VAL_CLIPS,
        )


def resident_clips(
    cfg: TrainConfig, accelerator: Accelerator, split: StoreSplit, ids: np.ndarray
) -> ResidentClips | None:
    """Clips `ids` held on the device when --data-on-device says so and they fit; None to stream them."""
    on_device, why = keep_on_device(
        cfg.data.data_on_device, resident_bytes(split, ids), accelerator.device, accelerator.num_processes
    )
    # One path for all ranks (free memory may differ between GPUs); every rank then raises or not.
    if accelerator.num_processes > 1 and not bool(
        gather(torch.tensor([int(on_device)], device=accelerator.device)).all()
    ):
        on_device, why = False, why if not on_device else f"{why}, but not on every process"
    if cfg.data.data_on_device == "yes" and not on_device:
        raise DatasetError(
            f"{why}; use --data-on-device no (stream from the memory-mapped store) or fewer signs/signers"
        )
    if not on_device:
        logger.info("%s: clips streamed from the memory-mapped store", why)
        return None
    start = time.perf_counter()
    resident = ResidentClips.load(split, ids, accelerator.device)
    logger.info(
        "%s: clips held on %s, loaded in %.1fs%s",
        why,
        accelerator.device,
        time.perf_counter() - start,
        "; --num-workers is unused (batches are made on the device)" if cfg.data.num_workers else "",
    )
    return resident
