"""Keypoints from the browser (MediaPipe in the page): the server's checks of keypoint messages
over real sockets, the same answer as frames tracked on the server, the windows of all
connections classified in one batched forward, and the landmarker bundles served to the page."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mediapipe", reason="the serve extra is not installed (pip install 'accel-signs[serve]')")
pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'accel-signs[serve]')")
websockets_sync = pytest.importorskip("websockets.sync.client")
# The default extractor runs: with the Tasks API installed, on the test bundles (conftest).
pytestmark = pytest.mark.usefixtures("with_landmarkers")

import test_serve  # noqa: E402
from test_serve import VIDEO, _recv, _until, running_server  # noqa: E402

from helpers import free_port  # noqa: E402

checkpoint = test_serve.checkpoint  # a small karsl184 model of KArSL signs 160-163


@pytest.fixture(scope="module")
def tracked(checkpoint, landmarker_cache) -> tuple[list[np.ndarray], tuple[float, float]]:
    """The real video's keypoints in the checkpoint's layout, by the server's own tracker."""
    from accel_signs.extractors.base import read_frames
    from accel_signs.extractors.choose import ExtractorChoice
    from accel_signs.model.checkpoint import load_checkpoint
    from accel_signs.serve.config import LiveConfig
    from accel_signs.serve.pipeline import LiveSession

    frames, width, height, _ = read_frames(VIDEO)
    choice = ExtractorChoice(landmarkers=landmarker_cache / "landmarkers" if landmarker_cache else None)
    session = LiveSession(load_checkpoint(checkpoint), LiveConfig(), choice, whole_clip=True)
    try:
        for i, image in enumerate(frames):
            session.track(image, i, i / 30)
        keypoints = [k for _, _, k in session.buffer]
    finally:
        session.close()
    return keypoints, (float(width), float(height))


def _message(points: np.ndarray, size: tuple[float, float]) -> str:
    return json.dumps({"type": "keypoints", "width": int(size[0]), "height": int(size[1]), "points": points.tolist()})


def test_batched_windows_get_the_answer_each_gets_alone(checkpoint, tracked):
    from accel_signs.model.checkpoint import load_checkpoint
    from accel_signs.tools.inference import classify, classify_batch

    ckpt = load_checkpoint(checkpoint)
    keypoints, size = tracked
    clip = np.stack(keypoints)
    clips = [clip, clip[10:40], clip[:7], clip[::-1].copy()]
    sizes = [size, (640.0, 480.0), None, size]
    batched = classify_batch(ckpt, clips, sizes)
    for c, s, b in zip(clips, sizes, batched):
        alone = classify(ckpt, c, s)
        assert [t["class_id"] for t in b] == [t["class_id"] for t in alone]
        np.testing.assert_allclose([t["probability"] for t in b], [t["probability"] for t in alone], atol=1e-5)


def test_browser_keypoints_give_the_server_side_answer(checkpoint, tracked):
    """The same keypoints as a browser's messages or tracked here: the same window, the same top-5."""
    from accel_signs.model.checkpoint import load_checkpoint
    from accel_signs.serve.config import LiveConfig
    from accel_signs.serve.keypoints import keypoints_from
    from accel_signs.serve.pipeline import LiveSession

    ckpt = load_checkpoint(checkpoint)
    keypoints, size = tracked
    session = LiveSession(ckpt, LiveConfig(), whole_clip=True)
    for i, k in enumerate(keypoints):
        points, got_size = keypoints_from(json.loads(_message(k, size)), ckpt.layout.num_points, 1920 * 1080)
        session.add_keypoints(points, got_size, i, i / 30)
    assert session.tracker is None  # no MediaPipe on the server for a browser that runs it
    window = session.window()
    np.testing.assert_array_equal(window.clip, np.stack(keypoints))
    top = session.classify(window)[0]
    expected = LiveSession(ckpt, LiveConfig()).classify(window)[0]
    assert top == expected


def test_bad_keypoint_messages_each_get_one_error_and_the_connection_goes_on(checkpoint, tracked):
    keypoints, size = tracked
    good = [_message(k, size) for k in keypoints]
    num_points = len(keypoints[0])
    row = [0.5, 0.5, 0.0, 1.0]
    rows = [row] * num_points
    with running_server(checkpoint, max_keypoint_bytes=30_000) as url:
        with websockets_sync.connect(url) as ws:
            hello = _recv(ws)
            assert hello["layout"]["sources"][0] is not None and hello["limits"]["max_keypoint_bytes"] == 30_000
            bad = {
                "bad_keypoints": [
                    json.dumps({"type": "keypoints", "width": 640, "height": 480, "points": rows[:-1]}),  # a row short
                    json.dumps({"type": "keypoints", "width": 640, "height": 480, "points": [row[:3]] * num_points}),
                    json.dumps({"type": "keypoints", "width": 640, "height": 480, "points": "nope"}),
                    json.dumps({"type": "keypoints", "height": 480, "points": rows}),  # no width
                ],
                "not_finite": [
                    json.dumps({"type": "keypoints", "width": 640, "height": 480, "points": [[None] * 4] * num_points}),
                    json.dumps(
                        {"type": "keypoints", "width": 640, "height": 480, "points": [[float("nan")] * 4] + rows[1:]}
                    ),
                    json.dumps(
                        {"type": "keypoints", "width": 640, "height": 480, "points": rows[:-1] + [[float("inf")] * 4]}
                    ),
                    json.dumps({"type": "keypoints", "width": 640, "height": 480, "points": [[1e300] * 4] + rows[1:]}),
                ],
                "too_many_pixels": [json.dumps({"type": "keypoints", "width": 30000, "height": 30000, "points": rows})],
                "too_large": [json.dumps({"type": "keypoints", "pad": "x" * 40_000, "points": rows})],
            }
            for code, messages in bad.items():
                for text in messages:
                    ws.send(text)
                    msg = _until(ws, "error")
                    assert msg["code"] == code and msg["message"], (code, msg)
                    ws.send(good[0])  # the connection goes on: the next good frame is answered
                    assert _until(ws, "frame")["type"] == "frame"
            assert_no_more_errors(ws)
    # Too fast: a burst of six times the rate gets one error, not one a message; then it goes on.
    with running_server(checkpoint, max_keypoint_rate=5) as url, websockets_sync.connect(url) as ws:
        _recv(ws)
        for text in good[:30]:
            ws.send(text)
        got = collect(ws, 1.5)
        too_fast = [m for m in got if m["type"] == "error"]
        assert [m["code"] for m in too_fast] == ["too_fast"], too_fast
        assert "--max-keypoint-rate" in too_fast[0]["message"]
        assert [m for m in got if m["type"] == "frame"]  # those within the rate are served (the newest)
        time.sleep(1.1)
        ws.send(good[5])
        assert _until(ws, "frame")["dropped"] >= 25


def collect(ws, seconds: float) -> list[dict]:
    out, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            out.append(json.loads(ws.recv(timeout=left)))
        except TimeoutError:
            break
    return out


def assert_no_more_errors(ws) -> None:
    assert not [m for m in collect(ws, 0.3) if m["type"] == "error"]


def test_the_windows_of_all_connections_are_classified_together(checkpoint, tracked):
    """Four clients streaming the real video's keypoints at 30 frames/s: predictions for each,
    from forward passes that hold the windows of several of them."""
    keypoints, size = tracked
    good = [_message(k, size) for k in keypoints]
    results: dict[int, list[dict]] = {}

    def client(i: int, url: str) -> None:
        with websockets_sync.connect(url) as ws:
            _recv(ws)
            got = []
            for n in range(len(good) * 2):
                ws.send(good[n % len(good)])
                time.sleep(1 / 30)
                got += collect(ws, 0.0)
            got += collect(ws, 2.0)
            results[i] = got

    with running_server(checkpoint, max_clients=4) as url:
        threads = [threading.Thread(target=client, args=(i, url)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert sorted(results) == [0, 1, 2, 3]
    predictions = [m for got in results.values() for m in got if m["type"] == "prediction"]
    assert all(any(m["type"] == "prediction" for m in got) for got in results.values())
    assert not [m for got in results.values() for m in got if m["type"] == "error"]
    assert max(m["batch"] for m in predictions) > 1, [m["batch"] for m in predictions]


def test_the_landmarker_bundles_are_served_and_nothing_else(checkpoint, tmp_path):
    from accel_signs.model.checkpoint import load_checkpoint
    from accel_signs.serve.app import make_server
    from accel_signs.serve.config import ServeConfig

    bundle = tmp_path / "hand_landmarker.task"
    bundle.write_bytes(b"PK\x03\x04 a bundle's bytes")
    (tmp_path / "secret.txt").write_text("not for the client")
    port = free_port()
    cfg = ServeConfig(checkpoint=str(checkpoint), port=port)
    server = make_server(load_checkpoint(checkpoint), cfg, landmarkers={"hands": bundle})
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}/"
    try:
        info = json.loads(urllib.request.urlopen(base + "api/model", timeout=10).read())
        assert info["landmarkers"] == {"hands": "landmarkers/hand_landmarker.task"}
        assert urllib.request.urlopen(base + info["landmarkers"]["hands"], timeout=10).read() == bundle.read_bytes()
        for path in ("landmarkers/secret.txt", "landmarkers/..%2Fsecret.txt", "landmarkers/pose_landmarker_full.task"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(base + path, timeout=10)
            assert e.value.code == 404
        module = urllib.request.urlopen(base + "static/vendor/tasks-vision/vision_bundle.mjs", timeout=10)
        assert "javascript" in module.headers["content-type"]
        wasm = urllib.request.urlopen(base + "static/vendor/tasks-vision/wasm/vision_wasm_internal.wasm", timeout=10)
        assert wasm.read(4) == b"\0asm"
    finally:
        server.should_exit = True
        thread.join(30)


def test_vendored_mediapipe_keeps_its_licence():
    vendor = Path(__file__).parents[1] / "accel_signs" / "serve" / "static" / "vendor" / "tasks-vision"
    assert "Apache License" in (vendor / "LICENSE").read_text()
    assert "1.1.0" in (vendor / "README.md").read_text()
