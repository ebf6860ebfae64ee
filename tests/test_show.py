"""show: an animated skeleton of a clip, as GIF (matplotlib + Pillow) or MP4 (ffmpeg or OpenCV)."""

import numpy as np
import pytest
from typer.testing import CliRunner

from accel_signs.cli import app
from helpers import assert_one_line_error

# The default extractor runs: with the Tasks API installed, on the test bundles (conftest).
pytestmark = pytest.mark.usefixtures("with_landmarkers")

runner = CliRunner()


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_show_writes_an_animation(tiny_store, tmp_path, suffix):
    if suffix == ".mp4":
        from matplotlib.animation import FFMpegWriter

        if not FFMpegWriter.isAvailable():
            pytest.importorskip("cv2", reason="MP4 needs ffmpeg or OpenCV (the extract extra)")
    out = tmp_path / f"clip{suffix}"
    # The shortest clip: each frame takes matplotlib about 0.4 s to draw on a 2-core machine.
    clip = int(np.argmin(np.load(tiny_store / "train" / "clips.npy")[:, 1]))
    result = runner.invoke(app, ["show", str(tiny_store), "--clip", str(clip), "--out", str(out), "--fps", "10"])
    assert result.exit_code == 0, result.stderr
    assert out.stat().st_size > 5_000
    if suffix == ".gif":
        from PIL import Image

        with Image.open(out) as im:
            clip_frames = int(np.load(tiny_store / "train" / "clips.npy")[clip, 1])
            assert im.n_frames == clip_frames
    else:
        cv2 = pytest.importorskip("cv2")
        capture = cv2.VideoCapture(str(out))
        assert capture.isOpened() and capture.get(cv2.CAP_PROP_FRAME_COUNT) >= 5


def test_show_a_clip_file_with_its_layout(tmp_path):
    from accel_signs.data.synth import SynthSpec, _Generator

    clip = _Generator(SynthSpec(classes=2, signers=1, layout="pose33")).clip(0, 0, np.random.default_rng(0))
    np.save(tmp_path / "c.npy", clip[:10])  # (frames, 33, C): 10 frames are enough to draw
    result = runner.invoke(
        app, ["show", str(tmp_path / "c.npy"), "--layout", "pose33", "--out", str(tmp_path / "c.gif")]
    )
    assert result.exit_code == 0, result.stderr
    wrong = runner.invoke(app, ["show", str(tmp_path / "c.npy"), "--out", str(tmp_path / "d.gif")])  # karsl184
    assert wrong.exit_code == 1
    assert_one_line_error(wrong.stderr, "expected (frames, 184, 4)")
    bad = runner.invoke(app, ["show", str(tmp_path / "c.npy"), "--layout", "pose33", "--out", str(tmp_path / "c.png")])
    assert bad.exit_code == 1 and "--out must end in .gif or .mp4" in bad.stderr
