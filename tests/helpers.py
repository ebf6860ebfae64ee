"""Helpers for the tests: running the CLI under `accelerate launch`, reading runs back."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def chromium_paths(skip_if_missing: bool = True) -> tuple[str, str]:
    """Debian's chromium and chromedriver. Call it at a browser test module's top: a missing one
    skips the module and says how to install it, except in CI (.ci/run installs both) or with
    `skip_if_missing` False (the docs' and benchmarks' scripts), where it is an error, so a
    missing browser never hides as a skip."""
    import pytest

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        if os.environ.get("CI") or not skip_if_missing:
            raise RuntimeError(
                ("CI must have" if os.environ.get("CI") else "this needs")
                + " Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
            )
        pytest.skip(
            "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
            allow_module_level=True,
        )
    return chromium, driver


def headless_chromium(*args: str, skip_if_missing: bool = True):
    """A Selenium driver of headless Chromium (chromium_paths), with `args` added to its flags."""
    from selenium import webdriver

    chromium, driver = chromium_paths(skip_if_missing)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", *args):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


# The speed settings every test's training uses: a tiny model, small batches, no loader workers.
FAST = ["--model-size", "t_2_1", "--batch-size", "8", "--num-workers", "0"]


def train_tiny_run(store: Path, out: Path, *args: str, name: str = "r") -> Path:
    """Train run `name` on `store` with the FAST settings through the CLI (in this process);
    returns its folder. Options in `args` win over FAST's."""
    from typer.testing import CliRunner

    from accel_signs.cli import app

    result = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(store),
            "--output-dir",
            str(out),
            "--run-name",
            name,
            *FAST,
            *args,
        ],
    )
    assert result.exit_code == 0, result.stderr
    return out / name


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "WORLD_SIZE", "RANK", "LOCAL_RANK"))}
    env.update(ACCEL_SIGNS_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update(extra)  # may name another ACCEL_SIGNS_CACHE: the test landmarker bundles' (conftest)
    return env


def launch_command(target: list[str], processes: int = 2, config_file: Path | None = None) -> list[str]:
    """`accelerate launch --multi_gpu --num_processes N TARGET...`: with ACCELERATE_USE_CPU=1 in
    the environment (cli_env), N real ranks on gloo. Both the flag and the variable are needed:
    `--cpu --num_processes N` and a MULTI_CPU config start one process, and `--multi_gpu` without
    ACCELERATE_USE_CPU=1 on a machine without GPUs starts N unconnected copies. With
    `config_file`, that config decides instead. TARGET: `-m accel_signs ...` or a script."""
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    if config_file is not None:
        return [*launch, "--config_file", str(config_file), "--main_process_port", str(free_port()), *target]
    if processes > 1:
        launch += ["--multi_gpu", "--num_processes", str(processes), "--main_process_port", str(free_port())]
    else:
        launch += ["--num_processes", "1"]
    return [*launch, "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *target]


def accelerate_launch(
    args: list[str],
    tmp_path: Path,
    processes: int = 2,
    timeout: int = 300,
    env: dict[str, str] | None = None,
    config_file: Path | None = None,
) -> subprocess.CompletedProcess:
    """The CLI (`-m accel_signs ARGS`) under launch_command."""
    return subprocess.run(
        launch_command(["-m", "accel_signs", *args], processes, config_file),
        env=env or cli_env(tmp_path, ACCELERATE_USE_CPU="1"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def accelerate_launch_script(
    script: Path, args: list[str], tmp_path: Path, processes: int = 2, timeout: int = 300
) -> subprocess.CompletedProcess:
    """A test script of our own under launch_command, as `accelerate_launch` runs the CLI."""
    return subprocess.run(
        launch_command([str(script), *args], processes),
        env=cli_env(tmp_path, ACCELERATE_USE_CPU="1"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(ckpt, cfg, **app_options):
    """The live server (serve.app.make_server) on a thread, on 127.0.0.1:cfg.port, until the
    block ends; yields "127.0.0.1:PORT". `ckpt` None: the app loads cfg.checkpoint itself."""
    import threading
    import time

    from accel_signs.serve.app import make_server

    server = make_server(ckpt, cfg, **app_options)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield f"127.0.0.1:{cfg.port}"
    finally:
        server.should_exit = True
        thread.join(30)


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def split_ids(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) clip ids a run used, from its split.json."""
    raw = json.loads((run_dir / "split.json").read_text("utf-8"))
    return np.asarray(raw["train_ids"], dtype=np.int64), np.asarray(raw["val_ids"], dtype=np.int64)


def recompute_val(run_dir: Path) -> tuple[float, float]:
    """Val loss and accuracy of run_dir's best checkpoint, recomputed in this one process
    with plain torch (no Accelerate) on the run's recorded val split."""
    from accel_signs.data.pipeline import class_map, make_loader
    from accel_signs.data.store import open_store
    from accel_signs.model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run_dir / "best")
    info = json.loads((run_dir / "split.json").read_text())
    store = open_store(info["store"])
    split = store.split(info["split"])
    _, val_ids = split_ids(run_dir)
    loader = make_loader(
        split,
        val_ids,
        class_map(store, info["signs"]),
        seq_len=ckpt.seq_len,
        batch_size=7,
        train=False,
        num_workers=0,
        pin_memory=False,
    )
    losses, correct = [], []
    with torch.no_grad():
        for x, aspect, y, _ in loader:
            logits = ckpt.model(x.flatten(2), aspect)
            losses.append(F.cross_entropy(logits, y, reduction="none"))
            correct.append((logits.argmax(-1) == y).float())
    return torch.cat(losses).double().mean().item(), torch.cat(correct).double().mean().item()


def assert_one_line_error(stderr: str, *needles: str) -> None:
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(set(lines)) == 1, f"expected one distinct error line, got:\n{stderr}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


def letterboxed_frames(video: Path, size: tuple[int, int] = (640, 480)):
    """The video's frames (BGR uint8) scaled to fit `size` and centred on a dark background: a
    webcam-sized picture of any video."""
    import cv2
    import numpy as np

    capture = cv2.VideoCapture(str(video))
    width, height = size
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            return frames
        h, w = image.shape[:2]
        scale = min(width / w, height / h)
        small = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        canvas = np.full((height, width, 3), 32, np.uint8)
        y, x = (height - small.shape[0]) // 2, (width - small.shape[1]) // 2
        canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
        frames.append(canvas)


def write_y4m(video: Path, out: Path, size: tuple[int, int] = (640, 480)) -> Path:
    """The video letterboxed into `size` as raw YUV 4:2:0 frames: what Chromium's fake camera plays."""
    import cv2

    width, height = size
    with open(out, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\n".encode())
        for frame in letterboxed_frames(video, size):
            f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())  # (H*3/2, W) planes
    return out
