"""`accel-signs serve` for real deployments, over real sockets on 127.0.0.1: the WebSocket
refuses other origins, /healthz and /readyz before and after the model loads, options from
ACCEL_SIGNS_SERVE_* environment variables, --root-path, and --workers."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from accel_signs.cli import app
from accel_signs.data.synth import SynthSpec, write_synthetic
from helpers import assert_one_line_error, cli_env, free_port, serving, train_tiny_run

pytest.importorskip("mediapipe", reason="the serve extra is not installed (pip install 'accel-signs[serve]')")
pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'accel-signs[serve]')")
websockets_sync = pytest.importorskip("websockets.sync.client")
from websockets.exceptions import InvalidStatus  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deploy")
    store = write_synthetic(root / "store", SynthSpec(classes=4, signers=2, reps=4, seed=5, first_sign=160))
    return train_tiny_run(store, root / "runs", "--num-epochs", "1") / "best"


def _get(url: str) -> tuple[int, dict | str]:
    """Status and body (JSON when it is) of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            status, body, kind = r.status, r.read().decode(), r.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        status, body, kind = e.code, e.read().decode(), e.headers.get("content-type", "")
    return status, json.loads(body) if kind.startswith("application/json") else body


def test_origins_are_compared_as_browsers_send_them():
    from accel_signs.core.errors import ConfigError
    from accel_signs.serve.app import origin_allowed
    from accel_signs.serve.config import ServeConfig

    assert origin_allowed(None, "a.org", ())  # not a browser
    assert origin_allowed("https://a.org", "a.org", ())
    assert origin_allowed("https://A.org:443", "a.org:443", ())
    assert origin_allowed("http://127.0.0.1:8000", "127.0.0.1:8000", ())
    assert not origin_allowed("http://127.0.0.1:9000", "127.0.0.1:8000", ())
    assert not origin_allowed("https://evil.example", "a.org", ())
    assert not origin_allowed("null", "a.org", ())
    assert not origin_allowed("https://a.org.evil.example", "a.org", ())
    cfg = ServeConfig(checkpoint="x", allowed_origins="https://B.org:443/, http://c.org:8080")
    assert cfg.allowed_origins == ("https://b.org", "http://c.org:8080")
    assert origin_allowed("https://b.org", "a.org", cfg.allowed_origins)
    assert not origin_allowed("http://b.org", "a.org", cfg.allowed_origins)  # another scheme, another origin
    assert origin_allowed("https://anything.example", "a.org", ("*",))
    for bad in ("b.org", "ftp://b.org", "https://b.org/path", "https://b.org:99999"):
        with pytest.raises(ConfigError, match="--allowed-origins"):
            ServeConfig(checkpoint="x", allowed_origins=bad)
    with pytest.raises(ConfigError, match="--root-path"):
        ServeConfig(checkpoint="x", root_path="signs")
    assert ServeConfig(checkpoint="x", root_path="/signs/").root_path == "/signs"


def test_a_websocket_from_another_origin_is_refused(checkpoint, with_landmarkers):
    from accel_signs.model.checkpoint import load_checkpoint
    from accel_signs.serve.config import ServeConfig

    port = free_port()
    # Room for every client: each one left may still be closing when the next comes.
    cfg = ServeConfig(checkpoint=str(checkpoint), port=port, allowed_origins="https://friend.example", max_clients=5)
    with serving(load_checkpoint(checkpoint), cfg) as where:
        url = f"ws://{where}/ws"
        for evil in ("https://evil.example", f"http://127.0.0.1:{port + 1}", "null"):
            with pytest.raises(InvalidStatus) as refused:
                websockets_sync.connect(url, origin=evil, open_timeout=10)
            assert refused.value.response.status_code == 403, evil
        for good in (f"http://{where}", "https://friend.example", None):
            with websockets_sync.connect(url, origin=good, open_timeout=10) as ws:
                assert json.loads(ws.recv(timeout=30))["type"] == "hello", good


def test_healthz_and_readyz_before_and_after_the_model_loads(checkpoint, with_landmarkers):
    from accel_signs.serve.app import load_ready
    from accel_signs.serve.config import ServeConfig

    gate = threading.Event()

    def held(cfg, state):  # the real load, once the test has looked at the server before it
        assert gate.wait(60)
        return load_ready(cfg, state)

    cfg = ServeConfig(checkpoint=str(checkpoint), port=free_port())
    with serving(None, cfg, loader=held) as where:
        base = f"http://{where}"
        assert _get(base + "/healthz") == (200, {"alive": True})
        assert _get(base + "/readyz") == (503, {"ready": False, "reason": "loading the checkpoint"})
        assert _get(base + "/api/model")[0] == 503
        with websockets_sync.connect(f"ws://{where}/ws", open_timeout=10) as ws:
            error = json.loads(ws.recv(timeout=10))
            assert error["type"] == "error" and error["code"] == "not_ready", error
        gate.set()
        deadline = time.monotonic() + 60
        while (answer := _get(base + "/readyz"))[0] != 200:
            assert answer[0] == 503 and time.monotonic() < deadline, answer
            time.sleep(0.1)
        assert answer[1]["ready"] is True and answer[1]["checkpoint"] == "best"
        assert _get(base + "/api/model")[1]["classes"] == 4
        with websockets_sync.connect(f"ws://{where}/ws", open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=30))["type"] == "hello"
        assert _get(base + "/healthz") == (200, {"alive": True})


def test_a_model_that_fails_to_load_keeps_the_server_unready(tmp_path):
    from accel_signs.serve.app import load_ready
    from accel_signs.serve.config import ServeConfig

    failures = []
    cfg = ServeConfig(checkpoint=str(tmp_path / "gone"), port=free_port())
    with serving(None, cfg, loader=load_ready, on_failure=failures.append) as where:
        deadline = time.monotonic() + 30
        while not failures:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        status, body = _get(f"http://{where}/readyz")
        assert status == 503 and body["reason"].startswith("failed: ") and "gone" in body["reason"], body
        assert _get(f"http://{where}/healthz")[0] == 200


def test_weights_that_fail_to_load_stop_the_server_with_one_line(checkpoint, tmp_path):
    """config.json reads (checked before listening), the weights do not (loaded after): the
    server stops, exit 1, one line naming the file."""
    import shutil

    broken = shutil.copytree(checkpoint, tmp_path / "broken")
    (broken / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes()[:100])
    result = subprocess.run(
        [sys.executable, "-m", "accel_signs", "serve", str(broken), "--port", str(free_port())],
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result.stderr, "model.safetensors")


def _bundles(landmarker_cache: Path | None) -> dict[str, str]:
    """The test bundles (conftest) for a server process, by its environment variable."""
    return {"ACCEL_SIGNS_SERVE_LANDMARKERS": str(landmarker_cache / "landmarkers")} if landmarker_cache else {}


@contextlib.contextmanager
def _cli_serving(tmp_path: Path, landmarker_cache: Path | None, args: list[str], **env: str):
    """`accel-signs serve` as a user starts it, until /readyz says ready."""
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "accel_signs", "serve", *args],
        env=cli_env(
            tmp_path, GLOG_minloglevel="2", ACCEL_SIGNS_SERVE_PORT=str(port), **_bundles(landmarker_cache), **env
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if _get(f"http://127.0.0.1:{port}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "serve.log").read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "not ready in 120 s"
            time.sleep(0.3)
        yield port, proc
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def test_options_from_the_environment_and_the_root_path(checkpoint, tmp_path, landmarker_cache):
    """Every option of the command, the checkpoint included, from ACCEL_SIGNS_SERVE_*; a flag
    given on the command line wins over its variable."""
    help_text = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200).output
    for name in ("CHECKPOINT", "PORT", "ROOT_PATH", "ALLOWED_ORIGINS", "WORKERS", "MAX_CLIENTS", "WINDOW"):
        assert f"ACCEL_SIGNS_SERVE_{name}" in help_text, name
    env = {
        "ACCEL_SIGNS_SERVE_CHECKPOINT": str(checkpoint),
        "ACCEL_SIGNS_SERVE_ROOT_PATH": "/signs/",
        "ACCEL_SIGNS_SERVE_MAX_CLIENTS": "9",
        "ACCEL_SIGNS_SERVE_THRESHOLD": "0.25",
    }
    with _cli_serving(tmp_path, landmarker_cache, ["--max-clients", "3"], **env) as (port, _):
        base = f"http://127.0.0.1:{port}"
        assert _get(base + "/readyz")[1]["max_clients"] == 3  # the flag, not the variable
        assert _get(base + "/api/model")[1]["live"]["threshold"] == 0.25  # a nested (live) option
        # The proxy strips /signs; the page's relative URLs resolve under it again through <base>.
        status, page = _get(base + "/")
        assert status == 200 and '<base href="/signs/">' in page
        assert 'src="static/app.js"' in page
        assert _get(base + "/static/app.js")[0] == 200
        with websockets_sync.connect(f"ws://127.0.0.1:{port}/ws", origin=base, open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=30))["type"] == "hello"
    result = CliRunner().invoke(app, ["serve"], env={"ACCEL_SIGNS_SERVE_CHECKPOINT": str(tmp_path / "nope")})
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "nope")
    result = CliRunner().invoke(app, ["serve", str(checkpoint)], env={"ACCEL_SIGNS_SERVE_WORKERS": "0"})
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "--workers")


def test_workers_share_the_port(checkpoint, tmp_path, landmarker_cache):
    psutil = pytest.importorskip("psutil")
    args = [str(checkpoint), "--workers", "2", "--max-clients", "1"]
    with _cli_serving(tmp_path, landmarker_cache, args) as (port, proc):
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True) if "spawn" in " ".join(p.cmdline())]
        assert len(workers) == 2, [p.cmdline() for p in psutil.Process(proc.pid).children(recursive=True)]
        # Each worker has its own limit: two signers at once, one per worker, wherever they land.
        url = f"ws://127.0.0.1:{port}/ws"
        deadline = time.monotonic() + 60
        while True:  # every worker is ready once every worker answered hello (the kernel picks one per connection)
            with contextlib.ExitStack() as stack:
                got = []
                for _ in range(2):
                    ws = stack.enter_context(websockets_sync.connect(url, open_timeout=10))
                    got.append(json.loads(ws.recv(timeout=30)))
                if [m["type"] for m in got] == ["hello", "hello"]:
                    break
            assert time.monotonic() < deadline, got
            time.sleep(0.5)
