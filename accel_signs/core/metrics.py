"""Classification metrics from predictions, in numpy (no scikit-learn).

Conventions follow scikit-learn's defaults so numbers can be compared with the literature:
precision of a class never predicted is 0, recall of a class absent from the data is
undefined (NaN here), and macro F1 averages over the classes that occur in the labels or in
the predictions (a class that is neither does not count).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class ClassificationReport:
    """Metrics of one evaluation. Per-class arrays are indexed by class id."""

    num_samples: int
    top1: float
    top5: float
    top5_k: int  # k actually used: min(5, number of classes)
    macro_f1: float
    precision: np.ndarray
    recall: np.ndarray  # NaN where support is 0
    f1: np.ndarray  # NaN where the class is neither in the data nor predicted
    support: np.ndarray  # true samples per class
    predicted: np.ndarray  # predictions per class
    confusion: np.ndarray  # (true, predicted) counts
    per_signer: dict[str, dict[str, float]]  # signer id -> accuracy, num_samples
    mean_loss: float

    def top_confusions(self, n: int = 20) -> list[tuple[int, int, int]]:
        """The n most frequent (true, predicted, count) errors, most frequent first, ties by ids."""
        off = self.confusion.copy()
        np.fill_diagonal(off, 0)
        true, pred = np.nonzero(off)
        counts = off[true, pred]
        order = np.lexsort((pred, true, -counts))[:n]
        return [(int(true[i]), int(pred[i]), int(counts[i])) for i in order]


def classification_report(
    labels: np.ndarray,
    topk: np.ndarray,
    num_classes: int,
    signers: np.ndarray,
    signer_names: Sequence[str],
    losses: np.ndarray | None = None,
) -> ClassificationReport:
    """Metrics for `labels` (N,) given each sample's classes ranked best first, `topk` (N, k),
    and its signer index into `signer_names` (N,)."""
    labels, topk, signers = np.asarray(labels), np.asarray(topk), np.asarray(signers)
    if len(labels) == 0:
        raise ValueError("no samples to evaluate")
    pred = topk[:, 0]
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    tp = np.diag(confusion).astype(np.float64)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, np.nan)
        r = np.nan_to_num(recall)
        f1 = np.where(precision + r > 0, 2 * precision * r / (precision + r), 0.0)
    counted = (support > 0) | (predicted > 0)
    f1 = np.where(counted, f1, np.nan)
    k = min(5, num_classes)
    per_signer = {}
    for s in np.unique(signers):
        mask = signers == s
        per_signer[signer_names[s]] = {
            "accuracy": float((pred[mask] == labels[mask]).mean()),
            "num_samples": int(mask.sum()),
        }
    return ClassificationReport(
        num_samples=len(labels),
        top1=float((pred == labels).mean()),
        top5=float((topk[:, :k] == labels[:, None]).any(axis=1).mean()),
        top5_k=k,
        macro_f1=float(np.nanmean(f1)),
        precision=precision,
        recall=recall,
        f1=f1,
        support=support,
        predicted=predicted,
        confusion=confusion,
        per_signer=per_signer,
        mean_loss=float(np.mean(losses)) if losses is not None else float("nan"),
    )
