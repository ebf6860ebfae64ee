"""accelerate_configs/, the debug mode and the examples, run as a user would."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.commands.config.config_args import load_config_from_file

import helpers
from helpers import accelerate_launch, assert_one_line_error, cli_env

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "accelerate_configs").glob("*.yaml"))
FAST = [*helpers.FAST, "--num-epochs", "1", "--no-eval"]


def test_there_is_a_config_for_each_case():
    assert {p.stem for p in CONFIGS} >= {
        "cpu",
        "cpu_2proc",
        "single_gpu_bf16",
        "single_gpu_debug",
        "multi_gpu_bf16",
        "fp16",
        "multi_node",
    }


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_configs_load_with_accelerates_loader(path):
    cfg = load_config_from_file(str(path))
    text = path.read_text()
    assert text.startswith("#"), "every config explains itself in a header comment"
    expected = {
        "cpu": ("NO", 1, "no"),
        "cpu_2proc": ("MULTI_GPU", 2, "no"),
        "single_gpu_bf16": ("NO", 1, "bf16"),
        "single_gpu_debug": ("NO", 1, "no"),
        "multi_gpu_bf16": ("MULTI_GPU", 8, "bf16"),
        "fp16": ("NO", 1, "fp16"),
        "multi_node": ("MULTI_GPU", 16, "bf16"),
    }
    if path.stem in expected:
        kind, processes, precision = expected[path.stem]
        assert (str(cfg.distributed_type).split(".")[-1], cfg.num_processes, str(cfg.mixed_precision)) == (
            kind,
            processes,
            precision,
        )
    if path.stem == "multi_node":
        assert cfg.num_machines == 2 and cfg.main_process_ip and cfg.main_process_port
    if path.stem == "cpu_2proc":
        assert "ACCELERATE_USE_CPU=1" in text


@pytest.mark.parametrize("name,ranks", [("cpu", 1), ("cpu_2proc", 2)])
def test_cpu_configs_launch_a_run(name, ranks, tiny_store, tmp_path):
    out = tmp_path / "runs"
    proc = accelerate_launch(
        ["train", "--data", str(tiny_store), "--output-dir", str(out), "--run-name", "r", *FAST],
        tmp_path,
        config_file=ROOT / "accelerate_configs" / f"{name}.yaml",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{ranks} process(es)" in proc.stderr
    states = sorted(p.name for p in (out / "r" / "state").glob("rng_*.safetensors"))
    assert states == [f"rng_{i}.safetensors" for i in range(ranks)]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_debug_config_runs_on_cpu_with_per_step_logs(tiny_store, tmp_path):
    out = tmp_path / "runs"
    proc = accelerate_launch(
        [
            "train",
            "--debug",
            "--data",
            str(tiny_store),
            "--output-dir",
            str(out),
            "--run-name",
            "d",
            "--model-size",
            "t_2_1",
            "--batch-size",
            "8",
        ],
        tmp_path,
        config_file=ROOT / "accelerate_configs" / "single_gpu_debug.yaml",
        env=cli_env(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "debug: no GPU available, running on the CPU" in proc.stderr
    assert "anomaly detection and deterministic algorithms on" in proc.stderr
    steps = [line for line in proc.stderr.splitlines() if "step " in line and "grad norm" in line]
    assert len(steps) == 2 * 5  # 2 epochs x 5 batches by default
    assert "x (8, 50, 736) torch.float32" in steps[0] and ", lr " in steps[0] and "MiB" in steps[0]
    assert len((out / "d" / "metrics.jsonl").read_text().splitlines()) == 2


def test_debug_refuses_two_processes(tiny_store, tmp_path):
    out = tmp_path / "runs"
    proc = accelerate_launch(["train", "--debug", "--data", str(tiny_store), "--output-dir", str(out)], tmp_path)
    assert proc.returncode != 0
    assert_one_line_error(proc.stderr, "--debug runs a single process, but 2 were launched")
    assert not out.exists()


def test_quickstart_example(tmp_path):
    env = {
        **cli_env(tmp_path),
        "EPOCHS": "1",
        "MODEL_SIZE": "t_2_1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    proc = subprocess.run(
        ["bash", str(ROOT / "examples" / "quickstart.sh"), str(tmp_path / "qs")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "qs" / "runs" / "demo"
    assert (run / "training_curves.png").exists() and (run / "eval-test" / "metrics.json").exists()


def test_python_api_example(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "train_own_data.py"),
            "--out",
            str(tmp_path / "own"),
            "--epochs",
            "1",
            "--model-size",
            "t_1_1",
        ],
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "first test clip: predicted" in proc.stdout


@pytest.mark.parametrize("script", ["karsl502_recipe.sh", "slurm_multinode.sh", "quickstart.sh"])
def test_shell_examples_parse(script):
    subprocess.run(["bash", "-n", str(ROOT / "examples" / script)], check=True)


def test_plain_accelerate_launch_without_any_config(tiny_store, tmp_path):
    """`accelerate launch -m accel_signs train ...` on a fresh machine (no default config): 1 process."""
    env = cli_env(tmp_path, HF_HOME=str(tmp_path / "hf"))  # where `accelerate config` would have written
    out = tmp_path / "runs"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "-m",
            "accel_signs",
            "train",
            "--data",
            str(tiny_store),
            "--output-dir",
            str(out),
            "--run-name",
            "r",
            *FAST,
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 process(es)" in proc.stderr and proc.stdout.strip().splitlines()[-1] == str(out / "r" / "best")
