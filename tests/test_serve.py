"""`accel-signs serve`: the live pipeline against `predict` on a real video, and the server over
real sockets on 127.0.0.1 with bad input, disconnects and one client too many."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from accel_signs.cli import app
from accel_signs.data.synth import SynthSpec, write_synthetic
from helpers import assert_one_line_error, free_port, serving, train_tiny_run

mp = pytest.importorskip("mediapipe", reason="the serve extra is not installed (pip install 'accel-signs[serve]')")
cv2 = pytest.importorskip("cv2")
pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'accel-signs[serve]')")
websockets_sync = pytest.importorskip("websockets.sync.client")
from websockets.exceptions import ConnectionClosed  # noqa: E402

# The default extractor runs: with the Tasks API installed, on the test bundles (conftest).
pytestmark = pytest.mark.usefixtures("with_landmarkers")

VIDEO = Path(__file__).parent / "data" / "signer_video.mp4"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small karsl184 model whose classes carry KArSL's Arabic and English glosses (signs 160-163)."""
    root = tmp_path_factory.mktemp("serve")
    store = write_synthetic(root / "store", SynthSpec(classes=4, signers=2, reps=4, seed=5, first_sign=160))
    return train_tiny_run(store, root / "runs", "--num-epochs", "2") / "best"


@pytest.fixture(scope="module")
def video_frames() -> tuple[list[np.ndarray], float]:
    from accel_signs.extractors.base import read_frames

    frames, _, _, fps = read_frames(VIDEO)
    return list(frames), fps


def _live(checkpoint: Path, frames: list[np.ndarray], fps: float, cfg, whole_clip: bool):
    from accel_signs.model.checkpoint import load_checkpoint
    from accel_signs.serve.pipeline import LiveSession

    session = LiveSession(load_checkpoint(checkpoint), cfg, whole_clip=whole_clip)
    try:
        drawn = [session.track(image, i, i / fps) for i, image in enumerate(frames)]
        window = session.window()
        return drawn, window, session.classify(window)[0]
    finally:
        session.close()


def test_live_pipeline_gives_predicts_answer(checkpoint, video_frames):
    """The same decoded frames, no JPEG in between, a window covering the clip: predict's top-5."""
    from accel_signs.serve.config import LiveConfig
    from accel_signs.tools.inference import predict

    expected = predict(checkpoint, VIDEO, top_k=5)[0]["top"]
    frames, fps = video_frames
    covering = LiveConfig(window=1e3, preroll=1e3, idle_seconds=1e3, motion=0.0, min_frames=1)
    for cfg, whole_clip in ((LiveConfig(), True), (covering, False)):
        _, window, top = _live(checkpoint, frames, fps, cfg, whole_clip)
        assert (window.first_seq, window.last_seq, window.size) == (0, len(frames) - 1, (540.0, 720.0))
        assert [t["class_id"] for t in top] == [t["class_id"] for t in expected]
        np.testing.assert_allclose(
            [t["probability"] for t in top], [t["probability"] for t in expected], rtol=0, atol=1e-5
        )
        assert top[0]["ar"] == expected[0]["ar"] and top[0]["en"] == expected[0]["en"]


def test_idle_gating_on_the_real_video(checkpoint, video_frames):
    """No hands: idle, nothing to classify and only the pre-roll kept; moving hands: signing."""
    from accel_signs.serve.config import LiveConfig

    frames, fps = video_frames
    drawn, window, _ = _live(checkpoint, frames, fps, LiveConfig(), whole_clip=False)
    states = [d["state"] for d in drawn]
    hands = [d["hands"] for d in drawn]
    first_hands = hands.index(True)
    assert set(states[: first_hands + 1]) == {"idle"}  # the signer starts with the hands down
    assert "signing" in states
    # While signing, the window holds the frames from the sign's start (the pre-roll included).
    start = next(i for i, s in enumerate(states) if s == "signing")
    assert window.first_seq <= start and window.last_seq == len(frames) - 1
    assert all(p is None or len(p) == 2 for p in drawn[20]["points"])


def test_a_sign_is_accepted_once_at_its_peak():
    from accel_signs.serve.pipeline import SignAcceptor

    def top(c, p):
        return {"class_id": c, "probability": p}

    acc = SignAcceptor(threshold=0.5)
    out = [acc.update(top(1, p)) for p in (0.3, 0.6, 0.8, 0.7, 0.9, 0.4)]
    assert out == [None, None, None, top(1, 0.8), None, None]  # once, at the 0.8 peak
    assert acc.update(top(2, 0.7)) is None  # class 1 was accepted already
    assert acc.flush() == top(2, 0.7)  # the signer stopped at class 2's peak
    assert SignAcceptor(0.5).flush() is None
    low = SignAcceptor(0.5)
    assert [low.update(top(3, p)) for p in (0.2, 0.45, 0.3)] == [None, None, None]  # never above the threshold


def _jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def test_frames_are_checked_before_decoding():
    from accel_signs.serve.pipeline import FrameError, decode_frame, jpeg_size

    data = _jpeg(np.full((48, 64, 3), 90, np.uint8))
    assert jpeg_size(data) == (64, 48)
    assert decode_frame(data, 10**6, 10**6).shape == (48, 64, 3)
    cases = {
        "not_jpeg": (b"GIF89a not a frame", 10**6, 10**6),
        "truncated": (data[: len(data) // 2], 10**6, 10**6),
        "too_large": (data, 100, 10**6),
        "too_many_pixels": (data, 10**6, 64 * 47),
        "bad_jpeg": (b"\xff\xd8\xff\xd9", 10**6, 10**6),
    }
    for code, (payload, max_bytes, max_pixels) in cases.items():
        with pytest.raises(FrameError) as e:
            decode_frame(payload, max_bytes, max_pixels)
        assert e.value.code == code, (code, str(e.value))


def _huge_header(data: bytes, width: int, height: int) -> bytes:
    """The same JPEG with a start-of-frame that claims width x height: a decompression bomb."""
    i = data.index(b"\xff\xc0")
    return data[: i + 5] + struct.pack(">HH", height, width) + data[i + 9 :]


@contextlib.contextmanager
def running_server(checkpoint: Path, **options):
    from accel_signs.model.checkpoint import load_checkpoint
    from accel_signs.serve.config import ServeConfig

    cfg = ServeConfig(checkpoint=str(checkpoint), port=free_port(), **options)
    with serving(load_checkpoint(checkpoint), cfg) as where:
        yield f"ws://{where}/ws"


def _recv(ws, timeout: float = 30.0) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def _until(ws, kind: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        msg = _recv(ws, max(0.1, deadline - time.monotonic()))
        if msg["type"] == kind:
            return msg


class Streamer(threading.Thread):
    """A well-behaved client: the real video, frame after frame, one in flight."""

    def __init__(self, url: str, frames: list[bytes]):
        super().__init__(daemon=True)
        self.url, self.frames = url, frames
        self.counts = {"frame": 0, "prediction": 0, "error": 0}
        self.stop = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        with websockets_sync.connect(self.url) as ws:
            assert _recv(ws)["type"] == "hello"
            self.ready.set()
            with contextlib.suppress(ConnectionClosed):  # the server stopping at the end
                self._stream(ws)

    def _stream(self, ws) -> None:
        i = 0
        while not self.stop.is_set():
            ws.send(self.frames[i % len(self.frames)])
            i += 1
            while True:  # until this frame's answer
                msg = _recv(ws)
                self.counts[msg["type"]] = self.counts.get(msg["type"], 0) + 1
                if msg["type"] in ("frame", "error"):
                    break


def test_bad_input_and_one_client_too_many_leave_the_others_served(checkpoint, video_frames, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing from a client may be written to disk: not here either
    frames, _ = video_frames
    encoded = [_jpeg(cv2.cvtColor(f, cv2.COLOR_RGB2BGR)) for f in frames]
    with running_server(checkpoint, max_clients=2, max_frame_bytes=300_000) as url:
        good = Streamer(url, encoded)
        good.start()
        assert good.ready.wait(60)
        deadline = time.monotonic() + 90
        while good.counts["prediction"] == 0 and time.monotonic() < deadline:  # served before the bad input too
            time.sleep(0.1)
        with websockets_sync.connect(url, max_size=None) as bad:
            assert _recv(bad)["type"] == "hello"
            sent = {
                "not_jpeg": b"this is not an image at all",
                "truncated": encoded[20][: len(encoded[20]) // 2],
                "too_many_pixels": _huge_header(encoded[20], 30000, 30000),
                "too_large": encoded[20] + b"\0" * 400_000,  # over the byte limit, under the socket's
            }
            for code, payload in sent.items():
                bad.send(payload)
                msg = _until(bad, "error")
                assert msg["code"] == code and msg["message"], msg
            bad.send("a text message where a frame belongs")
            msg = _until(bad, "error")
            assert msg["code"] == "expected_frame" and "binary JPEG frame" in msg["message"]
            # The third client is refused with a reason, while the two others are served.
            with websockets_sync.connect(url) as third:
                msg = _recv(third)
                assert msg["type"] == "error" and msg["code"] == "busy" and "--max-clients" in msg["message"]
                with pytest.raises(ConnectionClosed) as closed:
                    third.recv(timeout=10)
                assert closed.value.rcvd.code == 1013
            # After all that, the bad client still gets answers to good frames.
            bad.send(encoded[25])
            assert _until(bad, "frame")["seq"] == len(sent)  # seqs count binary messages only
        # A frame over twice the byte limit: the WebSocket layer closes that connection (1009).
        with _connect_when_free(url) as huge:
            huge.send(b"\xff\xd8" + b"\0" * 700_000)
            with pytest.raises(ConnectionClosed) as closed:
                _recv(huge)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        _disconnect_mid_frame(url)
        before = dict(good.counts)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and (
            good.counts["frame"] < before["frame"] + 20 or good.counts["prediction"] <= before["prediction"]
        ):
            time.sleep(0.1)
        good.stop.set()
        good.join(60)
    # The good client was served all along: frames and predictions kept coming after all the bad input.
    assert good.counts["frame"] >= before["frame"] + 20, (before, good.counts)
    assert good.counts["prediction"] > before["prediction"] > 0 and good.counts["error"] == 0, (before, good.counts)
    assert list(tmp_path.iterdir()) == []


@contextlib.contextmanager
def _connect_when_free(url: str, timeout: float = 30.0):
    """A connection that got its hello: a client that just left frees its place once its
    frame in progress is done."""
    deadline = time.monotonic() + timeout
    while True:
        with websockets_sync.connect(url, max_size=None) as ws:
            if _recv(ws)["type"] == "hello":
                yield ws
                return
        assert time.monotonic() < deadline, "no place became free"
        time.sleep(0.2)


def _disconnect_mid_frame(url: str) -> None:
    """A raw client that opens a WebSocket, sends half of a binary frame and vanishes."""
    host, port = url.removeprefix("ws://").split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert b"101" in s.recv(4096).split(b"\r\n")[0]
        length = 100_000
        header = bytes([0x82, 0x80 | 127]) + struct.pack(">Q", length) + b"\0\0\0\0"  # binary, masked
        s.sendall(header + b"\xff\xd8" + b"\x10" * 5000)
    time.sleep(0.5)


def test_serve_refuses_a_missing_checkpoint_and_bad_options(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["serve", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "nope")
    result = runner.invoke(app, ["serve", str(tmp_path), "--threshold", "1.5"])
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "--threshold")
