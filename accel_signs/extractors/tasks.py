"""The current backend: MediaPipe's Tasks landmarkers (PoseLandmarker, FaceLandmarker,
HandLandmarker; MediaPipe >= 0.10.30 has only these).

Each runs from its `.task` bundle (`bundles.py`), only those the layout needs. VIDEO mode tracks
from frame to frame (videos, live streams); IMAGE mode takes each frame on its own (what the
seed's extraction did). The hand landmarker finds up to `num_hands` hands; each goes into the
layout's slot for the signer's left or right hand by the pose's wrists (see `_slots`), as
Holistic's `left_hand` / `right_hand` do.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from pathlib import Path

import numpy as np

from accel_signs.core.errors import ConfigError
from accel_signs.data.extractor import ExtractorRecord
from accel_signs.data.layout import NUM_CHANNELS, KeypointLayout
from accel_signs.extractors.base import Tracker, check_layout, used_sources
from accel_signs.extractors.bundles import BUNDLES, bundle_dir, sha256_of

HINT = "the tasks extractor needs MediaPipe 0.10.30 or later: pip install 'accel-signs[extract]'"
CONFIDENCE = 0.5
# Which bundle each layout source needs.
BUNDLE_OF = {"pose": "pose", "face": "face", "left_hand": "hands", "right_hand": "hands"}


def available() -> bool:
    """Whether the installed MediaPipe has the Tasks vision API (without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("mediapipe.tasks.python.vision") is not None
    except (ImportError, ValueError):
        return False


def mediapipe():
    try:
        import cv2  # noqa: F401 - MediaPipe brings OpenCV; videos are read with it
        import mediapipe as mp
        from mediapipe.tasks.python import vision  # noqa: F401
    except ImportError:
        raise ConfigError(HINT) from None
    return mp


def needed_bundles(layout: KeypointLayout) -> list[str]:
    """The bundles ("pose", "face", "hands") a layout's points come from."""
    return sorted({BUNDLE_OF[s] for s in used_sources(layout)})


@contextlib.contextmanager
def _quiet_native_logs():
    """MediaPipe's LiteRT runtime prints dozens of INFO/WARNING lines to stderr when a landmarker
    loads or closes, with no switch to turn them off (GLOG_minloglevel does not reach it): stderr's
    file descriptor goes to /dev/null for that moment, unless --verbose. Failures still raise."""
    if logging.getLogger(__name__).isEnabledFor(logging.DEBUG):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:  # size and mtime key the cache
    return sha256_of(Path(path))


def file_sha256(path: Path) -> str:
    st = path.stat()
    return _sha256(str(path), st.st_size, st.st_mtime_ns)


def record(
    layout: KeypointLayout, recipe: str, mode: str, num_hands: int, landmarkers: Path | None
) -> tuple[ExtractorRecord, Path]:
    """The record of this set-up and the folder of its bundles (fetched into the cache if needed)."""
    mp = mediapipe()
    names = needed_bundles(layout)
    folder = bundle_dir(landmarkers, names)
    rec = ExtractorRecord(
        backend="tasks",
        mediapipe=getattr(mp, "__version__", None),
        mode=mode,
        recipe=recipe,
        num_hands=num_hands if "hands" in names else None,
        options={
            "landmarkers": [BUNDLES[n].file.removesuffix(".task") for n in names],
            "bundles": {BUNDLES[n].file: file_sha256(folder / BUNDLES[n].file) for n in names},
            "min_confidence": CONFIDENCE,
        },
    )
    return rec, folder


def _array(landmarks, count: int, visibility: bool) -> np.ndarray:
    out = np.zeros((count, NUM_CHANNELS), dtype=np.float32)
    for i, lm in enumerate(landmarks[:count]):
        v = lm.visibility if visibility and lm.visibility is not None else 1.0
        out[i] = (lm.x, lm.y, lm.z, v)
    return out


def _slots(
    hands: list[np.ndarray], labels: list[str], pose: np.ndarray | None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(left, right): the signer's left and right hand among the detected ones.

    With a pose, by the wrists, as Holistic does (it crops each hand around the pose's wrist): the
    pairing of hands to the pose's left (15) and right (16) wrist with the smaller total distance.
    On tests/data/signer_video.mp4 the label put the signer's right hand in the left slot in 3 of
    23 frames; the wrists never did. Without a pose, by the label ("Left": the signer's left on
    unmirrored video, as checked there)."""
    if not hands:
        return None, None
    if pose is not None:
        wrists = pose[[15, 16], :2]
        if len(hands) == 1:
            d = np.linalg.norm(wrists - hands[0][0, :2], axis=1)
            return (hands[0], None) if d[0] < d[1] else (None, hands[0])
        a, b = hands[0][0, :2], hands[1][0, :2]
        straight = np.linalg.norm(a - wrists[0]) + np.linalg.norm(b - wrists[1])
        crossed = np.linalg.norm(a - wrists[1]) + np.linalg.norm(b - wrists[0])
        return (hands[0], hands[1]) if straight <= crossed else (hands[1], hands[0])
    if len(hands) == 1:
        return (hands[0], None) if labels[0] == "Left" else (None, hands[0])
    first = 0 if labels[0] == "Left" or labels[1] != "Left" else 1  # both the same label: as found
    return hands[first], hands[1 - first]


class TasksTracker(Tracker):
    """The Tasks landmarkers a layout needs, over one stream of frames."""

    def __init__(
        self,
        layout: KeypointLayout,
        recipe: str = "tasks",
        mode: str = "video",
        num_hands: int = 2,
        landmarkers: Path | None = None,
        fps: float = 0.0,
    ):
        check_layout(layout)
        if mode not in ("video", "image"):
            raise ConfigError(f"tasks extractor mode must be video or image, got {mode!r}")
        self.layout, self.mode = layout, mode
        self.record, folder = record(layout, recipe, mode, num_hands, landmarkers)
        mp = mediapipe()
        from mediapipe.tasks.python import BaseOptions, vision

        running = vision.RunningMode.VIDEO if mode == "video" else vision.RunningMode.IMAGE
        names = needed_bundles(layout)
        self._mp, self._step_ms, self._frame, self._t_ms = mp, 1000.0 / (fps or 30.0), -1, 0
        self._landmarkers: dict = {}

        # bundle -> (the landmarker's class name, the word in its option names, how many to find)
        kinds = {"pose": ("PoseLandmarker", "pose", 1), "face": ("FaceLandmarker", "face", 1)}
        kinds["hands"] = ("HandLandmarker", "hand", num_hands)

        def make(name: str):
            kind, word, count = kinds[name]
            options = getattr(vision, f"{kind}Options")(
                base_options=BaseOptions(model_asset_path=str(folder / BUNDLES[name].file)),
                running_mode=running,
                **{f"num_{word}s": count, f"min_{word}_detection_confidence": CONFIDENCE},
                **{f"min_{word}_presence_confidence": CONFIDENCE},
                min_tracking_confidence=CONFIDENCE,
            )
            return getattr(vision, kind).create_from_options(options)

        try:
            with _quiet_native_logs():
                for name in names:
                    self._landmarkers[name] = make(name)
        except (RuntimeError, ValueError) as e:  # MediaPipe's words for a bundle it cannot load
            self.close()
            raise ConfigError(f"{folder / BUNDLES[name].file}: MediaPipe cannot load it ({e})") from None

    def _detect(self, name: str, image):
        landmarker = self._landmarkers[name]
        if self.mode == "video":
            return landmarker.detect_for_video(image, self._t_ms)
        return landmarker.detect(image)

    def sources(self, image: np.ndarray, at: float | None = None) -> dict[str, np.ndarray | None]:
        mp = self._mp
        # VIDEO mode needs strictly increasing timestamps (its tracking and smoothing read them):
        # the frame's time where known, else its place in the stream at the stream's fps.
        self._frame += 1
        t_ms = round(at * 1000) if at is not None else round(self._frame * self._step_ms)
        self._t_ms = max(t_ms, self._t_ms + 1) if self._frame else t_ms
        frame = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
        out: dict[str, np.ndarray | None] = {}
        # The first frame also prints MediaPipe's one-time notes (memory alignment, ROI projection).
        with _quiet_native_logs() if self._frame == 0 else contextlib.nullcontext():
            if "pose" in self._landmarkers:
                r = self._detect("pose", frame)
                out["pose"] = _array(r.pose_landmarks[0], 33, visibility=True) if r.pose_landmarks else None
            if "face" in self._landmarkers:
                r = self._detect("face", frame)
                out["face"] = _array(r.face_landmarks[0], 478, visibility=False) if r.face_landmarks else None
            if "hands" in self._landmarkers:
                r = self._detect("hands", frame)
                hands = [_array(points, 21, visibility=False) for points in r.hand_landmarks]
                labels = [h[0].category_name for h in r.handedness]
                out["left_hand"], out["right_hand"] = _slots(hands, labels, out.get("pose"))
        return out

    def close(self) -> None:
        with _quiet_native_logs():
            for landmarker in self._landmarkers.values():
                landmarker.close()
        self._landmarkers = {}
