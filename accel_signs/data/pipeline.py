"""From a store to batches: choosing signs and signers, the train/val split, and loaders
that gather whole batches from the memory map or from clips resident on the device."""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from accel_signs.core.errors import DatasetError
from accel_signs.data.resident import ResidentClips
from accel_signs.data.sampling import gather_frames, tsn_positions
from accel_signs.data.store import ClassInfo, ClipStore, StoreSplit


@dataclass(frozen=True)
class ClassMap:
    """The model's classes: a subset of a store's, in order, with ids 0..K-1."""

    classes: tuple[ClassInfo, ...]
    store_to_model: np.ndarray  # store label -> model class id, -1 where not selected

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def class_map(store: ClipStore, signs: Sequence[int] | None) -> ClassMap:
    """Select the store's classes by 1-based sign number (all when `signs` is None)."""
    by_sign = {c.sign: i for i, c in enumerate(store.classes)}
    if signs is None:
        chosen = list(range(len(store.classes)))
    else:
        missing = [s for s in signs if s not in by_sign]
        if missing:
            have = sorted(by_sign)
            raise DatasetError(
                f"--signs: sign(s) {format_ranges(missing)} are not in store {store.path} (it has signs {format_ranges(have)})"
            )
        chosen = [by_sign[s] for s in signs]
    lookup = np.full(len(store.classes), -1, dtype=np.int64)
    lookup[chosen] = np.arange(len(chosen))
    return ClassMap(tuple(store.classes[i] for i in chosen), lookup)


def signer_indices(store: ClipStore, signers: Sequence[str] | None, option: str = "--signers") -> np.ndarray:
    """Store signer indices for signer ids (all when `signers` is None); unknown ids are an error
    naming `option`."""
    if signers is None:
        return np.arange(len(store.signers))
    unknown = [s for s in signers if s not in store.signers]
    if unknown:
        raise DatasetError(
            f"{option}: unknown signer(s) {', '.join(unknown)} in store {store.path} "
            f"(it has {', '.join(store.signers)})"
        )
    return np.array([store.signers.index(s) for s in signers], dtype=np.int64)


def select_clips(split: StoreSplit, cmap: ClassMap, signers: np.ndarray) -> np.ndarray:
    """Ids of the split's clips whose class and signer are selected."""
    keep = (cmap.store_to_model[split.labels] >= 0) & np.isin(split.signer_index, signers)
    ids = np.flatnonzero(keep)
    if len(ids) == 0:
        raise DatasetError(
            f"split {split.name!r} of {split.directory.parent} has no clips for the chosen signs and signers"
        )
    return ids


def stratified_split(
    ids: np.ndarray, split: StoreSplit, val_fraction: float, seed: int, rule: str = "sign"
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of clip ids into (train, val).

    `rule` "sign": val takes round(val_fraction x clips) overall, each sign floor or ceil of its
    share (largest remainder; equal remainders in seeded order), at least one clip of each sign
    stays in train, and within a sign the clips come from the signers furthest below their share.
    "group" (runs written before the rule existed): each (sign, signer) group gives
    round(val_fraction x its size) clips, which is 0 for groups of 1 or 2."""
    if rule == "group":
        return _group_split(ids, split, val_fraction, seed)
    rng = np.random.default_rng([seed, 0x5EED, 1])
    labels, signers = split.labels[ids], split.signer_index[ids]
    _, sign_of, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quota = val_fraction * counts
    n_val = np.floor(quota).astype(np.int64)  # < counts, since val_fraction < 1
    most = np.minimum(np.ceil(quota).astype(np.int64), counts - 1)  # floor or ceil, one left to train
    target = min(int(round(val_fraction * len(ids))), int(most.sum()))
    # Largest remainder first; a seeded random draw orders equal remainders.
    order = np.lexsort((rng.random(len(counts)), -(quota - n_val)))
    order = order[n_val[order] < most[order]]
    n_val[order[: max(0, target - int(n_val.sum()))]] += 1
    share = val_fraction * np.bincount(signers)  # what each signer would give at the fraction
    taken = np.zeros_like(share)
    by_sign = np.split(np.argsort(sign_of, kind="stable"), np.cumsum(counts)[:-1])
    val = []
    for s in rng.permutation(len(counts)):
        members = rng.permutation(by_sign[s])
        for _ in range(n_val[s]):
            j = int(np.argmax(share[signers[members]] - taken[signers[members]]))  # first of equals: random
            taken[signers[members[j]]] += 1
            val.append(members[j])
            members = np.delete(members, j)
    mask = np.zeros(len(ids), dtype=bool)
    mask[np.asarray(val, dtype=np.int64)] = True
    train_ids, val_ids = np.sort(ids[~mask]), np.sort(ids[mask])
    if len(val_ids) == 0:
        raise DatasetError(
            f"--val-fraction {val_fraction} leaves no clip for validation: {len(ids)} clips of {len(counts)} "
            "signs, and each sign keeps one clip for training; raise it or add data"
        )
    return train_ids, val_ids


def _group_split(ids: np.ndarray, split: StoreSplit, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The split before the "sign" rule: round(val_fraction x size) of each (sign, signer) group,
    at least one left to train (kept as it was, so that runs written then resume on their split)."""
    rng = np.random.default_rng([seed, 0x5EED])
    groups = split.labels[ids] * (int(split.signer_index.max()) + 1) + split.signer_index[ids]
    train, val = [], []
    for g in np.unique(groups):
        members = rng.permutation(ids[groups == g])
        n_val = min(int(round(val_fraction * len(members))), len(members) - 1)
        val.append(members[:n_val])
        train.append(members[n_val:])
    train_ids, val_ids = np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
    if len(val_ids) == 0:
        raise DatasetError(
            f"--val-fraction {val_fraction} leaves no clip for validation: each (sign, signer) "
            "has too few clips; raise it or add data"
        )
    return train_ids, val_ids


def split_summary(train_ids: np.ndarray, val_ids: np.ndarray, split: StoreSplit, val_fraction: float) -> str:
    """What a train/val split did, in one line: the share achieved against the one asked, and the
    range of validation clips per sign and per signer."""
    n = len(train_ids) + len(val_ids)
    both = np.concatenate([train_ids, val_ids])
    in_val = np.r_[np.zeros(len(train_ids), dtype=bool), np.ones(len(val_ids), dtype=bool)]
    parts = [f"validation: {len(val_ids)} of {n} clips ({len(val_ids) / n:.3f}; --val-fraction {val_fraction})"]
    for name, keys in (("sign", split.labels[both]), ("signer", split.signer_index[both])):
        _, which, counts = np.unique(keys, return_inverse=True, return_counts=True)
        per = np.bincount(which, weights=in_val, minlength=len(counts)).astype(np.int64)
        ratio = per / counts
        parts.append(
            f"{per.min()}-{per.max()} per {name} ({ratio.min():.2f}-{ratio.max():.2f} of its clips; "
            f"{int((per == 0).sum())} of {len(counts)} {name}s with none)"
        )
    return ", ".join(parts)


class Batch(NamedTuple):
    """One batch of sampled clips (a NamedTuple: Accelerate moves it to the device as a whole)."""

    keypoints: torch.Tensor  # (B, seq_len, P, C) float32
    aspect: torch.Tensor  # (B,) float32: width / height of each clip's video (1 where unknown)
    labels: torch.Tensor  # (B,) int64 model class ids
    clips: torch.Tensor  # (B,) int64 clip ids in the split


class ClipBatches(Dataset):
    """Items are clip positions; `collate` turns a list of them into a sampled batch, so one
    vectorised gather serves a whole batch instead of Python work per clip.

    The frames come from the memory-mapped split (gathered on the host, in DataLoader workers
    if any) or from clips resident on the device (gathered there; then `ids` and `targets` live
    on the device too and the host only hands over the batch positions)."""

    def __init__(
        self,
        split: StoreSplit,
        ids: np.ndarray,
        targets: np.ndarray,
        seq_len: int,
        random: bool,
        resident: ResidentClips | None = None,
        crop_min: float = 1.0,
        speed: tuple[float, float] = (1.0, 1.0),
        seed: int = 0,
    ):
        self.split, self.resident, self.seed = split, resident, seed
        self.crop_min, self.speed = crop_min, speed
        if resident is not None:
            self.offsets, self.lengths = resident.offsets, resident.lengths
        else:
            self.offsets, self.lengths = torch.from_numpy(split.offsets.copy()), torch.from_numpy(split.lengths.copy())
        self.device = self.offsets.device
        self.ids = torch.as_tensor(ids, dtype=torch.long).to(self.device)
        self.targets = torch.as_tensor(targets, dtype=torch.long).to(self.device)
        self.aspects = torch.from_numpy(split.aspects).to(self.device)
        self.seq_len, self.random = seq_len, random

    @property
    def frames(self) -> np.ndarray | torch.Tensor:
        # Looked up when needed: a worker process maps the split itself rather than receiving a copy.
        return self.resident.frames if self.resident is not None else self.split.frames

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> int:
        return i

    def __getitems__(self, items: list[int]) -> list[int]:  # the whole batch at once, no call per clip
        return items

    def collate(self, items: list[int]) -> Batch:
        """The clips at positions `items` of this dataset, sampled to seq_len frames."""
        pos = torch.as_tensor(items, dtype=torch.long)
        if self.device.type == "cuda":  # a pinned copy does not wait for the device to catch up
            pos = pos.pin_memory()
        pos = pos.to(self.device, non_blocking=True)
        rows = self.ids[pos]
        lengths, offsets = self.lengths[rows], self.offsets[rows]
        generator = None
        if self.random:
            # Each batch draws from a generator of its own, seeded by the run's seed and the batch's
            # clips (a pure function of them: Python hashes ints the same in every process). So the
            # draws do not depend on which worker made the batch or on what came before it, and a
            # run resumed in the middle of an epoch samples the rest of it as the stopped run would.
            generator = torch.Generator(device=self.device)
            generator.manual_seed(hash((self.seed, *items)) & 0x7FFF_FFFF_FFFF_FFFF)
        positions = tsn_positions(
            lengths, self.seq_len, self.random, generator, crop_min=self.crop_min, speed=self.speed
        )
        return Batch(
            gather_frames(self.frames, offsets, lengths, positions), self.aspects[rows], self.targets[pos], rows
        )


def make_loader(
    split: StoreSplit,
    ids: np.ndarray,
    cmap: ClassMap,
    *,
    seq_len: int,
    batch_size: int,
    train: bool,
    num_workers: int,
    pin_memory: bool,
    resident: ResidentClips | None = None,
    crop_min: float = 1.0,
    speed: tuple[float, float] = (1.0, 1.0),
    seed: int = 0,
) -> DataLoader:
    """A DataLoader of `Batch`es over clips `ids` of `split`, read from the memory map or from
    `resident` (clips of the split held on a device); training shuffles and samples randomly
    (from a random window of at least `crop_min` of each clip, with its speed warped within
    `speed`; the draws seeded by `seed` and each batch's clips), evaluation keeps order and takes
    bin centres."""
    data = ClipBatches(
        split,
        ids,
        cmap.store_to_model[split.labels[ids]],
        seq_len,
        random=train,
        resident=resident,
        crop_min=crop_min if train else 1.0,
        speed=speed if train else (1.0, 1.0),
        seed=seed,
    )
    if resident is not None:  # device tensors: no worker processes, nothing to pin
        num_workers, pin_memory = 0, False
    return DataLoader(
        data,
        batch_size=batch_size,
        shuffle=train,
        # The seed of the loader's worker processes is drawn from a generator of its own, not from
        # the global RNG: a loader whose workers start later (a resumed run) leaves augmentation's
        # and dropout's draws where an uninterrupted run has them.
        generator=torch.Generator().manual_seed(seed),
        drop_last=False,
        collate_fn=data.collate,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        # Workers forked from the training process itself can hang in fork(): twice in 23 2-rank
        # runs with one worker each on Python 3.11.7, a validation worker waited forever in
        # PyOS_AfterFork_Child for the interpreter's HEAD_LOCK, which another of the parent's
        # threads held when it forked (CPython gh-112275, fixed in 3.12), and the other rank waited
        # in a collective. A fork server forks them from a process of one thread instead. The
        # split pickles without its memory map.
        multiprocessing_context=_worker_context() if num_workers > 0 else None,
        worker_init_fn=_ignore_stop_signals if num_workers > 0 else None,
    )


def _ignore_stop_signals(worker_id: int) -> None:
    """A loader worker ignores SIGTERM and SIGUSR1: they are the training process's to handle
    (it saves its state at the next step, training/stop.py). Some senders signal the whole
    process tree, workers included: SLURM's `--signal` and `scancel --signal` every process of
    the job step, Accelerate 1.16's single-process launcher its child's descendants. A worker
    that died of it would fail the step before the state is saved. The workers still end with
    their training process (PyTorch's loader shuts them down, or they see their parent gone)."""
    for name in ("SIGTERM", "SIGUSR1"):  # Windows has no SIGUSR1
        if (sig := getattr(signal, name, None)) is not None:
            signal.signal(sig, signal.SIG_IGN)


def _worker_context() -> str | None:
    """ "forkserver" where the platform has it (Linux, macOS); else the platform's default."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else None


def format_ranges(values: Sequence[int]) -> str:
    """[1, 2, 3, 7] -> '1-3,7'."""
    values = sorted(values)
    out, start = [], None
    for i, v in enumerate(values):
        start = v if start is None else start
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(f"{start}-{v}" if v != start else f"{v}")
            start = None
    return ",".join(out)
