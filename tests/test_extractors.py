"""The extractors on real frames (tests/data/signer_video.mp4), and the extractor travelling from a
store to a checkpoint, its model card, `predict` and `serve`.

The `tasks` extractor runs MediaPipe's real Tasks code on test bundles made from the models
MediaPipe 0.10.21's wheel ships (conftest.landmarker_cache); nothing is downloaded from Google."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from accel_signs.cli import app
from accel_signs.core.errors import ConfigError
from accel_signs.data.extractor import SEED_RECIPE, ExtractorRecord, record_from_npz
from accel_signs.data.layout import load_layout
from accel_signs.extractors.base import read_frames
from accel_signs.extractors.choose import ExtractorChoice
from accel_signs.extractors.tasks import _slots
from helpers import assert_one_line_error, cli_env, free_port, train_tiny_run

cv2 = pytest.importorskip("cv2", reason="the extract extra is not installed (pip install 'accel-signs[extract]')")

runner = CliRunner()
REAL = Path(__file__).parent / "data" / "signer_video.mp4"
WARNING = "was trained on keypoints from"


@pytest.fixture(scope="module")
def bundles(landmarker_cache: Path | None) -> Path:
    if landmarker_cache is None:
        pytest.skip("needs MediaPipe >= 0.10.30 (the tasks extractor; pip install 'accel-signs[extract]')")
    return landmarker_cache / "landmarkers"


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 8 frames of the real video, as a folder of frame images (a short real clip)."""
    folder = tmp_path_factory.mktemp("frames") / "signer8"
    folder.mkdir()
    images, *_ = read_frames(REAL)
    for i, image in zip(range(8), images):
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return folder


def _track(choice: ExtractorChoice, layout: str, limit: int = 58) -> tuple[np.ndarray, ExtractorRecord]:
    images, _, _, fps = read_frames(REAL)
    with choice.open(load_layout(layout), fps) as tracker:
        tracked = tracker.track(image for _, image in zip(range(limit), images))
        return tracked.keypoints, tracker.record


def test_tasks_finds_the_signer_and_puts_the_hands_in_the_signers_slots(bundles):
    keypoints, record = _track(ExtractorChoice("tasks", bundles), "holistic543")
    assert (record.backend, record.mode, record.recipe, record.num_hands) == ("tasks", "video", "tasks", 2)
    assert record.mediapipe == version("mediapipe")
    assert set(record.options["bundles"]) == {
        "pose_landmarker_full.task",
        "face_landmarker.task",
        "hand_landmarker.task",
    }
    lay = load_layout("holistic543")
    pose = {index: i for i, (source, index) in enumerate(lay.sources) if source == "pose"}
    left = [i for i, (source, _) in enumerate(lay.sources) if source == "left_hand"]
    right = [i for i, (source, _) in enumerate(lay.sources) if source == "right_hand"]
    assert (keypoints[:, pose[11], :2] != 0).all()  # the pose in every frame (58 of 58, as measured)
    seen = (keypoints[:, right] != 0).any((1, 2))
    assert seen.sum() >= 15  # the signer signs with the right hand
    # Each detected hand lies on the pose's wrist of its own side: the slot is the signer's hand.
    wrist = keypoints[seen][:, right[0], :2]
    assert np.median(np.linalg.norm(wrist - keypoints[seen][:, pose[16], :2], axis=1)) < 0.05
    assert not (keypoints[:, left] != 0).any()  # the left hand stays down, out of the frame


def test_every_layout_gets_the_same_points_in_its_own_order(bundles):
    """IMAGE mode is the same frame for frame: each shipped layout holds holistic543's points for its sources."""
    choice = ExtractorChoice("tasks-image", bundles)
    full, _ = _track(choice, "holistic543", limit=4)
    where = {src: i for i, src in enumerate(load_layout("holistic543").sources)}
    for name in ("karsl184", "pose33-hands42", "pose33"):
        keypoints, record = _track(choice, name, limit=4)
        lay = load_layout(name)
        assert keypoints.shape == (4, lay.num_points, 4)
        # holistic543 has the face mesh's 468 points; karsl184 also takes iris points (468-477)
        mine, theirs = zip(*[(i, where[s]) for i, s in enumerate(lay.sources) if s in where])
        assert len(mine) >= lay.num_points - 10
        np.testing.assert_allclose(keypoints[:, list(mine)], full[:, list(theirs)], atol=1e-6)
        if name == "pose33":  # only the landmarkers a layout needs run
            assert record.options["landmarkers"] == ["pose_landmarker_full"] and record.num_hands is None


def test_the_seed_recipe_is_one_value(bundles):
    keypoints, record = _track(ExtractorChoice("seed", bundles), "karsl184", limit=4)
    assert (record.backend, record.mode, record.recipe, record.num_hands) == ("tasks", "image", "seed", 1)
    assert not record.differences(SEED_RECIPE) and keypoints.shape == (4, 184, 4)


def test_hand_slots_follow_the_wrists_then_the_label():
    pose = np.zeros((33, 4), np.float32)
    pose[15, :2], pose[16, :2] = (0.7, 0.5), (0.3, 0.5)  # the signer's left wrist on the image's right
    a, b = np.zeros((21, 4), np.float32), np.zeros((21, 4), np.float32)
    a[0, :2], b[0, :2] = (0.31, 0.5), (0.69, 0.5)
    assert _slots([a], ["Left"], pose) == (None, a)  # the label says left, the wrist says right
    left, right = _slots([a, b], ["Right", "Right"], pose)
    assert left is b and right is a
    assert _slots([a], ["Left"], None) == (a, None)
    left, right = _slots([a, b], ["Right", "Left"], None)
    assert left is b and right is a


@pytest.fixture(scope="module")
def seed_checkpoint(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExtractorRecord]:
    """A checkpoint trained on a store whose meta.json says the seed's recipe made its keypoints."""
    root = tmp_path_factory.mktemp("seed-ckpt")
    store = root / "store"
    shutil.copytree(tiny_store, store)
    record = ExtractorRecord("tasks", version("mediapipe"), "image", "seed", 1, {"landmarkers": ["pose_landmarker"]})
    meta = json.loads((store / "meta.json").read_text("utf-8"))
    meta["extractor"] = record.to_json()
    (store / "meta.json").write_text(json.dumps(meta), "utf-8")
    return train_tiny_run(store, root / "runs", "--num-epochs", "1", "--no-eval") / "best", record


def test_the_checkpoint_carries_its_extractor_and_the_card_shows_it(seed_checkpoint):
    best, record = seed_checkpoint
    meta = json.loads((best / "config.json").read_text("utf-8"))
    assert ExtractorRecord.from_json(meta["extractor"]) == record
    card = (best / "README.md").read_text("utf-8")
    assert f"Keypoints made by: {record.describe()} (`--extractor seed`" in card


def test_predict_uses_the_checkpoints_extractor_and_warns_once_on_another(seed_checkpoint, bundles, frames, caplog):
    best, record = seed_checkpoint
    caplog.set_level(logging.WARNING)
    own = runner.invoke(app, ["predict", str(best), str(frames), "--json", "--landmarkers", str(bundles)])
    assert own.exit_code == 0, own.stderr
    assert json.loads(own.stdout)[0]["extractor"] == "seed"
    assert not [r for r in caplog.records if WARNING in r.getMessage()]
    other = runner.invoke(
        app, ["predict", str(best), str(frames), "--json", "--landmarkers", str(bundles), "--extractor", "tasks"]
    )
    assert other.exit_code == 0, other.stderr
    assert json.loads(other.stdout)[0]["extractor"] == "tasks"
    warned = [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]
    assert len(warned) == 1, warned
    assert record.describe() in warned[0] and "tasks, MediaPipe" in warned[0] and "--extractor seed" in warned[0]


def test_an_extracted_npz_records_its_extractor_and_predict_warns_on_it(
    seed_checkpoint, bundles, frames, tmp_path, caplog
):
    best, record = seed_checkpoint
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["extract", str(frames), str(out), "--extractor", "tasks", "--landmarkers", str(bundles)]
    )
    assert result.exit_code == 0, result.stderr
    with np.load(out / "signer8.npz") as npz:
        made = record_from_npz(npz, "signer8.npz")
    assert (made.recipe, made.mode, made.num_hands) == ("tasks", "video", 2)
    # The same folder, another extractor: refused (one folder, one extractor), nothing rewritten.
    again = runner.invoke(app, ["extract", str(frames), str(out), "--extractor", "seed", "--landmarkers", str(bundles)])
    assert again.exit_code == 1 and "extracted with tasks" in again.stderr
    caplog.set_level(logging.WARNING)
    predicted = runner.invoke(app, ["predict", str(best), str(out / "signer8.npz")])
    assert predicted.exit_code == 0, predicted.stderr
    assert len([r for r in caplog.records if WARNING in r.getMessage()]) == 1


def test_offline_first_run_without_bundles_is_one_line_and_writes_nothing(frames, tmp_path):
    from accel_signs.extractors.tasks import available

    if not available():
        pytest.skip("needs MediaPipe's Tasks API")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: every download fails, as offline
    env = cli_env(
        tmp_path, HTTPS_PROXY=dead, https_proxy=dead, HTTP_PROXY=dead, http_proxy=dead, NO_PROXY="", no_proxy=""
    )
    result = subprocess.run(
        [sys.executable, "-m", "accel_signs", "extract", str(frames), str(tmp_path / "out"), "--extractor", "tasks"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert_one_line_error(
        result.stderr, "cannot download", "pose_landmarker_full.task", "hand_landmarker.task", "face_landmarker.task"
    )
    assert "https://storage.googleapis.com/mediapipe-models/" in result.stderr and "--landmarkers DIR" in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def _serve(best: Path, root: Path, *args: str) -> tuple[subprocess.Popen, str, Path]:
    port, log = free_port(), root / f"serve-{time.monotonic_ns()}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "accel_signs", "serve", str(best), "--port", str(port), *args],
        env=cli_env(root),
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )
    url, deadline = f"http://127.0.0.1:{port}/", time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(url + "api/model", timeout=2).read()
            return proc, url, log
        except OSError:
            assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "the server did not start in 90 s"
            time.sleep(0.3)


def test_serve_uses_the_checkpoints_extractor_and_warns_once_on_another(seed_checkpoint, bundles, tmp_path):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    websockets_sync = pytest.importorskip("websockets.sync.client")
    best, record = seed_checkpoint
    for args, expected, warnings in (((), "seed", 0), (("--extractor", "tasks"), "tasks", 1)):
        proc, url, log = _serve(best, tmp_path, "--landmarkers", str(bundles), *args)
        try:
            info = json.loads(urllib.request.urlopen(url + "api/model", timeout=5).read())
            assert info["extractor"] == expected and info["trained_extractor"] == record.describe()
            for _ in range(2):  # two connections, each with its own tracker: still one warning
                with websockets_sync.connect(url.replace("http", "ws") + "ws", open_timeout=30) as ws:
                    assert json.loads(ws.recv(timeout=60))["type"] == "hello"
        finally:
            proc.terminate()
            proc.wait(30)
        text = log.read_text(errors="replace")
        assert text.count(WARNING) == warnings, text
        if warnings:
            assert record.describe() in text and "tasks, MediaPipe" in text


def test_auto_is_the_checkpoints_extractor_where_it_runs(monkeypatch):
    from accel_signs.extractors import choose

    holistic_made = ExtractorRecord("holistic", "0.10.21", "video", "holistic", None, {"model_complexity": 1})
    seed_made = ExtractorRecord("tasks", None, "image", "seed", 1, {})
    monkeypatch.setattr(choose.holistic, "available", lambda: False)  # MediaPipe >= 0.10.30 installed
    monkeypatch.setattr(choose.tasks, "available", lambda: True)
    monkeypatch.setattr(choose, "_version", lambda: (1, 2, 3))
    assert ExtractorChoice().resolved(seed_made).name == "seed"
    assert ExtractorChoice().resolved(holistic_made).name == "tasks"  # cannot run it: the installed one, warned
    assert ExtractorChoice().resolved(None).name == "tasks"
    assert ExtractorChoice("tasks-image").resolved(seed_made).name == "tasks-image"  # the user's choice stands
    monkeypatch.setattr(choose.holistic, "available", lambda: True)  # MediaPipe 0.10.21
    monkeypatch.setattr(choose, "_version", lambda: (0, 10, 21))
    assert ExtractorChoice().resolved(None).name == "holistic"
    assert ExtractorChoice().resolved(holistic_made).name == "holistic"
    with pytest.raises(ConfigError, match="--extractor must be one of auto, tasks, tasks-image, seed, holistic"):
        ExtractorChoice("openpose")
