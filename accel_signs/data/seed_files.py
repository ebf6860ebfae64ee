"""The original project's npz files in the variants it wrote over time (`prepare --from npz`).

- **3 channels.** Its files from before 2026-01-23 hold (frames, 184, 3): x, y, z without
  visibility. They are read with visibility derived from detection: 1 where a point is present
  (not all zeros), 0 where it is not. The store's `source` records how many clips were read so.
- **"Adjusted".** An option of its extractor re-centres each body part on its own: each part's
  points are taken relative to that part's own centre in the frame, not image coordinates. The
  model's input (model/features.py) needs image coordinates: the body frame, the hands' places
  relative to the shoulders and the motion all come from them, and re-centred parts would train
  a model that sees every part, both hands included, at one place. Such files are refused.

How an adjusted clip is recognised: in image coordinates a detected part's centre (the mean
x, y of its present points) lies inside the picture, where the signer is. Re-centred about
itself, every detected part's centre sits at the origin (0, 0), with about half its points
negative. A clip is adjusted when most of its
detected part-frames (one part in one frame) have their centre within CENTRED_RADIUS of the
origin: a part there in image coordinates would be in the top-left corner of the picture, cut
by both edges, frame after frame, which no signer recording shows.
"""

from __future__ import annotations

import numpy as np

from accel_signs.core.errors import DatasetError
from accel_signs.data.layout import NUM_CHANNELS, KeypointLayout

# A part-frame whose centre lies this close to (0, 0) in both x and y counts as centred.
CENTRED_RADIUS = 0.05
# A clip with more than this share of its detected part-frames centred is adjusted.
ADJUSTED_SHARE = 0.5
# Clips with fewer detected part-frames than this say too little to tell, and are not judged.
MIN_PART_FRAMES = 3

ADJUSTED_HELP = (
    "its body parts are re-centred each on its own centre (the original project's 'adjusted' extraction "
    "option), not in image coordinates, and the model needs image coordinates. Extract these videos again "
    "without that option (or with `accel-signs extract`), then prepare the new files"
)


def with_detected_visibility(clip: np.ndarray) -> np.ndarray:
    """(frames, points, 3) x, y, z -> (frames, points, 4): visibility 1 where a point is present
    (any coordinate non-zero), 0 where it is all zeros (not detected)."""
    out = np.zeros((*clip.shape[:2], NUM_CHANNELS), dtype=clip.dtype)
    out[..., :3] = clip
    out[..., 3] = np.any(clip != 0, axis=-1)
    return out


def centred_share(clip: np.ndarray, layout: KeypointLayout) -> tuple[float, int]:
    """(share of detected part-frames whose centre lies within CENTRED_RADIUS of the origin,
    number of detected part-frames) of a (frames, points, >=2) clip."""
    centred = detected = 0
    for points in layout.parts.values():
        xy = clip[:, list(points), :2].astype(np.float64)  # (frames, part points, 2)
        present = np.any(clip[:, list(points)] != 0, axis=-1)  # (frames, part points)
        count = present.sum(axis=1)
        frames = count > 0
        if not frames.any():
            continue
        centre = (xy * present[..., None]).sum(axis=1)[frames] / count[frames, None]
        centred += int((np.abs(centre) < CENTRED_RADIUS).all(axis=1).sum())
        detected += int(frames.sum())
    return (centred / detected if detected else 0.0), detected


def check_not_adjusted(clip: np.ndarray, where: str, layout: KeypointLayout) -> None:
    """Raise DatasetError naming `where` if the clip's parts are re-centred ("adjusted")."""
    share, detected = centred_share(clip, layout)
    if detected >= MIN_PART_FRAMES and share > ADJUSTED_SHARE:
        raise DatasetError(
            f"{where}: {share:.0%} of its {detected} detected part-frames are centred at (0, 0): {ADJUSTED_HELP}"
        )
