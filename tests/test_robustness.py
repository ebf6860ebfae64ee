"""Resume, crash safety and hostile input: nothing lost, nothing executed."""

import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import SafetensorError
from safetensors.torch import load_file
from typer.testing import CliRunner

import helpers
from accel_signs.cli import _resume_value, app
from accel_signs.model.checkpoint import load_checkpoint
from helpers import assert_one_line_error, cli_env

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
FAST = [*helpers.FAST, "--no-eval", "--seed", "3"]


def _train(tmp_path, *args, out="runs"):
    # _resume_value: what main() does to argv, so a bare `--resume` means the latest run.
    return runner.invoke(
        app,
        _resume_value(
            ["train", "--output-dir", str(tmp_path / out), "--cache-dir", str(tmp_path / "cache"), *FAST, *args]
        ),
    )


def _rows(run):
    keys = ("epoch", "train_loss", "val_loss", "val_acc", "lr")
    return [tuple(json.loads(line)[k] for k in keys) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _same_tensors(a, b):
    x, y = load_file(a), load_file(b)
    return x.keys() == y.keys() and all(bool((x[k] == y[k]).all()) for k in x)


def test_resume_ends_where_an_uninterrupted_run_ends(tiny_store, tmp_path):
    full = _train(tmp_path, "--data", str(tiny_store), "--num-epochs", "5", "--run-name", "r", out="full")
    part = _train(tmp_path, "--data", str(tiny_store), "--num-epochs", "3", "--run-name", "r", out="part")
    assert full.exit_code == 0 and part.exit_code == 0, full.stderr + part.stderr
    run = tmp_path / "part" / "r"
    # A crash after the epoch-4 metrics line but before its state: that line must go.
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 4, "train_loss": 9.0, "val_loss": 9.0, "val_acc": 0.0, "lr": 1.0}) + "\n")
    resumed = _train(tmp_path, "--resume", str(run), "--num-epochs", "5")
    assert resumed.exit_code == 0, resumed.stderr
    assert resumed.stdout.strip().splitlines()[-1] == str(run / "best")
    ref = tmp_path / "full" / "r"
    assert _rows(run) == _rows(ref)
    assert _same_tensors(run / "state" / "model.safetensors", ref / "state" / "model.safetensors")
    assert _same_tensors(run / "state" / "optimizer.safetensors", ref / "state" / "optimizer.safetensors")
    assert _same_tensors(run / "best" / "model.safetensors", ref / "best" / "model.safetensors")


def test_resume_latest_and_refusals(tiny_store, tmp_path):
    assert _train(tmp_path, "--data", str(tiny_store), "--num-epochs", "1", "--run-name", "a").exit_code == 0
    changed = _train(tmp_path, "--resume", str(tmp_path / "runs" / "a"), "--lr", "0.5")
    assert changed.exit_code == 1
    assert_one_line_error(changed.stderr, "--lr was 0.001 there, not 0.5")
    latest = runner.invoke(
        app, ["train", "--output-dir", str(tmp_path / "runs"), "--resume", "latest", "--num-epochs", "2", "--no-eval"]
    )
    assert latest.exit_code == 0, latest.stderr
    assert len(_rows(tmp_path / "runs" / "a")) == 2


@pytest.mark.multiprocess
def test_kill_and_resume_script(tmp_path):
    """The interruption script, short, with 2 real ranks: a SIGKILL of one rank after a saved
    epoch (the other exits 1 with one line, the launcher fails within a minute; the resume starts
    from an epoch's state) and a SIGTERM to the launcher mid-epoch (the resume starts inside an
    epoch), then equality with the uninterrupted 2-process run: metrics, best and final weights."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "kill_and_resume.py"),
            "--processes",
            "2",
            "--kills",
            "1",
            "--sigterms",
            "1",
            "--workdir",
            str(tmp_path / "w"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=cli_env(tmp_path),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["kills"] == 1 and result["sigterms_mid_epoch"] == 1 and result["other_rank_error_lines"] == 1
    assert result["metrics_equal"] and result["best_weights_equal"] and result["final_weights_equal"]


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        SafetensorError("I/O error: No space left on device (os error 28)"),  # what safetensors really raises
    ],
    ids=["oserror", "safetensorerror"],
)
def test_failed_write_stops_training_and_keeps_the_previous_best(failure, tiny_store, tmp_path, monkeypatch):
    import accel_signs.model.checkpoint
    import accel_signs.training.state

    real, calls = accel_signs.training.state.save_file, []

    def full_disk(*args, **kwargs):
        calls.append(args[1])
        if len(calls) > 4:  # epoch 1 writes best + 3 state files, then the disk is full
            raise failure
        return real(*args, **kwargs)

    for module in (
        accel_signs.model.checkpoint,
        accel_signs.training.state,
    ):  # the best checkpoint's writer and the state's
        monkeypatch.setattr(module, "save_file", full_disk)
    result = _train(tmp_path, "--data", str(tiny_store), "--num-epochs", "4", "--run-name", "r", "--lr", "3e-3")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "No space left on device", "intact")
    run = tmp_path / "runs" / "r"
    assert load_checkpoint(run / "best").meta.epoch == 1
    assert json.loads((run / "state" / "trainer.json").read_text())["progress"]["epoch"] == 1
    assert not list(run.glob("*.tmp"))


def test_crash_between_the_renames_of_a_swap(trained, tmp_path):
    """A kill after best/ and state/ were moved aside but before the new ones were moved in:
    only best.old/ and state.old/ exist. Both still load, and resume continues."""
    run = _copy(trained, tmp_path / "r")
    os.replace(run / "best", run / "best.old")
    os.replace(run / "state", run / "state.old")
    evaluated = runner.invoke(app, ["evaluate", str(run / "best"), "--output", str(tmp_path / "e"), "--split", "train"])
    assert evaluated.exit_code == 0, evaluated.stderr
    resumed = _train(tmp_path, "--resume", str(run), "--num-epochs", "2")
    assert resumed.exit_code == 0, resumed.stderr
    assert [r[0] for r in _rows(run)] == [1, 2] and (run / "state").exists() and not (run / "state.old").exists()


def test_a_second_resume_keeps_the_extended_epochs(trained, tmp_path):
    run = _copy(trained, tmp_path / "r")
    assert _train(tmp_path, "--resume", str(run), "--num-epochs", "2").exit_code == 0
    assert json.loads((run / "config.json").read_text())["num_epochs"] == 2
    again = _train(tmp_path, "--resume", str(run))
    assert again.exit_code == 0 and [r[0] for r in _rows(run)] == [1, 2]


def test_unwritable_output(tiny_store, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = _train(tmp_path, "--data", str(tiny_store), "--num-epochs", "1", out="file/runs")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "cannot create run folder")
    assert blocker.read_text() == "not a folder"


def test_resume_with_nothing_to_resume(tmp_path):
    result = _train(tmp_path, "--resume")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "nothing to resume")
    (tmp_path / "runs" / "x").mkdir(parents=True)
    (tmp_path / "runs" / "x" / "config.json").write_text("{}")
    result = _train(tmp_path, "--resume", str(tmp_path / "runs" / "x"))
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "nothing to resume")


@pytest.fixture(scope="module")
def trained(tiny_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    result = runner.invoke(
        app,
        ["train", "--data", str(tiny_store), "--output-dir", str(out), "--run-name", "r", "--num-epochs", "1", *FAST],
    )
    assert result.exit_code == 0, result.stderr
    return out / "r"


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_checkpoint_config_not_matching_weights(trained, tmp_path):
    best = _copy(trained / "best", tmp_path / "best")
    meta = json.loads((best / "config.json").read_text())
    meta["model"]["size"] = "t_4_1"
    (best / "config.json").write_text(json.dumps(meta))
    result = runner.invoke(app, ["evaluate", str(best), "--output", str(tmp_path / "e")])
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "does not match config.json")
    assert not (tmp_path / "e").exists()


def test_checkpoint_with_a_pth_instead_of_safetensors(trained, tmp_path):
    best = _copy(trained / "best", tmp_path / "best")
    (best / "model.safetensors").unlink()
    (best / "model.pth").write_bytes(pickle.dumps({"w": 1}))
    result = runner.invoke(app, ["evaluate", str(best), "--output", str(tmp_path / "e")])
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "model.pth", "never unpickles")


def test_corrupt_state_is_refused_and_best_kept(trained, tmp_path):
    run = _copy(trained, tmp_path / "r")
    opt = run / "state" / "optimizer.safetensors"
    opt.write_bytes(opt.read_bytes()[:100])
    before = (run / "best" / "model.safetensors").read_bytes()
    result = _train(tmp_path, "--resume", str(run), "--num-epochs", "2")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "unreadable training state")
    assert (run / "best" / "model.safetensors").read_bytes() == before


STORE_CASES = {  # (file, corruption, message): the list, through the CLI
    "truncated_frames": ("train/frames.npy", lambda p: p.write_bytes(p.read_bytes()[:-3000]), "truncated"),
    "index_inconsistent": ("train/clips.npy", lambda p: _edit_clips(p, 5, 1, 999), "clip 6 starts at frame"),
    "meta_missing": ("meta.json", lambda p: p.unlink(), "meta.json: missing"),
    "meta_malformed": ("meta.json", lambda p: p.write_text('{"format": '), "not valid JSON"),
    "wrong_layout": ("meta.json", lambda p: _edit_meta(p, layout={"id": "openpose-25"}), "keypoint layout"),
    "labels_out_of_range": ("train/clips.npy", lambda p: _edit_clips(p, 2, 2, 77), "label 77, outside"),
    "nan_frames": ("train/frames.npy", lambda p: _poke_frames(p, np.nan), "NaN or inf"),
    "inf_frames": ("train/frames.npy", lambda p: _poke_frames(p, np.inf), "NaN or inf"),
    "empty_split": ("train/clips.npy", lambda p: _empty(p), "empty"),
}


def _edit_clips(path, row, col, value):
    clips = np.load(path)
    clips[row, col] = value
    np.save(path, clips)


def _edit_meta(path, **changes):
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def _poke_frames(path, value):
    frames = np.load(path, mmap_mode="r+")
    frames[123, 10, 0] = value
    frames.flush()


def _empty(path):
    np.save(path, np.zeros((0, 4), np.int64))
    np.save(path.parent / "frames.npy", np.zeros((0, 184, 4), np.float32))
    _edit_meta(
        path.parent.parent / "meta.json",
        splits={
            "train": {"clips": 0, "frames": 0},
            "test": {
                "clips": 12,
                "frames": json.loads((path.parent.parent / "meta.json").read_text())["splits"]["test"]["frames"],
            },
        },
    )


@pytest.mark.parametrize("case", sorted(STORE_CASES))
def test_bad_store_one_line_error_nothing_written(case, store_copy, tmp_path):
    name, corrupt, needle = STORE_CASES[case]
    corrupt(store_copy / name)
    snapshot = {p: p.read_bytes() for p in store_copy.rglob("*") if p.is_file()}
    result = _train(tmp_path, "--data", str(store_copy), "--num-epochs", "1")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, needle)
    assert not (tmp_path / "runs").exists()
    assert {p: p.read_bytes() for p in store_copy.rglob("*") if p.is_file()} == snapshot  # nothing lost


class _CreatesFile:
    """Unpickling this creates a file: proof that something ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _evil_npy(path, marker):
    np.save(path, np.array([_CreatesFile(marker)], dtype=object), allow_pickle=True)


def _evil_bytes(path, marker):
    path.write_bytes(pickle.dumps(_CreatesFile(marker)))


PICKLE_PLACES = {
    "store_clips": ("store", "train/clips.npy", _evil_npy),
    "store_frames": ("store", "train/frames.npy", _evil_npy),
    "store_meta": ("store", "meta.json", _evil_bytes),
    "ckpt_weights": ("best", "model.safetensors", _evil_bytes),
    "ckpt_config": ("best", "config.json", _evil_bytes),
    "ckpt_pth": ("best", "model.pth", _evil_bytes),
    "state_trainer": ("run", "state/trainer.json", _evil_bytes),
    "state_model": ("run", "state/model.safetensors", _evil_bytes),
    "state_optimizer": ("run", "state/optimizer.safetensors", _evil_bytes),
    "state_rng": ("run", "state/rng_0.safetensors", _evil_bytes),
    "state_rng_json": ("run", "state/rng_0.json", _evil_bytes),
    "npz_source": ("npz", "01-train/0001.npz", None),
    "seed_mmap_index": ("mmap", "train_X_map_samples_lens.npy", None),
}


@pytest.mark.parametrize("place", sorted(PICKLE_PLACES))
def test_pickles_are_never_executed(place, store_copy, trained, tmp_path):
    marker = tmp_path / "PWNED"
    kind, name, plant = PICKLE_PLACES[place]
    if kind == "store":
        plant(store_copy / name, marker)
        args = ["train", "--data", str(store_copy), "--output-dir", str(tmp_path / "runs"), *FAST]
    elif kind == "best":
        best = _copy(trained / "best", tmp_path / "best")
        if name == "model.pth":
            (best / "model.safetensors").unlink()
        plant(best / name, marker)
        args = ["evaluate", str(best), "--output", str(tmp_path / "e")]
    elif kind == "run":
        run = _copy(trained, tmp_path / "r")
        plant(run / name, marker)
        args = ["train", "--resume", str(run), "--num-epochs", "2", "--no-eval"]
    elif kind == "npz":
        (tmp_path / "npz" / "01-train").mkdir(parents=True)
        np.savez(tmp_path / "npz" / "01-train" / "0001.npz", np.array([_CreatesFile(marker)], dtype=object))
        args = ["prepare", str(tmp_path / "npz"), str(tmp_path / "out"), "--from", "npz", "--splits", "train"]
    else:  # the seed's pickled index, without the explicit opt-in
        src = tmp_path / "mmap"
        src.mkdir()
        np.save(src / name, np.array(_CreatesFile(marker), dtype=object), allow_pickle=True)
        args = ["prepare", str(src), str(tmp_path / "out"), "--from", "seed-mmap", "--splits", "train"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.stdout + result.stderr
    assert not marker.exists(), f"unpickling ran code via {name}"
    assert_one_line_error(result.stderr)
