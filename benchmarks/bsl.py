"""British Sign Language fingerspelling and four word signs, hands only
(github:CodingOz/BSL-keypoint-processing, commit 2aa19a7) -> .npy clips, a hands-only layout
file and a manifest that `accel-signs prepare --from clips --layout <that file>` reads. Used by
real_data.py; never ship the data (the repository states no licence).

Source facts (checked on the files):
- `All_keypoint_data/keypoints_V2/<LETTER>/<submission>.json`: 327 recordings of 11 letters
  (A B E I J N O P S T U), and `All_keypoint_data/V2_extension_cases/<Word>/<submission>.json`:
  113 of four word signs (And, Coffee, Or, tea), from the same submissions. The videos were
  uploaded through the authors' web form; each file's stem is the submission (a UUID, or
  manual-0..4), which the authors' signer-disjoint evaluation treats as the signer: 36 in the
  letters, 38 in all (two submitted words only), at most one recording per sign each.
- each file: {"metadata": {resolution [w, h] of the stored video, rotation_applied (0, 90, 180,
  270: the frames were rotated by it before extraction), fps, swapped_dominance, ...},
  "frames": [{"hands": {"left": [21 x {landmark_id, x, y, z}] or [], "right": ...}}]}: legacy
  MediaPipe Hands (0.10.21), x and y as fractions of the rotated frame (a point may lie a
  little outside it), no pose or face.
- MediaPipe's own left/right labels do not follow the signing hand from video to video (it
  guesses handedness from a hand's look, as if the image were a selfie). The authors labelled
  the dominant hand of every recording by hand and, where MediaPipe had called it "left"
  (`swapped_dominance`, 198 of 440 files, in 33 of the 38 submissions), swapped the two lists
  and mirrored x (x -> 1 - x), so that "right" is always the dominant hand, as for a
  right-handed signer. We keep their files as they are: "right" fills the right-hand slot.

The layout is pose33-hands42 without the pose (left hand, then right hand, 21 points each; no
shoulders: the body frame is centred on the detected points), written next to the manifest.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from fetched import archive

COMMIT = "2aa19a7"
FOLDERS = ("All_keypoint_data/keypoints_V2", "All_keypoint_data/V2_extension_cases")
LAYOUT_FILE = "hands42.json"


def extract(git_dir: Path, dest: Path) -> Path:
    """`git archive` the two keypoint folders of a fetched bare repository into dest."""
    root = dest / "All_keypoint_data"
    if not (root / "keypoints_V2").exists():
        archive(git_dir, COMMIT, FOLDERS, dest)
    return root


def hands_layout() -> dict:
    """The built-in pose33-hands42 layout less its pose: a hands-only layout definition."""
    from accel_signs.data.layout import builtin_layout

    base = builtin_layout("pose33-hands42").definition
    keep = {p["name"] for p in base["points"] if p["part"] != "pose"}
    return {
        **base,
        "name": "hands42",
        "id": "mediapipe-hands42-v1",
        "description": "MediaPipe Hands alone: the left, then the right hand (21 points each); no pose, no face.",
        "parts": [p for p in base["parts"] if p != "pose"],
        "points": [p for p in base["points"] if p["name"] in keep],
        "roles": {"hands": base["roles"]["hands"]},
        "bones": [b for b in base["bones"] if b[0] in keep and b[1] in keep],
    }


def _clip(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """One recording -> (frames (T, 42, 4): left hand, right hand, x, y, z, visibility; NaN where
    a hand was not detected) and the (width, height) of the frames MediaPipe saw."""
    d = json.loads(path.read_text("utf-8"))
    meta = d["metadata"]
    clip = np.full((len(d["frames"]), 42, 4), np.nan, dtype=np.float32)
    for t, frame in enumerate(d["frames"]):
        # The authors' lists as they are: "right" is the dominant hand they labelled.
        for label, start in (("left", 0), ("right", 21)):
            for lm in frame["hands"][label]:
                clip[t, start + lm["landmark_id"]] = (lm["x"], lm["y"], lm["z"], 1.0)
    w, h = meta["resolution"]
    if meta.get("rotation_applied") in (90, 270):
        w, h = h, w
    return clip, (w, h)


def signer_id(stem: str) -> str:
    """A submission's signer id: the UUID's first 8 hex digits, or m0..m4 for manual-0..4."""
    return f"m{stem.split('-')[1]}" if stem.startswith("manual-") else stem.split("-")[0]


def convert(root: Path, out: Path) -> Path:
    """Write out/clips/*.npy, out/hands42.json and out/manifest.csv from an extracted
    All_keypoint_data folder; returns the manifest's path. Signs are the folder names in upper
    case (A ... U, AND, COFFEE, OR, TEA); `prepare` numbers them in sorted order."""
    files = sorted(root.glob("keypoints_V2/*/*.json")) + sorted(root.glob("V2_extension_cases/*/*.json"))
    if not files:
        raise FileNotFoundError(f"{root}: no keypoints_V2/*/*.json")
    (out / "clips").mkdir(parents=True, exist_ok=True)
    (out / LAYOUT_FILE).write_text(json.dumps(hands_layout(), indent=1))
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "sign", "signer", "split", "width", "height"])
        for i, path in enumerate(files):
            clip, (w, h) = _clip(path)
            name = f"clips/{i:04d}.npy"
            np.save(out / name, clip)
            writer.writerow([name, path.parent.name.upper(), signer_id(path.stem), "train", w, h])
    return manifest
