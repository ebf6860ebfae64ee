"""Figures a researcher reads after training, drawn from the files a run writes, so
`accel-signs plot RUN_DIR` can redraw them at any time.

Uses matplotlib's object API (Figure, no pyplot): no global backend state, works headless.
Glosses are shown in English: matplotlib does not shape Arabic or lay it out right to left,
so Arabic glosses stay in the CSV/JSON files rather than appear broken in a picture.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

DPI = 120


def _label(text: str, width: int = 26) -> str:
    """Short, mathtext-safe tick label."""
    text = text.replace("$", r"\$")
    return text if len(text) <= width else text[: width - 1] + "…"


def _save(fig: Figure, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=DPI, format="png")
    os.replace(tmp, path)
    return path


def plot_training_curves(run_dir: Path) -> Path:
    """training_curves.png from metrics.jsonl: losses, val accuracy and lr per epoch."""
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    epoch = [r["epoch"] for r in rows]
    best = min(rows, key=lambda r: r["val_loss"])["epoch"]
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    loss_ax, acc_ax, lr_ax = fig.subplots(1, 3)
    loss_ax.plot(epoch, [r["train_loss"] for r in rows], marker=".", label="train")
    loss_ax.plot(epoch, [r["val_loss"] for r in rows], marker=".", label="validation")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    acc_ax.plot(epoch, [r["val_acc"] for r in rows], marker=".", color="tab:green")
    acc_ax.set(xlabel="epoch", ylabel="validation accuracy", title="Validation accuracy", ylim=(0, 1.02))
    lr_ax.plot(epoch, [r["lr"] for r in rows], marker=".", color="tab:purple", drawstyle="steps-post")
    lr_ax.set(xlabel="epoch", ylabel="learning rate", title="Learning rate", yscale="log")
    for ax in (loss_ax, acc_ax, lr_ax):
        ax.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"best epoch ({best})")
        ax.grid(alpha=0.3)
    loss_ax.legend()
    fig.suptitle(f"Training: {Path(run_dir).name}")
    return _save(fig, Path(run_dir) / "training_curves.png")


def plot_confusion(confusion: np.ndarray, labels: list[str], path: Path, title: str) -> Path:
    """Row-normalised confusion heat map. Up to 40 classes every axis tick names its sign;
    beyond that (KArSL-502) ticks mark class numbers and a square-root colour scale keeps the
    rare confusions visible next to the bright diagonal."""
    n = len(labels)
    support = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, support, out=np.zeros(confusion.shape), where=support > 0)
    side = float(np.clip(4 + 0.22 * n, 6, 14))
    fig = Figure(figsize=(side + 1.5, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(share, cmap="viridis", norm=PowerNorm(0.5, vmin=0, vmax=1), interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true sign's clips")
    if n <= 40:
        ax.set_xticks(range(n), [_label(s) for s in labels], rotation=90, fontsize=8)
        ax.set_yticks(range(n), [_label(s) for s in labels], fontsize=8)
        ax.set(xlabel="predicted sign", ylabel="true sign")
    else:
        step = int(np.ceil(n / 20 / 5) * 5)
        ticks = list(range(0, n, step))
        ax.set_xticks(ticks, [str(t) for t in ticks], rotation=90, fontsize=8)
        ax.set_yticks(ticks, [str(t) for t in ticks], fontsize=8)
        ax.set(xlabel="predicted class id (see per_class.csv)", ylabel="true class id (see per_class.csv)")
    ax.set_title(title)
    return _save(fig, path)


def plot_per_class_f1(
    f1: np.ndarray, labels: list[str], path: Path, title: str, support: np.ndarray | None = None, worst: int = 20
) -> Path:
    """Left: every class's F1, sorted; right: the lowest-F1 classes by name (ties: the ones
    with the most test clips first, where the evidence is strongest)."""
    valid = ~np.isnan(f1)
    tiebreak = -support if support is not None else np.zeros(len(f1))
    order = np.lexsort((tiebreak, np.where(valid, f1, np.inf)))[: int(valid.sum())]
    fig = Figure(figsize=(13, max(4.5, 0.28 * min(worst, len(order)) + 1.5)), layout="constrained")
    curve, dots = fig.subplots(1, 2, width_ratios=(1.3, 1))
    curve.plot(np.arange(1, len(order) + 1), f1[order], color="tab:blue")
    curve.axhline(np.nanmean(f1), color="tab:red", linestyle="--", linewidth=1, label=f"macro F1 {np.nanmean(f1):.3f}")
    curve.set(xlabel="classes, sorted by F1 (rank)", ylabel="F1", ylim=(-0.02, 1.02), title="F1 of every class")
    curve.xaxis.get_major_locator().set_params(integer=True)
    curve.legend(loc="lower right")
    curve.grid(alpha=0.3)
    shown = order[:worst][::-1]  # lowest at the top
    y = np.arange(len(shown))
    # Dots on stems, so that an F1 of 0 is still visible.
    dots.hlines(y, 0, f1[shown], color="tab:orange", linewidth=2)
    dots.plot(f1[shown], y, "o", color="tab:orange")
    dots.set_yticks(y, [_label(labels[i]) for i in shown], fontsize=8)
    zero = int((f1[valid] == 0).sum())
    heading = f"The {len(shown)} classes with the lowest F1"
    if zero > len(shown):
        heading += f"\n({zero} classes have F1 0; shown: those with the most clips)"
    dots.set(xlabel="F1", xlim=(-0.03, 1.13), xticks=np.linspace(0, 1, 6), ylim=(-0.7, len(shown) - 0.3), title=heading)
    for yi, i in zip(y, shown):
        dots.annotate(
            f"{f1[i]:.2f}", xy=(f1[i], yi), xytext=(6, 0), textcoords="offset points", va="center", fontsize=7
        )
    dots.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def plot_top_confusions(confusions: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Horizontal bars, 'true -> predicted', most frequent at the top."""
    fig = Figure(figsize=(9, max(3.0, 0.32 * len(confusions) + 1.4)), layout="constrained")
    ax = fig.subplots()
    if confusions:
        shown = confusions[::-1]
        ax.barh(range(len(shown)), [c["count"] for c in shown], height=0.6, color="tab:red")
        ax.set_yticks(
            range(len(shown)), [f"“{_label(c['true'], 22)}” → “{_label(c['pred'], 22)}”" for c in shown], fontsize=8
        )
        ax.xaxis.get_major_locator().set_params(integer=True)
    else:
        ax.text(
            0.5,
            0.5,
            "no confusions: every clip was classified correctly",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.set_yticks([])
    ax.set(xlabel="clips", ylabel="true sign → predicted sign", title=title)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_eval_dir(eval_dir: Path) -> list[Path]:
    """confusion.png, per_class_f1.png and top_confusions.png from an evaluation's files."""
    eval_dir = Path(eval_dir)
    summary = json.loads((eval_dir / "metrics.json").read_text("utf-8"))
    with open(eval_dir / "per_class.csv", newline="", encoding="utf-8") as f:
        per_class = list(csv.DictReader(f))
    with open(eval_dir / "confusion.csv", newline="", encoding="utf-8") as f:
        confusion = np.array([row[1:] for row in list(csv.reader(f))[1:]], dtype=np.int64)
    labels = [f"{r['en'] or 'sign'} (#{r['sign']})" for r in per_class]
    f1 = np.array([float(r["f1"]) if r["f1"] else np.nan for r in per_class])
    support = np.array([int(r["support"]) for r in per_class])
    what = f"{summary['split']} split, {summary['num_samples']} clips"
    return [
        plot_confusion(
            confusion, labels, eval_dir / "confusion.png", f"Confusion matrix ({what}; top-1 {summary['top1']:.3f})"
        ),
        plot_per_class_f1(f1, labels, eval_dir / "per_class_f1.png", f"Per-class F1 ({what})", support),
        plot_top_confusions(
            summary["top_confusions"][:20], eval_dir / "top_confusions.png", f"Most frequent confusions ({what})"
        ),
    ]


def plot_run(run_dir: Path) -> list[Path]:
    """Every figure of a run: training curves and each eval-*/ folder's."""
    run_dir = Path(run_dir)
    drawn = [plot_training_curves(run_dir)] if (run_dir / "metrics.jsonl").exists() else []
    for eval_dir in sorted(run_dir.glob("eval-*")):
        if (eval_dir / "metrics.json").exists():
            drawn += plot_eval_dir(eval_dir)
    return drawn
