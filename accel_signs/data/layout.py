"""Keypoint layouts: which points a frame holds, the parts that become the model's tokens,
mirror partners, and the points that normalisation needs. Built-in layouts ship as package
data (`assets/layouts/*.json`); a layout of your own is a JSON file of the same shape.

A layout file::

    {"format": "accel_signs.layout", "version": 1, "name": "karsl184", "id": "karsl-mediapipe-184-v1",
     "description": "...", "channels": ["x", "y", "z", "visibility"],
     "parts": ["pose", "face", "right_hand", "left_hand"],          # token order
     "points": [{"name": "left_shoulder", "part": "pose", "mirror": "right_shoulder",
                 "source": "pose", "index": 11}, ...],               # source/index: optional (extract)
     "roles": {"shoulders": ["left_shoulder", "right_shoulder"],     # optional
               "hands": {"right": {"part": "right_hand", "wrist": "right_hand_wrist",
                                   "palm": "right_hand_middle_finger_mcp"}, "left": {...}}},
     "bones": [["left_shoulder", "right_shoulder"], ...]}            # optional (show)

Stores and checkpoints record the whole layout, so a custom one travels with them; the id is
what must match between a store and a checkpoint.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from accel_signs.core.errors import ConfigError

LAYOUT_FORMAT = "accel_signs.layout"
LAYOUT_VERSION = 1
CHANNELS = ("x", "y", "z", "visibility")
NUM_CHANNELS = len(CHANNELS)
SOURCES = ("pose", "face", "left_hand", "right_hand")  # MediaPipe Holistic's models, for `extract`
BUILTIN = ("karsl184", "holistic543", "pose33-hands42", "pose33")
DEFAULT = "karsl184"
# Stores and checkpoints from before layouts were files record only this id.
LEGACY_IDS = {"karsl-mediapipe-184-v1": "karsl184"}


@dataclass(frozen=True)
class HandRole:
    """The points of one hand that its local shape is measured from."""

    part: str | None  # the part (token) that holds the hand's points; None: no part of its own
    wrist: int
    palm: int | None  # the middle-finger MCP (or another point): wrist -> palm is the hand's size


@dataclass(frozen=True)
class KeypointLayout:
    """An opened, validated layout."""

    name: str
    id: str
    description: str
    names: tuple[str, ...]
    parts: dict[str, tuple[int, ...]]  # part -> its points, in token order
    mirror: tuple[int, ...]
    sources: tuple[tuple[str, int] | None, ...]  # (MediaPipe model, landmark index) per point
    shoulders: tuple[int, int] | None  # the signer's left, right shoulder
    hands: tuple[HandRole, HandRole] | None  # the right-hand slot first: canonicalised clips sign with it
    bones: tuple[tuple[int, int], ...]
    definition: dict[str, Any]  # the JSON it was read from

    channels = CHANNELS

    @property
    def num_points(self) -> int:
        return len(self.names)

    @property
    def part_names(self) -> tuple[str, ...]:
        return tuple(self.parts)

    def record(self) -> dict[str, Any]:
        """What stores and checkpoints save: the id, the sizes, and the whole definition."""
        return {
            "id": self.id,
            "name": self.name,
            "points": self.num_points,
            "channels": NUM_CHANNELS,
            "definition": self.definition,
        }

    def same_as(self, other: KeypointLayout) -> bool:
        return self.id == other.id and self.names == other.names

    def assemble(self, sources: dict[str, Any]) -> Any:
        """Frames in this layout from MediaPipe Holistic's outputs: `sources` maps "pose", "face",
        "left_hand", "right_hand" to (T, n, 4) arrays; a missing source (or landmark) leaves its
        points undetected (zeros)."""
        import numpy as np

        if any(s is None for s in self.sources):
            raise ConfigError(
                f'layout {self.name} does not say which MediaPipe landmark each point is ("source", "index")'
            )
        length = next(len(v) for v in sources.values())
        out = np.zeros((length, self.num_points, NUM_CHANNELS), dtype=np.float32)
        for source in SOURCES:
            if source not in sources:
                continue
            data = sources[source]
            mine = [(i, idx) for i, (s, idx) in enumerate(self.sources) if s == source and idx < data.shape[1]]
            if mine:
                rows, cols = zip(*mine)
                out[:, list(rows)] = data[:, list(cols)]
        return out


def _fail(where: str, problem: str) -> ConfigError:
    return ConfigError(f"layout {where}: {problem}")


class _Points:
    """Point references (a name or an index) resolved against a layout's points; errors name `where`."""

    def __init__(self, points: list[Any], where: str) -> None:
        self.where = where
        self.names: list[str] = []
        for i, p in enumerate(points):
            if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not isinstance(p.get("part"), str):
                raise _fail(where, f'point {i} must be an object with a "name" and a "part", got {p!r}')
            self.names.append(p["name"])
        self.index = {n: i for i, n in enumerate(self.names)}
        if len(self.index) != len(self.names):
            dup = next(n for n in self.names if self.names.count(n) > 1)
            raise _fail(where, f"point name {dup!r} is used twice")

    def __call__(self, ref: Any, what: str) -> int:
        if isinstance(ref, bool) or not isinstance(ref, (int, str)):
            raise _fail(self.where, f"{what} must be a point name or index, got {ref!r}")
        if isinstance(ref, int):
            if not 0 <= ref < len(self.names):
                raise _fail(self.where, f"{what} {ref} is not a point index (0..{len(self.names) - 1})")
            return ref
        if ref not in self.index:
            raise _fail(self.where, f"{what} names an unknown point {ref!r}")
        return self.index[ref]


def _check_header(raw: Any, where: str) -> None:
    if not isinstance(raw, dict) or raw.get("format") != LAYOUT_FORMAT:
        raise _fail(where, f'not a layout file (expected "format": "{LAYOUT_FORMAT}")')
    if raw.get("version") != LAYOUT_VERSION:
        raise _fail(where, f"version {raw.get('version')!r} is not supported (this accel_signs reads {LAYOUT_VERSION})")
    for key, kind in (("name", str), ("id", str), ("parts", list), ("points", list)):
        if not isinstance(raw.get(key), kind) or not raw[key]:
            raise _fail(where, f"{key!r} is missing or not a non-empty {kind.__name__}")
    channels = raw.get("channels", list(CHANNELS))
    if not isinstance(channels, list) or tuple(channels) != CHANNELS:
        raise _fail(where, f"channels must be {list(CHANNELS)}, got {raw.get('channels')!r}")


def _parse_parts(raw: dict[str, Any], where: str) -> dict[str, list[int]]:
    part_names = raw["parts"]
    if not all(isinstance(n, str) for n in part_names) or len(set(part_names)) != len(part_names):
        raise _fail(where, f"parts must be distinct names, got {part_names!r}")
    members: dict[str, list[int]] = {name: [] for name in part_names}
    for i, p in enumerate(raw["points"]):
        if p["part"] not in members:
            raise _fail(where, f"point {p['name']!r} is in part {p['part']!r}, which is not one of {part_names}")
        members[p["part"]].append(i)
    empty = [n for n, m in members.items() if not m]
    if empty:
        raise _fail(where, f"part(s) {', '.join(empty)} have no points")
    return members


def _parse_mirror(points: list[dict[str, Any]], point: _Points) -> tuple[int, ...]:
    names, index = point.names, point.index
    mirror = tuple(point(p.get("mirror", p["name"]), f"the mirror of {p['name']!r}") for p in points)
    broken = [names[i] for i, j in enumerate(mirror) if mirror[j] != i]
    if broken:
        raise _fail(
            point.where,
            f"mirror partners must pair up (an involution), but {broken[0]!r} -> "
            f"{names[mirror[index[broken[0]]]]!r} -> {names[mirror[mirror[index[broken[0]]]]]!r}",
        )
    return mirror


def _parse_sources(points: list[dict[str, Any]], where: str) -> tuple[tuple[str, int] | None, ...]:
    sources: list[tuple[str, int] | None] = []
    for p in points:
        if "source" not in p and "index" not in p:
            sources.append(None)
            continue
        if p.get("source") not in SOURCES or isinstance(p.get("index"), bool) or not isinstance(p.get("index"), int):
            raise _fail(
                where,
                f"point {p['name']!r}: source must be one of {', '.join(SOURCES)} with an integer "
                f"index, got {p.get('source')!r}, {p.get('index')!r}",
            )
        sources.append((p["source"], p["index"]))
    return tuple(sources)


def _parse_shoulders(roles: dict[str, Any], point: _Points) -> tuple[int, int] | None:
    if roles.get("shoulders") is None:
        return None
    pair = roles["shoulders"]
    if not isinstance(pair, list) or len(pair) != 2:
        raise _fail(point.where, f"roles.shoulders must be [left, right], got {pair!r}")
    return point(pair[0], "roles.shoulders[0]"), point(pair[1], "roles.shoulders[1]")


def _parse_hands(
    roles: dict[str, Any], point: _Points, members: dict[str, list[int]]
) -> tuple[HandRole, HandRole] | None:
    if roles.get("hands") is None:
        return None
    spec, where = roles["hands"], point.where
    if not isinstance(spec, dict) or set(spec) != {"right", "left"}:
        raise _fail(where, f'roles.hands must have "right" and "left", got {spec!r}')
    found = []
    for side in ("right", "left"):
        h = spec[side]
        if not isinstance(h, dict) or "wrist" not in h:
            raise _fail(where, f'roles.hands.{side} must name a "wrist" (and a "part", a "palm"), got {h!r}')
        part = h.get("part")
        if part is not None and (not isinstance(part, str) or part not in members):
            raise _fail(where, f"roles.hands.{side}.part {part!r} is not one of the parts")
        wrist = point(h["wrist"], f"roles.hands.{side}.wrist")
        palm = point(h["palm"], f"roles.hands.{side}.palm") if h.get("palm") is not None else None
        for what, i in (("wrist", wrist), ("palm", palm)):
            if part is not None and i is not None and i not in members[part]:
                raise _fail(where, f"roles.hands.{side}.{what} {point.names[i]!r} is not in part {part!r}")
        found.append(HandRole(part, wrist, palm))
    return found[0], found[1]


def parse_layout(raw: Any, where: str) -> KeypointLayout:
    """Validate a layout definition (the JSON object); errors name `where` and the problem."""
    _check_header(raw, where)
    points = raw["points"]
    point = _Points(points, where)
    members = _parse_parts(raw, where)
    mirror = _parse_mirror(points, point)
    sources = _parse_sources(points, where)
    roles = raw.get("roles") or {}
    if not isinstance(roles, dict):
        raise _fail(where, "roles must be an object")
    shoulders = _parse_shoulders(roles, point)
    hands = _parse_hands(roles, point, members)
    bones = tuple(
        (point(a, "a bone's end"), point(b, "a bone's end"))
        for a, b in (
            bone if isinstance(bone, list) and len(bone) == 2 else _bad_bone(where, bone)
            for bone in raw.get("bones") or []
        )
    )
    return KeypointLayout(
        name=raw["name"],
        id=raw["id"],
        description=str(raw.get("description", "")),
        names=tuple(point.names),
        parts={n: tuple(m) for n, m in members.items()},
        mirror=mirror,
        sources=sources,
        shoulders=shoulders,
        hands=hands,
        bones=bones,
        definition=raw,
    )


def _bad_bone(where: str, bone: Any):
    raise _fail(where, f"a bone must be a pair of points, got {bone!r}")


@functools.cache
def builtin_layout(name: str) -> KeypointLayout:
    """A built-in layout by name, read once from package data."""
    if name not in BUILTIN:
        raise ConfigError(
            f"unknown layout {name!r}: the built-in layouts are {', '.join(BUILTIN)} (or give a layout file)"
        )
    text = resources.files("accel_signs").joinpath(f"assets/layouts/{name}.json").read_text("utf-8")
    return parse_layout(json.loads(text), name)


def keypoint_layout() -> KeypointLayout:
    """The default layout, karsl184."""
    return builtin_layout(DEFAULT)


def load_layout(spec: str | Path) -> KeypointLayout:
    """A built-in layout by name, or a layout file."""
    if isinstance(spec, str) and spec in BUILTIN:
        return builtin_layout(spec)
    path = Path(spec)
    if not path.suffix == ".json" and not path.exists():
        raise ConfigError(
            f"unknown layout {str(spec)!r}: the built-in layouts are {', '.join(BUILTIN)} (or give a layout .json file)"
        )
    try:
        raw = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"layout file {path} does not exist") from None
    except OSError as e:
        raise ConfigError(f"layout file {path}: cannot be read ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: nested too deep
        raise ConfigError(f"layout file {path}: not valid JSON ({e})") from None
    return parse_layout(raw, str(path))


def layout_from_record(record: Any, where: str) -> KeypointLayout:
    """The layout a store's meta.json or a checkpoint's config.json records: the whole
    definition, or (before layouts were files) only the id of karsl184."""
    if not isinstance(record, dict):
        raise ConfigError(f"{where}: the keypoint layout record {record!r} is not an object")
    if record.get("definition") is not None:
        layout = parse_layout(record["definition"], where)
        if record.get("id", layout.id) != layout.id:
            raise ConfigError(
                f"{where}: keypoint layout id {record.get('id')!r} does not match its definition's ({layout.id!r})"
            )
        return layout
    legacy = LEGACY_IDS.get(record.get("id"))
    if legacy is None:
        raise ConfigError(
            f"{where}: keypoint layout {record.get('id')!r} is unknown and its definition is not recorded"
        )
    return builtin_layout(legacy)


@functools.cache
def karsl_glosses() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """English and Arabic glosses of the 502 KArSL signs; index = sign number - 1."""
    raw = json.loads(resources.files("accel_signs").joinpath("assets/karsl502_labels.json").read_text("utf-8"))
    return tuple(raw["en"]), tuple(raw["ar"])


def point_slice(points: Sequence[int]) -> slice | None:
    """slice(first, last + 1) when `points` are consecutive and ascending, else None: indexing a
    tensor with the slice is a view where the index list would copy."""
    points = list(points)
    if points and points == list(range(points[0], points[0] + len(points))):
        return slice(points[0], points[0] + len(points))
    return None
