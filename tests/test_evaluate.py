"""evaluate, plot, and the evaluation at the end of train."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from accel_signs.cli import app
from accel_signs.data.synth import SynthSpec, write_synthetic
from accel_signs.plots import plot_confusion, plot_per_class_f1, plot_top_confusions
from helpers import accelerate_launch, assert_one_line_error, train_tiny_run

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tiny_store, tmp_path_factory):
    """A run trained for 2 epochs on signs 2-5 of the tiny store, evaluated at the end."""
    return train_tiny_run(tiny_store, tmp_path_factory.mktemp("runs"), "--num-epochs", "2", "--signs", "2-5")


def test_train_evaluates_and_plots_at_the_end(trained):
    ev = trained / "eval-test"
    assert sorted(p.name for p in ev.iterdir()) == [
        "confusion.csv",
        "confusion.png",
        "metrics.json",
        "per_class.csv",
        "per_class_f1.png",
        "predictions.csv",
        "top_confusions.png",
    ]
    assert (trained / "training_curves.png").stat().st_size > 10_000
    m = json.loads((ev / "metrics.json").read_text())
    assert (
        m["split"] == "test" and m["num_classes"] == 4 and m["num_samples"] == 4 * 2
    )  # 1 test clip per sign and signer
    assert {"top1", "top5", "macro_f1", "num_samples", "per_signer"} <= set(m) and set(m["per_signer"]) == {"01", "02"}
    rows = (ev / "per_class.csv").read_text().splitlines()
    assert rows[0] == "class_id,sign,en,ar,support,predicted,precision,recall,f1" and len(rows) == 5
    assert rows[1].startswith("0,2,1,")  # class 0 is sign 2, English gloss "1"


def test_evaluate_same_numbers_with_1_and_2_processes(trained, tmp_path):
    outputs = {}
    for n in (1, 2):
        out = tmp_path / f"eval{n}"
        proc = accelerate_launch(
            [
                "evaluate",
                str(trained / "best"),
                "--split",
                "train",
                "--output",
                str(out),
                "--batch-size",
                "8",
                "--no-plots",
            ],
            tmp_path,
            processes=n,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "top-1 accuracy" in proc.stdout and proc.stdout.count("top-1 accuracy") == 1  # main process prints
        outputs[n] = out
    m1, m2 = (json.loads((outputs[n] / "metrics.json").read_text()) for n in (1, 2))
    assert m1 == m2 and m1["num_samples"] == 4 * 2 * 6  # every clip once: no padding duplicates
    for name in ("per_class.csv", "confusion.csv", "predictions.csv"):
        assert (outputs[1] / name).read_text() == (outputs[2] / name).read_text(), name


def test_checkpoint_and_data_signs_must_match(trained, tmp_path):
    other = write_synthetic(tmp_path / "three", SynthSpec(classes=3, signers=2, reps=1))
    files = {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()}
    result = runner.invoke(app, ["evaluate", str(trained / "best"), "--data", str(other)])
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "trained on signs 2-5", "no sign(s) 4-5")
    # nothing written: the run's evaluation, and the model card's copy of it in best/, untouched
    assert {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()} == files


def test_checkpoint_and_data_layout_must_match(trained, tiny_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    meta = json.loads((store / "meta.json").read_text())
    meta["layout"]["id"] = "openpose-body25"
    (store / "meta.json").write_text(json.dumps(meta))
    result = runner.invoke(
        app, ["evaluate", str(trained / "best"), "--data", str(store), "--output", str(tmp_path / "e")]
    )
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "keypoint layout")
    assert not (tmp_path / "e").exists()


def test_checkpoint_and_data_glosses_must_match(trained, tiny_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    meta = json.loads((store / "meta.json").read_text())
    meta["classes"][2]["en"] = "something else"
    (store / "meta.json").write_text(json.dumps(meta))
    result = runner.invoke(
        app, ["evaluate", str(trained / "best"), "--data", str(store), "--output", str(tmp_path / "e")]
    )
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "sign 3 is '2'", "'something else'")


def test_plot_redraws_from_files(trained):
    png = trained / "eval-test" / "confusion.png"
    png.unlink()
    (trained / "training_curves.png").unlink()
    result = runner.invoke(app, ["plot", str(trained)])
    assert result.exit_code == 0, result.stderr
    assert png.exists() and (trained / "training_curves.png").exists()
    assert len(result.stdout.splitlines()) == 4


def test_plot_rejects_other_folders(tmp_path):
    result = runner.invoke(app, ["plot", str(tmp_path)])
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "neither metrics.jsonl")


def test_plots_for_502_classes(tmp_path):
    rng = np.random.default_rng(0)
    n = 502
    confusion = np.diag(rng.integers(5, 20, n)) + (rng.random((n, n)) < 0.004) * rng.integers(1, 4, (n, n))
    labels = [f"a rather long english gloss number {i}" for i in range(n)]
    f1 = rng.random(n)
    f1[7] = np.nan
    paths = [
        plot_confusion(confusion, labels, tmp_path / "c.png", "t"),
        plot_per_class_f1(f1, labels, tmp_path / "f.png", "t"),
        plot_top_confusions(
            [{"true": labels[i], "pred": labels[i + 1], "count": 20 - i} for i in range(20)], tmp_path / "t.png", "t"
        ),
    ]
    assert all(p.stat().st_size > 10_000 for p in paths)


def test_log_with_tensorboard(tiny_store, tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "runs"
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(tiny_store),
            "--output-dir",
            str(out),
            "--run-name",
            "tb",
            "--num-epochs",
            "1",
            "--model-size",
            "t_1_1",
            "--no-eval",
            "--log-with",
            "tensorboard",
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert list((out / "tb").rglob("events.out.tfevents.*"))
    assert not (out / "tb" / "eval-test").exists()


def test_log_with_unknown_tracker(tiny_store, tmp_path):
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(tiny_store),
            "--output-dir",
            str(tmp_path / "runs"),
            "--num-epochs",
            "1",
            "--log-with",
            "nosuchtracker",
        ],
    )
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "unknown tracker 'nosuchtracker'")
    assert not (tmp_path / "runs").exists()


def test_evaluate_in_the_runs_precision_reproduces_its_val_loss(tiny_store, tmp_path):
    """A bf16 run validates under autocast; `evaluate --mixed-precision bf16` on the same clips
    (the validation signer's) gets the val loss it logged. fp32, evaluate's default, need not."""
    import subprocess
    import sys

    from helpers import FAST, cli_env

    # A process of its own: Accelerate's state (its precision included) is one per process.
    args = ["train", "--data", str(tiny_store), "--output-dir", str(tmp_path), "--run-name", "r", *FAST]
    args += ["--num-epochs", "1", "--signs", "2-5", "--val-signers", "02", "--mixed-precision", "bf16", "--no-eval"]
    proc = subprocess.run(
        [sys.executable, "-m", "accel_signs", *args], env=cli_env(tmp_path), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "r"
    assert json.loads((run / "config.json").read_text())["runtime"]["mixed_precision"] == "bf16"
    logged = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    losses = {}
    for precision in ("bf16", "no"):
        out = tmp_path / f"eval-{precision}"
        args = ["evaluate", str(run / "best"), "--split", "train", "--signers", "02", "--output", str(out)]
        result = runner.invoke(app, [*args, "--no-plots", "--mixed-precision", precision])
        assert result.exit_code == 0, result.output
        m = json.loads((out / "metrics.json").read_text())
        assert m["mixed_precision"] == precision and m["num_samples"] > 0
        losses[precision] = m["mean_loss"]
    assert losses["bf16"] == pytest.approx(logged["val_loss"], rel=2e-3)
    assert losses["no"] == pytest.approx(logged["val_loss"], rel=5e-2)  # close, but computed in fp32
