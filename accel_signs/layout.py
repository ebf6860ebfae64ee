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
class HandRole:
    """The points of one hand that its local shape is measured from."""

    part: str  # the part (token) that holds the hand's points
    wrist: int
    palm: int  # the middle-finger MCP: wrist -> palm is the hand's size


@dataclass(frozen=True)
class KeypointLayout:
    """Where each body part lives in a frame, which point mirrors which, and the points that
    normalisation needs (shoulders, each hand's wrist and palm)."""

    id: str
    channels: tuple[str, ...]
    parts: dict[str, tuple[int, int]]
    names: tuple[str, ...]
    mirror: tuple[int, ...]
    shoulders: tuple[int, int]  # the signer's left, right shoulder
    hands: tuple[HandRole, HandRole]  # the right-hand slot first: canonicalised clips sign with it


@functools.cache
def keypoint_layout() -> KeypointLayout:
    """The packaged layout (`assets/keypoints_184.json`), read once on first use."""
    raw = json.loads(resources.files(__package__).joinpath("assets/keypoints_184.json").read_text("utf-8"))
    parts = {name: (int(lo), int(hi)) for name, (lo, hi) in raw["parts"].items()}
    points = raw["points"]
    index = {p["name"]: i for i, p in enumerate(points)}
    roles = raw["roles"]
    hands = tuple(HandRole(part, index[h["wrist"]], index[h["palm"]])
                  for part, h in (("right_hand", roles["hands"]["right_hand"]), ("left_hand", roles["hands"]["left_hand"])))
    return KeypointLayout(
        id=LAYOUT_ID,
        channels=tuple(raw["channels"]),
        parts=parts,
        names=tuple(p["name"] for p in points),
        mirror=tuple(int(p["mirror"]) for p in points),
        shoulders=(index[roles["shoulders"][0]], index[roles["shoulders"][1]]),
        hands=hands,  # type: ignore[arg-type]
    )


@functools.cache
def karsl_glosses() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """English and Arabic glosses of the 502 KArSL signs; index = sign number - 1."""
    raw = json.loads(resources.files(__package__).joinpath("assets/karsl502_labels.json").read_text("utf-8"))
    return tuple(raw["en"]), tuple(raw["ar"])
