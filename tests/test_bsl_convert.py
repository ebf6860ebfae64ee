"""benchmarks/bsl.py: the BSL keypoint files (the repository's format, made here) -> .npy clips, a
hands-only layout and a manifest that `prepare --from clips --layout` imports."""

import csv
import json
import sys
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from accel_signs.cli import app
from accel_signs.data.store import open_store

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bsl  # noqa: E402


def _hand(x0: float) -> list[dict]:
    return [{"cluster_id": 0, "landmark_id": i, "x": x0 + 0.01 * i, "y": 0.5, "z": -0.01 * i} for i in range(21)]


def _write(path: Path, resolution, rotation: int, frames: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"video_id": path.stem, "sign": "valid", "resolution": resolution, "rotation_applied": rotation}
    path.write_text(json.dumps({"metadata": meta, "frames": [{"hands": h} for h in frames]}))


def test_bsl_convert_and_prepare(tmp_path):
    root = tmp_path / "All_keypoint_data"
    # A letter filmed upright and stored on its side (rotated 90 before extraction): 3 frames, the
    # dominant ("right") hand in all, the other in the first only.
    _write(
        root / "keypoints_V2/A/1be98b34-0edc-41ee-871c-e592c0b4198f.json",
        [480, 360],
        90,
        [
            {"left": _hand(0.2), "right": _hand(0.6)},
            {"left": [], "right": _hand(0.6)},
            {"left": [], "right": _hand(0.7)},
        ],
    )
    _write(root / "V2_extension_cases/tea/manual-3.json", [1280, 720], 0, [{"left": _hand(0.3), "right": []}] * 2)
    manifest = bsl.convert(root, tmp_path / "clips")

    rows = list(csv.DictReader(manifest.open()))
    assert [(r["sign"], r["signer"], r["width"], r["height"]) for r in rows] == [
        ("A", "1be98b34", "360", "480"),  # width and height of the rotated frames
        ("TEA", "m3", "1280", "720"),
    ]
    clip = np.load(tmp_path / "clips" / rows[0]["path"])
    assert clip.shape == (3, 42, 4)
    assert np.allclose(clip[0, 21 + 5], (0.65, 0.5, -0.05, 1.0))  # "right" -> the right-hand slot, points 21-41
    assert np.allclose(clip[0, 0, :3], (0.2, 0.5, 0.0))  # "left" -> points 0-20
    assert np.isnan(clip[1:, :21]).all() and not np.isnan(clip[:, 21:]).any()

    store_dir = tmp_path / "store"
    result = CliRunner().invoke(
        app,
        [
            "prepare",
            str(manifest),
            str(store_dir),
            "--from",
            "clips",
            "--layout",
            str(manifest.parent / "hands42.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    store = open_store(store_dir)
    assert store.layout.name == "hands42" and store.layout.num_points == 42
    assert store.layout.shoulders is None and [h.wrist for h in store.layout.hands] == [21, 0]
    assert sorted(store.signers) == ["1be98b34", "m3"]
    split = store.split("train")
    assert len(split) == 2
    assert np.allclose(sorted(split.aspects), [360 / 480, 1280 / 720])  # width / height, as MediaPipe saw them
