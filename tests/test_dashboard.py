"""The dashboard's work without a browser: over real HTTP on 127.0.0.1 against runs the test
trains, the page's numbers are `evaluate`'s exactly, and each hostile input is one clear
message while the server stays up and no run file is written."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from accel_signs.data.synth import SynthSpec, write_synthetic
from helpers import free_port, train_tiny_run

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'accel-signs[serve]')")
uvicorn = pytest.importorskip("uvicorn")


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


class Server:
    """`create_app` under uvicorn on a free port of 127.0.0.1, in a thread of this process."""

    def __init__(self, runs: Path, cache: Path):
        from accel_signs.dashboard.app import create_app
        from accel_signs.dashboard.config import DashboardConfig

        self.port = free_port()
        cfg = DashboardConfig(runs_dir=runs, port=self.port, cache_dir=cache)
        self.server = uvicorn.Server(
            uvicorn.Config(create_app(cfg), host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the dashboard did not start in 30 s"
            time.sleep(0.05)

    def get(self, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def evaluate(self, run: str, split: str = "test", data: str | None = None) -> dict:
        return self.evaluate_with({"run": run, "split": split, "data": data})

    def evaluate_with(self, body: dict) -> dict:
        """POST /api/evaluate, then its progress until it ends."""
        code, job = self.get("/api/evaluate", body)
        if code != 200:
            return job
        deadline = time.monotonic() + 120
        while job["state"] == "running":
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
            job = self.get(f"/api/evaluate/{job['key']}")[1]
        return job

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("dashboard")
    store = write_synthetic(root / "store", SynthSpec(classes=6, signers=2, reps=4, seed=5, first_sign=160))
    runs = root / "runs"
    train_tiny_run(store, runs, "--num-epochs", "2", "--no-eval", name="a")
    train_tiny_run(store, runs, "--num-epochs", "2", "--lr", "0.003", "--no-eval", name="b")
    server = Server(runs, root / "cache")
    yield root, store, runs, server
    server.stop()


def test_runs_curves_and_diff(world):
    _, _, runs, server = world
    code, listing = server.get("/api/runs")
    assert code == 200
    by_name = {r["name"]: r for r in listing["runs"]}
    assert {"a", "b"} <= set(by_name)
    assert by_name["a"]["state"] == "finished" and by_name["a"]["has_checkpoint"]
    assert by_name["a"]["best"]["val_acc"] is not None
    curves = server.get("/api/runs/a/curves")[1]
    assert curves["columns"]["epoch"] == [1, 2] and len(curves["columns"]["lr"]) == 2
    diff = server.get("/api/diff?a=a&b=b")[1]
    assert {"key": "optim.lr", "a": 0.001, "b": 0.003} in diff["rows"]
    assert not any(r["key"].startswith("runtime.") for r in diff["rows"])


def test_the_page_metrics_are_evaluate_s_exactly(world, tmp_path):
    from typer.testing import CliRunner

    from accel_signs.cli import app

    _, _, runs, server = world
    before = snapshot(runs)
    job = server.evaluate("a")
    assert job["state"] == "done", job
    assert job["total"] >= 1 and job["done"] == job["total"]
    page = server.get(f"/api/evaluate/{job['key']}/result")[1]
    assert snapshot(runs) == before, "the dashboard wrote into a run folder"
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", str(runs / "a" / "best"), "--output", str(out), "--no-plots"])
    assert result.exit_code == 0, result.stderr
    assert page["metrics"] == json.loads((out / "metrics.json").read_text("utf-8"))
    n = page["metrics"]["num_classes"]
    assert len(page["confusion"]) == n * n and sum(page["confusion"]) == page["metrics"]["num_samples"]
    assert len(page["predictions"]["rows"]) == page["metrics"]["num_samples"]
    # Cached: the same checkpoint, data and split is done at once, under the same key.
    again = server.get("/api/evaluate", {"run": "a", "split": "test"})[1]
    assert again == {**job, "state": "done"} | {"done": again["done"], "total": again["total"]}


def test_an_evaluation_of_chosen_signers(world):
    _, store, _, server = world
    job = server.evaluate_with({"run": "a", "split": "test", "signers": "1"})
    assert job["state"] == "done", job
    metrics = server.get(f"/api/evaluate/{job['key']}/result")[1]["metrics"]
    assert metrics["signers"] == ["01"] and list(metrics["per_signer"]) == ["01"]
    job = server.evaluate_with({"run": "a", "split": "test", "signers": "07"})
    assert job["state"] == "failed"
    assert job["message"] == f"--signers: unknown signer(s) 07 in store {store.resolve()} (it has 01, 02)"


def test_clip_and_augmentation_payloads(world):
    from accel_signs.config import AugmentConfig

    _, store, _, server = world
    clip = server.get("/api/clip?run=a&split=test&clip=3")[1]
    probs = [t["probability"] for t in clip["top"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert clip["correct"] == (clip["top"][0]["sign"] == clip["true"]["sign"])
    assert len(clip["sampled"]) == 50 and len(clip["xy"]) == clip["frames"]
    assert set(clip["presence"]) == set(clip["layout"]["parts"])
    controls = server.get("/api/augment/controls?run=a")[1]["controls"]
    assert [c["name"] for c in controls] == [f.name for f in dataclasses.fields(AugmentConfig)]
    assert next(c for c in controls if c["name"] == "mirror_p")["max"] == 1.0
    values = {c["name"]: c["value"] for c in controls}
    calm = server.get("/api/augment", {"run": "a", "split": "test", "clip": 3, "values": values, "seed": 1})[1]
    turned = server.get(
        "/api/augment",
        {"run": "a", "split": "test", "clip": 3, "values": values | {"affine_p": 1.0, "rotate_deg": 60}, "seed": 1},
    )[1]
    assert calm["original"] == turned["original"] and calm["augmented"] != turned["augmented"]
    assert json.loads(turned["snippet"])["data"]["augment"]["rotate_deg"] == 60
    code, bad = server.get("/api/augment", {"run": "a", "split": "test", "clip": 3, "values": values | {"mirror_p": 2}})
    assert code == 400 and bad["message"] == "data.augment.mirror_p must be in [0, 1], got 2"
    data = server.get("/api/data?run=a")[1]
    assert set(data["splits"]) == {"train", "test"} and data["splits"]["test"]["detected_by_signer"]


# Hostile input: one clear message each, the server up afterwards, no run file written.


def _still_up(server: Server) -> None:
    assert server.get("/api/runs")[0] == 200


def test_a_missing_run(world):
    _, _, runs, server = world
    before = snapshot(runs)
    code, body = server.get("/api/runs/gone/curves")
    assert code == 404
    assert body["message"] == f"no run 'gone' in {runs} (it may have been moved or deleted; reload the runs list)"
    code, body = server.get("/api/evaluate", {"run": "gone", "split": "test"})
    assert code == 404 and body["message"].startswith("no run 'gone'")
    _still_up(server)
    assert snapshot(runs) == before


def test_a_corrupt_run(world):
    _, _, runs, server = world
    bad = runs / "corrupt"
    shutil.copytree(runs / "a", bad)
    (bad / "config.json").write_text('{"data": ', "utf-8")
    (bad / "best" / "config.json").write_text("[1, 2]", "utf-8")
    try:
        before = snapshot(runs)
        run = next(r for r in server.get("/api/runs")[1]["runs"] if r["name"] == "corrupt")
        assert run["problems"] == [
            "config.json: not valid JSON (Expecting value: line 1 column 10 (char 9))",
            "best/config.json: not an accel_signs checkpoint description",
        ]
        code, body = server.get("/api/evaluate", {"run": "corrupt", "split": "test"})
        assert (
            code == 400
            and body["message"] == f"{bad / 'best' / 'config.json'}: not an accel_signs checkpoint description"
        )
        _still_up(server)
        assert snapshot(runs) == before
    finally:
        shutil.rmtree(bad)


def test_a_torn_metrics_line(world):
    _, _, runs, server = world
    torn = runs / "torn"
    shutil.copytree(runs / "b", torn)
    with open(torn / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"epoch": 3, "train_loss": 1.2')
    try:
        before = snapshot(runs)
        curves = server.get("/api/runs/torn/curves")[1]
        assert curves["columns"]["epoch"] == [1, 2]
        assert curves["problems"] == [
            "metrics.jsonl: the last line is torn (line 3: an epoch being written, or a run killed mid-write); "
            "the curves stop at the line before it"
        ]
        _still_up(server)
        assert snapshot(runs) == before
    finally:
        shutil.rmtree(torn)


def test_a_checkpoint_of_another_layout(world):
    root, _, runs, server = world
    other = write_synthetic(
        root / "pose33", SynthSpec(classes=6, signers=2, reps=1, seed=5, first_sign=160, layout="pose33")
    )
    before = snapshot(runs)
    job = server.evaluate("a", data=str(other))
    assert job["state"] == "failed"
    best = runs / "a" / "best"
    assert job["message"] == (
        f"checkpoint {best} reads keypoint layout karsl184 (karsl-mediapipe-184-v1, 184 points) "
        f"but store {other} holds pose33 (mediapipe-pose33-v1, 33 points)"
    )
    _still_up(server)
    assert snapshot(runs) == before


def test_a_store_without_a_test_split(world):
    root, store, runs, server = world
    train_only = root / "train_only"
    shutil.copytree(store, train_only)
    shutil.rmtree(train_only / "test")
    meta = json.loads((train_only / "meta.json").read_text("utf-8"))
    meta["splits"] = {k: v for k, v in meta["splits"].items() if k != "test"}
    (train_only / "meta.json").write_text(json.dumps(meta), "utf-8")
    before = snapshot(runs)
    job = server.evaluate("a", data=str(train_only))
    assert job["state"] == "failed"
    assert job["message"] == f"store {train_only} has no split 'test' (it has: train)"
    _still_up(server)
    assert snapshot(runs) == before
