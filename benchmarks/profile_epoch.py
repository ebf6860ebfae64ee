"""Where a training epoch's time goes: `accel_signs.train` itself under cProfile, split by stage.

    python benchmarks/profile_epoch.py                     # CPU: s_4_2, batch 64, 1000 clips
    python benchmarks/profile_epoch.py --clips 3000 --size s_4_6

Builds the same synthetic KArSL-sized store as throughput.py (random clips of 40-120 frames,
502 classes), trains 2 epochs through the library's real `train()` and profiles the whole of
epoch 2 (epoch 1 holds one-time costs), from the first batch to the saved state. The stages
are the functions that do them:
  loader        the prepared DataLoader's batches, less the two parts below
  sampling      data/sampling.tsn_positions: the frame positions
  gather        data/sampling.gather_frames: reading and interpolating the frames
  features      model/features.KeypointFeatures.canonical and .encode
  augmentation  data/augment.Augmenter
  forward       the rest of the model's call (STTransformer.forward), and the loss
  backward      accelerator.backward
  optimizer     clipping, optimizer.step and zero_grad, the schedule
  logging       the loss totals, the finite-loss check, the progress bar, metrics.jsonl
  validation    training/loop.validate
  checkpoints   best/ and state/ (run.save_best, run.save_state)
  other         the rest of the epoch (Python overhead of the loop itself)
cProfile adds a little time to each Python call (the model's modules and the loop's), so the
Python-heavy stages read slightly high; the shares, not the seconds, are what to compare.
Prints the table; writes it to bench/results/profile-<device>-epoch-<time>.json.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

# stage -> functions (file suffix, function name) whose cumulative time it is; a third item
# counts only the calls from that function (the training loop's batches, not the iterators
# nested in them).
LOOP = ("training/loop.py", "train_one_epoch")
STAGES = {
    "sampling": [("data/sampling.py", "tsn_positions")],
    "gather": [("data/sampling.py", "gather_frames")],
    "loader": [("accelerate/data_loader.py", "__iter__", LOOP)],
    "features": [("model/features.py", "canonical"), ("model/features.py", "encode")],
    "augmentation": [("data/augment.py", "__call__")],
    "forward": [
        ("torch/nn/modules/module.py", "_wrapped_call_impl", LOOP),
        ("torch/nn/functional.py", "cross_entropy"),
    ],
    "backward": [("accelerate/accelerator.py", "backward")],
    "optimizer": [
        ("accelerate/accelerator.py", "clip_grad_norm_"),
        ("accelerate/optimizer.py", "step"),
        ("accelerate/optimizer.py", "zero_grad"),
        ("training/optim.py", "step_batch"),
    ],
    "logging": [
        ("training/loop.py", "_check_finite"),
        ("accelerate/accelerator.py", "gather_for_metrics"),
        ("accelerate/accelerator.py", "reduce"),
        ("core/progress.py", "<lambda>"),
        ("training/run.py", "log_epoch"),
        ("accelerate/accelerator.py", "log"),
    ],
    "checkpoints": [("training/run.py", "save_best"), ("training/run.py", "save_state")],
}
# A stage's time excludes the stages nested in it (the loader's sampling and gather, the
# model's features and augmentation). Validation is timed whole, with the profiler paused.
NESTED = {"loader": ("sampling", "gather"), "forward": ("features", "augmentation")}


def _is(key: tuple, suffix: str, name: str) -> bool:
    return key[0].endswith(suffix) and key[2] == name


def cumulative(stats: pstats.Stats, functions: list[tuple]) -> float:
    """Summed cumulative seconds of the functions, each entry point counted once."""
    total = 0.0
    for key, (_cc, _nc, _tt, ct, callers) in stats.stats.items():
        for suffix, name, *caller in functions:
            if not _is(key, suffix, name):
                continue
            if caller:
                total += sum(c[3] for ck, c in callers.items() if _is(ck, *caller[0]))
            else:  # less the calls from the stage's own functions (recursion, a nested forward)
                total += ct - sum(c[3] for ck, c in callers.items() if any(_is(ck, f[0], f[1]) for f in functions))
    return total


def breakdown(stats: pstats.Stats, timing: dict[str, float]) -> dict[str, float]:
    """Seconds per stage of the profiled epoch (validation from its own timer)."""
    seconds = {stage: cumulative(stats, fns) for stage, fns in STAGES.items()}
    for stage, inner in NESTED.items():
        seconds[stage] -= sum(seconds[i] for i in inner)
    seconds["validation"] = timing["validation"]
    seconds["other"] = timing["epoch"] - sum(seconds.values())
    return seconds


def profile_epoch2(cfg) -> tuple[pstats.Stats, dict[str, float]]:
    """Train 2 epochs; cProfile epoch 2 (its run_epoch call), validation paused and timed apart.
    Returns the stats and the seconds of the epoch and of its validation."""
    import time

    from accel_signs import train
    from accel_signs.training import loop

    profiler, timing = cProfile.Profile(), {"validation": 0.0}
    run_epoch, validate = loop.run_epoch, loop.validate
    profiling = [False]

    def profiled_run_epoch(lp, epoch, compiling=False):
        if epoch != 2:
            return run_epoch(lp, epoch, compiling)
        start = time.perf_counter()
        profiling[0] = True
        profiler.enable()
        try:
            return run_epoch(lp, epoch, compiling)
        finally:
            profiler.disable()
            profiling[0] = False
            timing["epoch"] = time.perf_counter() - start

    def timed_validate(*args):
        if not profiling[0]:
            return validate(*args)
        profiler.disable()
        start = time.perf_counter()
        try:
            return validate(*args)
        finally:
            timing["validation"] += time.perf_counter() - start
            profiler.enable()

    loop.run_epoch, loop.validate = profiled_run_epoch, timed_validate
    try:
        train(cfg)
    finally:
        loop.run_epoch, loop.validate = run_epoch, validate
    return pstats.Stats(profiler), timing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="s_4_2")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--clips", type=int, default=1000, help="clips in the synthetic data set")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from throughput import build_store

    import seed_loop
    from accel_signs.config import TrainConfig

    with tempfile.TemporaryDirectory() as tmp:
        build_store(Path(tmp) / "store", args.clips, seed_loop)
        cfg = TrainConfig.from_dict(
            {
                "data": {"path": str(Path(tmp) / "store")},
                "model": {"size": args.size},
                "batch_size": args.batch,
                "num_epochs": 2,
                "evaluate": False,
                "output_dir": str(Path(tmp) / "runs"),
                "run_name": "profiled",
            }
        )
        stats, timing = profile_epoch2(cfg)
        metrics = [json.loads(x) for x in (Path(tmp) / "runs" / "profiled" / "metrics.jsonl").read_text().splitlines()]
    seconds, epoch = breakdown(stats, timing), timing["epoch"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"\n{device}, torch {torch.__version__}, {torch.get_num_threads()} threads, {args.size}, batch {args.batch}, "
        f"{args.clips} clips: epoch 2 took {epoch:.1f}s under cProfile "
        f"(metrics.jsonl: {metrics[1]['samples_per_s']} samples/s)"
    )
    for stage, s in sorted(seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {stage:13s} {s:7.2f}s  {100 * s / epoch:5.1f}%")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"profile-{device}-epoch-{datetime.now():%Y%m%d-%H%M%S}.json"
    table = {stage: {"seconds": round(s, 3), "share": round(s / epoch, 4)} for stage, s in seconds.items()}
    out.write_text(
        json.dumps(
            {
                "device": device,
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
                "args": {k: str(v) for k, v in vars(args).items()},
                "epoch_seconds_profiled": round(epoch, 3),
                "metrics": metrics,
                "stages": table,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
