"""Draw a clip as an animated skeleton (`accel-signs show`): how a user checks that their
keypoints are right (hands swapped, face missing, coordinates upside down).

Left: the whole frame, with the layout's bones, undetected points hidden, in the video's own
proportions. Right: each hand enlarged around its wrist, so its shape can be read. With a
checkpoint, the title carries the model's top-3.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from accel_signs.core.errors import ConfigError
from accel_signs.data.layout import HandRole, KeypointLayout

logger = logging.getLogger(__name__)
FORMATS = (".gif", ".mp4")
_PART_COLOURS = {"pose": "#555555", "face": "#4c72b0", "right_hand": "#c44e52", "left_hand": "#55a868"}


def _colour(part: str) -> str:
    return _PART_COLOURS.get(part, "#8172b2")


class _Drawing:
    """One frame at a time of a clip on a Figure: the whole body left, each hand enlarged right."""

    def __init__(self, fig: Any, clip: np.ndarray, layout: KeypointLayout, aspect: float) -> None:
        self.clip, self.layout, self.aspect = clip, layout, aspect
        self.present = (clip != 0).any(-1)  # (T, P)
        self.part_of = np.empty(layout.num_points, dtype=object)
        for name, points in layout.parts.items():
            self.part_of[list(points)] = name
        self.hands = [h for h in (layout.hands or ()) if h.part is not None]
        self.body_ax = fig.add_axes([0.02, 0.04, 0.5, 0.86])
        self.hand_axes = [fig.add_axes([0.56, 0.5 - 0.46 * i, 0.42, 0.42]) for i in range(len(self.hands[:2]))]

    def __call__(self, t: int) -> list:
        self._body(t)
        for ax, hand in zip(self.hand_axes, self.hands):
            self._hand(ax, hand, t)
        return []

    def _body(self, t: int) -> None:
        ax, present, layout = self.body_ax, self.present, self.layout
        ax.clear()
        ax.set_xlim(0, self.aspect)
        ax.set_ylim(1, 0)  # image y points down
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"frame {t + 1}/{len(self.clip)}", fontsize=9)
        xy = self.clip[t, :, :2] * [self.aspect, 1]
        for a, b in layout.bones:
            if present[t, a] and present[t, b]:
                ax.plot(xy[[a, b], 0], xy[[a, b], 1], color=_colour(self.part_of[a]), lw=1)
        for name in layout.parts:
            mine = [i for i in layout.parts[name] if present[t, i]]
            if mine:
                ax.scatter(xy[mine, 0], xy[mine, 1], s=4 if name == "face" else 8, color=_colour(name))

    def _hand(self, ax: Any, hand: HandRole, t: int) -> None:
        present, clip = self.present, self.clip
        ax.clear()
        ax.set_xticks([])
        ax.set_yticks([])
        points = list(self.layout.parts[hand.part])
        seen = present[t, hand.wrist]
        ax.set_title(f"{hand.part.replace('_', ' ')}" + ("" if seen else " (not detected)"), fontsize=9)
        ax.set_aspect("equal")
        if not seen:
            return
        local = (clip[t, :, :2] - clip[t, hand.wrist, :2]) * [self.aspect, 1]
        span = max(np.abs(local[points][present[t, points]]).max(), 1e-3) * 1.15
        ax.set_xlim(-span, span)
        ax.set_ylim(span, -span)
        for a, b in self.layout.bones:
            if a in points and b in points and present[t, a] and present[t, b]:
                ax.plot(local[[a, b], 0], local[[a, b], 1], color=_colour(hand.part), lw=2)
        mine = [i for i in points if present[t, i]]
        ax.scatter(local[mine, 0], local[mine, 1], s=18, color=_colour(hand.part))


def render(
    clip: np.ndarray,
    layout: KeypointLayout,
    out: Path,
    frame_size: tuple[float, float] | None = None,
    title: str = "",
    fps: float = 15.0,
) -> Path:
    """Write `clip` (frames, points, 4) as an animated GIF or MP4 (by `out`'s suffix)."""
    # A Figure on its own Agg canvas, no pyplot: no global backend state (as core/plots.py).
    from matplotlib.animation import FuncAnimation, PillowWriter
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if out.suffix.lower() not in FORMATS:
        raise ConfigError(f"--out must end in {' or '.join(FORMATS)}, got {out.name}")
    width, height = frame_size or (1.0, 1.0)
    fig = Figure(figsize=(9, 5), dpi=80)
    FigureCanvasAgg(fig)
    draw = _Drawing(fig, clip, layout, width / height)
    fig.suptitle(title, fontsize=10)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    try:
        if out.suffix.lower() == ".gif":
            FuncAnimation(fig, draw, frames=len(clip), blit=False).save(tmp, writer=PillowWriter(fps=fps))
        else:
            _save_mp4(fig, draw, len(clip), tmp, fps)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _save_mp4(fig, draw, frames: int, path: Path, fps: float) -> None:
    """MP4 through matplotlib's ffmpeg writer when ffmpeg is installed, else OpenCV's encoder."""
    from matplotlib.animation import FFMpegWriter

    if FFMpegWriter.isAvailable():
        from matplotlib.animation import FuncAnimation

        FuncAnimation(fig, draw, frames=frames, blit=False).save(path, writer=FFMpegWriter(fps=fps))
        return
    try:
        import cv2
    except ImportError:
        raise ConfigError(
            "writing MP4 needs ffmpeg on the PATH or OpenCV (pip install 'accel-signs[extract]'); a .gif needs neither"
        ) from None
    fig.canvas.draw()
    w, h = fig.canvas.get_width_height()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    try:
        for t in range(frames):
            draw(t)
            fig.canvas.draw()
            rgba = np.asarray(fig.canvas.buffer_rgba())
            writer.write(cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGR))
    finally:
        writer.release()


def store_clip(store_path: Path, clip_id: int, split_name: str) -> tuple[np.ndarray, KeypointLayout, tuple | None, str]:
    """A clip of a store by its id in a split: frames, layout, frame size, a title."""
    from accel_signs.core.errors import DatasetError
    from accel_signs.data.store import open_store

    store = open_store(store_path)
    store_split = store.split(split_name)
    if not 0 <= clip_id < len(store_split):
        raise DatasetError(
            f"store {store_path} split {split_name!r} has clips 0..{len(store_split) - 1}, not {clip_id}"
        )
    size = tuple(float(v) for v in store_split.frame_sizes[clip_id]) if store_split.frame_sizes is not None else None
    cls = store.classes[int(store_split.labels[clip_id])]
    title = f"{store_path.name} {split_name} clip {clip_id}: sign {cls.sign} {cls.en!r}, signer {store.signers[int(store_split.signer_index[clip_id])]}"
    return store_split.clip(clip_id).astype(np.float32), store.layout, size if size and size[0] > 0 else None, title
