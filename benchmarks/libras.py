"""The Libras (Brazilian Sign Language) pose-only set (github:victordg21/Prova_IA, commit
b78cbd1) -> .npy clips and a manifest that `accel-signs prepare --from clips --layout pose33
--coords pixels` reads. Used by real_data.py; never ship the data (no licence stated).

Source facts (checked on the files): `json_frames/*.json` (2,501 files) hold
{"frames": [{"frame": i, "keypoints": [{"id": 0-32, "x", "y", "z", "visibility"}]}]}: MediaPipe
Pose with x, y in integer pixels and z in MediaPipe's own unit (x's scale as a fraction of the
width), so z is multiplied by the width here to be in pixels like x. `sinais.csv`: file_name,
width, height, duration_sec, num_frames, sinal (the sign), interprete (the signer; some names
carry stray spaces). 25 signs x 10 signers x 10 repetitions; one row of sinais.csv has an
empty file_name and is skipped.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from fetched import archive

COMMIT = "b78cbd1"


def extract(git_dir: Path, dest: Path) -> Path:
    """`git archive` json_frames and sinais.csv of a fetched bare repository into dest."""
    if not (dest / "sinais.csv").exists():
        archive(git_dir, COMMIT, ("json_frames", "sinais.csv"), dest)
    return dest


def convert(root: Path, out: Path) -> Path:
    """Write out/clips/*.npy (frames, 33, 4: x, y, z in pixels, visibility; NaN where a frame has
    no pose) and out/manifest.csv; returns the manifest's path."""
    (out / "clips").mkdir(parents=True, exist_ok=True)
    with open(root / "sinais.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "sign", "signer", "split", "width", "height"])
        for i, row in enumerate(rows):
            if not row["file_name"]:
                continue
            frames = json.loads((root / "json_frames" / row["file_name"]).read_text("utf-8"))["frames"]
            width = float(row["width"])
            clip = np.full((len(frames), 33, 4), np.nan, dtype=np.float32)
            for t, frame in enumerate(frames):
                for kp in frame["keypoints"]:
                    clip[t, kp["id"]] = (kp["x"], kp["y"], kp["z"] * width, kp["visibility"])
            name = f"clips/{i:04d}.npy"
            np.save(out / name, clip)
            writer.writerow(
                [name, row["sinal"].strip(), " ".join(row["interprete"].split()), "train", row["width"], row["height"]]
            )
    return manifest
