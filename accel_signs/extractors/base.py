"""The one interface every extractor backend implements, and reading frames from a video or a folder."""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from accel_signs.core.errors import ConfigError, DatasetError
from accel_signs.data.extractor import ExtractorRecord
from accel_signs.data.layout import NUM_CHANNELS, KeypointLayout

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# The largest video frame read: 8K UHD (7680x4320), in either orientation. A header that claims
# more is refused before a frame is decoded (one such frame, decoded, is gigabytes).
MAX_PIXELS = 7680 * 4320
# MediaPipe's landmark counts per source (the layouts' "source" names).
SOURCE_POINTS = {"pose": 33, "face": 478, "left_hand": 21, "right_hand": 21}


@dataclass
class TrackedFrame:
    """One frame's keypoints in a layout, and what MediaPipe found in it."""

    keypoints: np.ndarray  # (points, 4) float32; undetected points are 0
    person: bool  # a pose was detected
    hands: bool  # at least one hand was detected


@dataclass
class Tracked:
    """A stream's keypoints and detection counts."""

    keypoints: np.ndarray  # (frames, points, 4) float32
    pose_frames: int
    hand_frames: int


class Tracker(ABC):
    """One stream of frames (a video, or one live connection) through one extractor. In video mode
    tracking carries over from frame to frame, so every stream needs its own tracker.

    Subclasses set `layout` and `record` and implement `sources` and `close`."""

    layout: KeypointLayout
    record: ExtractorRecord

    @abstractmethod
    def sources(self, image: np.ndarray, at: float | None = None) -> dict[str, np.ndarray | None]:
        """MediaPipe's landmarks of the next frame per source ("pose", "face", "left_hand",
        "right_hand"), each (n, 4) x, y, z, visibility in image units, or None if not detected.
        Only the sources the layout uses need be given. `at`: the frame's time in seconds, where
        the stream knows it (live frames); else the frame's place at the stream's fps."""

    @abstractmethod
    def close(self) -> None:
        """Release MediaPipe's graphs; the tracker is not used after."""

    def __call__(self, image: np.ndarray, at: float | None = None) -> TrackedFrame:
        """image: (H, W, 3) uint8 RGB, the next frame of the stream (at `at` seconds, if known)."""
        image.flags.writeable = False
        found = self.sources(image, at)
        arrays = {
            k: (v if v is not None else np.zeros((SOURCE_POINTS[k], NUM_CHANNELS), np.float32))
            for k, v in found.items()
        }
        frame = self.layout.assemble({k: v[None] for k, v in arrays.items()})[0]  # (1, P, 4) -> (P, 4)
        hands = found.get("left_hand") is not None or found.get("right_hand") is not None
        return TrackedFrame(frame, found.get("pose") is not None, hands)

    def track(self, frames: Iterable[np.ndarray]) -> Tracked:
        """Every frame of a stream: (frames, points, 4) keypoints and detection counts."""
        tracked = [self(image) for image in frames]
        if not tracked:
            return Tracked(np.zeros((0, self.layout.num_points, NUM_CHANNELS), np.float32), 0, 0)
        return Tracked(
            np.stack([t.keypoints for t in tracked]),
            sum(t.person for t in tracked),
            sum(t.hands for t in tracked),
        )

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_layout(layout: KeypointLayout) -> None:
    """A layout every extractor can fill: each point names its MediaPipe source."""
    if any(s is None for s in layout.sources):
        raise ConfigError(
            f"layout {layout.name} does not name each point's MediaPipe source; extract needs one "
            "that does (karsl184, holistic543, pose33-hands42, pose33)"
        )


def used_sources(layout: KeypointLayout) -> set[str]:
    """The MediaPipe sources ("pose", "face", ...) a layout's points come from."""
    return {s[0] for s in layout.sources if s is not None}


def read_frames(path: Path) -> tuple[Iterator[np.ndarray], int, int, float]:
    """(RGB frames iterator, width, height, fps) of a video file or a folder of images; fps 0 for a folder."""
    import cv2

    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DatasetError(f"{path}: no frame images ({', '.join(IMAGE_SUFFIXES)})")
        first = cv2.imread(str(images[0]))
        if first is None:
            raise DatasetError(f"{images[0]}: not a readable image")
        height, width = first.shape[:2]

        def read_images():
            for p in images:
                image = cv2.imread(str(p))
                if image is None:
                    raise DatasetError(f"{p}: not a readable image")
                if image.shape[:2] != (height, width):
                    raise DatasetError(
                        f"{p}: {image.shape[1]}x{image.shape[0]}, but the folder's first frame is {width}x{height}"
                    )
                yield cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

        return read_images(), width, height, 0.0
    if not logger.isEnabledFor(logging.DEBUG):
        # FFmpeg reports a damaged file on stderr itself, beside the one error line that says
        # what matters; --verbose keeps its messages. Read when OpenCV first opens a video.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DatasetError(f"{path}: not a readable video")
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width <= 0 or height <= 0:  # what FFmpeg reports for a size it refuses to decode
        capture.release()
        raise DatasetError(f"{path}: not a readable video (no valid frame size in its header)")
    if width * height > MAX_PIXELS:
        capture.release()
        raise DatasetError(f"{path}: {width}x{height} frames, larger than 8K (7680x4320); scale the video down first")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    listed = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)  # 0 or less: the container does not say

    def read_video():
        read = 0
        try:
            while True:
                ok, image = capture.read()
                if not ok:
                    break
                read += 1
                yield cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()
        # Decoding stops without an error at a damaged or missing part; some containers give
        # only an estimate of the count (duration x fps), hence the margin.
        if 0 < read < listed - max(1, listed // 50):
            raise DatasetError(
                f"{path}: truncated or damaged: {read} of the {listed} frames its header lists could be decoded"
            )

    return read_video(), width, height, fps
