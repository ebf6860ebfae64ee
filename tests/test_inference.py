"""predict and ONNX export."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from accel_signs.cli import app
from accel_signs.data.store import open_store
from accel_signs.model.checkpoint import load_checkpoint
from helpers import assert_one_line_error, train_tiny_run

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tiny_store, tmp_path_factory):
    """A short run on the tiny store, evaluated on its test split at the end."""
    return train_tiny_run(tiny_store, tmp_path_factory.mktemp("runs"), "--num-epochs", "3", "--lr", "3e-3")


def test_predict_agrees_with_evaluate(run, tiny_store, tmp_path):
    """The same top-1 and confidence for every test clip, whose videos are landscape or portrait
    (the store records the frame sizes; predict is told them with --frame-size)."""
    test = open_store(tiny_store).split("test")
    with open(run / "eval-test" / "predictions.csv", newline="") as f:
        by_clip = {int(row["clip"]): row for row in csv.DictReader(f)}
    sizes = {tuple(int(v) for v in size) for size in test.frame_sizes}
    assert len(sizes) == 2  # the tiny store's two signers: 1280x720 and 720x1280
    seen = 0
    for width, height in sizes:
        ids = [i for i in range(len(test)) if tuple(test.frame_sizes[i]) == (width, height)]
        np.savez(tmp_path / "clips.npz", **{f"clip{i}": test.clip(i) for i in ids})
        result = runner.invoke(
            app,
            [
                "predict",
                str(run / "best"),
                str(tmp_path / "clips.npz"),
                "--json",
                "--top-k",
                "3",
                "--frame-size",
                f"{width}x{height}",
            ],
        )
        assert result.exit_code == 0, result.stderr
        predictions = json.loads(result.stdout)
        assert len(predictions) == len(ids)
        for i, p in zip(ids, predictions):
            assert p["clip"] == f"clip{i}" and len(p["top"]) == 3
            assert p["top"][0]["sign"] == int(by_clip[i]["pred_sign"])
            assert p["top"][0]["probability"] == pytest.approx(float(by_clip[i]["confidence"]), abs=1e-5)
            assert p["top"][0]["probability"] >= p["top"][1]["probability"]
            assert {"en", "ar", "sign", "class_id", "rank"} <= set(p["top"][0])
            seen += 1
    assert seen == len(test)


def test_frame_size_matters_and_is_checked(run, tiny_store, tmp_path):
    np.save(tmp_path / "c.npy", open_store(tiny_store).split("test").clip(0))
    probs = []
    for size in ("1280x720", "720x1280"):
        result = runner.invoke(
            app, ["predict", str(run / "best"), str(tmp_path / "c.npy"), "--json", "--frame-size", size]
        )
        assert result.exit_code == 0, result.stderr
        probs.append(json.loads(result.stdout)[0]["top"][0]["probability"])
    assert probs[0] != probs[1]
    result = runner.invoke(app, ["predict", str(run / "best"), str(tmp_path / "c.npy"), "--frame-size", "1920"])
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "--frame-size", "WIDTHxHEIGHT")


def test_predict_one_npy_any_length(run, tiny_store, tmp_path):
    clip = open_store(tiny_store).split("test").clip(0)
    for n in (1, 7, len(clip)):
        np.save(tmp_path / "c.npy", clip[:n])
        result = runner.invoke(app, ["predict", str(run / "best"), str(tmp_path / "c.npy")])
        assert result.exit_code == 0, result.stderr
        assert f"c ({n} frames):" in result.stdout and "1. " in result.stdout and "(sign " in result.stdout


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda p: np.save(p, np.zeros((5, 180, 4))), "expected (frames, 184, 4)"),
        (lambda p: np.save(p, np.full((5, 184, 4), np.nan)), "NaN"),
        (lambda p: np.save(p, np.zeros((0, 184, 4))), "no frames"),
        (lambda p: np.save(p, np.array([{"x": 1}], dtype=object), allow_pickle=True), "not a readable"),
    ],
)
def test_predict_rejects_bad_clips(run, tmp_path, make, needle):
    make(tmp_path / "bad.npy")
    result = runner.invoke(app, ["predict", str(run / "best"), str(tmp_path / "bad.npy")])
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, needle)


def test_onnx_export_matches_pytorch(run, tiny_store, tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'accel-signs[onnx]')")
    import onnx
    import onnxruntime as ort

    out = tmp_path / "model.onnx"
    result = runner.invoke(app, ["export", str(run / "best"), "--onnx", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "max abs logit difference" in result.stderr
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    ckpt = load_checkpoint(run / "best")
    assert (
        json.loads(meta["accel_signs.classes"]) == ckpt.meta.classes_json()
        and meta["accel_signs.layout"] == ckpt.layout.id
    )
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    assert [i.name for i in inputs] == ["keypoints", "aspect"] and inputs[0].shape[1:] == [50, 736]
    test = open_store(tiny_store).split("test")
    from accel_signs.tools.inference import model_input

    real = torch.cat([model_input(test.clip(i), 50) for i in range(len(test))])  # (N, 50, 736)
    aspect = torch.from_numpy(test.aspects)
    for x, a in ((real, aspect), (real[:1], aspect[:1]), (torch.randn(7, 50, 736), torch.full((7,), 0.75))):
        with torch.no_grad():
            expected = ckpt.model(x, a).numpy()
        got = session.run(["logits"], {"keypoints": x.numpy(), "aspect": a.numpy()})[0]
        assert got.shape == (len(x), 6)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    # ...and its predictions are those of evaluate
    with open(run / "eval-test" / "predictions.csv", newline="") as f:
        by_clip = {int(row["clip"]): int(row["pred_sign"]) for row in csv.DictReader(f)}
    got = session.run(["logits"], {"keypoints": real.numpy(), "aspect": aspect.numpy()})[0]
    assert [ckpt.classes[int(k)].sign for k in got.argmax(1)] == [by_clip[i] for i in range(len(test))]


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


def test_checkpoint_from_before_the_input_features_predicts_as_it_did(tmp_path):
    """tests/data/checkpoint_v1 was written by accel_signs 7d65259 (raw image coordinates, no
    `input` key, config version 1); its predictions on two clips were recorded then."""
    data = Path(__file__).parent / "data"
    ckpt = load_checkpoint(data / "checkpoint_v1")
    assert "input" not in json.loads((data / "checkpoint_v1" / "config.json").read_text())["model"]
    assert ckpt.model.features.cfg.kind == "raw" and not ckpt.model.uses_aspect
    result = runner.invoke(
        app, ["predict", str(data / "checkpoint_v1"), str(data / "checkpoint_v1_clips.npz"), "--json", "--top-k", "4"]
    )
    assert result.exit_code == 0, result.stderr
    expected = json.loads((data / "checkpoint_v1_expected.json").read_text())
    got = json.loads(result.stdout)
    assert [[t["class_id"] for t in r["top"]] for r in got] == [[t["class_id"] for t in r["top"]] for r in expected]
    for r, e in zip(got, expected):
        for t, u in zip(r["top"], e["top"]):
            assert t["probability"] == pytest.approx(u["probability"], abs=2e-6)
    # its training config (version 1) reads back as the run it was: the seed recipe
    from accel_signs.config import TrainConfig

    cfg = TrainConfig.from_dict(dict(ckpt.meta.train_config))
    assert (cfg.optim.schedule, cfg.optim.optimizer, cfg.model.input.kind, cfg.best_metric) == (
        "plateau",
        "adam",
        "raw",
        "val_loss",
    )
