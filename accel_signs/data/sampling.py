"""TSN sampling and train-time augmentation, for whole batches, as tensor operations that
run on whatever device the batch is on."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..config import AugmentConfig
from ..layout import KeypointLayout


def tsn_positions(lengths: torch.Tensor, seq_len: int, random: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fractional frame positions (B, seq_len) in [0, length - 1] for clips of `lengths` (B,).

    Each clip is cut into seq_len equal bins; training takes one uniformly random point in
    each bin, evaluation the bin centres (deterministic). A clip shorter than seq_len repeats
    and interpolates its frames.
    """
    lengths = lengths.to(torch.float32)
    bins = torch.arange(seq_len, device=lengths.device, dtype=torch.float32)
    if random:
        u = torch.rand((len(lengths), seq_len), device=lengths.device, generator=generator)
    else:
        u = torch.full((len(lengths), seq_len), 0.5, device=lengths.device)
    # Frame j covers the time span [j, j + 1), so time s is frame position s - 0.5.
    pos = (bins + u) * (lengths[:, None] / seq_len) - 0.5
    return pos.clamp_(min=torch.zeros_like(lengths)[:, None], max=(lengths - 1)[:, None])


def gather_frames(frames: np.ndarray | torch.Tensor, offsets: torch.Tensor, lengths: torch.Tensor,
                  positions: torch.Tensor) -> torch.Tensor:
    """Frames at fractional `positions` (B, T) of clips starting at `offsets` -> (B, T, P, C) float32.

    A point is interpolated linearly between its two neighbouring frames when it was
    detected in both; otherwise it takes the nearer frame's value, so an undetected
    point stays exactly zero and is never blended into a half-scaled ghost.
    """
    lo = positions.floor().long()
    hi = torch.minimum(lo + 1, (lengths - 1)[:, None])
    frac = (positions - lo)[..., None, None]  # (B, T, 1, 1)
    rows_lo, rows_hi = offsets[:, None] + lo, offsets[:, None] + hi  # (B, T)
    if isinstance(frames, np.ndarray):  # a memory map: read only the rows needed
        a = torch.from_numpy(np.asarray(frames[rows_lo.numpy().ravel()], dtype=np.float32))
        b = torch.from_numpy(np.asarray(frames[rows_hi.numpy().ravel()], dtype=np.float32))
        a, b = a.view(*lo.shape, *a.shape[1:]), b.view(*lo.shape, *b.shape[1:])  # (B, T, P, C)
    else:
        a, b = frames[rows_lo].float(), frames[rows_hi].float()  # (B, T, P, C)
    both = ((a != 0).any(-1) & (b != 0).any(-1))[..., None]  # (B, T, P, 1)
    nearest = torch.where(frac < 0.5, a, b)
    return torch.where(both, torch.lerp(a, b, frac), nearest)


def mirror(x: torch.Tensor, mirror_index: torch.Tensor) -> torch.Tensor:
    """Mirror clips (B, T, P, C) left-right: each point takes its mirror partner's place and
    x -> 1 - x (normalized image coordinates). Undetected points stay zero."""
    out = x[:, :, mirror_index]
    present = (out != 0).any(-1)
    return torch.cat([torch.where(present, 1.0 - out[..., 0], 0.0)[..., None], out[..., 1:]], dim=-1)


def affine(x: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate by `angle` (B,) radians and scale by `scale` (B,) about each clip's centre (the
    mean of its detected points), then shift by `shift` (B, 2): x/y of detected points only."""
    present = (x != 0).any(-1, keepdim=True)  # (B, T, P, 1)
    xy = x[..., :2]
    count = present.sum(dim=(1, 2)).clamp(min=1)  # (B, 1)
    centre = (xy * present).sum(dim=(1, 2)) / count  # (B, 2)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, 2, 2)
    c = centre[:, None, None, :]  # (B, 1, 1, 2)
    moved = torch.einsum("bij,btpj->btpi", rot, xy - c) + c + shift[:, None, None, :]
    return torch.cat([torch.where(present, moved, 0.0), x[..., 2:]], dim=-1)


class Augmenter:
    """Random mirror and affine for a batch (B, T, P, C) on its own device, drawing from the
    global torch RNG of that device (seeded by set_seed and saved with the training state)."""

    def __init__(self, cfg: AugmentConfig, layout: KeypointLayout):
        self.cfg = cfg
        self._mirror_cpu = torch.tensor(layout.mirror, dtype=torch.long)
        self._mirror: dict[torch.device, torch.Tensor] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        cfg, b, dev = self.cfg, x.shape[0], x.device
        if cfg.mirror_p > 0:
            index = self._mirror.get(dev)
            if index is None:  # once per device: a host-to-device copy every step would wait for the device
                index = self._mirror[dev] = self._mirror_cpu.to(dev)
            flip = (torch.rand(b, device=dev) < cfg.mirror_p)[:, None, None, None]
            x = torch.where(flip, mirror(x, index), x)
        if cfg.affine_p > 0:
            r = torch.rand(b, 5, device=dev)
            apply = (r[:, 0] < cfg.affine_p)[:, None, None, None]
            angle = (r[:, 1] * 2 - 1) * math.radians(cfg.rotate_deg)
            scale = cfg.scale_min + r[:, 2] * (cfg.scale_max - cfg.scale_min)
            shift = (r[:, 3:5] * 2 - 1) * cfg.shift
            x = torch.where(apply, affine(x, angle, scale, shift), x)
        return x
