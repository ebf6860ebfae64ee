"""Evaluate a checkpoint on a split of a store, on 1 or N processes, with exact gathering."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from accel_signs.config import EvalConfig
from accel_signs.core.collective import on_main
from accel_signs.core.errors import CheckpointError, DatasetError
from accel_signs.core.files import fresh_dir, replace_dir
from accel_signs.core.metrics import ClassificationReport, classification_report
from accel_signs.data.pipeline import ClassMap, class_map, format_ranges, make_loader, select_clips, signer_indices
from accel_signs.data.store import ClipStore, open_store
from accel_signs.data.training import default_num_workers
from accel_signs.model.checkpoint import Checkpoint, load_checkpoint
from accel_signs.model.tta import flip_averaged, flip_index

logger = logging.getLogger(__name__)


@dataclass
class EvalResult:
    report: ClassificationReport
    classes: list[dict[str, Any]]
    summary: dict[str, Any]
    output: Path


def checkpoint_classes(store: ClipStore, ckpt: Checkpoint) -> ClassMap:
    """The checkpoint's classes, found in the store by sign number; refuses data whose signs
    or glosses differ from what the model was trained on."""
    signs = [c.sign for c in ckpt.classes]
    by_sign = {c.sign: c for c in store.classes}
    missing = [s for s in signs if s not in by_sign]
    if missing:
        raise CheckpointError(
            f"checkpoint {ckpt.path} was trained on signs {format_ranges(signs)}, but store {store.path} has no "
            f"sign(s) {format_ranges(missing)} (it has {format_ranges(list(by_sign))}): evaluate on data with the checkpoint's signs"
        )
    for c in ckpt.classes:
        theirs = by_sign[c.sign].en
        if c.en and theirs and c.en != theirs:
            raise CheckpointError(
                f"sign {c.sign} is {c.en!r} in checkpoint {ckpt.path} but {theirs!r} in store "
                f"{store.path}: the two number their signs differently"
            )
    return class_map(store, signs)


def check_layout(store: ClipStore, ckpt: Checkpoint) -> None:
    """The store's keypoints must be in the layout the model was trained on."""
    theirs, ours = store.layout, ckpt.layout
    if not theirs.same_as(ours):
        raise CheckpointError(
            f"checkpoint {ckpt.path} reads keypoint layout {ours.name} ({ours.id}, {ours.num_points} "
            f"points) but store {store.path} holds {theirs.name} ({theirs.id}, {theirs.num_points} points)"
        )


# progress(batches done, batches in all), called after each batch (the dashboard's progress bar).
Progress = Callable[[int, int], None]


def evaluate_checkpoint(
    cfg: EvalConfig, accelerator: Accelerator | None = None, progress: Progress | None = None, card: bool = True
) -> EvalResult:
    """Evaluate `cfg.checkpoint`, write metrics.json, per_class.csv, confusion.csv,
    predictions.csv (and plots) to the output folder from the main process, and return the
    results on every process. Without an `accelerator` (the `evaluate` command), it makes one
    and leaves the process group at the end. `card`: a test-split evaluation of a local
    checkpoint updates its model card (the dashboard, which never writes to a run, says False)."""
    if accelerator is not None:
        return _evaluate(cfg, accelerator, progress, card)
    accelerator = Accelerator(mixed_precision="no")
    try:
        return _evaluate(cfg, accelerator, progress, card)
    finally:
        # A gloo group left to the interpreter's exit can abort a rank ("terminate called
        # without an active exception") after its work is done.
        accelerator.end_training()


@dataclass
class _Predictions:
    """What an evaluation writes: per clip (in clip order) its id, signer, label, top-k and confidence."""

    summary: dict[str, Any]
    report: ClassificationReport
    classes: list[dict[str, Any]]
    clip_ids: np.ndarray
    signer_index: np.ndarray  # per clip, an index into signer_names
    signer_names: tuple[str, ...]
    labels: np.ndarray
    topk: np.ndarray  # (clips, k) class ids, best first
    confidence: np.ndarray  # the top-1 probability


def _evaluate(cfg: EvalConfig, accelerator: Accelerator, progress: Progress | None, card: bool) -> EvalResult:
    ckpt = load_checkpoint(cfg.checkpoint)
    data_path = cfg.data or ckpt.meta.data.store
    if data_path is None:
        raise CheckpointError(f"checkpoint {ckpt.path} does not record its data store: pass --data")
    store = open_store(data_path)
    check_layout(store, ckpt)
    classes = checkpoint_classes(store, ckpt)
    store_split = store.split(cfg.split)
    recorded = ckpt.meta.data
    signers = cfg.signers or (recorded.test_signers or recorded.signers or tuple(store.signers))
    ids = select_clips(store_split, classes, signer_indices(store, signers))
    store_split.check_finite()
    workers = (
        cfg.num_workers
        if cfg.num_workers is not None
        else default_num_workers(accelerator.device, accelerator.num_processes)
    )
    loader = make_loader(
        store_split,
        ids,
        classes,
        seq_len=ckpt.seq_len,
        batch_size=cfg.batch_size,
        train=False,
        num_workers=workers,
        pin_memory=accelerator.device.type == "cuda",
    )
    table = _predict(cfg, ckpt, accelerator.prepare(loader), accelerator, min(5, classes.num_classes), progress)
    clip_ids, labels = table[:, 0].astype(np.int64), table[:, 1].astype(np.int64)
    topk = table[:, 4:].astype(np.int64)
    clip_signers = store_split.signer_index[clip_ids]
    report = classification_report(labels, topk, classes.num_classes, clip_signers, store.signers, losses=table[:, 2])
    class_rows = [{"id": i, "sign": c.sign, "en": c.en, "ar": c.ar} for i, c in enumerate(classes.classes)]
    summary = _summary(cfg, ckpt, store, signers, report, class_rows)
    found = _Predictions(summary, report, class_rows, clip_ids, clip_signers, store.signers, labels, topk, table[:, 3])
    output = cfg.output_dir()
    # Written by the main process; a failure (disk full, quota) reaches every process alike.
    on_main(
        accelerator,
        lambda: _write_outputs(output, found, cfg.plots),
        f"cannot write the evaluation results to {output}",
        DatasetError,
    )
    if card and cfg.split == "test" and (ckpt.source is None or ckpt.source.repo_id is None):
        on_main(
            accelerator,
            lambda: _update_card(ckpt.path, output),
            f"cannot write the model card of {ckpt.path}",
            CheckpointError,
        )
    return EvalResult(report, class_rows, summary, output)


def _predict(
    cfg: EvalConfig, ckpt: Checkpoint, loader: Any, accelerator: Accelerator, k: int, progress: Progress | None
) -> np.ndarray:
    """(clips, 4 + k) rows of clip id, label, loss, top-1 probability and top-k classes,
    gathered from every process and sorted by clip id."""
    model = ckpt.model.to(accelerator.device).eval()
    rows = []
    # Not accelerator.autocast(): after training, the accelerator is the run's, and the final
    # evaluation stays in cfg's precision (fp32 by default) whatever the run trained in.
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.mixed_precision)
    autocast = torch.autocast(accelerator.device.type, dtype=dtype, enabled=dtype is not None)
    flip = flip_index(ckpt, cfg.tta_flip)
    flipped = 0
    with torch.no_grad(), autocast:
        for done, (x, aspect, y, clip) in enumerate(loader, 1):
            if flip is None:
                logits = model(x.flatten(2), aspect).float()  # (B, T, P, C) -> (B, T, P*C)
                loss = F.cross_entropy(logits, y, reduction="none")
                probs, top = logits.softmax(-1).topk(k, dim=-1)
            else:
                averaged, n = flip_averaged(model, x.flatten(2), aspect, flip)
                flipped += n
                loss = F.nll_loss(averaged.clamp_min(torch.finfo(averaged.dtype).tiny).log(), y, reduction="none")
                probs, top = averaged.topk(k, dim=-1)
            columns = [clip[:, None], y[:, None], loss[:, None], probs[:, :1], top]
            row = torch.cat([c.double() for c in columns], dim=1)  # (B, 4 + k)
            rows.append(accelerator.gather_for_metrics(row))  # drops the padding repeats
            if progress is not None:
                progress(done, len(loader))
    if flip is not None:
        logger.info("--tta-flip: %d clip(s) of this process's share needed the mirrored pass", flipped)
    table = torch.cat(rows).cpu().numpy()
    return table[np.argsort(table[:, 0], kind="stable")]  # clip order: the same sums on any number of processes


def _update_card(checkpoint: Path, output: Path) -> None:
    """The checkpoint's model card takes the new test metrics (a read-only folder keeps its card)."""
    from accel_signs.model.card import write_card

    try:
        write_card(checkpoint, output)
    except PermissionError as e:
        logger.warning("model card of %s not updated: %s", checkpoint, e)


def _summary(
    cfg: EvalConfig,
    ckpt: Checkpoint,
    store: ClipStore,
    signers: tuple[str, ...],
    report: ClassificationReport,
    classes: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "checkpoint": str(ckpt.path.resolve()),
        "store": str(store.path.resolve()),
        "split": cfg.split,
        "signers": list(signers),
        "mixed_precision": cfg.mixed_precision,
        "tta_flip": cfg.tta_flip,
        "num_classes": len(classes),
        "num_samples": report.num_samples,
        "top1": report.top1,
        "top5": report.top5,
        "top5_k": report.top5_k,
        "macro_f1": report.macro_f1,
        "mean_loss": report.mean_loss,
        "per_signer": report.per_signer,
        "top_confusions": [
            {
                "true_sign": classes[t]["sign"],
                "true": classes[t]["en"],
                "pred_sign": classes[p]["sign"],
                "pred": classes[p]["en"],
                "count": n,
            }
            for t, p, n in report.top_confusions(20)
        ],
    }


def _write_outputs(output: Path, found: _Predictions, plots: bool) -> None:
    """Everything into a temporary folder first; it replaces `output` only when complete."""
    tmp = fresh_dir(output.with_name(output.name + ".tmp"))
    (tmp / "metrics.json").write_text(json.dumps(found.summary, ensure_ascii=False, indent=2) + "\n", "utf-8")
    _write_per_class(tmp / "per_class.csv", found)
    with open(tmp / "confusion.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["true_sign \\ predicted_sign", *[c["sign"] for c in found.classes]])
        for c, row in zip(found.classes, found.report.confusion):
            w.writerow([c["sign"], *row.tolist()])
    _write_predictions(tmp / "predictions.csv", found)
    if plots:
        from accel_signs.core.plots import plot_eval_dir

        plot_eval_dir(tmp)
    try:
        replace_dir(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_per_class(path: Path, found: _Predictions) -> None:
    report = found.report
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["class_id", "sign", "en", "ar", "support", "predicted", "precision", "recall", "f1"])
        for c in found.classes:
            i = c["id"]
            w.writerow(
                [i, c["sign"], c["en"], c["ar"], int(report.support[i])]
                + [int(report.predicted[i]), _num(report.precision[i]), _num(report.recall[i]), _num(report.f1[i])]
            )


def _write_predictions(path: Path, found: _Predictions) -> None:
    classes = found.classes
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["clip", "signer", "true_sign", "pred_sign", "confidence", "top_signs"])
        rows = zip(found.clip_ids, found.signer_index, found.labels, found.topk, found.confidence)
        for clip, s, y, top, p in rows:
            w.writerow(
                [
                    int(clip),
                    found.signer_names[s],
                    classes[y]["sign"],
                    classes[top[0]]["sign"],
                    f"{p:.6f}",
                    " ".join(str(classes[t]["sign"]) for t in top),
                ]
            )


def _num(x: float) -> str:
    return "" if np.isnan(x) else f"{x:.6f}"


def format_summary(summary: dict[str, Any]) -> str:
    """A short text table of an evaluation."""
    lines = [
        f"{summary['split']} split: {summary['num_samples']} clips, {summary['num_classes']} classes",
        f"  top-1 accuracy  {summary['top1']:.4f}",
        f"  top-{summary['top5_k']} accuracy  {summary['top5']:.4f}",
        f"  macro F1        {summary['macro_f1']:.4f}",
        f"  mean loss       {summary['mean_loss']:.4f}",
        "  per signer:     "
        + ", ".join(f"{s} {v['accuracy']:.4f} ({v['num_samples']})" for s, v in summary["per_signer"].items()),
    ]
    if summary["top_confusions"]:
        lines.append("  most frequent confusions (true -> predicted):")
        lines += [f'    {c["count"]:4d}  "{c["true"]}" -> "{c["pred"]}"' for c in summary["top_confusions"][:5]]
    return "\n".join(lines)
