"""The record of which extractor made keypoints, and the landmarker bundle cache (downloads from a
real HTTP server on 127.0.0.1; no MediaPipe needed)."""

from __future__ import annotations

import hashlib
import http.server
import threading

import pytest

from accel_signs.core.errors import ConfigError, DatasetError
from accel_signs.data.extractor import SEED_RECIPE, ExtractorRecord
from accel_signs.extractors.bundles import BUNDLES, Bundle, bundle_dir, cache_dir

TASKS = ExtractorRecord("tasks", "1.2.3", "video", "tasks", 2, {"min_confidence": 0.5})


def test_record_round_trips_and_describes_itself():
    assert ExtractorRecord.from_json(TASKS.to_json()) == TASKS
    assert ExtractorRecord.from_json(SEED_RECIPE.to_json()) == SEED_RECIPE
    assert TASKS.describe() == "tasks, MediaPipe 1.2.3, video mode, 2 hands per frame"
    assert SEED_RECIPE.describe() == "seed (tasks), MediaPipe version unknown, image mode, 1 hand per frame"
    assert (SEED_RECIPE.backend, SEED_RECIPE.mode, SEED_RECIPE.num_hands) == ("tasks", "image", 1)
    assert TASKS.differences(SEED_RECIPE) == ["mode", "recipe", "num_hands"]
    assert TASKS.differences(ExtractorRecord("tasks", "1.2.2", "video", "tasks", 2)) == ["mediapipe"]
    assert TASKS.differences(ExtractorRecord("tasks", None, "video", "tasks", 2)) == []  # unknown version: no claim


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"backend": "openpose"}, "backend must be one of tasks, holistic"),
        ({"mode": "live"}, "mode must be one of video, image"),
        ({"num_hands": 3}, "num_hands must be 1, 2 or null"),
        ({"options": {"x": float("nan")}}, "options must hold JSON values only"),
        ({"recipe": ""}, "recipe must be a non-empty string"),
        ({"extra": 1}, "unknown fields extra"),
    ],
)
def test_a_bad_record_is_refused_by_name(change, needle):
    data = {**TASKS.to_json(), **change}
    with pytest.raises(DatasetError, match="store.json") as e:
        ExtractorRecord.from_json(data, where="store.json")
    assert needle in str(e.value)
    with pytest.raises(DatasetError, match="lacks mode"):
        ExtractorRecord.from_json({k: v for k, v in TASKS.to_json().items() if k != "mode"}, where="x.npz")
    with pytest.raises(DatasetError, match="not JSON"):
        ExtractorRecord.from_json("{", where="x.npz")


class _Server:
    """A real HTTP server on 127.0.0.1 serving `files` (path -> bytes)."""

    def __init__(self, files: dict[str, bytes]):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_checks_the_sha256_and_leaves_nothing_when_wrong(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCEL_SIGNS_CACHE", str(tmp_path / "cache"))
    body = b"not really a bundle " * 5000
    good = hashlib.sha256(body).hexdigest()
    with _Server({"/pose.task": body}) as server:
        wrong = {"pose": Bundle("pose_landmarker_full.task", f"{server.url}/pose.task", "0" * 64, len(body))}
        with pytest.raises(ConfigError, match="sha256") as e:
            bundle_dir(None, ["pose"], wrong)
        assert "nothing was saved" in str(e.value) and "--landmarkers" in str(e.value)
        assert not (tmp_path / "cache").exists()  # neither the file nor a half-written one nor the folder

        right = {"pose": Bundle("pose_landmarker_full.task", f"{server.url}/pose.task", good, len(body))}
        folder = bundle_dir(None, ["pose"], right)
    assert folder == cache_dir() == tmp_path / "cache" / "landmarkers"
    assert sorted(p.name for p in folder.iterdir()) == ["pose_landmarker_full.task"]
    assert (folder / "pose_landmarker_full.task").read_bytes() == body
    assert bundle_dir(None, ["pose"], right) == folder  # cached: no server needed now


def test_offline_without_bundles_names_files_urls_and_option(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCEL_SIGNS_CACHE", str(tmp_path / "cache"))
    with _Server({}) as server:  # up but holding nothing: 404
        gone = {n: Bundle(b.file, f"{server.url}/{b.file}", b.sha256, b.size) for n, b in BUNDLES.items()}
        with pytest.raises(ConfigError) as e:
            bundle_dir(None, ["pose", "hands"], gone)
    message = str(e.value)
    assert "\n" not in message and "HTTP 404" in message and "--landmarkers DIR" in message
    for name in ("pose", "hands"):
        assert gone[name].file in message and gone[name].url in message
    assert not (tmp_path / "cache").exists()


def test_a_landmarkers_folder_must_hold_the_bundles(tmp_path):
    (tmp_path / "hand_landmarker.task").write_bytes(b"x")
    assert bundle_dir(tmp_path, ["hands"]) == tmp_path
    with pytest.raises(ConfigError, match="lacks face_landmarker.task") as e:
        bundle_dir(tmp_path, ["hands", "face"])
    assert BUNDLES["face"].url in str(e.value)
    with pytest.raises(ConfigError, match="not a folder"):
        bundle_dir(tmp_path / "nope", ["hands"])


def test_pinned_bundles_are_versioned_urls():
    for bundle in BUNDLES.values():
        assert "/float16/1/" in bundle.url and bundle.url.endswith(bundle.file)
        assert len(bundle.sha256) == 64 and bundle.size > 1_000_000
