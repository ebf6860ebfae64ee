"""Kill a training run with SIGKILL at random moments, resume it each time, and check that it
ends exactly where an uninterrupted run ends.

    python tests/kill_and_resume.py --kills 20            # the check behind the README's claim
    python tests/kill_and_resume.py --kills 2 --epochs 40 # quick (the test suite runs this)

It does the kills it was asked for: without --epochs the run is sized to them (a kill comes at
most MAX_DELAY_S after a start, so a run that needs more than kills x MAX_DELAY_S of training
cannot finish first); with --epochs, a run that finishes before the last kill is a failure.

After every kill it checks that the best checkpoint (if one was written yet) loads and that
the saved state is complete. At the end it compares every metrics.jsonl line (epoch, losses,
accuracy, lr) and the best and final weights with the uninterrupted run's, bit for bit.
Exit code 0 when everything matched.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safetensors.torch import load_file

from accel_signs.data.synth import SynthSpec, write_synthetic
from accel_signs.model.checkpoint import load_checkpoint

KEYS = ("epoch", "train_loss", "val_loss", "val_acc", "lr")
MIN_DELAY_S, MAX_DELAY_S = 1.0, 5.0  # between a (re)start and its kill; startup included


def train_cmd(store: Path, out: Path, epochs: int, resume: bool) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "accel_signs",
        "-q",
        "train",
        "--data",
        str(store),
        "--output-dir",
        str(out),
        "--num-epochs",
        str(epochs),
        "--model-size",
        "t_2_1",
        "--batch-size",
        "16",
        "--seed",
        "7",
        "--no-eval",
    ]
    return cmd + (["--resume", str(out / "r")] if resume else ["--run-name", "r"])


def metrics(run: Path) -> list[tuple]:
    return [tuple(json.loads(line)[k] for k in KEYS) for line in (run / "metrics.jsonl").read_text().splitlines()]


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(a), load_file(b)
    return x.keys() == y.keys() and all(bool((x[k] == y[k]).all()) for k in x)


def size_run(store: Path, work: Path, env: dict[str, str], kills: int) -> int:
    """Epochs the killed run needs so that it cannot finish before `kills` kills: time two
    epochs, then ask for twice the training that kills x MAX_DELAY_S could ever do."""
    subprocess.run(train_cmd(store, work / "calibrate", 2, False), env=env, check=True, stdout=subprocess.DEVNULL)
    epoch_s = min(
        json.loads(line)["seconds"] for line in (work / "calibrate" / "r" / "metrics.jsonl").read_text().splitlines()
    )
    epochs = max(10, math.ceil(2 * kills * MAX_DELAY_S / max(epoch_s, 1e-3)))
    print(json.dumps({"epoch_seconds": epoch_s, "epochs": epochs}), flush=True)
    return epochs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=None, help="default: sized to the kills (see above)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="kill_resume-"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCEL_SIGNS_CACHE": str(work / "cache")}
    store = write_synthetic(work / "store", SynthSpec(classes=6, signers=2, reps=6, seed=1))
    rng = random.Random(args.seed)
    if args.epochs is None:
        args.epochs = size_run(store, work, env, args.kills)

    start = time.perf_counter()
    subprocess.run(train_cmd(store, work / "ref", args.epochs, False), env=env, check=True, stdout=subprocess.DEVNULL)
    reference_s = time.perf_counter() - start

    run, kills, fresh_starts, log = work / "killed" / "r", 0, 0, []
    while kills < args.kills:
        # A kill between the two renames of a state swap leaves only state.old: resume recovers it.
        resume = (run / "state" / "trainer.json").exists() or (run / "state.old" / "trainer.json").exists()
        if not resume:  # killed before its first epoch was saved: nothing to resume, start again
            shutil.rmtree(run, ignore_errors=True)
            fresh_starts += 1
        proc = subprocess.Popen(
            train_cmd(store, work / "killed", args.epochs, resume),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        delay = rng.uniform(MIN_DELAY_S, MAX_DELAY_S)  # startup included: some kills land before an epoch ends
        try:
            proc.wait(timeout=delay)
            print(
                json.dumps(
                    {
                        "kills": kills,
                        "error": f"the run finished before kill {kills + 1} of {args.kills}; "
                        "give more --epochs (or none, to size the run to the kills)",
                    }
                ),
                flush=True,
            )
            return 1
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
        done = len(metrics(run)) if (run / "metrics.jsonl").exists() else 0
        if (run / "best").exists() or (run / "best.old").exists():
            load_checkpoint(run / "best")  # raises if a kill left it unreadable (falls back to best.old)
        elif done:
            raise SystemExit(f"kill {kills}: epochs were logged but no best checkpoint is left")
        state = run / "state" if (run / "state").exists() else run / "state.old"
        if state.exists():
            json.loads((state / "trainer.json").read_text())
        log.append({"kill": kills, "after_s": round(delay, 2), "epochs_logged": done})
        print(json.dumps(log[-1]), flush=True)
    resume = (run / "state" / "trainer.json").exists() or (run / "state.old" / "trainer.json").exists()
    final = subprocess.run(train_cmd(store, work / "killed", args.epochs, resume), env=env, stdout=subprocess.DEVNULL)
    ref = work / "ref" / "r"
    result = {
        "kills": kills,
        "kills_asked": args.kills,
        "fresh_starts": fresh_starts,
        "final_exit": final.returncode,
        "epochs": args.epochs,
        "metrics_equal": final.returncode == 0 and metrics(run) == metrics(ref),
        "best_weights_equal": same_weights(run / "best" / "model.safetensors", ref / "best" / "model.safetensors"),
        "final_weights_equal": same_weights(run / "state" / "model.safetensors", ref / "state" / "model.safetensors"),
        "reference_seconds": round(reference_s, 1),
    }
    print(json.dumps(result))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    ok = result["metrics_equal"] and result["best_weights_equal"] and result["final_weights_equal"]
    return 0 if ok and kills == args.kills else 1


if __name__ == "__main__":
    sys.exit(main())
