"""extract (MediaPipe Holistic on videos and frame folders), predict on a video, show.

Generated videos (blank frames: nobody to detect) check shapes, layouts, labels, resuming and
reports; tests/data/signer_video.mp4 (a real signer, MIT-licensed, see its LICENSE file)
checks that people and hands are found."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from accel_signs.cli import app
from accel_signs.data.extractor import record_from_npz
from accel_signs.extractors.choose import installed_default
from helpers import train_tiny_run

mp = pytest.importorskip("mediapipe", reason="the extract extra is not installed (pip install 'accel-signs[extract]')")
cv2 = pytest.importorskip("cv2")

# The default extractor runs: with the Tasks API installed, on the test bundles (conftest).
pytestmark = pytest.mark.usefixtures("with_landmarkers")

runner = CliRunner()
REAL = Path(__file__).parent / "data" / "signer_video.mp4"


def _video(path: Path, frames: int = 6, size=(160, 120)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 40 + 20 * i, dtype=np.uint8))
    writer.release()
    return path


def _frames(folder: Path, frames: int = 4, size=(160, 120)) -> Path:
    folder.mkdir(parents=True)
    for i in range(frames):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((size[1], size[0], 3), 90, dtype=np.uint8))
    return folder


@pytest.fixture
def videos(tmp_path):
    root = tmp_path / "videos"
    _video(root / "01" / "0001_a.mp4")
    _video(root / "02" / "0002_b.mp4", frames=8, size=(120, 160))
    _frames(root / "02" / "0001_c")
    return root


PATTERN = r"(?P<signer>\d+)/(?P<sign>\d+)_"


def test_extract_writes_clips_manifest_and_reports_nobody(videos, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["extract", str(videos), str(out), "--pattern", PATTERN])
    assert result.exit_code == 0, result.stderr
    rows = (out / "manifest.csv").read_text().splitlines()
    assert rows[0].startswith("path,sign,signer,split,width,height")
    assert sorted(r.split(",")[0] for r in rows[1:]) == ["01/0001_a.npz", "02/0001_c.npz", "02/0002_b.npz"]
    assert "01/0001_a.npz,0001,01,train,160,120" in rows[1]
    with np.load(out / "02" / "0002_b.npz") as d:
        assert d["keypoints"].shape == (8, 184, 4) and d["frame_size"].tolist() == [120, 160]
        assert (d["keypoints"] == 0).all()  # nobody in a blank video: every point undetected
    with np.load(out / "02" / "0001_c.npz") as d:
        assert d["keypoints"].shape == (4, 184, 4)
    assert "no person detected in 3" in result.stderr
    assert result.stderr.count("warning: no person detected in") == 3
    # a store from the manifest
    store = runner.invoke(app, ["prepare", str(out / "manifest.csv"), str(tmp_path / "store"), "--from", "clips"])
    assert store.exit_code == 0, store.stderr


def test_extract_resumes_and_other_layouts(videos, tmp_path):
    out = tmp_path / "out"
    first = runner.invoke(app, ["extract", str(videos / "01"), str(out), "--layout", "holistic543"])
    assert first.exit_code == 0, first.stderr
    with np.load(out / "0001_a.npz") as d:
        assert d["keypoints"].shape == (6, 543, 4)
    stamp = os.stat(out / "0001_a.npz").st_mtime_ns
    again = runner.invoke(app, ["extract", str(videos / "01"), str(out), "--layout", "holistic543"])
    assert again.exit_code == 0 and "extracted 0 clip(s), 1 already done" in again.stderr
    assert os.stat(out / "0001_a.npz").st_mtime_ns == stamp
    assert (out / "manifest.csv").read_text().count("\n") == 2  # the skipped clip stays in the manifest


def test_a_broken_video_is_reported_and_the_others_go_on(videos, tmp_path):
    (videos / "01" / "0003_x.mp4").write_bytes(b"not a video")
    result = runner.invoke(app, ["extract", str(videos), str(tmp_path / "out"), "--workers", "2"])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "0003_x.mp4" in errors[0], result.stderr + repr(result.exception)
    assert (tmp_path / "out" / "01" / "0001_a.npz").exists() and not (tmp_path / "out" / "01" / "0003_x.npz").exists()


def test_bad_pattern_is_one_line(videos, tmp_path):
    result = runner.invoke(app, ["extract", str(videos), str(tmp_path / "out"), "--pattern", r"(?P<sign>\d+)"])
    assert result.exit_code == 1 and "named groups (?P<sign>...) and (?P<signer>...)" in result.stderr
    assert not (tmp_path / "out").exists()


def test_real_signer_video(tmp_path, tiny_store):
    """A real recording: a person and hands are found; predict on the video is extract + predict."""
    out = tmp_path / "out"
    result = runner.invoke(app, ["extract", str(REAL), str(out)])
    assert result.exit_code == 0, result.stderr
    with np.load(out / "signer_video.npz") as d:
        keypoints, size = d["keypoints"], d["frame_size"].tolist()
        assert int(d["pose_frames"]) == len(keypoints) == 58 and int(d["hand_frames"]) > 10
        record = record_from_npz(d, "signer_video.npz")
    assert size == [540, 720]
    assert record is not None and record.recipe == installed_default()  # auto: the installed MediaPipe's
    present = (keypoints != 0).any(-1)
    assert present[:, 0].all()  # shoulders in every frame
    # The face in every frame with Holistic; the test bundles' face model (conftest) finds it in
    # about half of them (29 of 58), and real bundles are not available here.
    assert present[:, 6:142].any(1).sum() >= (58 if record.backend == "holistic" else 20)
    run = train_tiny_run(tiny_store, tmp_path / "runs", "--num-epochs", "1", "--no-eval")
    on_video = runner.invoke(app, ["predict", str(run / "best"), str(REAL), "--json"])
    on_npz = runner.invoke(app, ["predict", str(run / "best"), str(out / "signer_video.npz"), "--json"])
    assert on_video.exit_code == 0 and on_npz.exit_code == 0, on_video.stderr + on_npz.stderr
    a, b = json.loads(on_video.stdout)[0], json.loads(on_npz.stdout)[0]
    assert a["top"] == b["top"] and a["frame_size"] == b["frame_size"] == [540, 720]
    # The extracted clip with the model's top-3 in the title (a video drawn under its skeleton:
    # test_show_video; extracting it a third time here only costs time).
    shown = runner.invoke(
        app,
        ["show", str(out / "signer_video.npz"), "--out", str(tmp_path / "real.gif"), "--checkpoint", str(run / "best")],
    )
    assert shown.exit_code == 0, shown.stderr
    assert (tmp_path / "real.gif").stat().st_size > 10_000
