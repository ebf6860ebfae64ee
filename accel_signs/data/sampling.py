"""TSN sampling and the original project's image-coordinate augmentations (mirror, affine), for whole
batches, as tensor operations that run on whatever device the batch is on."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def tsn_positions(
    lengths: torch.Tensor,
    seq_len: int,
    random: bool,
    generator: torch.Generator | None = None,
    crop_min: float = 1.0,
    speed: tuple[float, float] = (1.0, 1.0),
) -> torch.Tensor:
    """Fractional frame positions (B, seq_len) in [0, length - 1] for clips of `lengths` (B,).

    Each clip is cut into seq_len equal bins; training takes one uniformly random point in
    each bin, evaluation the bin centres (deterministic). A clip shorter than seq_len repeats
    and interpolates its frames. Training may also sample only a random window of at least
    `crop_min` of the clip, and warp time within it: the playback speed changes linearly
    across the window from one random value in `speed` to another, so the motion is
    resampled at 0.5-1.5x locally (with the default augmentation) while the whole window
    still fills the seq_len frames.
    """
    lengths = lengths.to(torch.float32)
    b, dev = len(lengths), lengths.device
    bins = torch.arange(seq_len, device=dev, dtype=torch.float32)
    if random:
        u = torch.rand((b, seq_len), device=dev, generator=generator)
    else:
        u = torch.full((b, seq_len), 0.5, device=dev)
    t = (bins + u) / seq_len  # (B, seq_len) in [0, 1]: where each sample falls in the clip
    start, span = torch.zeros_like(lengths), lengths
    if random and (crop_min < 1 or speed != (1.0, 1.0)):
        r = torch.rand((b, 4), device=dev, generator=generator)
        v0, v1 = (speed[0] + r[:, :2] * (speed[1] - speed[0])).unbind(-1)  # (B,) speeds at the window's ends
        # Time elapsed at speed v(s) = v0 + (v1 - v0) s is the integral v0 s + (v1 - v0) s^2 / 2,
        # normalised to end at 1: a monotone warp of [0, 1].
        warped = v0[:, None] * t + (v1 - v0)[:, None] * t**2 / 2
        t = warped / (v0 + (v1 - v0) / 2)[:, None]
        span = lengths * (crop_min + r[:, 2] * (1 - crop_min))
        start = r[:, 3] * (lengths - span)
    # Frame j covers the time span [j, j + 1), so time s is frame position s - 0.5.
    pos = start[:, None] + t * span[:, None] - 0.5
    return pos.clamp_(min=torch.zeros_like(lengths)[:, None], max=(lengths - 1)[:, None])


def gather_frames(
    frames: np.ndarray | torch.Tensor, offsets: torch.Tensor, lengths: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
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


def mirror_centred(
    coords: torch.Tensor, present: torch.Tensor, mirror_index: torch.Tensor, flip: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror (B, T, P, 3) coordinates in a centred frame and their (B, T, P) presence left-right:
    every point takes its partner's place and x -> -x. With `flip` (B,) bool, only the clips
    where it is true; the others stay as they are. The model's handedness canonicalisation
    and the mirror augmentation both use it, so the two cannot disagree."""
    if flip is None:
        sign = torch.tensor([-1.0, 1.0, 1.0], device=coords.device, dtype=coords.dtype)
        return coords[:, :, mirror_index] * sign, present[:, :, mirror_index]
    # One gather in which each clip reads its points in its own order (its mirror partners' or
    # its own), then x times -1 or 1: the same values as mirroring every clip and choosing with
    # where(), without that second (B, T, P, 3) copy and the choice.
    b, t, p = present.shape
    own = torch.arange(p, device=coords.device)
    order = torch.where(flip[:, None], mirror_index, own)[:, None, :].expand(b, t, p)  # (B, P) -> (B, T, P)
    sign = F.pad(torch.where(flip, -1.0, 1.0).to(coords.dtype)[:, None], (0, 2), value=1.0)  # (B, 3): x, y, z
    return coords.gather(2, order[..., None].expand(b, t, p, 3)) * sign[:, None, None, :], present.gather(2, order)


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
