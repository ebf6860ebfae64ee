"""Accuracy on real MediaPipe keypoints, signer-independent.

Three public sets (never committed: their repositories state no licence):
- `--data nsl`: Nepali Sign Language fingerspelling, 49 letters, 490 clips, hands and pose
  (github:bses7/Nepali-Sign-Language; nsl.py converts it into a karsl184 store).
- `--data libras`: Brazilian Sign Language, 25 signs x 10 signers x 10, MediaPipe Pose only
  (github:victordg21/Prova_IA; libras.py writes .npy clips and a manifest, which
  `accel-signs prepare --from clips --layout pose33 --coords pixels` imports).
- `--data bsl`: British Sign Language, 11 fingerspelled letters and 4 word signs, 440 clips from
  38 web-form submissions, MediaPipe Hands only (github:CodingOz/BSL-keypoint-processing; bsl.py
  writes .npy clips, a hands-only layout file and a manifest, which
  `accel-signs prepare --from clips --layout hands42.json` imports). Its folds hold out a
  third of the signers each, not one: a submission has at most one clip per sign.

The store is made once; then the real CLI (`python -m accel_signs train`) trains on folds that
each hold one signer (for BSL a group of signers) out for validation, for several
configurations: the old defaults (the seed recipe), the new defaults, and the new defaults with
each component switched off alone. For NSL and BSL a 1-nearest-neighbour on hand shapes, which
needs no training, is the floor to beat.

    python benchmarks/real_data.py --source /path/to/Nepali-Sign-Language.git           # the full NSL table
    python benchmarks/real_data.py --source ... --quick                                  # 1 seed, 30 epochs, old + new
    python benchmarks/real_data.py --data libras --source /path/to/Prova_IA.git --only old,new,no_motion
    python benchmarks/real_data.py --data bsl --source /path/to/BSL-keypoint-processing.git --only new
    python benchmarks/real_data.py --mode finetune --source /path/to/Nepali-Sign-Language.git   # fine-tuning vs scratch (finetune.py)
    python benchmarks/real_data.py --route npz --only new --source /path/to/Nepali-Sign-Language.git  # NSL via the npz format

`--route npz` (NSL) makes the store the way a user of the original project's npz format
would: nsl.py writes `{signer}-train/{sign:04}.npz` files with each clip's `frame_size`, and
`accel-signs prepare --from npz` imports them; `--route npz-nosize` leaves the sizes out (the
original format, every clip taken as square).

--source takes the bare git directory that `fetch` returns, or an extracted copy. Prints mean
and per-fold accuracy and writes every run's numbers to bench/results/real_data-<data>-<time>.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bsl  # noqa: E402
import finetune  # noqa: E402
import libras  # noqa: E402
import nsl  # noqa: E402
from accel_signs.config import SEED_RECIPE, load_config_file  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# Per data set: the folds (validation signers), epochs, and what it is.
DATASETS = {
    # NSL: the three signers with the most clips (170, 111 and 98 of 490).
    "nsl": {
        "folds": ("02", "03", "01"),
        "epochs": 60,
        "title": "NSL fingerspelling (github:bses7/Nepali-Sign-Language@8f18fdd), 490 clips, 49 letters",
    },
    # Libras: 250 clips per signer; the first three by name.
    "libras": {
        "folds": ("Alexson", "Aparecida", "Cecilia"),
        "epochs": 30,
        "title": "Libras, pose only (github:victordg21/Prova_IA@b78cbd1), 2,501 clips, 25 signs, 10 signers",
    },
    # BSL: 38 submissions with at most one clip per sign, so one signer would validate on 1-15 clips.
    # Each fold holds out a group instead (--val-signers takes the list): the five manual-* ones
    # together (they may be one person), then the others in sorted order, each to the group with
    # the fewest clips so far. 141 / 152 / 147 validation clips.
    "bsl": {
        "folds": ("g1", "g2", "g3"),
        "fold_signers": {
            "g1": "m0,m1,m2,m3,m4,6e5c628d,8be52121,a354b59a,abf96343,acf7a090,be885b0b,e7f57b3a",
            "g2": "1be98b34,3e9dd7e5,431845d6,470bf35b,601283cf,781cb701,96ec7aed,a5edffd0,bb34f1d3,c179b423,"
            "e8b61509,ed876e74,ff526205",
            "g3": "2e62eb14,3c4d3247,410f85ca,4ba16f06,4d40d3d6,87971fe6,89abb1f9,a0992414,a74b8975,bdb61e4d,"
            "c8f31a00,ca586bdb,f21ac459",
        },
        "epochs": 60,
        "title": "BSL fingerspelling and words, hands only (github:CodingOz/BSL-keypoint-processing@2aa19a7), "
        "440 clips, 15 signs, 38 signers",
    },
}

AUG_OFF = {"crop_min": 1.0, "speed_min": 1.0, "speed_max": 1.0}
STRONG_AUG = {
    "data": {
        "augment": {
            "shear": 0.15,
            "scale_min": 0.8,
            "scale_max": 1.2,
            "time_mask_max": 0.4,
            "point_mask_p": 0.5,
            "point_mask_max": 0.2,
        }
    }
}
# The defaults of config version 3, before mixup became one (version 4).
V3 = {"data": {"augment": {"mixup_p": 0.0}}}
# examples/long_recipe.yaml without its length (give that with --epochs).
LONG = {k: v for k, v in load_config_file(ROOT / "examples" / "long_recipe.yaml").items() if k != "num_epochs"}
# The GISLR winner's convolutions: 3 causal depthwise blocks of kernel 17 before each attention.
CONV_WINNER = {"model": {"conv_kernel": 17, "conv_blocks": 3, "conv_causal": True}}
# name -> (what it is, config overrides on top of the defaults)
CONFIGS: dict[str, tuple[str, dict]] = {
    "old": ("old defaults (the seed recipe: raw image coordinates, Adam, plateau, best by val loss)", SEED_RECIPE),
    "new": ("new defaults", {}),
    "no_body_frame": ("- body frame (image frame instead)", {"model": {"input": {"body_frame": False}}}),
    "no_hand_shape": ("- hand-local shape", {"model": {"input": {"hand_shape": False}}}),
    "no_motion": ("- motion (differences)", {"model": {"input": {"motion": False}}}),
    "no_presence": ("- presence flags", {"model": {"input": {"presence": False}}}),
    "no_handedness": ("- handedness canonicalisation", {"model": {"input": {"handedness": False}}}),
    "no_handedness_mirror": (
        "- handedness, + mirror augmentation p=0.5",
        {"model": {"input": {"handedness": False}}, "data": {"augment": {"mirror_p": 0.5}}},
    ),
    "no_speed_crop": ("- speed and crop augmentation", {"data": {"augment": AUG_OFF}}),
    "no_time_mask": ("- temporal masking", {"data": {"augment": {"time_mask_p": 0.0}}}),
    "no_part_drop": ("- part dropout", {"data": {"augment": {"part_drop_p": 0.0, "frame_drop_p": 0.0}}}),
    "no_noise": ("- coordinate noise", {"data": {"augment": {"noise": 0.0}}}),
    "no_hand_aug": ("- hand rotation/stretch", {"data": {"augment": {"hand_p": 0.0}}}),
    "plateau": ("- cosine schedule (the seed's plateau)", {"optim": {"schedule": "plateau", "warmup_epochs": 0.0}}),
    "adam": ("- AdamW (the seed's Adam, wd 1e-4)", {"optim": {"optimizer": "adam", "weight_decay": 1e-4}}),
    "no_label_smoothing": ("- label smoothing", {"optim": {"label_smoothing": 0.0}}),
    "no_drop_path": ("- drop-path", {"model": {"drop_path": 0.0}}),
    # Issue 30's input and architecture candidates (off by default), on the defaults of config
    # version 3 (V3) as measured. face_lips_eyes_nose needs a layout with face-mesh points (not
    # Libras' pose33; NSL's karsl184 clips have no face seen).
    "two_frame_motion": ("+ 2-frame differences x[t] - x[t-2]", {**V3, "model": {"input": {"two_frame_motion": True}}}),
    "face_lips_eyes_nose": (
        "+ face: lips, eyes and nose only (GISLR winner's points)",
        {**V3, "model": {"input": {"face": "lips_eyes_nose"}}},
    ),
    "conv": (
        "+ temporal depthwise conv, kernel 17, before each temporal attention",
        {**V3, "model": {"conv_kernel": 17}},
    ),
    "conv_winner": (
        "+ 3 causal temporal depthwise convs, kernel 17, before each temporal attention",
        {**V3, **CONV_WINNER},
    ),
    # conv_winner on the defaults since version 4 (mixup on): it gained on Libras and lost on
    # NSL with mixup, seed 0 (docs/results.md).
    "mixup_conv": (
        "+ mixup and 3 causal temporal depthwise convs, kernel 17 (conv_winner on the defaults)",
        CONV_WINNER,
    ),
    # Issue 30's candidates, alone and together, each on the defaults of config version 3 (no
    # mixup), as the ablation in docs/results.md measured them; mixup won and became a default
    # in version 4 ("new"). Scaled to our 60 epochs: late dropout from epoch 10 (the GISLR
    # winner: epoch 15 of 300, once the model has learnt something); an EMA horizon of ~100
    # steps (NSL: ~13 steps an epoch at batch 32).
    "v3": ("the defaults of config version 3 (no mixup)", V3),
    "mixup": ("+ mixup over sequences (p 0.5, alpha 0.4): the defaults since version 4", {}),
    "late_dropout": (
        "+ late dropout 0.8 from epoch 10",
        {**V3, "model": {"late_dropout": 0.8, "late_dropout_epoch": 10}},
    ),
    "ema": ("+ EMA of the weights (decay 0.99)", {**V3, "optim": {"ema_decay": 0.99}}),
    "awp": ("+ AWP lambda 0.2 from epoch 10", {**V3, "optim": {"awp_lambda": 0.2, "awp_epoch": 10}}),
    "awp_small": ("+ AWP lambda 0.05 from epoch 10", {**V3, "optim": {"awp_lambda": 0.05, "awp_epoch": 10}}),
    "cutmix": (
        "+ cutmix over sequences (p 0.5, spans to 50%)",
        {"data": {"augment": {"mixup_p": 0.0, "cutmix_p": 0.5}}},
    ),
    "strong_aug": (
        "+ shear 0.15, scale 0.8-1.2, time mask to 40%, spatial mask p 0.5",
        {"data": {"augment": {**STRONG_AUG["data"]["augment"], "mixup_p": 0.0}}},
    ),
    "mixup_ema_aug": (
        "+ mixup, EMA and the stronger augmentation (all but late dropout)",
        {**STRONG_AUG, "optim": {"ema_decay": 0.99}},
    ),
    "all": (
        "+ all four above",
        {**STRONG_AUG, "model": {"late_dropout": 0.8, "late_dropout_epoch": 10}, "optim": {"ema_decay": 0.99}},
    ),
    # The GISLR winner's regularisation for 200-400 epochs (examples/long_recipe.yaml; give the
    # length with --epochs).
    "long": (
        "examples/long_recipe.yaml: late dropout, AWP, EMA 0.999, wd 0.1, stronger augmentation, mixup",
        LONG,
    ),
    "long_no_awp": (
        "examples/long_recipe.yaml without AWP (it loses at our scale, docs/results.md)",
        {**LONG, "optim": {**LONG["optim"], "awp_lambda": 0.0}},
    ),
}


def prepare_store(data: str, source: Path, work: Path, route: str = "native") -> Path:
    store = work / (f"{data}_store" if route == "native" else f"{data}_{route.replace('-', '_')}_store")
    if data in ("libras", "bsl"):  # .npy clips and a manifest, imported as a user's own would be
        module = libras if data == "libras" else bsl
        if not (store / "meta.json").exists():
            root = module.extract(source, work / f"{data}_src") if (source / "HEAD").exists() else source
            manifest = module.convert(root, work / f"{data}_clips")
            if data == "libras":
                options = ["--layout", "pose33", "--coords", "pixels"]
            else:
                options = ["--layout", str(manifest.parent / bsl.LAYOUT_FILE)]
            print(f"importing {manifest} -> {store}", flush=True)
            subprocess.run(
                [sys.executable, "-m", "accel_signs", "-q", "prepare", str(manifest), str(store), "--from", "clips"]
                + options,
                check=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        return store
    if not (store / "meta.json").exists():
        root = source
        if not (source / "master_metadata.csv").exists():
            root = nsl.extract(source, work / "nsl_src") if (source / "HEAD").exists() else source / "training_dataset"
        if route == "native":
            print(f"converting {root} -> {store}", flush=True)
            nsl.convert(root, store)
        else:
            tree = work / f"nsl_{route.replace('-', '_')}_files"
            if not tree.exists():
                print(f"converting {root} -> {tree}", flush=True)
                nsl.convert_npz(root, tree, sizes=route == "npz")
            print(f"importing {tree} -> {store}", flush=True)
            subprocess.run(
                [sys.executable, "-m", "accel_signs", "-q", "prepare", str(tree), str(store), "--from", "npz"]
                + ["--splits", "train", "--allow-missing"],  # signer 04 recorded letters 37-49 only
                check=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
    return store


def run_one(
    store: Path,
    name: str,
    overrides: dict,
    fold: str,
    seed: int,
    args: argparse.Namespace,
    out: Path,
    extra: tuple[str, ...] = (),
    epochs: int | None = None,
) -> dict:
    """One training run through the CLI (`extra`: more options); returns its accuracies."""
    run_name = f"{name}-f{fold}-s{seed}".replace(" ", "_")
    cmd = [
        sys.executable,
        "-m",
        "accel_signs",
        "-q",
        "train",
        "--data",
        str(store),
        "--val-signers",
        DATASETS[args.data].get("fold_signers", {}).get(fold, fold),  # a fold may name a group of signers
        "--num-epochs",
        str(epochs or args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--seed",
        str(seed),
        "--no-eval",
        "--output-dir",
        str(out),
        "--run-name",
        run_name,
        *extra,
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(overrides, f)
    if overrides:
        cmd += ["--config", f.name]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    os.unlink(f.name)
    if proc.returncode != 0:
        raise RuntimeError(f"{run_name} failed:\n{proc.stderr[-3000:]}")
    return read_run(out / run_name, name, fold, seed, round(time.perf_counter() - start, 1))


def read_run(run: Path, name: str, fold: str, seed: int, seconds: float | None) -> dict:
    """A finished run's accuracies, from its files."""
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = json.loads((run / "best" / "config.json").read_text())
    # With an EMA of the weights (optim.ema_decay) each epoch validates both, and best/ keeps the
    # better: the run is worth the better of the two.
    acc = [max(m["val_acc"], m.get("ema_val_acc", 0.0)) for m in metrics]
    return {
        "config": name,
        "fold": fold,
        "seed": seed,
        "best_val_acc": max(acc),
        "final_val_acc": acc[-1],
        "checkpoint_val_acc": best["metrics"]["val_acc"],
        "checkpoint_epoch": best["epoch"],
        "val_acc_curve": acc,
        "val_loss_curve": [m["val_loss"] for m in metrics],
        "seconds": seconds,
    }


def hand_shapes(clip: np.ndarray, aspect: float, frames: int = 32, starts: tuple[int, int] = (142, 163)) -> np.ndarray:
    """(2 hands, frames, 21 x 3) hand-local shapes of one clip: points minus the wrist, over the
    wrist -> middle-finger MCP distance, at `frames` evenly spaced frames; 0 where undetected.
    `starts`: the first point of the right and the left hand (karsl184's by default)."""
    pick = np.linspace(0, len(clip) - 1, frames).round().astype(int)
    out = np.zeros((2, frames, 63), dtype=np.float32)
    for h, lo in enumerate(starts):
        pts = clip[pick, lo : lo + 21, :3] * np.array([aspect, 1, aspect], dtype=np.float32)
        seen = (clip[pick, lo] != 0).any(-1)
        local = pts - pts[:, :1]
        size = np.linalg.norm(local[:, 9], axis=-1, keepdims=True)
        out[h, seen] = (local[seen] / np.maximum(size[seen, None], 1e-6)).reshape(seen.sum(), 63)
    return out


def nearest_neighbour(
    store_path: Path, folds: list[str], fold_signers: dict[str, str] | None = None
) -> dict[str, dict[str, float]]:
    """1-NN accuracy per fold: both hands, right hand only, and mirror-invariant both hands.
    `fold_signers`: a fold's comma-separated signers, where a fold is a group."""
    from accel_signs.data.store import open_store

    store = open_store(store_path)
    split = store.split("train")
    starts = tuple(store.layout.parts[hand.part][0] for hand in store.layout.hands)  # right, left: 21 points each
    shapes = np.stack(
        [hand_shapes(split.clip(i), float(split.aspects[i]), starts=starts) for i in range(len(split))]
    )  # (N, 2, F, 63)
    mirrored = shapes[:, ::-1].copy()
    mirrored[..., 0::3] *= -1  # x of every local point
    labels = split.labels
    results: dict[str, dict[str, float]] = {}
    for fold in folds:
        held_out = [store.signers.index(x) for x in (fold_signers or {}).get(fold, fold).split(",")]
        test = np.isin(split.signers, held_out)
        a, b = shapes[~test].reshape(int((~test).sum()), -1), shapes[test].reshape(int(test.sum()), -1)
        d_both = ((b[:, None] - a[None]) ** 2).sum(-1)
        ra, rb = shapes[~test, 0].reshape(len(a), -1), shapes[test, 0].reshape(len(b), -1)
        d_right = ((rb[:, None] - ra[None]) ** 2).sum(-1)
        m = mirrored[test].reshape(len(b), -1)
        d_mirror = np.minimum(d_both, ((m[:, None] - a[None]) ** 2).sum(-1))
        truth = labels[test]
        results[fold] = {
            k: float((labels[~test][d.argmin(1)] == truth).mean())
            for k, d in (("both_hands", d_both), ("right_hand", d_right), ("mirror_invariant", d_mirror))
        }
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=list(DATASETS), default="nsl")
    p.add_argument(
        "--source",
        "--nsl",
        type=Path,
        required=True,
        help="fetched bare git dir, or an extracted copy (NSL: its training_dataset; Libras: json_frames + "
        "sinais.csv; BSL: its All_keypoint_data)",
    )
    p.add_argument(
        "--work", type=Path, default=ROOT / "bench" / "data", help="where the store and runs go (git-ignored)"
    )
    p.add_argument("--only", default=None, help=f"comma-separated configs (default: all): {', '.join(CONFIGS)}")
    p.add_argument("--seeds", default="0,1")
    p.add_argument(
        "--ablation-seeds", default=None, help="seeds for the ablations (default: --seeds); old and new use --seeds"
    )
    p.add_argument(
        "--reuse",
        type=Path,
        action="append",
        default=[],
        help="a results JSON of an earlier run (same epochs and batch): its runs are not run again",
    )
    p.add_argument("--folds", default=None, help="validation signers (default: the data set's)")
    p.add_argument("--epochs", type=int, default=None, help="default: 60 for NSL and BSL, 30 for Libras")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--jobs", type=int, default=2, help="runs at once (each gets cores / jobs threads)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default: cores / jobs)")
    p.add_argument(
        "--quick", action="store_true", help="1 seed, 30 epochs, old and new defaults only (with --only: those)"
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument(
        "--mode",
        choices=("table", "finetune"),
        default="table",
        help="table: the configurations above; finetune: pretrain on letters 1-25, then k clips of 26-49 (NSL only)",
    )
    p.add_argument(
        "--route",
        choices=("native", "npz", "npz-nosize"),
        default="native",
        help="NSL: how the store is made: nsl.py's converter, or the npz files through `prepare --from npz` "
        "with each clip's frame size, or without",
    )
    p.add_argument("--k", default="1,2,5", help="finetune: clips per letter and training signer")
    p.add_argument("--pretrain-epochs", type=int, default=40, help="finetune: epochs of the pretraining on 1-25")
    p.add_argument("--freeze-epochs", type=int, default=0, help="finetune: --freeze-epochs of the fine-tuning")
    p.add_argument(
        "--runs-dir",
        type=Path,
        default=None,
        help="finetune: runs folder of an earlier start; its finished runs are kept",
    )
    args = p.parse_args()
    if args.mode == "finetune":
        main_finetune(p, args)
        return
    spec = DATASETS[args.data]
    args.epochs = args.epochs or spec["epochs"]
    args.folds = args.folds or ",".join(spec["folds"])
    if args.quick:
        args.seeds, args.ablation_seeds, args.epochs, args.only = "0", "0", 30, args.only or "old,new"
    names = args.only.split(",") if args.only else list(CONFIGS)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        p.error(f"unknown config(s) {', '.join(unknown)}")
    seeds, folds = [int(s) for s in args.seeds.split(",")], args.folds.split(",")
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    if args.route != "native" and args.data != "nsl":
        p.error("--route npz / npz-nosize is for NSL (--data nsl)")
    args.work.mkdir(parents=True, exist_ok=True)
    store = prepare_store(args.data, args.source, args.work, args.route)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    runs_dir = args.work / f"runs-{stamp}"

    knn = nearest_neighbour(store, folds, spec.get("fold_signers")) if args.data in ("nsl", "bsl") else None
    if knn:
        print("1-NN on hand shapes (no training):", json.dumps(knn), flush=True)
    ablation_seeds = [int(s) for s in args.ablation_seeds.split(",")] if args.ablation_seeds else seeds
    results = []
    for path in args.reuse:
        earlier = json.loads(path.read_text())
        if (earlier["epochs"], earlier["batch_size"]) != (args.epochs, args.batch_size):
            p.error(f"--reuse {path}: it ran {earlier['epochs']} epochs at batch {earlier['batch_size']}")
        results += [r for r in earlier["runs"] if r["config"] in names and r["fold"] in folds]
    done = {(r["config"], r["fold"], r["seed"]) for r in results}
    jobs = [
        (n, f, s)
        for n in names
        for s in (seeds if n in ("old", "new") else ablation_seeds)
        for f in folds
        if (n, f, s) not in done
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    route = "" if args.route == "native" else f"-{args.route}"
    path = args.out / f"real_data-{args.data}{route}-{stamp}.json"

    def write(table: str | None = None) -> None:
        """After every run: a long benchmark stopped halfway keeps its runs (pass the file to --reuse)."""
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "data": spec["title"],
                    "route": args.route,
                    "protocol": f"signer-independent, validate on signer {'/'.join(folds)} in turn",
                    "fold_signers": spec.get("fold_signers"),
                    "epochs": args.epochs,
                    "batch_size": args.batch_size,
                    "seeds": seeds,
                    "ablation_seeds": ablation_seeds,
                    "nearest_neighbour": knn,
                    "configs": {n: CONFIGS[n][0] for n in names},
                    "runs": results,
                    "complete": table is not None,
                    "table": table,
                },
                indent=1,
            )
        )
        os.replace(tmp, path)

    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(run_one, store, n, CONFIGS[n][1], f, s, args, runs_dir): (n, f, s) for n, f, s in jobs}
        for fut in concurrent.futures.as_completed(futures):
            r = fut.result()
            results.append(r)
            write()
            print(
                f"  {r['config']:<22} fold {r['fold']} seed {r['seed']}: best {r['best_val_acc']:.3f}  final "
                f"{r['final_val_acc']:.3f}  checkpoint {r['checkpoint_val_acc']:.3f} (epoch {r['checkpoint_epoch']})  "
                f"{r['seconds']:.0f}s",
                flush=True,
            )
    table = summarise(results, names, folds, knn)
    print(table)
    write(table)
    print(f"wrote {path}")


def main_finetune(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--mode finetune (finetune.py): NSL letters 1-25 pretrained, 26-49 with k clips per letter and signer."""
    if args.data != "nsl":
        p.error("--mode finetune runs on NSL (--data nsl)")
    spec = DATASETS["nsl"]
    args.epochs = args.epochs or 40
    args.folds = args.folds or ",".join(spec["folds"])
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    args.work.mkdir(parents=True, exist_ok=True)
    store = prepare_store("nsl", args.source, args.work)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"real_data-nsl-finetune-{stamp}.json"
    folds, ks = args.folds.split(","), [int(k) for k in args.k.split(",")]

    def write(results: list[dict], table: str | None = None) -> None:
        tmp = path.with_suffix(".tmp")
        record = {
            "data": spec["title"],
            "protocol": (
                f"pretrain on letters {finetune.PRETRAIN_SIGNS} with every signer but the held-out one; fine-tune on "
                "letters 26-49 with k clips per letter and training signer; validate on the held-out signer's clips "
                f"of 26-49; folds {'/'.join(folds)}"
            ),
            "pretrain_epochs": args.pretrain_epochs,
            "epochs": args.epochs,
            "freeze_epochs": args.freeze_epochs,
            "batch_size": args.batch_size,
            "seeds": args.seeds,
            "k": ks,
            "runs": results,
            "complete": table is not None,
            "table": table,
        }
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)

    runs_dir = args.runs_dir or args.work / f"runs-finetune-{stamp}"
    results = finetune.run_finetune(store, args, runs_dir, run_one, read_run, write)
    table = finetune.summarise_finetune(results, folds, ks)
    print(table)
    print(finetune.detail(results))
    write(results, table)
    print(f"wrote {path}")


def summarise(results: list[dict], names: list[str], folds: list[str], knn: dict) -> str:
    """A markdown table: per fold the best val accuracy (mean over seeds), their mean, and the
    mean of the final-epoch and chosen-checkpoint accuracies."""
    lines = [
        f"| configuration | seeds | {' | '.join('fold ' + f for f in folds)} | mean best | mean final | mean checkpoint |",
        "|---|---|" + "---|" * (len(folds) + 3),
    ]
    for n in names:
        rs = [r for r in results if r["config"] == n]
        if not rs:
            continue
        per_fold = [np.mean([r["best_val_acc"] for r in rs if r["fold"] == f]) for f in folds]
        lines.append(
            f"| {CONFIGS[n][0]} | {len({r['seed'] for r in rs})} | "
            + " | ".join(f"{v:.3f}" for v in per_fold)
            + f" | **{np.mean(per_fold):.3f}** | {np.mean([r['final_val_acc'] for r in rs]):.3f} | "
            f"{np.mean([r['checkpoint_val_acc'] for r in rs]):.3f} |"
        )
        if n == "new":  # what the checkpoint would be if the val loss chose it: same runs, no retraining
            by_loss = [r["val_acc_curve"][int(np.argmin(r["val_loss_curve"]))] for r in rs if "val_loss_curve" in r]
            if by_loss:
                lines.append(
                    f"| best checkpoint by val loss instead (same runs) | {len({r['seed'] for r in rs})} | "
                    + " | ".join("" for _ in folds)
                    + f" | | | {np.mean(by_loss):.3f} |"
                )
    for key, label in (
        ()
        if not knn
        else (
            ("both_hands", "1-NN, hand shapes (no training)"),
            ("mirror_invariant", "1-NN, hand shapes, mirror-invariant"),
            ("right_hand", "1-NN, right-hand shape only"),
        )
    ):
        vals = [knn[f][key] for f in folds]
        lines.append(f"| {label} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {np.mean(vals):.3f} | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
