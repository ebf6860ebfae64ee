"""Keypoint messages: a browser that runs MediaPipe itself sends each frame's keypoints, already
in the checkpoint's layout, instead of the image. Nothing in such a message is trusted: its size
is checked before it is parsed, then its shape, its values and the frame size it claims.

A message: {"type": "keypoints", "width": W, "height": H, "points": [[x, y, z, visibility], ...]}
with one row per point of the layout, x and y normalized to the frame, an undetected point all
zeros (as `extract` writes them).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from accel_signs.serve.pipeline import FrameError

# MediaPipe's normalized coordinates leave [0, 1] for points outside the frame, and z is about
# the frame's width in scale; anything this far out is not a landmark.
MAX_COORDINATE = 100.0


def parse_message(text: str, max_bytes: int) -> dict[str, Any] | None:
    """A text message -> its JSON object (None if it is not one), after checking its size, so
    that nothing over `max_bytes` is parsed; a FrameError (too_large) if it is over."""
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise FrameError("too_large", f"a text message of {size} bytes is over the limit of {max_bytes} bytes")
    try:
        message = json.loads(text)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def keypoints_from(message: Any, num_points: int, max_pixels: int) -> tuple[np.ndarray, tuple[float, float]]:
    """A parsed keypoint message -> ((points, 4) float32 keypoints, (width, height)), or a
    FrameError whose code says what is wrong: bad_keypoints, not_finite, too_many_pixels."""
    width, height = message.get("width"), message.get("height")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height)):
        raise FrameError(
            "bad_keypoints",
            f"a keypoint message needs the frame's width and height in pixels, got {width!r}, {height!r}",
        )
    if width * height > max_pixels:
        raise FrameError("too_many_pixels", f"a {width}x{height} frame is over the limit of {max_pixels} pixels")
    points = message.get("points")
    try:
        if not isinstance(points, list) or not all(isinstance(p, list) for p in points):
            raise TypeError
        array = np.array(points, dtype=np.float64)  # float64: a huge value stays inf-free until checked
    except (TypeError, ValueError):
        array = None
    if array is None or array.shape != (num_points, 4):
        shape = "not a list of rows" if array is None else f"shape {array.shape}"
        raise FrameError(
            "bad_keypoints",
            f"points must be {num_points} rows of 4 numbers (x, y, z, visibility) in the checkpoint's layout; got {shape}",
        )
    finite = np.isfinite(array)
    if not finite.all():
        row = int(np.argwhere(~finite)[0][0])
        raise FrameError("not_finite", f"point {row} holds a value that is not finite: {array[row].tolist()}")
    if (np.abs(array) > MAX_COORDINATE).any():
        row = int(np.argwhere(np.abs(array) > MAX_COORDINATE)[0][0])
        raise FrameError(
            "not_finite", f"point {row} is out of range (|value| > {MAX_COORDINATE:g}): {array[row].tolist()}"
        )
    return array.astype(np.float32), (float(width), float(height))


class RateLimit:
    """At most `rate` messages per second over the last second; a client over it is told once a
    second, not once a message."""

    def __init__(self, rate: float):
        self.rate, self.times, self.warned = rate, [], -math.inf

    def allow(self, now: float) -> bool:
        self.times = [t for t in self.times if t > now - 1.0]
        if len(self.times) >= self.rate:
            return False
        self.times.append(now)
        return True

    def warn(self, now: float) -> bool:
        """Whether to send the error for a refused message now."""
        if now - self.warned >= 1.0:
            self.warned = now
            return True
        return False
