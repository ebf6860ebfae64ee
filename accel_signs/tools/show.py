"""Draw a clip as an animated skeleton (`accel-signs show`): how a user checks that their
keypoints are right (hands swapped, face missing, coordinates upside down).

Left: the whole frame, with the layout's bones, undetected points hidden, in the video's own
proportions; given a video, over its frames (as the original project's MediaPipe script drew them). Right: each hand enlarged around its wrist, so its shape can be read. With a
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
    """One frame at a time of a clip on a Figure: the whole body left, each hand enlarged right.

    The artists (one line collection of bones and one scatter per part on each axes) are made
    once and moved every frame: clearing the axes and adding a line per bone took matplotlib
    about 0.4 s a frame, most of the time a GIF took.
    """

    def __init__(
        self, fig: Any, clip: np.ndarray, layout: KeypointLayout, aspect: float, background: np.ndarray | None = None
    ) -> None:
        from matplotlib.collections import LineCollection

        self.clip, self.layout, self.aspect, self.background = clip, layout, aspect, background
        self.present = (clip != 0).any(-1)  # (T, P)
        self.part_of = np.empty(layout.num_points, dtype=object)
        for name, points in layout.parts.items():
            self.part_of[list(points)] = name
        self.bones = np.asarray(layout.bones, dtype=np.int64).reshape(-1, 2)  # (bones, 2) point pairs
        self.bone_colours = [_colour(self.part_of[a]) for a, _ in self.bones]
        self.hands = [h for h in (layout.hands or ()) if h.part is not None][:2]

        self.body_ax = ax = fig.add_axes([0.02, 0.04, 0.5, 0.86])
        ax.set_xlim(0, aspect)
        ax.set_ylim(1, 0)  # image y points down
        self._bare(ax)
        # The video's frame under the skeleton, in the same units (x: 0..aspect, y: 0..1 downwards).
        self.image = None if background is None else ax.imshow(background[0], extent=(0, aspect, 1, 0), zorder=0)
        self.body_title = ax.set_title("", fontsize=9)
        self.body_lines = ax.add_collection(LineCollection([], linewidths=1))
        self.body_points = {
            name: ax.scatter([], [], s=4 if name == "face" else 8, color=_colour(name)) for name in layout.parts
        }
        self.hand_views = []
        for i, hand in enumerate(self.hands):
            hax = fig.add_axes([0.56, 0.5 - 0.46 * i, 0.42, 0.42])
            self._bare(hax)
            points = np.asarray(layout.parts[hand.part])
            inside = np.isin(self.bones, points).all(1)  # the hand's own bones
            self.hand_views.append(
                (
                    hax,
                    hax.set_title("", fontsize=9),
                    hax.add_collection(LineCollection([], linewidths=2, color=_colour(hand.part))),
                    hax.scatter([], [], s=18, color=_colour(hand.part)),
                    points,
                    self.bones[inside],
                )
            )

    @staticmethod
    def _bare(ax: Any) -> None:
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])

    def __call__(self, t: int) -> list:
        self._body(t)
        for view, hand in zip(self.hand_views, self.hands):
            self._hand(view, hand, t)
        return []

    def _body(self, t: int) -> None:
        present = self.present[t]
        self.body_title.set_text(f"frame {t + 1}/{len(self.clip)}")
        if self.image is not None:
            self.image.set_data(self.background[t])
        xy = self.clip[t, :, :2] * [self.aspect, 1]  # (P, 2)
        shown = present[self.bones].all(1)  # bones with both ends detected
        self.body_lines.set_segments(xy[self.bones[shown]])  # (bones shown, 2, 2)
        self.body_lines.set_color([c for c, s in zip(self.bone_colours, shown) if s])
        for name, points in self.layout.parts.items():
            mine = [i for i in points if present[i]]
            self.body_points[name].set_offsets(xy[mine].reshape(-1, 2))

    def _hand(self, view: tuple, hand: HandRole, t: int) -> None:
        ax, title, lines, dots, points, bones = view
        present = self.present[t]
        seen = bool(present[hand.wrist])
        title.set_text(f"{hand.part.replace('_', ' ')}" + ("" if seen else " (not detected)"))
        if not seen:
            lines.set_segments([])
            dots.set_offsets(np.empty((0, 2)))
            return
        local = (self.clip[t, :, :2] - self.clip[t, hand.wrist, :2]) * [self.aspect, 1]  # (P, 2) about the wrist
        span = max(np.abs(local[points][present[points]]).max(), 1e-3) * 1.15
        ax.set_xlim(-span, span)
        ax.set_ylim(span, -span)
        lines.set_segments(local[bones[present[bones].all(1)]])
        dots.set_offsets(local[points[present[points]]].reshape(-1, 2))


def render(
    clip: np.ndarray,
    layout: KeypointLayout,
    out: Path,
    frame_size: tuple[float, float] | None = None,
    title: str = "",
    fps: float = 15.0,
    background: np.ndarray | None = None,
) -> Path:
    """Write `clip` (frames, points, 4) as an animated GIF or MP4 (by `out`'s suffix); with
    `background` (frames, height, width, 3) uint8, the skeleton is drawn over those frames."""
    # A Figure on its own Agg canvas, no pyplot: no global backend state (as core/plots.py).
    from matplotlib.animation import FuncAnimation, PillowWriter
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if out.suffix.lower() not in FORMATS:
        raise ConfigError(f"--out must end in {' or '.join(FORMATS)}, got {out.name}")
    width, height = frame_size or (1.0, 1.0)
    fig = Figure(figsize=(9, 5), dpi=80)
    FigureCanvasAgg(fig)
    if background is not None and len(background) != len(clip):
        raise ConfigError(f"the video has {len(background)} frames, its keypoints {len(clip)}")
    draw = _Drawing(fig, clip, layout, width / height, background)
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


def video_frames(path: Path, max_side: int = 480) -> np.ndarray:
    """The frames of a video (or frame folder) as `extract` reads them, RGB uint8, scaled down so
    their longer side is at most `max_side` pixels: what `show` draws the skeleton over."""
    import cv2

    from accel_signs.extractors.base import read_frames

    frames, width, height, _ = read_frames(path)
    factor = min(1.0, max_side / max(width, height))
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) if factor < 1 else f for f in frames])


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
