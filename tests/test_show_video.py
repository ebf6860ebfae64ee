"""`show` on a real video: the extracted skeleton drawn over the video's own frames, as GIF and MP4
(the MP4 from a folder of the video's first frames, the other input `extract` reads)."""

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from accel_signs.cli import app

runner = CliRunner()
VIDEO = Path(__file__).parent / "data" / "signer_video.mp4"
FRAMES = 58  # tests/data/signer_video.mp4, 540x720


def test_show_draws_the_skeleton_over_the_video_as_gif_and_mp4(tmp_path, with_landmarkers):
    import cv2
    from PIL import Image

    gif = tmp_path / "v.gif"
    result = runner.invoke(app, ["show", str(VIDEO), "--out", str(gif), "--extractor", "tasks"])
    assert result.exit_code == 0, result.stderr
    with Image.open(gif) as im:
        assert im.n_frames == FRAMES
        frames = []
        for t in (0, 30, FRAMES - 1):
            im.seek(t)
            frames.append(np.asarray(im.convert("RGB")).astype(int))
    # The body panel (the left half) shows the video: most of it is not the figure's white, and it
    # changes from the first frame to the last (the signer moves), where a blank panel would not.
    body = [f[40:-20, 20 : f.shape[1] // 2] for f in frames]
    assert (body[0].sum(-1) < 700).mean() > 0.4
    assert np.abs(body[0] - body[2]).mean() > 5
    # The right hand's colour (#c44e52) is drawn over the video in frame 31, where she raises it.
    assert (np.abs(body[1] - (196, 78, 82)).sum(-1) < 40).sum() > 50

    # MP4 from the first 12 frames as a folder of images (extract's other input), to keep the test short.
    folder = tmp_path / "frames"
    folder.mkdir()
    capture = cv2.VideoCapture(str(VIDEO))
    for t in range(12):
        cv2.imwrite(str(folder / f"{t:03d}.png"), capture.read()[1])
    capture.release()
    mp4 = tmp_path / "v.mp4"
    result = runner.invoke(app, ["show", str(folder), "--out", str(mp4), "--extractor", "tasks"])
    assert result.exit_code == 0, result.stderr
    capture = cv2.VideoCapture(str(mp4))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    assert count == 12
