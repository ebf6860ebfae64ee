"""Which extractor made a set of keypoints: the record a store, an extracted npz and a checkpoint carry.

Keypoints from MediaPipe's legacy Holistic and from its Tasks landmarkers differ (other models,
other tracking, another hand count), and a model trained on one extractor's keypoints loses top-1
accuracy on the other's. So the extractor travels with the data: `extract` writes this record into
each npz, `prepare` into the store's meta (field "extractor"), training copies it into the
checkpoint, and `predict` / `serve` warn when they would run another.

The record lives in the data layer (the store holds it); the extractors themselves are
`accel_signs.extractors`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from accel_signs.core.errors import DatasetError

BACKENDS = ("tasks", "holistic")
MODES = ("video", "image")
FIELDS = ("backend", "mediapipe", "mode", "recipe", "num_hands", "options")


@dataclass(frozen=True)
class ExtractorRecord:
    """How keypoints were made.

    backend: "tasks" (MediaPipe's Tasks landmarkers, >= 0.10.30) or "holistic" (legacy
      `mp.solutions.holistic`, <= 0.10.21).
    mediapipe: the MediaPipe version that ran, or None where it is not known (the seed's files).
    mode: "video" (tracking from frame to frame) or "image" (each frame on its own).
    recipe: the `--extractor` value that names this set-up (tasks, tasks-image, seed, holistic).
    num_hands: hands looked for per frame (Tasks' HandLandmarker); None for Holistic (one slot per hand).
    options: the rest, JSON values only (confidences, model complexity, the bundles' sha256).
    """

    backend: str
    mediapipe: str | None
    mode: str
    recipe: str
    num_hands: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate(self, "extractor record")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what store meta, npz files and checkpoints hold)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str = "extractor record") -> ExtractorRecord:
        """The record from to_json()'s dict (or its JSON text); DatasetError naming `where` if malformed."""
        if isinstance(data, (str, bytes)):
            try:
                data = json.loads(data)
            except ValueError as e:
                raise DatasetError(f"{where}: the extractor record is not JSON ({e})") from None
        if not isinstance(data, dict):
            raise DatasetError(f"{where}: the extractor record must be an object, got {type(data).__name__}")
        missing = [k for k in FIELDS if k not in data]
        unknown = sorted(set(data) - set(FIELDS))
        if missing or unknown:
            raise DatasetError(
                f"{where}: the extractor record "
                + ("lacks " + ", ".join(missing) if missing else "")
                + ("; " if missing and unknown else "")
                + ("has unknown fields " + ", ".join(unknown) if unknown else "")
            )
        try:
            return cls(**{k: data[k] for k in FIELDS})
        except DatasetError as e:
            raise DatasetError(f"{where}: {e}") from None

    def describe(self) -> str:
        """One line for model cards, `info` and warnings, e.g. "tasks, MediaPipe 1.2.2, video mode, 2 hands"."""
        parts = [self.recipe if self.recipe == self.backend else f"{self.recipe} ({self.backend})"]
        parts.append(f"MediaPipe {self.mediapipe}" if self.mediapipe else "MediaPipe version unknown")
        parts.append(f"{self.mode} mode")
        if self.num_hands is not None:
            parts.append(f"{self.num_hands} hand{'s' if self.num_hands != 1 else ''} per frame")
        return ", ".join(parts)

    def differences(self, other: ExtractorRecord) -> list[str]:
        """The fields in which `other` made its keypoints differently (empty: the same extractor).
        A MediaPipe version counts only where both are known."""
        out = [
            name for name in ("backend", "mode", "recipe", "num_hands") if getattr(self, name) != getattr(other, name)
        ]
        if self.mediapipe and other.mediapipe and self.mediapipe != other.mediapipe:
            out.append("mediapipe")
        return out


def _validate(rec: ExtractorRecord, where: str) -> None:
    if rec.backend not in BACKENDS:
        raise DatasetError(f"{where}: backend must be one of {', '.join(BACKENDS)}, got {rec.backend!r}")
    if rec.mode not in MODES:
        raise DatasetError(f"{where}: mode must be one of {', '.join(MODES)}, got {rec.mode!r}")
    if not isinstance(rec.recipe, str) or not rec.recipe:
        raise DatasetError(f"{where}: recipe must be a non-empty string, got {rec.recipe!r}")
    if rec.mediapipe is not None and (not isinstance(rec.mediapipe, str) or not rec.mediapipe):
        raise DatasetError(f"{where}: mediapipe must be a version string or null, got {rec.mediapipe!r}")
    if rec.num_hands is not None and (
        isinstance(rec.num_hands, bool) or not isinstance(rec.num_hands, int) or not 1 <= rec.num_hands <= 2
    ):
        raise DatasetError(f"{where}: num_hands must be 1, 2 or null, got {rec.num_hands!r}")
    if not isinstance(rec.options, dict):
        raise DatasetError(f"{where}: options must be an object, got {type(rec.options).__name__}")
    try:
        json.dumps(rec.options, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{where}: options must hold JSON values only ({e})") from None


# The seed's extraction (the system we grew from): MediaPipe's three Tasks landmarkers (pose, face,
# hands), each frame in IMAGE mode, one hand per frame since January 2026 (two before). Its MediaPipe
# version is not recorded in its files. `extract --extractor seed` reproduces it.
SEED_RECIPE = ExtractorRecord(
    backend="tasks",
    mediapipe=None,
    mode="image",
    recipe="seed",
    num_hands=1,
    options={"landmarkers": ["pose_landmarker", "face_landmarker", "hand_landmarker"]},
)

# Where the record goes: the store's meta.json field, and the key of an extracted npz (a 0-d
# string array holding the record's JSON text, readable without pickles).
META_KEY = "extractor"
NPZ_KEY = "extractor"


def npz_entry(record: ExtractorRecord) -> Any:
    """The record as an npz entry: np.savez(..., **{NPZ_KEY: npz_entry(rec)})."""
    import numpy as np

    return np.array(json.dumps(record.to_json(), sort_keys=True))


def record_from_npz(npz: Any, where: str) -> ExtractorRecord | None:
    """The record an extracted npz (an open np.load archive) carries, or None for files without one
    (older extracts, the seed's files); DatasetError naming `where` if it is malformed."""
    if NPZ_KEY not in npz.files:
        return None
    value = npz[NPZ_KEY]
    if value.shape != () or value.dtype.kind != "U":
        raise DatasetError(
            f"{where}: {NPZ_KEY!r} must be the extractor record's JSON text, got {value.dtype} {value.shape}"
        )
    return ExtractorRecord.from_json(str(value), where)


def record_from_meta(meta: dict[str, Any], where: str) -> ExtractorRecord | None:
    """The record under META_KEY of a store's meta.json or a checkpoint's config.json; None where
    it has none (made before records, or by an importer that cannot know)."""
    raw = meta.get(META_KEY)
    return None if raw is None else ExtractorRecord.from_json(raw, where)
