"""Every built-in layout trains, and its checkpoint predicts as evaluate does and exports to ONNX."""

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from accel_signs.cli import app
from accel_signs.data.layout import BUILTIN
from accel_signs.data.store import open_store
from accel_signs.data.synth import SynthSpec, write_synthetic
from helpers import train_tiny_run

runner = CliRunner()


@pytest.mark.parametrize("layout", BUILTIN)
def test_train_predict_export_per_layout(layout, tmp_path):
    store = write_synthetic(tmp_path / "store", SynthSpec(classes=4, signers=2, reps=4, seed=1, layout=layout))
    run = train_tiny_run(store, tmp_path / "runs", "--num-epochs", "2", "--batch-size", "8")
    meta = json.loads((run / "best" / "config.json").read_text())
    assert meta["layout"]["name"] == layout and meta["layout"]["definition"]["name"] == layout
    info = runner.invoke(app, ["info", str(run / "best")])
    assert info.exit_code == 0 and f"keypoint layout: {layout}" in info.stdout
    # predict on the test clips agrees with the final evaluation
    test = open_store(store).split("test")
    with open(run / "eval-test" / "predictions.csv", newline="") as f:
        evaluated = {int(r["clip"]): int(r["pred_sign"]) for r in csv.DictReader(f)}
    for i in range(0, len(test), 3):
        np.save(tmp_path / "c.npy", test.clip(i))
        w, h = (int(v) for v in test.frame_sizes[i])
        result = runner.invoke(
            app, ["predict", str(run / "best"), str(tmp_path / "c.npy"), "--json", "--frame-size", f"{w}x{h}"]
        )
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)[0]["top"][0]["sign"] == evaluated[i]
    # a clip in another layout is refused with one line
    other = 184 if layout != "karsl184" else 33
    np.save(tmp_path / "wrong.npy", np.zeros((5, other, 4), dtype=np.float32))
    result = runner.invoke(app, ["predict", str(run / "best"), str(tmp_path / "wrong.npy")])
    assert result.exit_code == 1 and f"expected (frames, {test.num_points}, 4)" in result.stderr
    if layout != "pose33":
        # An ONNX export takes ~15 s here. karsl184's is test_inference's, and the other layouts
        # with hands take its paths; pose33 is the one without hands.
        return
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    result = runner.invoke(app, ["export", str(run / "best"), "--onnx", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.stderr
    diffs = [float(line.rsplit(" ", 1)[1]) for line in result.stderr.splitlines() if "max abs logit difference" in line]
    assert len(diffs) == 3 and max(diffs) < 1e-4


def test_evaluating_on_a_store_of_another_layout_is_refused(tmp_path):
    a = write_synthetic(tmp_path / "a", SynthSpec(classes=3, signers=2, reps=3, layout="pose33"))
    b = write_synthetic(tmp_path / "b", SynthSpec(classes=3, signers=2, reps=3, layout="pose33-hands42"))
    run = train_tiny_run(a, tmp_path / "runs", "--num-epochs", "1", "--no-eval")
    result = runner.invoke(app, ["evaluate", str(run / "best"), "--data", str(b)])
    assert result.exit_code == 1
    assert "reads keypoint layout pose33" in result.stderr and "holds pose33-hands42" in result.stderr
