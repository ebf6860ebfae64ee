"""The legacy backend: MediaPipe Holistic (`mp.solutions.holistic`, MediaPipe <= 0.10.21).

Holistic runs in video mode (tracking between frames) with the face mesh's iris rings
(refine_face_landmarks), which the karsl184 layout includes. Its wheels ship the models, so
nothing is downloaded; 0.10.30 and later dropped `mediapipe.solutions` and its models.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from accel_signs.core.errors import ConfigError
from accel_signs.data.extractor import ExtractorRecord
from accel_signs.data.layout import NUM_CHANNELS, KeypointLayout
from accel_signs.extractors.base import Tracker, check_layout

HINT = (
    "the holistic extractor needs MediaPipe 0.10.14-0.10.21: pip install 'accel-signs[holistic]' (Python 3.12 or older)"
)
POSE_MODELS = {0: "pose_landmark_lite.tflite", 1: "pose_landmark_full.tflite", 2: "pose_landmark_heavy.tflite"}
CONFIDENCE = 0.5


def available() -> bool:
    """Whether the installed MediaPipe has Holistic (without importing MediaPipe's graphs)."""
    import importlib.util

    try:
        return importlib.util.find_spec("mediapipe.python.solutions") is not None
    except (ImportError, ValueError):
        return False


def mediapipe(model_complexity: int = 1):
    """MediaPipe, once Holistic and its pose model are known to be there. Its wheels ship only the
    complexity-1 pose model and download the others on first use; nothing may download at run
    time here, so a missing model is an error."""
    try:
        import cv2  # noqa: F401 - MediaPipe brings OpenCV; videos are read with it
        import mediapipe as mp
    except ImportError:
        raise ConfigError(HINT) from None
    if not hasattr(mp, "solutions"):
        raise ConfigError(
            f"mediapipe {getattr(mp, '__version__', '?')} has no Holistic solution (0.10.30 and later dropped it "
            f"and its models); use --extractor tasks, or {HINT}"
        )
    if model_complexity not in POSE_MODELS:
        raise ConfigError(f"--model-complexity must be 0, 1 or 2, got {model_complexity}")
    model = Path(mp.__file__).parent / "modules" / "pose_landmark" / POSE_MODELS[model_complexity]
    if not model.exists():
        raise ConfigError(
            f"--model-complexity {model_complexity} needs MediaPipe's {model.name}, which its wheel does not "
            "ship (MediaPipe would download it); use --model-complexity 1, or put the file at " + str(model)
        )
    return mp


def record(model_complexity: int = 1) -> ExtractorRecord:
    """What this backend writes into npz files, stores and checkpoints."""
    mp = mediapipe(model_complexity)
    return ExtractorRecord(
        backend="holistic",
        mediapipe=getattr(mp, "__version__", None),
        mode="video",
        recipe="holistic",
        num_hands=None,
        options={"model_complexity": model_complexity, "refine_face_landmarks": True, "min_confidence": CONFIDENCE},
    )


def _points(landmarks, count: int, visibility: bool) -> np.ndarray | None:
    if landmarks is None:
        return None
    out = np.zeros((count, NUM_CHANNELS), dtype=np.float32)
    for i, lm in enumerate(landmarks.landmark[:count]):
        out[i] = (lm.x, lm.y, lm.z, lm.visibility if visibility else 1.0)
    return out


class HolisticTracker(Tracker):
    """MediaPipe Holistic in video mode over one stream. The pose's visibility is kept; face and
    hand points get 1 where detected. Holistic's `left_hand` is the signer's left hand."""

    def __init__(self, layout: KeypointLayout, model_complexity: int = 1):
        check_layout(layout)
        mp = mediapipe(model_complexity)
        self.layout = layout
        self.record = record(model_complexity)
        self._holistic = mp.solutions.holistic.Holistic(
            static_image_mode=False,
            model_complexity=model_complexity,
            refine_face_landmarks=True,
            min_detection_confidence=CONFIDENCE,
            min_tracking_confidence=CONFIDENCE,
        )

    def sources(self, image: np.ndarray, at: float | None = None) -> dict[str, np.ndarray | None]:
        r = self._holistic.process(image)  # Holistic keeps its own clock
        return {
            "pose": _points(r.pose_landmarks, 33, visibility=True),
            "face": _points(r.face_landmarks, 478, visibility=False),
            "left_hand": _points(r.left_hand_landmarks, 21, visibility=False),
            "right_hand": _points(r.right_hand_landmarks, 21, visibility=False),
        }

    def close(self) -> None:
        if self._holistic is not None:
            self._holistic.close()
            self._holistic = None
