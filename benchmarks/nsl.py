"""The Nepali Sign Language fingerspelling set (github:bses7/Nepali-Sign-Language, commit
8f18fdd) -> an accel_signs clip store in the karsl184 layout. Used by real_data.py; never
ship the data (its repository states no licence).

Source facts (checked on the files):
- `training_dataset/master_metadata.csv`: relative_path (Windows backslashes), char,
  roman_label, frames, is_cropped, signer, type. We take type == sign and is_cropped ==
  False: 490 clips, 49 letters x 10 clips, signers S1, S2, S3, S4, S6, S14. One letter's
  roman_label is "NA", which pandas-style readers turn into a missing value; the csv module
  keeps it as text.
- each npz: `pose` (T, 33, 4) = MediaPipe pose minus the shoulder midpoint (not scaled);
  undetected pose rows are (-0.5, -0.5, 0, 0), i.e. zeros before the subtraction.
  `rh`/`lh` (T, 21, 3) = hand points minus the wrist, divided by the 3-D wrist -> point 9
  distance; `rh_meta`/`lh_meta` (T, 4) = wrist x, y, z minus the shoulder midpoint, and
  that distance; all zeros when the hand was not detected. `video_info` = (fps, width,
  height). `rh` is the signer's anatomical right hand (its wrist lies on pose 16).
- image coordinates are rebuilt with the shoulder midpoint at (0.5, 0.5): pose x, y + 0.5;
  hand = points x scale + meta[:3], then x, y + 0.5; undetected points stay 0.
- the videos' sizes differ from clip to clip, even within one signer (S3: 1080x1920,
  1280x720 and 1920x1080; S2: 3840x2160, 1920x1080 and 68 other sizes), so no single
  `--frame-size` fits the set: the npz route carries each clip's size.

`convert` writes the store directly; `convert_npz` writes the same clips in the original
project's npz layout (`{signer}-train/{sign:04}.npz`, one array per video; a signer's
several videos of a letter are the file's several arrays, in the order `convert` writes them),
for `accel-signs prepare --from npz`. With `sizes`, each file also holds a `frame_size`
array (clips, 2) that `prepare` reads as the clips' video sizes; without, the sizes are lost,
as in the original format.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np

from accel_signs.data.layout import keypoint_layout
from accel_signs.data.store import ClassInfo, StoreWriter
from fetched import archive

COMMIT = "8f18fdd"
METADATA = "training_dataset/master_metadata.csv"


def extract(git_dir: Path, dest: Path) -> Path:
    """`git archive` the training_dataset folder of a fetched bare repository into dest."""
    root = dest / "training_dataset"
    if not (root / "master_metadata.csv").exists():
        archive(git_dir, COMMIT, ("training_dataset",), dest)
    return root


def _clip(npz_path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """One video -> (frames (T, 184, 4) float32 in karsl184, (width, height))."""
    layout = keypoint_layout()
    with np.load(npz_path, allow_pickle=False) as d:
        pose, rh, lh, rh_meta, lh_meta, info = (d[k] for k in ("pose", "rh", "lh", "rh_meta", "lh_meta", "video_info"))
    t = len(pose)
    out = np.zeros((t, 184, 4), dtype=np.float32)
    # karsl184's pose points are MediaPipe pose 11..16 in order.
    body = pose[:, 11:17].copy()  # (T, 6, 4)
    body[..., :2] += 0.5
    missing = (body[..., 3] == 0) & (np.abs(body[..., :3]).sum(-1) < 1e-6)
    body[missing] = 0
    out[:, list(layout.parts["pose"])] = body
    for name, pts, meta in (("right_hand", rh, rh_meta), ("left_hand", lh, lh_meta)):
        points = list(layout.parts[name])
        present = np.abs(meta).sum(-1) > 0  # (T,)
        xyz = pts * meta[:, None, 3:4] + meta[:, None, :3]  # (T, 21, 3)
        xyz[..., :2] += 0.5
        for k, p in enumerate(points):
            out[present, p, :3] = xyz[present, k]
            out[present, p, 3] = 1.0
    return out, (float(info[1]), float(info[2]))


def signer_id(name: str) -> str:
    """S1 -> 01, S14 -> 14."""
    return f"{int(name.lstrip('Ss')):02d}"


def _rows(root: Path) -> tuple[list[dict[str, str]], dict[str, int], dict[str, str]]:
    """The sign clips of the metadata in store order, and letter -> label, letter -> char."""
    with open(root / "master_metadata.csv", encoding="utf-8-sig", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["type"] == "sign" and r["is_cropped"] == "False"]
    letters: dict[str, str] = {}
    for r in rows:  # sign numbers in the order the metadata first lists each letter
        label = r["roman_label"] or Path(r["relative_path"].replace("\\", "/")).stem.split("_")[0]
        letters.setdefault(label, r["char"])
    label_of = {label: i for i, label in enumerate(letters)}
    rows.sort(key=lambda r: (label_of[r["roman_label"] or "NA"], signer_id(r["signer"]), r["relative_path"]))
    return rows, label_of, letters


def convert_npz(root: Path, out: Path, sizes: bool = True) -> Path:
    """The sign clips of `root` as the original project's npz tree at `out`: one file per
    (signer, letter), `{signer}-train/{sign:04}.npz` (sign = label + 1), its arrays the clips
    in store order, plus a (clips, 2) `frame_size` array when `sizes`."""
    rows, label_of, _ = _rows(root)
    groups: dict[tuple[str, int], list[dict[str, str]]] = {}
    for r in rows:
        groups.setdefault((signer_id(r["signer"]), label_of[r["roman_label"] or "NA"] + 1), []).append(r)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for (signer, sign), group in groups.items():
        folder = tmp / f"{signer}-train"
        folder.mkdir(parents=True, exist_ok=True)
        clips = [_clip(root / r["relative_path"].replace("\\", "/")) for r in group]
        arrays = {f"arr_{i}": frames for i, (frames, _) in enumerate(clips)}
        if sizes:
            arrays["frame_size"] = np.array([size for _, size in clips], dtype=np.float32)  # (clips, 2)
        np.savez(folder / f"{sign:04d}.npz", **arrays)
    tmp.rename(out)
    return out


def convert(root: Path, out: Path) -> Path:
    """Write the sign clips of `root` (an extracted training_dataset folder) as a store with
    one split, `train` (folds choose signers with --val-signers)."""
    rows, label_of, letters = _rows(root)
    classes = [ClassInfo(i + 1, label, char) for i, (label, char) in enumerate(letters.items())]
    signers = sorted({signer_id(r["signer"]) for r in rows})
    with StoreWriter(out, classes, signers, "float32", source={"nsl": {"commit": COMMIT, "clips": len(rows)}}) as w:
        w.begin_split("train")
        for r in rows:
            frames, size = _clip(root / r["relative_path"].replace("\\", "/"))
            w.add_clip(
                frames, label_of[r["roman_label"] or "NA"], signers.index(signer_id(r["signer"])), frame_size=size
            )
    return out
