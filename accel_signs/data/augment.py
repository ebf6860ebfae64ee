"""Train-time augmentation of whole batches, as tensor operations on the batch's device.

With the normalized input it acts on the model's canonical coordinates (body frame,
dominant hand in the right-hand slot; see features.py), between canonicalisation and the
features, so a rotation of a hand's shape is a rotation about its wrist in undistorted
units. With the raw input it is the original project's mirror and affine on image coordinates.
Random draws come from the global torch RNG of the batch's device (seeded by set_seed and
saved with the training state).
"""

from __future__ import annotations

import math

import torch

from accel_signs.config import AugmentConfig
from accel_signs.data.layout import KeypointLayout, point_slice
from accel_signs.data.sampling import affine, mirror, mirror_centred


def _rotation(angle: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    """(B,) angles and per-axis scales -> (B, 2, 2) matrices R(angle) @ diag(sx, sy)."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([cos * sx, -sin * sy], -1), torch.stack([sin * sx, cos * sy], -1)], -2)


class Augmenter:
    """`augment(coords, present) -> (coords, present)` for (B, T, P, 3|C) coordinates and (B, T, P)
    presence; the model calls it between canonicalisation and the features."""

    def __init__(
        self, cfg: AugmentConfig, layout: KeypointLayout, kind: str = "normalized", device: torch.device | None = None
    ):
        self.cfg, self.kind = cfg, kind
        hands = layout.hands or ()
        self.hands = [(hand, list(layout.parts[hand.part])) for hand in hands if hand.part is not None]
        self.num_parts = len(layout.parts)
        part_of_point = torch.zeros(len(layout.names), dtype=torch.long)
        for g, name in enumerate(layout.part_names):
            part_of_point[list(layout.parts[name])] = g
        # Every part may go missing for a whole clip but the one that holds the dominant hand
        # (the right-hand slot after canonicalisation): without it most signs are not there to learn.
        dominant = int(part_of_point[hands[0].wrist]) if hands else -1
        droppable = torch.tensor([g != dominant for g in range(self.num_parts)])
        self._cpu = {
            "mirror": torch.tensor(layout.mirror, dtype=torch.long),
            "part": part_of_point,
            "droppable": droppable,
            **{f"hand_{i}": torch.tensor(idx) for i, (_, idx) in enumerate(self.hands)},
        }
        self._on: dict[torch.device, dict[str, torch.Tensor]] = {}
        if device is not None:
            # Copied here, not at the first call: a first call inside a torch.compile'd forward
            # that fills the dict costs a second compilation of the whole model.
            self._index(torch.device(device))

    def _index(self, device: torch.device) -> dict[str, torch.Tensor]:
        if device not in self._on:  # once per device: a host-to-device copy every step would wait for the device
            self._on[device] = {k: v.to(device) for k, v in self._cpu.items()}
        return self._on[device]

    def __call__(self, coords: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "raw":
            return self._raw(coords), present
        cfg, b, dev = self.cfg, present.shape[0], coords.device
        index = self._index(dev)
        if cfg.mirror_p > 0:
            flip = torch.rand(b, device=dev) < cfg.mirror_p
            coords, present = mirror_centred(coords, present, index["mirror"], flip)
        if cfg.hand_p > 0:
            coords = self._hand_shapes(coords, index)
        if cfg.affine_p > 0:
            r = torch.rand(b, 5, device=dev)
            apply = (r[:, 0] < cfg.affine_p)[:, None, None, None]
            angle = (r[:, 1] * 2 - 1) * math.radians(cfg.rotate_deg)
            scale = cfg.scale_min + r[:, 2] * (cfg.scale_max - cfg.scale_min)
            shift = (r[:, 3:5] * 2 - 1) * cfg.shift  # (B, 2)
            matrix = _rotation(angle, scale, scale)
            if cfg.shear > 0:  # drawn only when on: with it off the random stream is what it was
                k = (torch.rand(b, 2, device=dev) * 2 - 1) * cfg.shear  # (B, 2): kx, ky
                one = torch.ones_like(k[:, 0])
                matrix = matrix @ torch.stack([torch.stack([one, k[:, 0]], -1), torch.stack([k[:, 1], one], -1)], -2)
            xy = torch.einsum("bij,btpj->btpi", matrix, coords[..., :2]) + shift[:, None, None]
            moved = torch.cat([xy, coords[..., 2:] * scale[:, None, None, None]], dim=-1)
            coords = torch.where(apply, moved, coords)
        if cfg.noise > 0:
            coords = coords + torch.randn_like(coords) * cfg.noise
        present = self._drop(present, index)
        return torch.where(present[..., None], coords, 0.0), present

    def _hand_shapes(self, coords: torch.Tensor, index: dict[str, torch.Tensor]) -> torch.Tensor:
        """Rotate and stretch each hand's points about its wrist, per clip and hand."""
        cfg, b, dev = self.cfg, coords.shape[0], coords.device
        # One copy, then each hand's x, y written into it: the caller's tensor stays as it was.
        out = coords.clone()
        for i, (hand, points) in enumerate(self.hands):
            points = point_slice(points) or index[f"hand_{i}"]
            r = torch.rand(b, 4, device=dev)
            angle = (r[:, 1] * 2 - 1) * math.radians(cfg.hand_rotate_deg)
            sx, sy = (cfg.hand_scale_min + r[:, 2:4] * (cfg.hand_scale_max - cfg.hand_scale_min)).unbind(-1)
            wrist = coords[:, :, hand.wrist, None, :2]  # (B, T, 1, 2)
            hand_xy = coords[:, :, points, :2]  # (B, T, n, 2)
            xy = torch.einsum("bij,btpj->btpi", _rotation(angle, sx, sy), hand_xy - wrist) + wrist
            apply = (r[:, 0] < cfg.hand_p)[:, None, None, None]
            out[:, :, points, :2] = torch.where(apply, xy, hand_xy)
        return out

    def _drop(self, present: torch.Tensor, index: dict[str, torch.Tensor]) -> torch.Tensor:
        """Parts missing for a whole clip or some frames, one masked span of frames, and a share of
        the points masked for the whole clip."""
        cfg, (b, t, _), dev = self.cfg, present.shape, present.device
        keep = torch.ones(b, t, self.num_parts, dtype=torch.bool, device=dev)  # (B, T, G)
        if cfg.part_drop_p > 0:
            gone = (torch.rand(b, 1, self.num_parts, device=dev) < cfg.part_drop_p) & index["droppable"]
            keep = keep & ~gone
        if cfg.frame_drop_p > 0:
            keep = keep & (torch.rand(b, t, self.num_parts, device=dev) >= cfg.frame_drop_p)
        if cfg.time_mask_p > 0:
            r = torch.rand(b, 3, device=dev)
            span = (r[:, 1] * cfg.time_mask_max * t).floor()  # (B,) frames, 0 to max
            start = (r[:, 2] * (t - span + 1)).floor()
            frame = torch.arange(t, device=dev)[None, :]
            masked = (
                (r[:, :1] < cfg.time_mask_p) & (frame >= start[:, None]) & (frame < (start + span)[:, None])
            )  # (B, T)
            keep = keep & ~masked[..., None]
        present = present & keep[:, :, index["part"]]
        if cfg.point_mask_p > 0:
            # Each clip hides a share of its points up to point_mask_max, for all its frames.
            r = torch.rand(b, 2, device=dev)
            share = torch.where(r[:, 0] < cfg.point_mask_p, r[:, 1] * cfg.point_mask_max, 0.0)  # (B,)
            hidden = torch.rand(b, 1, present.shape[2], device=dev) < share[:, None, None]  # (B, 1, P)
            present = present & ~hidden
        return present

    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        """The original project's augmentation on raw image coordinates (B, T, P, C): mirror, then affine."""
        cfg, b, dev = self.cfg, x.shape[0], x.device
        if cfg.mirror_p > 0:
            flip = (torch.rand(b, device=dev) < cfg.mirror_p)[:, None, None, None]
            x = torch.where(flip, mirror(x, self._index(dev)["mirror"]), x)
        if cfg.affine_p > 0:
            r = torch.rand(b, 5, device=dev)
            apply = (r[:, 0] < cfg.affine_p)[:, None, None, None]
            angle = (r[:, 1] * 2 - 1) * math.radians(cfg.rotate_deg)
            scale = cfg.scale_min + r[:, 2] * (cfg.scale_max - cfg.scale_min)
            shift = (r[:, 3:5] * 2 - 1) * cfg.shift
            x = torch.where(apply, affine(x, angle, scale, shift), x)
        return x
