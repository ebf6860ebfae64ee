"""Training throughput of accel_signs beside the seed loop, in one process, on the same data.

    python benchmarks/throughput.py                      # CPU: s_4_2 at batch 64
    accelerate launch --mixed_precision bf16 benchmarks/throughput.py --sizes s_4_2,s_4_6 \
        --batches 64,256,1024 --steps 50 [--compile --compile-mode reduce-overhead]       # a GPU

Builds one synthetic KArSL-sized data set (random KArSL-shaped clips of 40-120 frames, 502
classes), writes it as a clip store, then times for every size and batch:
  seed       the seed loop (benchmarks/seed_loop.py): per-sample numpy sampling and
             augmentation in Dataset.__getitem__, 0 workers, autocast bf16 + GradScaler on GPU
  ours       accel_signs' real training step (trainer.train_one_epoch) with the data path that
             `--data-on-device auto` picks on this device: Accelerate's prepared loader,
             model, optimizer and mixed precision, clipping, the non-finite check
  resident   the same with the clips held on the device (--data-on-device yes): TSN sampling,
             gather and augmentation as tensor ops there, the host only hands over positions
  stream     the same reading from the memory-mapped store (--data-on-device no): whole-batch
             gathers on the host (--workers worker processes), pinned, non-blocking copies,
             augmentation on the device
  model      the model step alone on a batch already on the device (the upper bound for ours)
  eval       accel_signs' validation pass (trainer.validate) on the same clips
and prints samples/s, the ratio to the seed loop and peak memory; the table also goes to
bench/results/throughput-<device>-<time>.json.

    python benchmarks/throughput.py --epoch [--repeats 3 --clips 3000]         # whole epochs

--epoch times whole training epochs instead, alternating on the same store, --repeats times:
  seed       one epoch's worth of the seed loop's steps (every clip once, batch 64, after
             3 warm-up steps), with its loss.item() every step
  train      `accel-signs train` itself, in a subprocess (the real CLI: store, split, loader,
             sampling, augmentation, features, forward, backward, optimizer, validation,
             logging), --epochs-per-run epochs; samples/s as its metrics.jsonl reports it
             (training clips over the epoch's seconds, its validation included). Epoch 1
             holds one-time costs (first allocations; compilation with --compile) and is
             reported apart; the ratio uses the later epochs.
and prints each repetition's ratio and their median; the table goes to
bench/results/throughput-<device>-epoch-<time>.json.

    python benchmarks/throughput.py --candidates benchmarks/everything_on.yaml [--no-awp] [--repeats 3]

--candidates FILE times accel_signs' training step (train_one_epoch on the data path `auto`
picks, as `ours` above) with the default settings and with FILE's (a train config: the
candidates of docs/training.md, e.g. mixup, cutmix, masks, shear, late dropout and AWP on (both
as after their first epoch), the weight average updated every step; --no-awp: AWP off), alternating, --repeats times, and prints each pair's cost ratio
(default samples/s over FILE's), by the wall clock and by this process's CPU time (which a
shared machine's other work does not inflate), and their medians. The weight average's extra validation per
epoch is not in a step: it costs one more validation pass (the `eval` figure above). Alternating the two spreads the shared
machine's load over both: compare only the ratios of one run, never figures of two runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_store(path: Path, clips: int, seed_loop) -> tuple:
    from accel_signs.data.store import ClassInfo, StoreWriter

    frames, offsets, lengths, labels = seed_loop.random_clips(clips)
    with StoreWriter(path, [ClassInfo(s, f"sign {s}") for s in range(1, 503)], ["01"]) as w:
        w.begin_split("train")
        for off, n, y in zip(offsets, lengths, labels):
            w.add_clip(frames[off : off + n], int(y), 0)
    return frames, offsets, lengths, labels


def _batches(accelerator, split, cmap, cfg, rng, n_batches: int, batch: int, train: bool, workers: int, resident):
    """A prepared loader of n_batches whole batches of random clips of `split` (clips repeat when the
    set is smaller, so every step has one shape), sampled as `cfg` trains."""
    from accel_signs.data.pipeline import make_loader

    ids = np.sort(rng.choice(len(split), size=n_batches * batch, replace=n_batches * batch > len(split)))
    aug = cfg.data.augment
    return accelerator.prepare(
        make_loader(
            split,
            ids,
            cmap,
            seq_len=50,
            batch_size=batch,
            train=train,
            num_workers=workers,
            pin_memory=accelerator.device.type == "cuda",
            resident=resident,
            crop_min=aug.crop_min,
            speed=(aug.speed_min, aug.speed_max),
        )
    )


def time_ours(accelerator, store_path: Path, size: str, batch: int, steps: int, warmup: int, workers: int) -> dict:
    """samples/s of the real training step (clips resident and streamed), the model step on a
    resident batch, and evaluation."""
    from accel_signs.config import TrainConfig
    from accel_signs.data.augment import Augmenter
    from accel_signs.data.layout import keypoint_layout
    from accel_signs.data.pipeline import class_map
    from accel_signs.data.resident import ResidentClips, keep_on_device, resident_bytes
    from accel_signs.data.store import open_store
    from accel_signs.model.transformer import STTransformer
    from accel_signs.training.loop import train_one_epoch, validate

    store = open_store(store_path)
    split, cmap = store.split("train"), class_map(store, None)
    cfg = TrainConfig(batch_size=batch, num_epochs=1)
    layout, device = keypoint_layout(), accelerator.device
    from accel_signs.training.optim import Schedule, make_optimizer

    model = STTransformer(cmap.num_classes, size, layout=layout, input=cfg.model.input, drop_path=cfg.model.drop_path)
    optimizer = make_optimizer(cfg.optim, model, 1e-3, fused=device.type == "cuda")
    rng = np.random.default_rng(0)
    all_ids = np.arange(len(split))
    resident = ResidentClips.load(split, all_ids, device)
    auto, _ = keep_on_device("auto", resident_bytes(split, all_ids), device, accelerator.num_processes)

    def loader(n_batches: int, train: bool, on_device: bool):
        return _batches(
            accelerator, split, cmap, cfg, rng, n_batches, batch, train, workers, resident if on_device else None
        )

    model, optimizer = accelerator.prepare(model, optimizer)
    schedule = Schedule(cfg.optim, optimizer, steps, 1)
    augment = Augmenter(cfg.data.augment, layout, cfg.model.input.kind, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    out = {}
    for name, on_device in (("resident", True), ("stream", False)):
        train_one_epoch(accelerator, model, (optimizer, schedule), loader(warmup, True, on_device), augment, cfg, 1)
        timed = loader(steps, True, on_device)
        _sync(device)
        start = time.perf_counter()
        _, seen = train_one_epoch(accelerator, model, (optimizer, schedule), timed, augment, cfg, 2)
        _sync(device)
        out[name] = seen / (time.perf_counter() - start)
    out["ours"] = out["resident" if auto else "stream"]
    out["ours_path"] = "resident" if auto else "stream"
    peak = _peak_mib(device)

    evl = loader(steps, False, auto)
    validate(accelerator, model, loader(1, False, auto))  # warm-up
    _sync(device)
    start = time.perf_counter()
    validate(accelerator, model, evl)
    _sync(device)
    evaluation = len(evl.dataset) / (time.perf_counter() - start)

    # The model step alone, on one batch resident on the device.
    model.train()
    x = next(iter(loader(1, True, True))).keypoints.flatten(2)  # (B, T, P, C) -> (B, T, P*C)
    aspect = torch.ones(batch, device=device)
    y = torch.randint(0, cmap.num_classes, (batch,), device=device)
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        loss = F.cross_entropy(model(x, aspect, augment=augment), y, label_smoothing=cfg.optim.label_smoothing)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    resident_step = batch * steps / (time.perf_counter() - start)
    return {**out, "model_resident": resident_step, "eval": evaluation, "peak_mib": peak}


def time_step(accelerator, store_path: Path, raw: dict, size: str, batch: int, steps: int, warmup: int, workers: int):
    """(samples per second, samples per CPU second of this process) of the training step
    (train_one_epoch, the data path `auto` picks) with the train config `raw` (a dict as in a
    config file): its model, augmentation, late dropout (as after late_dropout_epoch), mixup and
    weight average. CPU seconds count what this process ran, not what others on a shared machine
    took from it; on a GPU only the wall clock means anything."""
    from accel_signs.config import TrainConfig
    from accel_signs.data.augment import Augmenter
    from accel_signs.data.pipeline import class_map
    from accel_signs.data.resident import ResidentClips, keep_on_device, resident_bytes
    from accel_signs.data.store import open_store
    from accel_signs.model.transformer import STTransformer
    from accel_signs.training.average import WeightAverage
    from accel_signs.training.loop import train_one_epoch
    from accel_signs.training.optim import Schedule, make_optimizer

    raw = json.loads(json.dumps(raw))
    raw.setdefault("model", {})["size"] = size
    if raw.get("optim", {}).get("awp_lambda"):
        raw["optim"]["awp_epoch"] = 1  # timed as after awp_epoch, as late dropout is
    cfg = TrainConfig.from_dict({**raw, "batch_size": batch, "num_epochs": 1})
    store = open_store(store_path)
    split, cmap, device = store.split("train"), class_map(store, None), accelerator.device
    torch.manual_seed(0)
    model = STTransformer.from_config(cfg.model, cmap.num_classes, store.layout)
    model.head_dropout.p = cfg.model.late_dropout
    optimizer = make_optimizer(cfg.optim, model, 1e-3, fused=device.type == "cuda")
    all_ids = np.arange(len(split))
    auto, _ = keep_on_device("auto", resident_bytes(split, all_ids), device, accelerator.num_processes)
    resident = ResidentClips.load(split, all_ids, device) if auto else None
    rng = np.random.default_rng(0)
    aug = cfg.data.augment

    def loader(n_batches: int):
        return _batches(accelerator, split, cmap, cfg, rng, n_batches, batch, True, workers, resident)

    model, optimizer = accelerator.prepare(model, optimizer)
    average = None
    if cfg.optim.ema_decay > 0:
        average = WeightAverage(accelerator.unwrap_model(model, keep_torch_compile=False), cfg.optim.ema_decay)
    schedule = Schedule(cfg.optim, optimizer, steps, 1)
    augment = Augmenter(aug, store.layout, cfg.model.input.kind, device)
    train_one_epoch(accelerator, model, (optimizer, schedule), loader(warmup), augment, cfg, 1, average=average)
    timed = loader(steps)
    _sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    _, seen = train_one_epoch(accelerator, model, (optimizer, schedule), timed, augment, cfg, 2, average=average)
    _sync(device)
    return seen / (time.perf_counter() - start), seen / (time.process_time() - cpu)


def candidates_mode(args, accelerator, name: str, seed_loop) -> None:
    """The training step with the default settings and with --candidates FILE's, alternating."""
    from accel_signs.config import load_config_file

    raw = load_config_file(args.candidates)
    if args.no_awp:
        raw.setdefault("optim", {})["awp_lambda"] = 0.0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        build_store(Path(tmp) / "store", args.clips, seed_loop)
        for size in args.sizes.split(","):
            for batch in map(int, args.batches.split(",")):
                for rep in range(args.repeats):
                    pair = {}
                    order = [("default", {}), ("candidates", raw)]
                    for tag, config in order if rep % 2 == 0 else order[::-1]:  # each goes first in turn
                        pair[tag] = time_step(
                            accelerator, Path(tmp) / "store", config, size, batch, args.steps, args.warmup, args.workers
                        )
                    (default, default_cpu), (with_them, with_them_cpu) = pair["default"], pair["candidates"]
                    row = {
                        "size": size,
                        "batch": batch,
                        "repeat": rep + 1,
                        "default_samples_per_s": round(default, 1),
                        "candidates_samples_per_s": round(with_them, 1),
                        "cost_ratio": round(default / with_them, 3),
                        "default_samples_per_cpu_s": round(default_cpu, 1),
                        "candidates_samples_per_cpu_s": round(with_them_cpu, 1),
                        "cpu_cost_ratio": round(default_cpu / with_them_cpu, 3),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    awp = " without AWP" if args.no_awp else ""
    print(f"\n{name}, torch {torch.__version__}, candidates {args.candidates}{awp}: step cost with them / without")
    for size in args.sizes.split(","):
        for batch in map(int, args.batches.split(",")):
            for key in ("cost_ratio", "cpu_cost_ratio"):
                ratios = [r[key] for r in rows if r["size"] == size and r["batch"] == batch]
                print(
                    f"{size} batch {batch} {key}: {', '.join(map(str, ratios))}; median {statistics.median(ratios):.3f}"
                )
    table = {"candidates": str(args.candidates), "no_awp": args.no_awp, "rows": rows}
    write_result(args, accelerator, name, "candidates", table)


def train_epochs(
    store: Path, out: Path, size: str, batch: int, epochs: int, args, checkout: Path | None = None
) -> list[dict]:
    """`accel-signs train` on `store` in a subprocess (the real CLI, this interpreter, the
    inherited environment: `accelerate launch`'s mixed precision too), of the package in
    `checkout` if given; its metrics.jsonl lines."""
    cmd = [sys.executable, "-m", "accel_signs", "-q", "train", "--data", str(store), "--model-size", size]
    cmd += ["--batch-size", str(batch), "--num-epochs", str(epochs), "--no-eval", "--output-dir", str(out)]
    cmd += ["--run-name", "run"]
    if args.compile:
        cmd += ["--compile", "--compile-mode", args.compile_mode]
    env = None
    if checkout is not None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(checkout), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"train failed ({' '.join(cmd)}):\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]


def epoch_row(rep: int, seed: float, tmp: Path, size: str, batch: int, args) -> dict:
    """One repetition's train epochs (and the baseline's), against the seed epoch just timed."""
    row = {"repeat": rep + 1, "seed_epoch_samples_per_s": round(seed, 1)}
    runs = [("", None)] + ([("baseline_", args.baseline)] if args.baseline is not None else [])
    for tag, checkout in runs if rep % 2 == 0 else runs[::-1]:  # each goes first in turn
        out = tmp / f"runs{rep}{tag}"
        metrics = train_epochs(tmp / "store", out, size, batch, args.epochs_per_run, args, checkout)
        later = statistics.median(m["samples_per_s"] for m in metrics[1:])
        row[f"{tag}train_epoch1_samples_per_s"] = metrics[0]["samples_per_s"]
        row[f"{tag}train_later_epochs_samples_per_s"] = later
        row[f"{tag}ratio_to_seed"] = round(later / seed, 3)
        row[f"{tag}epoch1_ratio_to_seed"] = round(metrics[0]["samples_per_s"] / seed, 3)
    return row


def epoch_mode(args, accelerator, name: str, seed_loop) -> None:
    """Seed-loop epochs and `accel-signs train` epochs, alternating, on one store; the ratio."""
    device = accelerator.device
    size, batch = args.sizes.split(",")[0], int(args.batches.split(",")[0])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        frames, offsets, lengths, labels = build_store(Path(tmp) / "store", args.clips, seed_loop)
        steps = len(labels) // batch  # one epoch of the seed's loader (drop_last)
        for rep in range(args.repeats):
            seed = seed_loop.samples_per_second(
                frames,
                offsets,
                lengths,
                labels,
                device=device.type,
                batch_size=batch,
                steps=3 + steps,
                warmup=3,
                size=size,
            )
            rows.append(epoch_row(rep, seed, Path(tmp), size, batch, args))
            print(json.dumps(rows[-1]), flush=True)
    ratio = statistics.median(r["ratio_to_seed"] for r in rows)
    compiled = f", torch.compile {args.compile_mode}" if args.compile else ""
    pairs = ", ".join(f"{r['ratio_to_seed']:.2f}" for r in rows)
    first = statistics.median(r["epoch1_ratio_to_seed"] for r in rows)
    print(
        f"\n{name}, mixed precision {accelerator.mixed_precision}{compiled}, torch {torch.__version__}, {size}, "
        f"batch {batch}, {args.clips} clips, torch threads {torch.get_num_threads()}\n"
        f"train epoch (epochs 2-{args.epochs_per_run} of each run) / seed loop epoch, median of {len(rows)} "
        f"alternating pairs: {ratio:.2f}x (pairs: {pairs}); epoch 1 (one-time costs included): {first:.2f}x"
    )
    summary = {"median_ratio_to_seed": ratio, "size": size, "batch": batch, "clips": args.clips}
    if args.baseline is not None:
        base = statistics.median(r["baseline_ratio_to_seed"] for r in rows)
        summary["baseline"], summary["baseline_median_ratio_to_seed"] = str(args.baseline), base
        pairs = ", ".join(f"{r['baseline_ratio_to_seed']:.2f}" for r in rows)
        print(f"baseline {args.baseline}, the same way in the same run: {base:.2f}x (pairs: {pairs})")
    write_result(args, accelerator, name, "epoch", {"summary": summary, "rows": rows})


def write_result(args, accelerator, name: str, mode: str, table: dict) -> None:
    """bench/results/throughput-<device>[-compile-<mode>][-<mode>]-<time>.json."""
    args.out.mkdir(parents=True, exist_ok=True)
    tag = (f"-compile-{args.compile_mode}" if args.compile else "") + (f"-{mode}" if mode else "")
    out = args.out / f"throughput-{name.replace(' ', '_')}{tag}-{datetime.now():%Y%m%d-%H%M%S}.json"
    head = {
        "device": name,
        "mixed_precision": accelerator.mixed_precision,
        "compile": f", torch.compile {args.compile_mode}" if args.compile else "",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    out.write_text(json.dumps({**head, **table}, indent=2) + "\n")
    print(f"\nwritten: {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="s_4_2")
    ap.add_argument("--batches", default="64")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--clips", type=int, default=3000, help="clips in the synthetic data set")
    ap.add_argument(
        "--workers",
        type=int,
        default=None,
        help="loader workers of the streamed path (default as the trainer's: 0 on CPU, up to 4 on a GPU; "
        "the seed loop: 0, as its train.py)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--compile", action="store_true", help="torch.compile our model (as train --compile)")
    ap.add_argument("--compile-mode", default="default", help="torch.compile mode, e.g. reduce-overhead (CUDA graphs)")
    ap.add_argument("--epoch", action="store_true", help="time whole epochs: the seed loop's and `accel-signs train`'s")
    ap.add_argument("--repeats", type=int, default=3, help="--epoch: seed/train pairs, alternating")
    ap.add_argument(
        "--epochs-per-run", type=int, default=2, help="--epoch: epochs of each train run (the first is apart)"
    )
    ap.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="--epoch: also time train from the accel_signs in this checkout (e.g. a `git worktree` of the code "
        "before a change), in each repetition, for a before/after ratio from one run",
    )
    ap.add_argument(
        "--candidates",
        type=Path,
        default=None,
        help="time the training step with this train config's settings against the defaults, alternating "
        "(--repeats pairs), e.g. examples/long_recipe.yaml",
    )
    ap.add_argument(
        "--no-awp",
        action="store_true",
        help="--candidates: with the file's AWP off (AWP adds a forward and backward pass to every step)",
    )
    args = ap.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # seed_loop.py, beside this file
    from accelerate import Accelerator
    from accelerate.utils import TorchDynamoPlugin

    import seed_loop

    # Mixed precision from `accelerate launch`/config: bf16 on a GPU, say.
    accelerator = Accelerator(
        dynamo_plugin=TorchDynamoPlugin(backend="inductor", mode=args.compile_mode, dynamic=False)
        if args.compile
        else None
    )
    device = accelerator.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if args.workers is None:
        args.workers = 0 if device.type == "cpu" else min(4, os.cpu_count() or 1)
    if args.epoch:
        return epoch_mode(args, accelerator, name, seed_loop)
    if args.candidates is not None:
        return candidates_mode(args, accelerator, name, seed_loop)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        frames, offsets, lengths, labels = build_store(Path(tmp) / "store", args.clips, seed_loop)
        for size in args.sizes.split(","):
            for batch in map(int, args.batches.split(",")):
                seed = seed_loop.samples_per_second(
                    frames,
                    offsets,
                    lengths,
                    labels,
                    device=device.type,
                    batch_size=batch,
                    workers=0,
                    steps=args.warmup + args.steps,
                    warmup=args.warmup,
                    size=size,
                )
                ours = time_ours(accelerator, Path(tmp) / "store", size, batch, args.steps, args.warmup, args.workers)
                row = {
                    "size": size,
                    "batch": batch,
                    "seed_samples_per_s": round(seed, 1),
                    "ours_samples_per_s": round(ours["ours"], 1),
                    "ours_data_path": ours["ours_path"],
                    "resident_samples_per_s": round(ours["resident"], 1),
                    "stream_samples_per_s": round(ours["stream"], 1),
                    "ratio_to_seed": round(ours["ours"] / seed, 2),
                    "model_resident_samples_per_s": round(ours["model_resident"], 1),
                    "ours_vs_model_resident": round(ours["ours"] / ours["model_resident"], 2),
                    "eval_samples_per_s": round(ours["eval"], 1),
                    "peak_mib": round(ours["peak_mib"]),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    header = (
        f"{'size':7} {'batch':>5} {'seed/s':>9} {'ours/s':>9} {'(path)':>9} {'x seed':>7} {'resident/s':>10} "
        f"{'stream/s':>9} {'model/s':>9} {'ours/model':>10} {'eval/s':>9} {'peak MiB':>9}"
    )
    compiled = f", torch.compile {args.compile_mode}" if args.compile else ""
    print(f"\n{name}, mixed precision {accelerator.mixed_precision}{compiled}, torch {torch.__version__}\n{header}")
    for r in rows:
        print(
            f"{r['size']:7} {r['batch']:5d} {r['seed_samples_per_s']:9.1f} {r['ours_samples_per_s']:9.1f} "
            f"{r['ours_data_path']:>9} {r['ratio_to_seed']:7.2f} {r['resident_samples_per_s']:10.1f} "
            f"{r['stream_samples_per_s']:9.1f} {r['model_resident_samples_per_s']:9.1f} {r['ours_vs_model_resident']:10.2f} "
            f"{r['eval_samples_per_s']:9.1f} {r['peak_mib']:9d}"
        )
    write_result(args, accelerator, name, "", {"rows": rows})


if __name__ == "__main__":
    main()
