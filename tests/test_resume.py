"""Resuming through the library's one policy (run.resume_config), from the CLI or from Python."""

import dataclasses
import json
import shutil
import subprocess
import sys

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from accel_signs.cli import app
from accel_signs.core.errors import ConfigError
from accel_signs.data.training import default_num_workers
from accel_signs.training.run import resume_config
from helpers import FAST, assert_one_line_error, cli_env, read_metrics

runner = CliRunner()
TIMING = ("seconds", "samples_per_s")


def _train(*args: str):
    return runner.invoke(app, ["train", *FAST, "--no-eval", "--seed", "4", *args])


def test_python_and_cli_resume_give_identical_runs(tiny_store, tmp_path):
    first = _train("--data", str(tiny_store), "--output-dir", str(tmp_path), "--run-name", "cli", "--num-epochs", "2")
    assert first.exit_code == 0, first.stderr
    shutil.copytree(tmp_path / "cli", tmp_path / "py")
    by_cli = _train("--resume", str(tmp_path / "cli"), "--num-epochs", "3")
    assert by_cli.exit_code == 0, by_cli.stderr

    from accel_signs import train

    cfg = dataclasses.replace(resume_config(tmp_path / "py"), num_epochs=3)
    train(cfg, resume=tmp_path / "py")
    rows = {
        run: [{k: v for k, v in m.items() if k not in TIMING} for m in read_metrics(tmp_path / run)]
        for run in ("cli", "py")
    }
    assert rows["cli"] == rows["py"] and len(rows["cli"]) == 3
    state_cli, state_py = tmp_path / "cli" / "state", tmp_path / "py" / "state"
    assert sorted(p.name for p in state_cli.iterdir()) == sorted(p.name for p in state_py.iterdir())
    for f in state_cli.iterdir():
        if f.suffix == ".safetensors":
            a, b = load_file(f), load_file(state_py / f.name)
            assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a), f.name
        else:
            assert json.loads(f.read_text()) == json.loads((state_py / f.name).read_text()), f.name
    # the run's config.json agrees too, apart from where each run lives
    cfg_cli, cfg_py = (json.loads((tmp_path / r / "config.json").read_text()) for r in ("cli", "py"))
    for c in (cfg_cli, cfg_py):
        c.pop("run_name"), c["runtime"].pop("run_name")
    assert cfg_cli == cfg_py and cfg_cli["num_epochs"] == 3


def test_python_resume_refuses_what_the_cli_refuses(tiny_store, tmp_path):
    result = _train("--data", str(tiny_store), "--output-dir", str(tmp_path), "--run-name", "r", "--num-epochs", "1")
    assert result.exit_code == 0, result.stderr
    cfg = dataclasses.replace(resume_config(tmp_path / "r"), batch_size=4)
    with pytest.raises(ConfigError, match="--batch-size was 8 there, not 4"):
        resume_config(tmp_path / "r", cfg)
    cli = _train("--resume", str(tmp_path / "r"), "--batch-size", "4")
    assert cli.exit_code == 1
    assert_one_line_error(cli.stderr, "--batch-size was 8 there, not 4")


def _launch(tmp_path, precision_env: str, *args: str) -> subprocess.CompletedProcess:
    """The CLI in a fresh process, as `accelerate launch` with a `mixed_precision` config sets it up."""
    env = cli_env(tmp_path, ACCELERATE_MIXED_PRECISION=precision_env)
    cmd = [sys.executable, "-m", "accel_signs", "train", *FAST, "--no-eval", "--seed", "4", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_resume_keeps_the_precision_auto_resolved_to(tiny_store, tmp_path):
    """A run started with auto under a bf16 launch config resumes in bf16 under another launch
    config, and an explicit other --mixed-precision is refused."""
    first = _launch(
        tmp_path,
        "bf16",
        "--data",
        str(tiny_store),
        "--output-dir",
        str(tmp_path),
        "--run-name",
        "r",
        "--num-epochs",
        "1",
    )
    assert first.returncode == 0, first.stderr[-3000:]
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["mixed_precision"] == "auto" and saved["runtime"]["mixed_precision"] == "bf16"
    resumed = _launch(tmp_path, "no", "--resume", str(tmp_path / "r"), "--num-epochs", "2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["runtime"]["mixed_precision"] == "bf16" and config["mixed_precision"] == "bf16"
    assert "mixed precision bf16" in resumed.stderr
    refused = _launch(tmp_path, "no", "--resume", str(tmp_path / "r"), "--num-epochs", "3", "--mixed-precision", "no")
    assert refused.returncode == 1
    assert_one_line_error(refused.stderr, "--mixed-precision was 'bf16' there (the run resolved auto to it), not 'no'")
    assert len(read_metrics(tmp_path / "r")) == 2


@pytest.mark.parametrize(
    "cores,local,world,expected",
    [
        (32, "8", 64, 4),  # 8 nodes x 8 GPUs, 32 cores each: 4 per process (dividing by 64 gave 0)
        (6, "2", 16, 3),  # the cores this process may use, shared by the processes of its machine
        (2, None, 1, 2),  # one process, no launcher variables
        (64, "1", 512, 4),  # never more than 4
    ],
)
def test_default_workers_use_the_local_processes_and_the_affinity(monkeypatch, cores, local, world, expected):
    import os

    import torch

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    if local is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local)
    assert default_num_workers(torch.device("cuda"), world) == expected
    assert default_num_workers(torch.device("cpu"), world) == 0
