"""`real_data.py --mode finetune`: does starting from a trained model help with few clips?

On NSL (49 letters), per fold (a held-out signer) and seed:
1. pretrain on letters 1-25 with every signer but the held-out one (validated on the held-out
   signer's clips of those letters);
2. for k = 1, 2, 5: a store of letters 26-49 holding k clips per letter and training signer
   (drawn with the seed; fewer where a signer has fewer) and all of the held-out signer's clips;
3. train on it twice, with `--init-from` the pretrained model and from scratch, with the same
   options, validating on the held-out signer's clips of letters 26-49.

Reported: the val accuracy of the last epoch (nothing chosen on the held-out signer) and the best
over the epochs (as the other real-data tables), per fold and seed and their means.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from accel_signs.data.store import StoreWriter, open_store

PRETRAIN_SIGNS = "1-25"
FINETUNE_LETTERS = range(25, 49)  # class indices of letters 26-49


def few_shot_store(store_path: Path, fold: str, seed: int, k: int, work: Path) -> Path:
    """Letters 26-49: k clips per (letter, training signer) and every clip of signer `fold`."""
    out = work / f"fewshot-f{fold}-s{seed}-k{k}"
    if (out / "meta.json").exists():
        return out
    store = open_store(store_path)
    split = store.split("train")
    held = store.signers.index(fold)
    rng = np.random.default_rng(1000 * seed + k)
    keep: list[int] = []
    for label in FINETUNE_LETTERS:
        for signer in range(len(store.signers)):
            ids = np.flatnonzero((split.labels == label) & (split.signers == signer))
            keep += ids.tolist() if signer == held else rng.permutation(ids)[:k].tolist()
    classes = [store.classes[i] for i in FINETUNE_LETTERS]
    source = {"few_shot": {"from": str(store_path), "fold": fold, "seed": seed, "k": k}}
    with StoreWriter(out, classes, store.signers, "float32", source=source, layout=store.layout) as w:
        w.begin_split("train")
        for i in sorted(keep):
            size = split.frame_sizes[i] if split.frame_sizes is not None else None
            w.add_clip(
                split.clip(i),
                int(split.labels[i]) - FINETUNE_LETTERS.start,
                int(split.signers[i]),
                frame_size=None if size is None or size[0] <= 0 else (float(size[0]), float(size[1])),
            )
    return out


def finished(run: Path, epochs: int) -> bool:
    """A run of an earlier start that went through all its epochs (--runs-dir): not run again.
    One that stopped halfway is removed, to be run again from the start."""
    lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []
    if len(lines) == epochs and (run / "best" / "config.json").exists():
        return True
    shutil.rmtree(run, ignore_errors=True)
    return False


def run_finetune(
    store: Path, args: argparse.Namespace, runs_dir: Path, run_one: Callable, read_run: Callable, write: Callable
) -> list:
    """Pretrain per fold and seed, then fine-tune and train from scratch for every k (real_data.py's
    run_one trains one, read_run reads a finished one back)."""

    folds, seeds, ks = (
        args.folds.split(","),
        [int(s) for s in args.seeds.split(",")],
        [int(k) for k in args.k.split(",")],
    )
    results: list[dict] = []

    def done(r: dict) -> None:
        results.append(r)
        write(results)
        print(
            f"  {r['config']:<9} k={r.get('k', '-')} fold {r['fold']} seed {r['seed']}: final {r['final_val_acc']:.3f}"
            f"  best {r['best_val_acc']:.3f}  ({r['train_clips']} train clips, {r['seconds'] or 0:.0f}s)",
            flush=True,
        )

    pre = [(f, s) for f in folds for s in seeds]
    for f, s in list(pre):
        if finished(runs_dir / f"pretrain-f{f}-s{s}", args.pretrain_epochs):
            done(_with_counts(read_run(runs_dir / f"pretrain-f{f}-s{s}", "pretrain", f, s, None), runs_dir))
            pre.remove((f, s))
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {
            pool.submit(
                run_one, store, "pretrain", {}, f, s, args, runs_dir, ("--signs", PRETRAIN_SIGNS), args.pretrain_epochs
            ): (f, s)
            for f, s in pre
        }
        for fut in concurrent.futures.as_completed(futures):
            done(_with_counts(fut.result(), runs_dir))
    jobs = [(k, f, s, m) for k in ks for f in folds for s in seeds for m in ("finetune", "scratch")]
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {}
        for k, f, s, method in jobs:
            sub = few_shot_store(store, f, s, k, args.work)
            if finished(runs_dir / f"{method}-k{k}-f{f}-s{s}", args.epochs):
                r = read_run(runs_dir / f"{method}-k{k}-f{f}-s{s}", method, f, s, None)
                done(_with_counts({**r, "k": k}, runs_dir))
                continue
            extra: tuple[str, ...] = ()
            if method == "finetune":
                extra = ("--init-from", str(runs_dir / f"pretrain-f{f}-s{s}" / "best"))
                extra += ("--freeze-epochs", str(args.freeze_epochs)) if args.freeze_epochs else ()
            fut = pool.submit(run_one, sub, f"{method}-k{k}", {}, f, s, args, runs_dir, extra, args.epochs)
            futures[fut] = (k, method)
        for fut in concurrent.futures.as_completed(futures):
            k, method = futures[fut]
            done(_with_counts({**fut.result(), "config": method, "k": k}, runs_dir))
    return results


def _with_counts(r: dict, runs_dir: Path) -> dict:
    name = f"{r['config']}-f{r['fold']}-s{r['seed']}"
    run = (
        runs_dir / name
        if (runs_dir / name).exists()
        else runs_dir / f"{r['config']}-k{r['k']}-f{r['fold']}-s{r['seed']}"
    )
    split = json.loads((run / "split.json").read_text())
    return {**r, "train_clips": len(split["train_ids"]), "val_clips": len(split["val_ids"])}


def _fold_means(rs: list[dict], folds: list[str], key: str) -> list[float]:
    """Per fold, the mean over its seeds (nan where no run of that fold finished)."""
    return [
        float(np.mean([r[key] for r in rs if r["fold"] == f])) if any(r["fold"] == f for r in rs) else np.nan
        for f in folds
    ]


def summarise_finetune(results: list[dict], folds: list[str], ks: list[int]) -> str:
    """Markdown: per k and start, the final-epoch val accuracy per fold (mean over seeds), the mean
    over folds, and the same mean of the best epoch's; then the gain of fine-tuning."""
    lines = [
        f"| k | start | runs | train clips | {' | '.join('fold ' + f for f in folds)} | mean final | mean best |",
        "|---|---|---|---|" + "---|" * (len(folds) + 2),
    ]
    means: dict[tuple[int, str], float] = {}
    for k in ks:
        for method in ("finetune", "scratch"):
            rs = [r for r in results if r["config"] == method and r.get("k") == k]
            if not rs:
                continue
            per_fold = _fold_means(rs, folds, "final_val_acc")
            means[(k, method)] = float(np.nanmean(per_fold))
            lines.append(
                f"| {k} | {'fine-tuned' if method == 'finetune' else 'from scratch'} | {len(rs)} | "
                f"{np.mean([r['train_clips'] for r in rs]):.0f} | "
                + " | ".join("–" if np.isnan(v) else f"{v:.3f}" for v in per_fold)
                + f" | **{means[(k, method)]:.3f}** | {np.nanmean(_fold_means(rs, folds, 'best_val_acc')):.3f} |"
            )
    gains = [
        f"k={k}: {means[(k, 'finetune')] - means[(k, 'scratch')]:+.3f}"
        for k in ks
        if (k, "finetune") in means and (k, "scratch") in means
    ]
    pre = [r for r in results if r["config"] == "pretrain"]
    if pre:
        lines.append(
            f"\npretrained models (letters 1-25, {np.mean([r['train_clips'] for r in pre]):.0f} clips on average): "
            f"held-out signer's val accuracy, final epoch, per fold "
            + ", ".join(f"{f} {v:.3f}" for f, v in zip(folds, _fold_means(pre, folds, "final_val_acc")))
        )
    if gains:
        lines.append("fine-tuned minus from scratch (mean final): " + ", ".join(gains))
    return "\n".join(lines)


def detail(results: list[dict]) -> str:
    """Every fine-tune and scratch run: fold, seed, k, final and best val accuracy."""
    rows = sorted((r for r in results if r["config"] != "pretrain"), key=lambda r: (r["k"], r["fold"], r["seed"]))
    return "\n".join(
        f"k={r['k']} fold {r['fold']} seed {r['seed']} {r['config']:<8}: final {r['final_val_acc']:.3f} "
        f"best {r['best_val_acc']:.3f}"
        for r in rows
    )
