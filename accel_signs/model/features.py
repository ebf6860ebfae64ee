"""The model's input, computed from raw keypoints: body frame, hand shapes, handedness,
motion and presence.

Batched tensor ops with no learned parameters, run inside the model, so that training,
evaluation, `predict` and the ONNX export all compute exactly the same input. Why these
features (measured on real MediaPipe recordings, see docs/real_data.md):

- Raw image positions do not carry across recording set-ups (camera distance, framing,
  aspect ratio), so positions are taken in a *body frame*: centred on the shoulders'
  midpoint, in units of the shoulder width, after undoing the frame's aspect stretch.
- Hand shape carries most signs but is a tiny signal in image coordinates (a hand is ~0.1
  of the frame), so each hand also gets its *local shape*: its points minus the wrist, in
  units of its palm size (wrist -> middle-finger MCP).
- Signers switch their signing hand, so *handedness* is canonicalised: the dominant hand
  (the one seen most and held highest) goes to the right-hand slot, mirroring the clip.
- Undetected points (all zeros in the data) stay zero in every feature, next to a
  *presence* value per part and frame; they never turn into fake coordinates.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from accel_signs.config import InputConfig
from accel_signs.core.errors import ConfigError
from accel_signs.data.layout import HandRole, KeypointLayout, point_slice
from accel_signs.data.sampling import mirror_centred

# When the shoulders look implausibly close for the hands' size (a close-up where the pose
# model mistakes other points for shoulders), the body scale is at least this many palm
# sizes: on the NSL recordings the palm is 0.21-0.37 shoulder widths (5th-75th percentile).
PALMS_PER_BODY = 2.5
# The dominance of a hand is its mean over frames of presence x (height + this), where
# height is in shoulder widths above the shoulder line: a resting hand hangs ~1.3-1.6 below.
DOMINANCE_OFFSET = 2.0
# MediaPipe face-mesh indices of the lips, eyes and nose that the Kaggle GISLR competition's
# 1st place (Hoyeol Sohn, 2023) fed instead of the whole face (model.input.face
# "lips_eyes_nose"): its notebook's LIP (FACEMESH_LIPS: outer and inner lip line, 40 points),
# REYE and LEYE (FACEMESH_RIGHT_EYE / LEFT_EYE: each eye's lid contour, 16 points, no brows, no
# iris) and NOSE (the tip 1, below it 2, the nostrils' outer corners 98 and 327).
FACE_LIPS = (
    61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 146, 91, 181, 84, 17, 314, 405, 321, 375,
    78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308,
)  # fmt: skip
FACE_RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)
FACE_LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)
FACE_NOSE = (1, 2, 98, 327)
LIPS_EYES_NOSE = frozenset(FACE_LIPS + FACE_RIGHT_EYE + FACE_LEFT_EYE + FACE_NOSE)


def feature_points(layout: KeypointLayout, face: str) -> dict[str, tuple[int, ...]]:
    """The points of each part that the features read, with `face` ("all", "lips_eyes_nose",
    "none") applied to the layout's MediaPipe face-mesh points (source "face"); a part left
    with no points is dropped (no token). Other points are kept as they are.

    Not "all" on a layout with no face-mesh point (pose33, a layout file without sources) raises
    ConfigError: the option could change nothing there, and a run that says it fed lips and
    eyes must have."""
    if face == "all":
        return dict(layout.parts)
    mesh = {i: s[1] for i, s in enumerate(layout.sources) if s is not None and s[0] == "face"}
    if not mesh:
        raise ConfigError(
            f"model.input.face {face!r} picks MediaPipe face-mesh points, and layout {layout.name} has none "
            '(no point with "source": "face"): leave it "all"'
        )
    keep = {i for i, index in mesh.items() if face == "lips_eyes_nose" and index in LIPS_EYES_NOSE}
    if face == "lips_eyes_nose" and not keep:
        raise ConfigError(
            f"model.input.face 'lips_eyes_nose': layout {layout.name} has none of the lip, eye and nose points "
            "of the face mesh"
        )
    parts = {name: tuple(i for i in points if i not in mesh or i in keep) for name, points in layout.parts.items()}
    return {name: points for name, points in parts.items() if points}


Augment = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def masked_median(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Median over the last axis of `values` where `mask`: (B, T) -> (B,); 0 where no entry counts.

    The mean of the two middle values for an even count (not torch.median's lower one), so
    that the median of -v is -median(v): mirrored clips get mirrored body frames."""
    ranked = torch.where(mask, values, torch.full_like(values, 1e9)).sort(dim=-1).values
    count = mask.sum(-1, keepdim=True)
    lower, upper = ((count - 1).clamp(min=0) // 2), count // 2
    middle = (ranked.gather(-1, lower) + ranked.gather(-1, upper.clamp(max=values.shape[-1] - 1))) / 2
    return torch.where(count > 0, middle, torch.zeros_like(middle))[..., 0]


class KeypointFeatures(nn.Module):
    """Raw keypoints (B, T, P, C) (+ each clip's width/height) -> per-frame features (B, T, F).

    `part_sizes()` gives the width of each part's slice of F, in the layout's part order: the
    model projects each slice to one token. `cfg.face` chooses the face-mesh points a part holds
    (feature_points; "none" drops the face's part). The reference points (shoulders, each hand's
    wrist and palm) are the layout's roles; a layout without shoulders is centred on its points'
    mean, one without hands has no handedness and no hand shapes. With `cfg.kind == "raw"` the features are the raw
    keypoints themselves (the original project's input; checkpoints from before the features
    existed load this way).
    """

    def __init__(self, layout: KeypointLayout, cfg: InputConfig):
        super().__init__()
        self.cfg = cfg
        self.channels = len(layout.channels)
        parts = feature_points(layout, cfg.face)  # the layout's parts, face points chosen by cfg.face
        self.part_names = tuple(parts)
        self.part_lengths = [len(parts[name]) for name in self.part_names]
        self.hands = layout.hands or ()
        self.hand_of_part = {h.part: h for h in self.hands if h.part is not None}
        self.shoulders = layout.shoulders
        # Buffers, not Python lists: they follow the model to its device (no per-step copies).
        self.register_buffer("mirror_index", torch.tensor(layout.mirror, dtype=torch.long), persistent=False)
        for g, name in enumerate(self.part_names):
            self.register_buffer(f"part_{g}", torch.tensor(parts[name], dtype=torch.long), persistent=False)
        # A part whose points are consecutive is read as a slice: a view, where an index copies
        # the whole (B, T, n, 3) block (the built-in layouts' parts all are, with every face point).
        self.part_slices = [point_slice(parts[name]) for name in self.part_names]
        order = [i for name in self.part_names for i in parts[name]]
        self.parts_in_order = order == list(range(len(layout.names)))  # raw input: a plain reshape

    def part_sizes(self) -> list[int]:
        """Feature count of each part, in the layout's part order: its values (2 per point; a
        hand's local shape 3 per point + its wrist's 2) times 1 + 2 (motion) + 1 (two-frame
        motion), + 1 (presence)."""
        if self.cfg.kind == "raw":
            return [n * self.channels for n in self.part_lengths]
        sizes = []
        for name, n in zip(self.part_names, self.part_lengths):
            base = 3 * n + 2 if (self.cfg.hand_shape and name in self.hand_of_part) else 2 * n
            blocks = 1 + (2 if self.cfg.motion else 0) + (1 if self.cfg.two_frame_motion else 0)
            sizes.append(base * blocks + (1 if self.cfg.presence else 0))
        return sizes

    def forward(
        self, x: torch.Tensor, aspect: torch.Tensor | None = None, augment: Augment | None = None
    ) -> torch.Tensor:
        """x (B, T, P, C) raw keypoints, aspect (B,) width / height of each clip's video (None:
        square); `augment` (training) transforms the canonical coordinates -> (B, T, F)."""
        coords, present = self.canonical(x, aspect)
        if augment is not None:
            coords, present = augment(coords, present)
        return self.encode(coords, present)

    def canonical(self, x: torch.Tensor, aspect: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw keypoints -> (coordinates (B, T, P, 3), presence (B, T, P) bool) in the body frame,
        dominant hand in the right-hand slot. Raw input: (x itself (B, T, P, C), presence)."""
        present = (x != 0).any(-1)  # (B, T, P): MediaPipe writes undetected points as zeros
        if self.cfg.kind == "raw":
            return x, present
        xyz = x[..., :3]
        if aspect is not None:
            # x (and MediaPipe's z, which uses x's scale) are fractions of the width, y of the
            # height: in units of the height the shapes are undistorted.
            stretch = torch.stack([aspect, torch.ones_like(aspect), aspect], dim=-1)  # (B, 3)
            xyz = xyz * stretch[:, None, None, :]
        if self.cfg.body_frame:
            centre, scale = self._body_frame(xyz, present)
        else:  # image frame: centred on the picture, in units of its height
            half_width = 0.5 * aspect if aspect is not None else torch.full(x.shape[:1], 0.5, device=x.device)
            centre = torch.stack([half_width, torch.full_like(half_width, 0.5)], dim=-1)
            scale = torch.ones_like(half_width)
        # Depth is scaled, not centred (each part has its own origin): its centre is 0, and z - 0 is z
        # exactly, so one subtraction and one division serve all three axes.
        centre = F.pad(centre, (0, 1))  # (B, 2) -> (B, 3)
        coords = torch.where(present[..., None], (xyz - centre[:, None, None, :]) / scale[:, None, None, None], 0.0)
        if self.cfg.handedness:
            coords, present = self._dominant_hand_right(coords, present)
        return coords, present

    def _body_frame(self, xyz: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per clip: centre (B, 2) and scale (B,) from the shoulders, robust over frames.

        Shoulders seen in some frames: the median midpoint and width (a clip's body barely
        moves, so this keeps leaning and stepping as information). The width is at least
        PALMS_PER_BODY palm sizes. No shoulders: the mean of all detected points and, as the
        scale, the palm rule or else the points' spread."""
        left, right = self.shoulders if self.shoulders is not None else (0, 0)
        both = present[:, :, left] & present[:, :, right]  # (B, T)
        if self.shoulders is None:
            both = torch.zeros_like(both)
        mid = (xyz[:, :, left, :2] + xyz[:, :, right, :2]) / 2  # (B, T, 2)
        width = (xyz[:, :, left, :2] - xyz[:, :, right, :2]).norm(dim=-1)  # (B, T)
        has_shoulders = both.any(1)  # (B,)
        shoulder_centre = torch.stack([masked_median(mid[..., 0], both), masked_median(mid[..., 1], both)], dim=-1)
        palms = [self._palm_size(xyz, present, hand) for hand in self.hands if hand.palm is not None]
        palm = torch.stack(palms).amax(0) if palms else torch.zeros_like(both[:, 0], dtype=xyz.dtype)  # (B,)
        weight = present.flatten(1).float()  # (B, T*P)
        count = weight.sum(1).clamp(min=1)
        points = xyz[..., :2].flatten(1, 2)  # (B, T, P, 2) -> (B, T*P, 2)
        mean = (points * weight[..., None]).sum(1) / count[:, None]  # (B, 2)
        spread = ((((points - mean[:, None]) ** 2).sum(-1) * weight).sum(1) / count).sqrt()  # (B,)
        scale = torch.where(has_shoulders, masked_median(width, both), torch.zeros_like(spread))
        scale = torch.maximum(scale, PALMS_PER_BODY * palm)
        scale = torch.where(scale > 0, scale, torch.where(spread > 0, spread, torch.ones_like(spread)))
        centre = torch.where(has_shoulders[:, None], shoulder_centre, mean)
        return centre, scale

    @staticmethod
    def _palm_size(xyz: torch.Tensor, present: torch.Tensor, hand: HandRole) -> torch.Tensor:
        """(B,) median wrist -> middle-finger MCP distance over the frames where both are seen; 0 if never."""
        seen = present[:, :, hand.wrist] & present[:, :, hand.palm]
        return masked_median((xyz[:, :, hand.palm] - xyz[:, :, hand.wrist]).norm(dim=-1), seen)

    def dominance(self, coords: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """(B, 2) activity of the right- and left-hand slots: mean over frames of presence x
        (height above the shoulder line + DOMINANCE_OFFSET), never negative. A signing hand is
        seen and raised; a resting one hangs low or is not detected at all."""
        scores = []
        for hand in self.hands:
            height = -coords[:, :, hand.wrist, 1]  # image y points down
            scores.append((present[:, :, hand.wrist] * (height + DOMINANCE_OFFSET).clamp(min=0)).mean(1))
        return torch.stack(scores, dim=-1)

    def mirror(self, coords: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-right mirror in a centred frame: every point takes its partner's place and x -> -x."""
        return mirror_centred(coords, present, self.mirror_index)

    def _dominant_hand_right(self, coords: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.hands:  # a layout without hands has no handedness to canonicalise
            return coords, present
        score = self.dominance(coords, present)  # (B, 2)
        flip = score[:, 1] > score[:, 0]  # (B,) ties keep the clip as recorded
        return mirror_centred(coords, present, self.mirror_index, flip)

    def encode(self, coords: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Canonical coordinates and presence -> (B, T, F): per part, positions (hands: local
        shape and wrist), their first and second differences, their 2-frame difference
        (two_frame_motion), and the share of points seen."""
        if self.cfg.kind == "raw":
            if self.parts_in_order:
                return coords.flatten(2)  # (B, T, P, C) -> (B, T, P*C)
            return torch.cat(
                [coords[:, :, getattr(self, f"part_{g}")].flatten(2) for g in range(len(self.part_names))], dim=-1
            )  # (B, T, P, C) -> (B, T, P*C), part by part
        values, masks, presence = [], [], []
        for g, name in enumerate(self.part_names):
            index = self.part_slices[g] or getattr(self, f"part_{g}")
            pts, seen = coords[:, :, index], present[:, :, index]  # (B, T, n, 3), (B, T, n)
            hand = self.hand_of_part.get(name) if self.cfg.hand_shape else None
            if hand is not None and hand.palm is None:
                hand = None
            if hand is not None:
                wrist, wrist_seen = coords[:, :, hand.wrist], present[:, :, hand.wrist]  # (B, T, 3), (B, T)
                palm = self._palm_size(coords, present, hand)
                palm = torch.where(palm > 0, palm, torch.ones_like(palm))
                valid = seen & wrist_seen[..., None]  # (B, T, n)
                local = torch.where(valid[..., None], (pts - wrist[:, :, None]) / palm[:, None, None, None], 0.0)
                values.append(torch.cat([local.flatten(2), wrist[..., :2] * wrist_seen[..., None]], dim=-1))
                masks.append(
                    torch.cat(
                        [valid[..., None].expand(-1, -1, -1, 3).flatten(2), wrist_seen[..., None].expand(-1, -1, 2)],
                        dim=-1,
                    )
                )  # (B, T, 3n+2) values and their mask
            else:
                values.append(pts[..., :2].flatten(2))  # (B, T, n, 2) -> (B, T, 2n)
                masks.append(seen[..., None].expand(-1, -1, -1, 2).flatten(2))
            if self.cfg.presence:
                presence.append(seen.float().mean(-1, keepdim=True))  # (B, T, 1)
        widths = [v.shape[-1] for v in values]
        columns = [[v] for v in values]  # per part, its feature blocks in order
        if self.cfg.motion or self.cfg.two_frame_motion:
            # Every part's differences at once, over its values side by side (B, T, V), then
            # split back: a few whole-width ops instead of a dozen per part.
            joined, joined_mask = torch.cat(values, dim=-1), torch.cat(masks, dim=-1)  # (B, T, V) each
            differences = []
            if self.cfg.motion:
                d1, m1 = _difference(joined, joined_mask)
                differences += [d1, _difference(d1, m1)[0]]  # x[t] - x[t-1], its own difference
            if self.cfg.two_frame_motion:
                differences.append(_difference(joined, joined_mask, lag=2)[0])  # x[t] - x[t-2]
            for column, *blocks in zip(columns, *(d.split(widths, dim=-1) for d in differences)):
                column += blocks
        for column, p in zip(columns, presence):
            column.append(p)
        # One copy into the output, part by part: [values, d1, d2, d_2, presence] of each part
        # (those that are on).
        return torch.cat([block for column in columns for block in column], dim=-1)


def _difference(values: torch.Tensor, mask: torch.Tensor, lag: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """values[t] - values[t - lag] (B, T, F) where both frames are valid, else 0 (the first
    `lag` frames: 0); and where it is valid (B, T, F)."""
    valid = mask[:, lag:] & mask[:, :-lag]
    diff = torch.where(valid, values[:, lag:] - values[:, :-lag], 0.0)
    pad = torch.zeros_like(values[:, :lag])
    return torch.cat([pad, diff], dim=1), torch.cat([torch.zeros_like(mask[:, :lag]), valid], dim=1)
