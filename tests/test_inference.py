"""predict and ONNX export."""

import csv
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from accel_signs.checkpoint import load_checkpoint
from accel_signs.cli import app
from accel_signs.data.store import open_store
from helpers import assert_one_line_error, train_tiny_run

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tiny_store, tmp_path_factory):
    """A short run on the tiny store, evaluated on its test split at the end."""
    return train_tiny_run(tiny_store, tmp_path_factory.mktemp("runs"), "--num-epochs", "3", "--lr", "3e-3")


def test_predict_agrees_with_evaluate(run, tiny_store, tmp_path):
    test = open_store(tiny_store).split("test")
    with open(run / "eval-test" / "predictions.csv", newline="") as f:
        by_clip = {int(row["clip"]): row for row in csv.DictReader(f)}
    arrays = {f"clip{i}": test.clip(i) for i in range(len(test))}
    np.savez(tmp_path / "clips.npz", **arrays)
    result = runner.invoke(app, ["predict", str(run / "best"), str(tmp_path / "clips.npz"), "--json", "--top-k", "3"])
    assert result.exit_code == 0, result.stderr
    predictions = json.loads(result.stdout)
    assert len(predictions) == len(test)
    for i, p in enumerate(predictions):
        assert p["clip"] == f"clip{i}" and len(p["top"]) == 3
        assert p["top"][0]["sign"] == int(by_clip[i]["pred_sign"])
        assert p["top"][0]["probability"] == pytest.approx(float(by_clip[i]["confidence"]), abs=1e-5)
        assert p["top"][0]["probability"] >= p["top"][1]["probability"]
        assert {"en", "ar", "sign", "class_id", "rank"} <= set(p["top"][0])


def test_predict_one_npy_any_length(run, tiny_store, tmp_path):
    clip = open_store(tiny_store).split("test").clip(0)
    for n in (1, 7, len(clip)):
        np.save(tmp_path / "c.npy", clip[:n])
        result = runner.invoke(app, ["predict", str(run / "best"), str(tmp_path / "c.npy")])
        assert result.exit_code == 0, result.stderr
        assert f"c ({n} frames):" in result.stdout and "1. " in result.stdout and "(sign " in result.stdout


@pytest.mark.parametrize("make,needle", [
    (lambda p: np.save(p, np.zeros((5, 180, 4))), "expected (frames, 184, 4)"),
    (lambda p: np.save(p, np.full((5, 184, 4), np.nan)), "NaN"),
    (lambda p: np.save(p, np.zeros((0, 184, 4))), "no frames"),
    (lambda p: np.save(p, np.array([{"x": 1}], dtype=object), allow_pickle=True), "not a readable"),
])
def test_predict_rejects_bad_clips(run, tmp_path, make, needle):
    make(tmp_path / "bad.npy")
    result = runner.invoke(app, ["predict", str(run / "best"), str(tmp_path / "bad.npy")])
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, needle)


def test_onnx_export_matches_pytorch(run, tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'accel-signs[onnx]')")
    import onnx
    import onnxruntime as ort

    out = tmp_path / "model.onnx"
    result = runner.invoke(app, ["export", str(run / "best"), "--onnx", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "max abs logit difference" in result.stderr
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    ckpt = load_checkpoint(run / "best")
    assert json.loads(meta["accel_signs.classes"]) == ckpt.classes and meta["accel_signs.layout"] == ckpt.meta["layout"]["id"]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "keypoints" and session.get_inputs()[0].shape[1:] == [50, 736]
    for batch in (1, 7):
        x = torch.randn(batch, 50, 736)
        with torch.no_grad():
            expected = ckpt.model(x).numpy()
        got = session.run(["logits"], {"keypoints": x.numpy()})[0]
        assert got.shape == (batch, 6)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_export_without_the_extra_says_how_to_get_it(run, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name.split(".")[0] in ("onnx", "onnxruntime", "onnxscript"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    result = runner.invoke(app, ["export", str(run / "best"), "--onnx", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "pip install 'accel-signs[onnx]'")
    assert not (tmp_path / "m.onnx").exists()
