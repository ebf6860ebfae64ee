"""Draw a clip as an animated skeleton (`accel-signs show`): how a user checks that their
keypoints are right (hands swapped, face missing, coordinates upside down).

Left: the whole frame, with the layout's bones, undetected points hidden, in the video's own
proportions. Right: each hand enlarged around its wrist, so its shape can be read. With a
checkpoint, the title carries the model's top-3.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from accel_signs.core.errors import ConfigError
from accel_signs.data.layout import KeypointLayout

logger = logging.getLogger(__name__)
FORMATS = (".gif", ".mp4")
_PART_COLOURS = {"pose": "#555555", "face": "#4c72b0", "right_hand": "#c44e52", "left_hand": "#55a868"}


def _colour(part: str) -> str:
    return _PART_COLOURS.get(part, "#8172b2")


def render(
    clip: np.ndarray,
    layout: KeypointLayout,
    out: Path,
    frame_size: tuple[float, float] | None = None,
    title: str = "",
    fps: float = 15.0,
) -> Path:
    """Write `clip` (frames, points, 4) as an animated GIF or MP4 (by `out`'s suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if out.suffix.lower() not in FORMATS:
        raise ConfigError(f"--out must end in {' or '.join(FORMATS)}, got {out.name}")
    width, height = frame_size or (1.0, 1.0)
    aspect = width / height
    present = (clip != 0).any(-1)  # (T, P)
    part_of = np.empty(layout.num_points, dtype=object)
    for name, points in layout.parts.items():
        part_of[list(points)] = name
    hands = [h for h in (layout.hands or ()) if h.part is not None]

    fig = plt.figure(figsize=(9, 5), dpi=80)
    body_ax = fig.add_axes([0.02, 0.04, 0.5, 0.86])
    hand_axes = [fig.add_axes([0.56, 0.5 - 0.46 * i, 0.42, 0.42]) for i in range(len(hands[:2]))]
    fig.suptitle(title, fontsize=10)

    def draw(t: int):
        body_ax.clear()
        body_ax.set_xlim(0, aspect)
        body_ax.set_ylim(1, 0)  # image y points down
        body_ax.set_aspect("equal")
        body_ax.set_xticks([])
        body_ax.set_yticks([])
        body_ax.set_title(f"frame {t + 1}/{len(clip)}", fontsize=9)
        xy = clip[t, :, :2] * [aspect, 1]
        for a, b in layout.bones:
            if present[t, a] and present[t, b]:
                body_ax.plot(xy[[a, b], 0], xy[[a, b], 1], color=_colour(part_of[a]), lw=1)
        seen = present[t]
        for name in layout.parts:
            mine = [i for i in layout.parts[name] if seen[i]]
            if mine:
                body_ax.scatter(xy[mine, 0], xy[mine, 1], s=4 if name == "face" else 8, color=_colour(name))
        for ax, hand in zip(hand_axes, hands):
            ax.clear()
            ax.set_xticks([])
            ax.set_yticks([])
            points = list(layout.parts[hand.part])
            ax.set_title(
                f"{hand.part.replace('_', ' ')}" + ("" if present[t, hand.wrist] else " (not detected)"), fontsize=9
            )
            ax.set_aspect("equal")
            if not present[t, hand.wrist]:
                continue
            local = (clip[t, :, :2] - clip[t, hand.wrist, :2]) * [aspect, 1]
            span = max(np.abs(local[points][present[t, points]]).max(), 1e-3) * 1.15
            ax.set_xlim(-span, span)
            ax.set_ylim(span, -span)
            for a, b in layout.bones:
                if a in points and b in points and present[t, a] and present[t, b]:
                    ax.plot(local[[a, b], 0], local[[a, b], 1], color=_colour(hand.part), lw=2)
            mine = [i for i in points if present[t, i]]
            ax.scatter(local[mine, 0], local[mine, 1], s=18, color=_colour(hand.part))
        return []

    from matplotlib.animation import FuncAnimation

    anim = FuncAnimation(fig, draw, frames=len(clip), blit=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    try:
        if out.suffix.lower() == ".gif":
            from matplotlib.animation import PillowWriter

            anim.save(tmp, writer=PillowWriter(fps=fps))
        else:
            _save_mp4(fig, draw, len(clip), tmp, fps)
        tmp.replace(out)
    finally:
        plt.close(fig)
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


def store_clip(store_path: Path, clip_id: int, split: str) -> tuple[np.ndarray, KeypointLayout, tuple | None, str]:
    """A clip of a store by its id in a split: frames, layout, frame size, a title."""
    from accel_signs.core.errors import DatasetError
    from accel_signs.data.store import open_store

    store = open_store(store_path)
    s = store.split(split)
    if not 0 <= clip_id < len(s):
        raise DatasetError(f"store {store_path} split {split!r} has clips 0..{len(s) - 1}, not {clip_id}")
    size = tuple(float(v) for v in s.frame_sizes[clip_id]) if s.frame_sizes is not None else None
    cls = store.classes[int(s.labels[clip_id])]
    title = f"{store_path.name} {split} clip {clip_id}: sign {cls.sign} {cls.en!r}, signer {store.signers[int(s.signers[clip_id])]}"
    return s.clip(clip_id).astype(np.float32), store.layout, size if size and size[0] > 0 else None, title
