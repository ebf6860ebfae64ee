"""The CLI in this process: bad input gets one error line, exit 1, and nothing written."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import helpers
from accel_signs.cli import app
from helpers import assert_one_line_error, read_metrics, recompute_val

runner = CliRunner()
FAST = [*helpers.FAST]


def _train(tmp_path, *args):
    out = tmp_path / "runs"
    result = runner.invoke(
        app, ["train", "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"), *FAST, *args]
    )
    return result, out


def _corrupt_labels(store):
    clips = np.load(store / "train" / "clips.npy")
    clips[3, 2] = 6
    np.save(store / "train" / "clips.npy", clips)


def _shorten_frames(store):
    path = store / "train" / "frames.npy"
    frames = np.load(path)
    np.save(path, frames[:-5])


def _nan_frames(store):
    frames = np.load(store / "train" / "frames.npy", mmap_mode="r+")
    frames[40, 150, 0] = np.nan
    frames.flush()


BAD = {
    "missing_data": (None, lambda s: ["--data", str(s.parent / "nowhere")], "does not exist"),
    "labels_out_of_range": (_corrupt_labels, lambda s: ["--data", str(s)], "label 6, outside"),
    "frames_shorter_than_index": (_shorten_frames, lambda s: ["--data", str(s)], "shorter than its index"),
    "nan_in_frames": (_nan_frames, lambda s: ["--data", str(s)], "NaN"),
    "signs_outside_data": (None, lambda s: ["--data", str(s), "--signs", "1-3,9"], "sign(s) 9 are not in store"),
    "unknown_signer": (None, lambda s: ["--data", str(s), "--signers", "01,07"], "unknown signer(s) 07"),
    "unknown_model_size": (None, lambda s: ["--data", str(s), "--model-size", "x_4_2"], "unknown model size"),
    "zero_epochs": (None, lambda s: ["--data", str(s), "--num-epochs", "0"], "--num-epochs must be >= 1"),
    "bad_signs_syntax": (None, lambda s: ["--data", str(s), "--signs", "3-1"], "--signs"),
    "bad_mixed_precision": (None, lambda s: ["--data", str(s), "--mixed-precision", "fp4"], "--mixed-precision"),
    "bad_data_on_device": (None, lambda s: ["--data", str(s), "--data-on-device", "maybe"], "--data-on-device must be"),
    "compile_mode_without_compile": (
        None,
        lambda s: ["--data", str(s), "--compile-mode", "reduce-overhead"],
        "needs --compile",
    ),
    "raw_input_with_handedness": (None, lambda s: ["--data", str(s), "--input", "raw"], "add --no-handedness"),
    "unknown_schedule": (None, lambda s: ["--data", str(s), "--schedule", "step"], "--schedule must be one of"),
    "bad_frame_sizes": (
        lambda s: np.save(s / "train" / "frame_sizes.npy", np.ones((3, 2), dtype=np.float32)),
        lambda s: ["--data", str(s)],
        "frame sizes must be float32 with shape",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_one_line_error_nothing_written(case, store_copy, tmp_path):
    corrupt, args, needle = BAD[case]
    if corrupt:
        corrupt(store_copy)
    before = sorted(p.name for p in store_copy.rglob("*"))
    result, out = _train(tmp_path, "--num-epochs", "1", *args(store_copy))
    assert result.exit_code == 1, result.output
    assert_one_line_error(result.stderr, needle)
    assert not out.exists(), "a run folder was left behind"
    assert sorted(p.name for p in store_copy.rglob("*")) == before


def test_existing_run_name_is_refused(tiny_store, tmp_path):
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    result, out = _train(tmp_path, "--data", str(tiny_store), "--run-name", "taken", "--num-epochs", "1")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "already exists")
    assert list((out / "taken").iterdir()) == []


def test_one_process_training_run(tiny_store, tmp_path):
    result, out = _train(
        tmp_path, "--data", str(tiny_store), "--num-epochs", "6", "--run-name", "r", "--seed", "1", "--lr", "3e-3"
    )
    assert result.exit_code == 0, result.output + result.stderr
    run = out / "r"
    best = run / "best"
    assert result.stdout.strip().splitlines()[-1] == str(best)
    metrics = read_metrics(run)
    assert [m["epoch"] for m in metrics] == list(range(1, 7))
    assert set(metrics[0]) == {"epoch", "train_loss", "val_loss", "val_acc", "lr", "seconds", "samples_per_s"}
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    # the best checkpoint is the most accurate epoch, the earliest of those with the lowest val loss on a tie
    best_epoch = min(metrics, key=lambda m: (-m["val_acc"], m["val_loss"], m["epoch"]))
    meta = json.loads((best / "config.json").read_text())
    assert meta["epoch"] == best_epoch["epoch"] and meta["metrics"]["val_loss"] == best_epoch["val_loss"]
    assert [c["sign"] for c in meta["classes"]] == list(range(1, 7)) and meta["classes"][0]["en"] == "0"
    loss, acc = recompute_val(run)
    assert loss == pytest.approx(best_epoch["val_loss"], rel=1e-4)
    assert acc == pytest.approx(best_epoch["val_acc"], abs=1e-9)
    # The resolved config is saved and can be fed back in.
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["size"] == "t_2_1" and cfg["data"]["path"] == str(tiny_store) and cfg["run_name"] == "r"
    assert sorted(p.name for p in run.iterdir()) == [
        "best",
        "config.json",
        "eval-test",
        "metrics.jsonl",
        "split.json",
        "state",
        "training_curves.png",
    ]
    # The best checkpoint loads with safetensors alone.
    from safetensors.numpy import load_file

    weights = load_file(best / "model.safetensors")
    assert weights["head.weight"].shape == (6, 32)


def test_subset_of_signs_and_signers(tiny_store, tmp_path):
    result, out = _train(
        tmp_path,
        "--data",
        str(tiny_store),
        "--num-epochs",
        "1",
        "--run-name",
        "sub",
        "--signs",
        "2-3,5",
        "--signers",
        "2",
    )
    assert result.exit_code == 0, result.stderr
    meta = json.loads((out / "sub" / "best" / "config.json").read_text())
    assert [c["sign"] for c in meta["classes"]] == [2, 3, 5] and meta["model"]["num_classes"] == 3
    assert meta["data"]["signers"] == ["02"]


def test_config_file_with_overrides(tiny_store, tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"num_epochs": 5, "optim": {"lr": 0.01}, "model": {"size": "t_1_1"}}))
    result, out = _train(
        tmp_path, "--data", str(tiny_store), "--config", str(cfg), "--num-epochs", "1", "--run-name", "c"
    )
    assert result.exit_code == 0, result.stderr
    saved = json.loads((out / "c" / "config.json").read_text())
    assert saved["num_epochs"] == 1 and saved["optim"]["lr"] == 0.01
    assert saved["model"]["size"] == "t_2_1"  # FAST passes --model-size on the command line


def test_synth_command(tmp_path):
    result = runner.invoke(app, ["synth", str(tmp_path / "s"), "--classes", "2", "--signers", "1", "--reps", "1"])
    assert result.exit_code == 0 and result.stdout.strip() == str(tmp_path / "s")
    again = runner.invoke(app, ["synth", str(tmp_path / "s")])
    assert again.exit_code == 1
    assert_one_line_error(again.stderr, "already exists")
    bad = runner.invoke(app, ["synth", str(tmp_path / "t"), "--classes", "600"])
    assert bad.exit_code == 1 and not (tmp_path / "t").exists()


def test_diverging_training_stops_with_a_clear_error(tiny_store, tmp_path):
    result, out = _train(tmp_path, "--data", str(tiny_store), "--num-epochs", "3", "--run-name", "nan", "--lr", "1e30")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "epoch 1, step 2: the loss is not finite")
    assert not (out / "nan" / "best").exists()


def test_best_by_val_loss_and_the_seed_recipe(tiny_store, tmp_path):
    """--best-metric val_loss keeps the epoch of lowest val loss; the seed recipe (a config file)
    trains the raw-input model with the plateau schedule."""
    from pathlib import Path

    recipe = Path(__file__).parent.parent / "examples" / "seed_recipe.yaml"
    result, out = _train(
        tmp_path,
        "--data",
        str(tiny_store),
        "--num-epochs",
        "4",
        "--run-name",
        "r",
        "--no-eval",
        "--config",
        str(recipe),
        "--lr",
        "3e-3",
    )
    assert result.exit_code == 0, result.output + result.stderr
    metrics = read_metrics(out / "r")
    meta = json.loads((out / "r" / "best" / "config.json").read_text())
    assert meta["epoch"] == min(metrics, key=lambda m: (m["val_loss"], m["epoch"]))["epoch"]
    assert meta["model"]["input"]["kind"] == "raw" and meta["train_config"]["optim"]["schedule"] == "plateau"
    assert [m["lr"] for m in metrics] == [
        3e-3
    ] * 4  # plateau: no warmup, no decay in 4 epochs of improvement or patience
