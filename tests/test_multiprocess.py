"""Real processes: `accelerate launch` with 2 ranks on gloo (CPU)."""

import json
import math
from pathlib import Path

import pytest
import torch

import helpers
from helpers import (
    accelerate_launch,
    accelerate_launch_script,
    assert_one_line_error,
    cli_env,
    read_metrics,
    recompute_val,
    train_tiny_run,
)

pytestmark = pytest.mark.multiprocess
FAST = helpers.FAST


def test_two_ranks_one_run_folder_exact_val_loss(tiny_store, tmp_path):
    out = tmp_path / "runs"
    proc = accelerate_launch(
        ["train", "--data", str(tiny_store), "--output-dir", str(out), "--num-epochs", "2", "--seed", "5", *FAST],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stderr
    runs = list(out.iterdir())
    assert len(runs) == 1, runs  # one folder, not one per rank
    run = runs[0]
    assert proc.stdout.strip().splitlines() == [str(run / "best")]  # printed once, by the main process
    metrics = read_metrics(run)
    assert [m["epoch"] for m in metrics] == [1, 2]  # no duplicate lines from the second rank
    assert sorted(p.name for p in (run / "state").glob("rng_*.safetensors")) == [
        "rng_0.safetensors",
        "rng_1.safetensors",
    ]
    assert not list(run.glob("*.tmp")) and not list(run.glob("*.old"))
    best = min(metrics, key=lambda m: (-m["val_acc"], m["val_loss"], m["epoch"]))
    loss, acc = recompute_val(run)
    assert loss == pytest.approx(best["val_loss"], rel=1e-4)
    assert acc == pytest.approx(best["val_acc"], abs=1e-9)
    # The val split is counted once: every val clip, no padding duplicates.
    assert json.loads((run / "best" / "config.json").read_text())["epoch"] == best["epoch"]


@pytest.mark.parametrize(
    "schedule,expected",
    [
        # Threshold 0.999: no epoch after the first counts as an improvement, so with patience 1
        # the lr must drop after epoch 3 (epochs 2 and 3 bad), whatever the losses are.
        ({"schedule": "plateau", "plateau_patience": 1, "plateau_threshold": 0.999}, [1e-3, 1e-3, 1e-3, 2e-4]),
        # Warmup over 2 epochs, then cosine to 0 at the end of epoch 4: the lr at each epoch's start.
        ({"schedule": "cosine", "warmup_epochs": 2.0}, None),
    ],
)
def test_the_schedule_follows_epochs_alike_with_1_and_2_processes(tiny_store, tmp_path, schedule, expected):
    """Neither schedule goes through prepare(), which would step it once per process."""
    cfg = tmp_path / "schedule.json"
    cfg.write_text(json.dumps({"optim": {**schedule, "lr_scaling": "none"}}))
    # 1 process in this one (the same code path, no launcher to start), 2 through accelerate launch.
    lrs = {
        1: [
            m["lr"]
            for m in read_metrics(
                train_tiny_run(tiny_store, tmp_path / "runs1", "--num-epochs", "4", "--config", str(cfg), "--no-eval")
            )
        ]
    }
    out = tmp_path / "runs2"
    proc = accelerate_launch(
        ["train", "--data", str(tiny_store), "--output-dir", str(out), "--run-name", "r", "--num-epochs", "4"]
        + ["--config", str(cfg), "--no-eval", *FAST],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lrs[2] = [m["lr"] for m in read_metrics(out / "r")]
    if expected is None:  # first step's lr: 1/warmup steps of the peak; epoch 3 starts at the peak
        steps = math.ceil(len(json.loads((tmp_path / "runs1" / "r" / "split.json").read_text())["train_ids"]) / 8)
        expected = [
            1e-3 / (2 * steps),
            1e-3 * (steps + 1) / (2 * steps),
            1e-3,
            1e-3 * 0.5 * (1 + math.cos(math.pi / 2)),
        ]
        assert lrs[1] == pytest.approx(expected, rel=1e-6)
        assert lrs[2][2:] == pytest.approx(lrs[1][2:], rel=1e-6)  # warmup counts steps: half as many with 2 processes
    else:
        assert lrs[1] == pytest.approx(expected, rel=1e-6)
        assert lrs[2] == pytest.approx(lrs[1], rel=1e-6)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without GPUs")
def test_unconnected_copies_are_refused(tiny_store, tmp_path):
    out = tmp_path / "runs"
    proc = accelerate_launch(
        ["train", "--data", str(tiny_store), "--output-dir", str(out), "--num-epochs", "1", *FAST],
        tmp_path,
        env=cli_env(tmp_path),
    )  # --multi_gpu without ACCELERATE_USE_CPU
    if proc.returncode == 0:
        # Accelerate 1.3 connects the copies over gloo by itself: then it is one real 2-process run.
        (run,) = out.iterdir()
        assert json.loads((run / "config.json").read_text())["runtime"]["num_processes"] == 2
        return
    assert_one_line_error(proc.stderr, "not connected", "ACCELERATE_USE_CPU=1")
    assert not out.exists()


def test_train_loss_and_samples_are_exact_with_1_and_2_processes(tiny_store, tmp_path):
    """The samples Accelerate repeats to even out the shards are not counted: the same mean loss
    and the same number of clips with 1 and 2 processes (58 clips, global batches of 8 and 16)."""
    probe = Path(__file__).parent / "train_loss_probe.py"
    for n in (1, 2):
        proc = accelerate_launch_script(probe, [str(tiny_store), str(tmp_path)], tmp_path, processes=n)
        assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = (json.loads((tmp_path / f"n{n}.json").read_text()) for n in (1, 2))
    assert one["seen"] == two["seen"] == one["clips"] == 58
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-6)


def test_a_failed_final_evaluation_reaches_every_process(tiny_store, tmp_path):
    """The main process cannot write the test results (a file blocks eval-test.tmp): both ranks
    learn of it before any barrier and exit together with the same one-line error, no crash."""
    import subprocess
    import time

    from helpers import launch_command

    out = tmp_path / "runs"
    args = ["train", "--data", str(tiny_store), "--output-dir", str(out), "--run-name", "r", "--num-epochs", "3"]
    proc = subprocess.Popen(
        launch_command(["-m", "accel_signs", *args, *FAST]),
        env=cli_env(tmp_path, ACCELERATE_USE_CPU="1"),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    while not (out / "r").exists() and proc.poll() is None:
        time.sleep(0.05)
    (out / "r" / "eval-test.tmp").write_text("in the way")
    lines, failed_at = [], None
    for line in proc.stderr:  # until both ranks and the launcher have exited
        lines.append(line)
        if failed_at is None and line.startswith("error: "):
            failed_at = time.perf_counter()
    proc.wait(timeout=60)
    stderr = "".join(lines)
    assert proc.returncode == 1 and failed_at is not None, stderr[-3000:]
    assert time.perf_counter() - failed_at < 60  # no rank waits in a barrier for the other
    assert_one_line_error(stderr, "the final evaluation failed", "eval-test.tmp", "the best checkpoint is saved")
    assert stderr.count("error: ") == 2  # one line from each rank, the same
    # Each rank raised the error itself and none crashed or was cut off by its peer: the only
    # traceback is the launcher's ChildFailedError. (A rank may be reported as exitcode 1 or,
    # when the other's exit came first, as SIGTERMed by the launcher after its error line.)
    assert stderr.count("Traceback") == 1 and "ChildFailedError" in stderr and "exitcode  : 1 " in stderr
    assert "Connection closed by peer" not in stderr and "terminate called" not in stderr


def test_a_rank_leaves_with_its_code_and_its_output_flushed(tmp_path):
    """core/collective.exit_rank (how the CLI ends a rank of several): the exit code is kept, and
    what Python would flush at exit (log handlers, a block-buffered stdout) is written first."""
    import os
    import subprocess
    import sys

    log = tmp_path / "run.log"
    code = (
        "import logging, sys\n"
        "from accel_signs.core.collective import exit_rank\n"
        f"logging.basicConfig(filename={str(log)!r})\n"
        "logging.warning('kept in the log')\n"
        "sys.stdout.write('still buffered')\n"
        "exit_rank(3)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # a pipe's stdout is block-buffered
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "still buffered"
    assert "kept in the log" in log.read_text()
