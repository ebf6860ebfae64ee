"""Clips held in the training device's memory (`--data-on-device`).

With the frames resident, a batch costs the host only its clip positions (a few KiB): TSN
sampling, the frame gather and augmentation run as a handful of tensor ops on the device,
asynchronously with the model step. Shuffling and sharding stay with the prepared
DataLoader (the same sampler and per-rank batches as the memory-mapped path).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from accel_signs.data.layout import NUM_CHANNELS
from accel_signs.data.store import StoreSplit

# `auto` puts the clips on a GPU when they take at most this share of its free memory: the
# rest is for the model, activations of large batches and the allocator's slack.
_GPU_SHARE = 0.5
_CHUNK_BYTES = 64 << 20  # host staging per copy while loading


@dataclass(frozen=True)
class ResidentClips:
    """The frames of some clips of a split, back to back on `device`, in the store's dtype."""

    frames: torch.Tensor  # (loaded frames, P, C)
    offsets: torch.Tensor  # (clips in the split,) int64: first row in `frames`, -1 if not loaded
    lengths: torch.Tensor  # (clips in the split,) int64

    @classmethod
    def load(cls, split: StoreSplit, ids: np.ndarray, device: torch.device) -> ResidentClips:
        """Copy clips `ids` of `split` to `device`, a chunk at a time (host memory stays small)."""
        ids = np.unique(ids)
        ids = ids[np.argsort(split.offsets[ids], kind="stable")]  # file order: each chunk is one forward read
        src_off, lengths = split.offsets[ids], split.lengths[ids]
        src_end = src_off + lengths
        dst_off = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        frames = torch.empty(
            (int(lengths.sum()), split.num_points, NUM_CHANNELS), dtype=_torch_dtype(split.dtype), device=device
        )
        span_frames = max(1, _CHUNK_BYTES // (split.num_points * NUM_CHANNELS * np.dtype(split.dtype).itemsize))
        start = 0
        while start < len(ids):
            # The clips that end within one chunk of the first (at least one clip), read with one
            # plain file read: slicing the memory map would leave the whole store mapped into
            # this process. Frames of unselected clips inside the span are read and dropped.
            first = src_off[start]
            end = max(start + 1, int(np.searchsorted(src_end, first + span_frames, side="right")))
            span = split.read_frames(int(first), int(src_end[end - 1] - first))
            rows = np.concatenate([np.arange(o, o + n) for o, n in zip(src_off[start:end] - first, lengths[start:end])])
            frames[dst_off[start] : dst_off[start] + len(rows)].copy_(torch.from_numpy(span[rows]))
            start = end
        offsets = np.full(len(split), -1, dtype=np.int64)
        offsets[ids] = dst_off
        return cls(frames, torch.from_numpy(offsets).to(device), torch.from_numpy(split.lengths.copy()).to(device))


def resident_bytes(split: StoreSplit, ids: np.ndarray) -> int:
    """Device memory the frames of clips `ids` take when resident."""
    frames = int(split.lengths[np.unique(ids)].sum())
    return frames * split.num_points * NUM_CHANNELS * np.dtype(split.dtype).itemsize


def keep_on_device(mode: str, need: int, device: torch.device, processes: int) -> tuple[bool, str]:
    """Whether to hold the clips on `device`, and why: `mode` is auto, yes or no; `need` the bytes
    they take; `processes` how many copies a host may hold (each process holds its own).

    auto: on a GPU when they fit in half its free memory; on a CPU never (the memory-mapped
    store already sits in the page cache, and every process would hold its own copy).
    yes: wherever they fit; when they do not, (False, what is missing): the caller raises once
    all processes know, so none waits for one that stopped.
    """
    if mode == "no":
        return False, "--data-on-device no"
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        where = f"{device} has {free / 2**30:.2f} GiB free"
    else:
        free = _available_host_bytes() // max(1, processes)
        where = f"the host has {free / 2**30:.2f} GiB available per process"
    if mode == "auto":
        if device.type != "cuda":
            return False, "--data-on-device auto: on a CPU (the page-cached store is as fast)"
        return need <= _GPU_SHARE * free, f"--data-on-device auto: the clips take {need / 2**30:.2f} GiB and {where}"
    if need > free:
        return False, f"--data-on-device yes: the clips take {need / 2**30:.2f} GiB but {where}"
    return True, f"--data-on-device yes: the clips take {need / 2**30:.2f} GiB and {where}"


def _available_host_bytes() -> int:
    """MemAvailable (free memory plus reclaimable page cache) where Linux reports it."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on every platform: do not refuse for that
        return 1 << 62


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype
