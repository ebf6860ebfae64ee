"""What goes wrong on a cluster, with real processes: two machines, a preempted run (SIGTERM,
SIGUSR1), a rank that dies. 2 ranks on gloo, on this one host."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

import helpers
from helpers import accelerate_launch, cli_env, free_port, read_metrics
from kill_and_resume import ranks_of

pytestmark = pytest.mark.multiprocess
ROOT = Path(__file__).resolve().parents[1]
TIMING = ("seconds", "samples_per_s")
# Batches of 2 per rank: 15 steps an epoch, so a signal lands inside one.
ARGS = ["--num-epochs", "3", "--seed", "5", "--no-eval", *helpers.FAST, "--batch-size", "2"]


def _rows(run: Path) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in TIMING} for m in read_metrics(run)]


def _same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(a), load_file(b)
    return x.keys() == y.keys() and all(bool((x[k] == y[k]).all()) for k in x)


def _assert_same_run(a: Path, b: Path) -> None:
    assert _rows(a) == _rows(b)
    assert _same_weights(a / "best" / "model.safetensors", b / "best" / "model.safetensors")
    assert _same_weights(a / "state" / "model.safetensors", b / "state" / "model.safetensors")


@pytest.fixture(scope="module")
def two_process_run(tiny_store, tmp_path_factory) -> Path:
    """A run of 2 processes on one machine, never interrupted: what the others must equal."""
    tmp = tmp_path_factory.mktemp("reference")
    single = accelerate_launch(
        ["train", "--data", str(tiny_store), "--output-dir", str(tmp / "runs"), "--run-name", "r", *ARGS], tmp
    )
    assert single.returncode == 0, single.stderr[-3000:]
    return tmp / "runs" / "r"


def test_two_machines_on_one_host_train_as_two_processes_on_one(tiny_store, tmp_path, two_process_run):
    """accelerate_configs/multi_node.yaml, launched for real as machine 0 and machine 1 (one
    process each, over gloo on 127.0.0.1), gives one run folder and the run that 2 processes on
    one machine give."""

    port, out = free_port(), tmp_path / "two"
    config = ROOT / "accelerate_configs" / "multi_node.yaml"
    machines = [
        subprocess.Popen(
            [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
            + ["--num_processes", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1"]
            + ["--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no"]
            + ["-m", "accel_signs", "train", "--data", str(tiny_store), "--output-dir", str(out), "--run-name", "r"]
            + ARGS,
            env=cli_env(tmp_path, ACCELERATE_USE_CPU="1"),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    results = [m.communicate(timeout=300) for m in machines]
    for m, (_, err) in zip(machines, results):
        assert m.returncode == 0, err[-3000:]
    assert "2 process(es)" in results[0][1]
    assert [p.name for p in out.iterdir()] == ["r"]  # one run folder for both machines
    assert results[0][0].strip() == str(out / "r" / "best") and results[1][0].strip() == ""  # the main process prints
    runtime = json.loads((out / "r" / "config.json").read_text())["runtime"]
    assert runtime["num_processes"] == 2 and runtime["global_batch_size"] == 4
    _assert_same_run(out / "r", two_process_run)


def _launch_bg(tmp_path: Path, store: Path, out: Path, *args: str, **popen) -> subprocess.Popen:
    cmd = helpers.launch_command(
        ["-m", "accel_signs", "train", "--data", str(store), "--output-dir", str(out), *args], processes=2
    )
    return subprocess.Popen(
        cmd,
        env=cli_env(tmp_path, ACCELERATE_USE_CPU="1"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **popen,
    )


def _wait_for_epoch(run: Path, proc: subprocess.Popen, epochs: int = 1, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if (run / "metrics.jsonl").exists() and len(read_metrics(run)) >= epochs:
            return
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    raise AssertionError(f"no epoch {epochs} within {timeout}s")


def _saved_epoch(run: Path) -> int:
    """The last epoch whose state is saved (0: none yet, or being written)."""
    try:
        return int(json.loads((run / "state" / "trainer.json").read_text())["progress"]["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def test_sigusr1_saves_the_state_mid_epoch_and_resume_ends_identically(tiny_store, tmp_path, two_process_run):
    """SIGUSR1 to every process, as SLURM's --signal sends it (the launcher ignores it, as
    examples/slurm_multinode.sh makes it): the ranks stop at the same step inside an epoch, save
    the state there and exit 75; --resume then ends bit-identical to a run never stopped.
    (SIGTERM to the launcher, and SIGKILL of a rank: tests/kill_and_resume.py, test_robustness.)"""
    out = tmp_path / "runs"
    run = out / "r"
    ignore = {"preexec_fn": lambda: signal.signal(signal.SIGUSR1, signal.SIG_IGN)}
    proc = _launch_bg(tmp_path, tiny_store, out, "--run-name", "r", *ARGS, **ignore)
    _wait_for_epoch(run, proc)
    # Signal once epoch 1's state is saved, so the signal lands inside epoch 2 (15 steps, about
    # 0.3 s on a quiet machine): a fixed sleep after the metrics line raced the end of epoch 2.
    end = time.monotonic() + 60
    while _saved_epoch(run) < 1 and time.monotonic() < end:
        time.sleep(0.01)
    time.sleep(0.05)  # past the check after the save, which stops a run between epochs
    ranks = ranks_of(proc.pid)
    assert len(ranks) == 2
    for pid in [proc.pid, *ranks]:
        os.kill(pid, signal.SIGUSR1)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1  # torchrun reports the ranks' exit code 75 as a failure of its own
    stopped = [line for line in err.splitlines() if line.startswith("stopped:")]
    assert len(stopped) == 2 and all("SIGUSR1 in epoch" in line for line in stopped), err[-3000:]
    assert "exit code 75" in stopped[0] and "accel_signs/training" not in err
    progress = json.loads((run / "state" / "trainer.json").read_text())["progress"]
    assert progress["stopped_by"] == "SIGUSR1" and 1 <= progress["partial"]["step"] < 15
    assert len(progress["partial"]["sums"]) == 2  # each rank's own sums
    assert not list(run.glob("*.tmp"))
    # What a requeue script reads, whatever the launcher returned.
    record = json.loads((run / "stopped.json").read_text())
    assert (record["signal"], record["epoch"], record["step"]) == ("SIGUSR1", 2, progress["partial"]["step"])
    assert record["processes"] == 2 and record["resume_args"] == ["train", "--resume", str(run)]

    resumed = accelerate_launch(record["resume_args"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"after step {progress['partial']['step']}" in resumed.stderr
    assert not (run / "stopped.json").exists()  # resumed and finished: no longer stopped
    _assert_same_run(run, two_process_run)


def test_a_resume_with_loader_workers_is_exact(tiny_store, tmp_path):
    """With a loader worker (persistent, started again by the resumed run), a run stopped by
    SIGTERM and resumed still ends bit-identical to one never stopped. The signal goes to the
    whole process group, workers included, as SLURM's --signal and Accelerate 1.16's launcher
    send it: the worker ignores it and the step it serves completes."""
    args = [*ARGS, "--num-workers", "1"]
    env = cli_env(tmp_path)
    cmd = [sys.executable, "-m", "accel_signs", "train", "--data", str(tiny_store), "--run-name", "r", *args]
    ref = subprocess.run([*cmd, "--output-dir", str(tmp_path / "ref")], env=env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-3000:]
    run = tmp_path / "runs" / "r"
    proc = subprocess.Popen(
        [*cmd, "--output-dir", str(run.parent)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _wait_for_epoch(run, proc)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-3000:]
    assert json.loads((run / "stopped.json").read_text())["signal"] == "SIGTERM"
    resumed = subprocess.run(
        [sys.executable, "-m", "accel_signs", "train", "--resume", str(run)], env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_run(run, tmp_path / "ref" / "r")


# The job script of examples/slurm_multinode.sh, its decisions unchanged, with a loop where SLURM
# would requeue the job: --resume when the run folder has a state; requeue when the launcher
# failed and the run left stopped.json (whatever code the launcher returned: it depends on
# Accelerate's version).
REQUEUE_LOOP = r"""
RUN="$OUT/r"
for attempt in 1 2 3; do
  if [ -f "$RUN/state/trainer.json" ] || [ -f "$RUN/state.old/trainer.json" ]; then
    TRAIN="--resume $RUN"
  else
    TRAIN="--data $STORE --output-dir $OUT --run-name r $ARGS"
  fi
  status=0
  $LAUNCH -m accel_signs train $TRAIN || status=$?
  echo "attempt $attempt: exit $status"
  if [ "$status" -ne 0 ] && [ -f "$RUN/stopped.json" ]; then
    continue  # scontrol requeue
  fi
  exit "$status"
done
exit 3
"""


def test_a_requeue_loop_like_the_slurm_example_ends_identically(tiny_store, tmp_path, two_process_run):
    """SIGTERM to the launcher mid-epoch; the job script sees stopped.json, not the exit code, and
    starts again with --resume; the run ends bit-identical to one never stopped."""
    out = tmp_path / "runs"
    env = {
        **cli_env(tmp_path, ACCELERATE_USE_CPU="1"),
        "OUT": str(out),
        "STORE": str(tiny_store),
        "ARGS": " ".join(ARGS),
        "LAUNCH": " ".join(helpers.launch_command([], processes=2)),
    }
    job = subprocess.Popen(
        ["bash", "-c", REQUEUE_LOOP],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _wait_for_epoch(out / "r", job)
    time.sleep(0.3)
    (launcher,) = ranks_of(job.pid)  # bash's one child
    os.kill(launcher, signal.SIGTERM)
    stdout, err = job.communicate(timeout=300)
    assert job.returncode == 0, stdout + err[-3000:]
    attempts = [line for line in stdout.splitlines() if line.startswith("attempt")]
    # 1 up to Accelerate 1.15, 143 (128 + SIGTERM) from 1.16: either way the record decided.
    assert attempts[0] in ("attempt 1: exit 1", "attempt 1: exit 143") and attempts[1:] == ["attempt 2: exit 0"], stdout
    assert sum(line.startswith("stopped: SIGTERM in epoch") for line in err.splitlines()) == 2, err[-3000:]
    assert not (out / "r" / "stopped.json").exists()
    _assert_same_run(out / "r", two_process_run)
