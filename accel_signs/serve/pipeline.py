"""One live connection's pipeline, without a socket: JPEG bytes -> image -> MediaPipe keypoints
in the checkpoint's layout -> a ring buffer of the signing so far -> the model on a sliding
window -> a sign accepted once, at its peak.

The keypoints, the window's sampling and the model are exactly `predict`'s (the extractor's Tracker,
inference.classify), so a window covering a whole clip gives predict's answer for it.
"""

from __future__ import annotations

import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from accel_signs.core.errors import AccelSignsError
from accel_signs.data.layout import KeypointLayout
from accel_signs.extractors.choose import ExtractorChoice
from accel_signs.model.checkpoint import Checkpoint
from accel_signs.serve.config import LiveConfig
from accel_signs.tools.inference import classify_batch

JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"
# Start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry the size.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_NO_LENGTH = {0x01, *range(0xD0, 0xD9)}  # markers without a length field (TEM, RSTn, SOI, EOI)
_clock = threading.local()  # the features' CPU time, per thread: connections share one model
_hooks_lock = threading.Lock()


class FrameError(AccelSignsError):
    """A frame that cannot be used; `code` is what the page sees in the error message."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's start-of-frame header, read before anything is decoded,
    so a small file that would decode to a huge image is refused cheaply."""
    if not data.startswith(JPEG_START):
        raise FrameError("not_jpeg", f"a frame must be a JPEG image; got {len(data)} bytes starting {data[:4].hex()}")
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            break
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _NO_LENGTH:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _SOF and i + 9 <= len(data):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        if marker == 0xDA:  # start of scan before any frame header
            break
        i += 2 + length
    raise FrameError("bad_jpeg", f"the JPEG frame ({len(data)} bytes) has no readable size header")


def decode_frame(data: bytes, max_bytes: int, max_pixels: int) -> np.ndarray:
    """JPEG bytes -> (H, W, 3) uint8 RGB, or a FrameError that says what is wrong."""
    import cv2

    if len(data) > max_bytes:
        raise FrameError("too_large", f"a frame of {len(data)} bytes is over the limit of {max_bytes} bytes")
    width, height = jpeg_size(data)
    if width * height > max_pixels or width == 0 or height == 0:
        raise FrameError(
            "too_many_pixels", f"a {width}x{height} frame is over the limit of {max_pixels} pixels (or empty)"
        )
    # libjpeg fills a truncated scan with grey and only warns: check that the image is complete.
    if not data.rstrip(b"\x00").endswith(JPEG_END):
        raise FrameError("truncated", f"the JPEG frame ({len(data)} bytes) is truncated: it has no end marker")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise FrameError("bad_jpeg", f"the JPEG frame ({len(data)} bytes) cannot be decoded")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def hand_points(layout: KeypointLayout) -> np.ndarray:
    """The points whose motion says that someone signs: the hands' parts, or, in a layout whose
    hands are only pose points (pose33), each hand's wrist and palm."""
    points: list[int] = []
    for hand in layout.hands or ():
        points += layout.parts[hand.part] if hand.part is not None else [hand.wrist, *filter(None, [hand.palm])]
    return np.array(sorted(set(points)), dtype=np.int64)


@dataclass
class Timings:
    """Seconds of each stage for one frame: the CPU time of the thread that ran it, except for
    MediaPipe, whose graph runs on threads of its own: its wall time while the caller waits."""

    decode: float = 0.0
    mediapipe: float = 0.0
    features: float = 0.0
    model: float = 0.0


@dataclass
class SignAcceptor:
    """Accept a sign once, when its probability peaks above the threshold: while the top class
    stays the same and its probability rises, wait; when it falls, when another class takes
    over, or when the signer stops, the peak is accepted if it reached the threshold."""

    threshold: float
    current: dict[str, Any] | None = None  # the top entry at its peak so far
    accepted: bool = False

    def update(self, top: dict[str, Any]) -> dict[str, Any] | None:
        if self.current is not None and top["class_id"] != self.current["class_id"]:
            done = self.flush()
            self.current = top
            return done
        if self.current is None or top["probability"] >= self.current["probability"]:
            self.current = top
            return None
        return self._accept()  # falling: the peak has passed

    def flush(self) -> dict[str, Any] | None:
        """The signer stopped (or another class took over): accept the peak if not yet done."""
        done = self._accept()
        self.current, self.accepted = None, False
        return done

    def _accept(self) -> dict[str, Any] | None:
        if self.accepted or self.current is None or self.current["probability"] < self.threshold:
            return None
        self.accepted = True
        return self.current


@dataclass
class Window:
    """A snapshot of the buffer for the model: taken on the event loop, classified elsewhere."""

    clip: np.ndarray  # (frames, points, 4)
    size: tuple[float, float]  # the frames' (width, height)
    first_seq: int
    last_seq: int


@dataclass
class LiveSession:
    """The state of one connection: its tracker, its buffer, its idle detector and acceptor."""

    ckpt: Checkpoint
    cfg: LiveConfig
    extractor: ExtractorChoice = field(default_factory=ExtractorChoice)  # serve resolves it once
    whole_clip: bool = False  # upload mode: keep every frame, no idle gating, classify at the end
    tracker: Any = None
    buffer: deque = field(default_factory=deque)  # (seq, t, keypoints (P, 4))
    size: tuple[float, float] | None = None
    signing: bool = False
    still_since: float | None = None
    last_hands: tuple[float, np.ndarray] | None = None  # (t, hand points (H, 2) in pixels) of the last frame
    since_classified: int = 0
    lock: threading.Lock = field(
        default_factory=threading.Lock
    )  # the buffer: tracked into on one thread, read on another

    def __post_init__(self) -> None:
        self.hands = hand_points(self.ckpt.layout)
        self.shoulders = self.ckpt.layout.shoulders
        self.acceptor = SignAcceptor(self.cfg.threshold)
        _time_features(self.ckpt.model)

    def open_tracker(self) -> Any:
        """The connection's MediaPipe tracker, made on its first image: a connection whose
        browser runs MediaPipe itself (keypoint messages) never needs one."""
        if self.tracker is None:
            self.tracker = self.extractor.open(self.ckpt.layout)
        return self.tracker

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None

    def restart(self, whole_clip: bool) -> None:
        """A new stream (another upload, or back to the camera): tracking and buffer start over."""
        self.close()
        self.whole_clip, self.size, self.signing, self.still_since, self.last_hands = (
            whole_clip,
            None,
            False,
            None,
            None,
        )
        self.buffer.clear()
        self.acceptor = SignAcceptor(self.cfg.threshold)
        self.since_classified = 0

    def track(self, image: np.ndarray, seq: int, t: float) -> dict[str, Any]:
        """Run MediaPipe on the next frame (seq, at t seconds) and update the buffer and the idle
        state; returns what the page draws: the keypoints (x, y; undetected null) and the state."""
        height, width = image.shape[:2]
        self._resize((float(width), float(height)))
        frame = self.open_tracker()(image, at=t)
        drawn = self.add(frame.keypoints, seq, t)
        points = np.round(frame.keypoints[:, :2], 4)
        detected = (frame.keypoints[:, :2] != 0).any(1)
        return drawn | {
            "person": frame.person,
            "hands": frame.hands,
            "points": [p.tolist() if d else None for p, d in zip(points, detected)],
        }

    def add_keypoints(self, keypoints: np.ndarray, size: tuple[float, float], seq: int, t: float) -> dict[str, Any]:
        """A frame whose keypoints the browser made (points, 4) in the layout, from a frame of
        `size`: the buffer and the idle state as `track` updates them, without MediaPipe here."""
        self._resize(size)
        return self.add(keypoints, seq, t)

    def _resize(self, size: tuple[float, float]) -> None:
        if self.size != size:
            with self.lock:  # a new size is a new stream (another camera): its frames start over
                self.buffer.clear()
                self.size = size

    def add(self, keypoints: np.ndarray, seq: int, t: float) -> dict[str, Any]:
        """One frame's keypoints into the buffer and the idle state: seq, idle or signing, and
        whether the signer has just stopped."""
        moving = self._moving(keypoints, t)
        with self.lock:
            self.buffer.append((seq, t, keypoints))
            stopped = self._update_state(moving, t)
            self.since_classified += 1
        return {"seq": seq, "state": "signing" if self.signing else "idle", "stopped": stopped}

    def _moving(self, keypoints: np.ndarray, t: float) -> bool:
        """Whether the hands moved faster than cfg.motion (shoulder widths per second) since the
        last frame; a frame without hands is still."""
        w, h = self.size
        pts = keypoints[self.hands]
        present = (pts[:, :2] != 0).any(1) & (pts[:, 3] >= 0.5)
        xy = pts[:, :2] * np.array([w, h], dtype=np.float32)  # (H, 2) pixels
        xy[~present] = np.nan
        last, self.last_hands = self.last_hands, (t, xy)
        if not present.any() or last is None or t <= last[0]:
            return False
        step = np.linalg.norm(xy - last[1], axis=1)  # (H,) nan where either frame lacks the point
        if np.isnan(step).all():
            return False
        return float(np.nanmean(step)) / self._body_scale(keypoints) / (t - last[0]) >= self.cfg.motion

    def _body_scale(self, keypoints: np.ndarray) -> float:
        """Shoulder width in pixels; a quarter of the frame's height without shoulders."""
        w, h = self.size
        if self.shoulders is not None:
            a, b = keypoints[list(self.shoulders), :2] * np.array([w, h], dtype=np.float32)
            if (a != 0).any() and (b != 0).any():
                return max(float(np.linalg.norm(a - b)), 1.0)
        return h / 4

    def _update_state(self, moving: bool, t: float) -> bool:
        """Idle <-> signing; trims the buffer (whole length while signing, the pre-roll while
        idle). True when the signer has just stopped."""
        if self.whole_clip:
            self.signing = True
            return False
        if moving:
            self.still_since = None
            if not self.signing:
                self.signing, self.since_classified = True, 0
        elif self.still_since is None:
            self.still_since = t
        stopped = self.signing and self.still_since is not None and t - self.still_since >= self.cfg.idle_seconds
        if stopped:
            self.signing = False
        keep = self.cfg.window if self.signing else self.cfg.preroll
        while self.buffer and self.buffer[0][1] < t - keep:
            self.buffer.popleft()
        return stopped

    def due(self) -> bool:
        """Whether the window should be classified now (live mode)."""
        return (
            self.signing
            and not self.whole_clip
            and len(self.buffer) >= self.cfg.min_frames
            and self.since_classified >= self.cfg.stride
        )

    def window(self) -> Window:
        """The buffer as one clip, for `classify` (on another thread: it is a copy)."""
        with self.lock:
            self.since_classified = 0
            seqs = [s for s, _, _ in self.buffer]
            return Window(np.stack([k for _, _, k in self.buffer]), self.size, seqs[0], seqs[-1])

    def process(self, data: bytes, seq: int, t: float, max_bytes: int, max_pixels: int) -> tuple[dict, Timings]:
        """Decode and track one frame (one trip to a worker thread), timing both."""
        cpu = time.thread_time()
        image = decode_frame(data, max_bytes, max_pixels)
        timings = Timings(decode=time.thread_time() - cpu)
        wall = time.perf_counter()
        drawn = self.track(image, seq, t)
        timings.mediapipe = time.perf_counter() - wall
        return drawn, timings

    def classify(self, window: Window, top_k: int = 5) -> tuple[list[dict[str, Any]], Timings]:
        """The window's top-k (predict's answer for the same keypoints), and its CPU time split
        into the input features (inside the model) and the rest (sampling, the transformer)."""
        return classify_windows(self.ckpt, [window], top_k)[0]

    def accept(self, top: list[dict[str, Any]]) -> dict[str, Any] | None:
        return self.acceptor.update(top[0])

    def stop(self) -> dict[str, Any] | None:
        """The signer went idle: the last sign's peak, if it was not accepted yet."""
        return self.acceptor.flush()


def classify_windows(
    ckpt: Checkpoint, windows: list[Window], top_k: int = 5, flip: torch.Tensor | None = None
) -> list[tuple[list[dict[str, Any]], Timings]]:
    """The top-k of several windows (of any connections) in one forward pass, each with its share
    of the pass's CPU time: features (inside the model) and the rest (sampling, the transformer).
    `flip`: --tta-flip's mirror map (model/tta.py), None for none."""
    _time_features(ckpt.model)
    _clock.features = 0.0
    cpu = time.thread_time()
    tops = classify_batch(ckpt, [w.clip for w in windows], [w.size for w in windows], top_k, flip)
    n = len(windows)
    total, features = (time.thread_time() - cpu) / n, _clock.features / n
    return [(top, Timings(features=features, model=total - features)) for top in tops]


def _time_features(model) -> None:
    """Hooks that time the model's input features (KeypointFeatures) in the calling thread."""
    with _hooks_lock:
        if getattr(model, "_features_timed", False):
            return
        model._features_timed = True

    def start(module, args):
        _clock.start = time.thread_time()

    def end(module, args, out):
        _clock.features = time.thread_time() - _clock.start

    model.features.register_forward_pre_hook(start)
    model.features.register_forward_hook(end)
