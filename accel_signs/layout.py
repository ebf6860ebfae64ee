"""The 184-point keypoint layout and the KArSL-502 glosses, read from package data."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources

# Bump when the layout file changes meaning; stores and checkpoints record it.
LAYOUT_ID = "karsl-mediapipe-184-v1"
NUM_POINTS = 184
NUM_CHANNELS = 4
# Order of the model's tokens; each part is a contiguous range of points.
PARTS = ("pose", "face", "right_hand", "left_hand")


@dataclass(frozen=True)
class KeypointLayout:
    """Where each body part lives in a frame and which point mirrors which."""

    id: str
    channels: tuple[str, ...]
    parts: dict[str, tuple[int, int]]
    names: tuple[str, ...]
    mirror: tuple[int, ...]

    def part_sizes(self) -> list[int]:
        """Flattened feature count (points x channels) of each part, in PARTS order."""
        return [(self.parts[p][1] - self.parts[p][0]) * len(self.channels) for p in PARTS]


@functools.cache
def keypoint_layout() -> KeypointLayout:
    """The packaged layout (`assets/keypoints_184.json`), read once on first use."""
    raw = json.loads(resources.files(__package__).joinpath("assets/keypoints_184.json").read_text("utf-8"))
    parts = {name: (int(lo), int(hi)) for name, (lo, hi) in raw["parts"].items()}
    points = raw["points"]
    return KeypointLayout(
        id=LAYOUT_ID,
        channels=tuple(raw["channels"]),
        parts=parts,
        names=tuple(p["name"] for p in points),
        mirror=tuple(int(p["mirror"]) for p in points),
    )


@functools.cache
def karsl_glosses() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """English and Arabic glosses of the 502 KArSL signs; index = sign number - 1."""
    raw = json.loads(resources.files(__package__).joinpath("assets/karsl502_labels.json").read_text("utf-8"))
    return tuple(raw["en"]), tuple(raw["ar"])
