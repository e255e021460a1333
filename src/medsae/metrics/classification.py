"""Classification metrics: the one implementation of each (exact, tie-aware).

Binary labels ``y`` (positives ``P``, negatives ``N``), scores ``s``, decisions ``p``:

* ROC-AUC (:func:`roc_auc`, the Mann-Whitney statistic):
  ``AUROC = P(s_pos > s_neg) + 1/2 P(s_pos = s_neg)`` over all positive/negative pairs,
  computed as ``(sum of the positives' average ranks - |P| (|P| + 1) / 2) / (|P| |N|)``;
  NaN when either class is empty.
* Binary balanced accuracy (:func:`binary_balanced_accuracy`):
  ``BA = (TP / (TP + FN) + TN / (TN + FP)) / 2``; NaN when either class is absent.
* Binary F1 (:func:`binary_f1`): ``F1 = 2 TP / (2 TP + FP + FN)``; 0 when there are no
  positives, predicted or true.

Integer labels ``0..K-1`` and class scores ``(n, K)``:

* Multi-class (one-vs-rest, macro) ROC-AUC (:func:`macro_roc_auc`): the mean over classes
  ``k`` of the ROC-AUC of class ``k``'s score against ``label == k``.
* Balanced accuracy (:func:`balanced_accuracy`): the mean over the classes present of the
  recall of that class.
* Macro F1 (:func:`f1_macro`): the mean over classes of ``2 TP / (2 TP + FP + FN)`` (both
  classes of a binary task count; 0 for a class never predicted nor present).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import rankdata


def roc_auc(y: ArrayLike, scores: ArrayLike) -> float:
    """Binary ROC-AUC (Mann-Whitney form, ties count 1/2); NaN when a class is empty."""
    t = np.asarray(y).astype(bool)
    n_pos = int(t.sum())
    n_neg = len(t) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores))
    return float((ranks[t].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc_columns(y_n: np.ndarray, scores_nk: np.ndarray) -> np.ndarray:
    """ROC-AUC of every column of ``scores_nk`` against the same binary labels ``y_n``."""
    y = np.asarray(y_n).astype(bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.full(scores_nk.shape[1], np.nan)
    ranks = rankdata(scores_nk, axis=0)
    return np.asarray((ranks[y].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binary_balanced_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """``(TPR + TNR) / 2`` with ``TPR = TP / (TP + FN)``, ``TNR = TN / (TN + FP)``.

    NaN when either class is absent from ``y_true``.
    """
    t = np.asarray(y_true, dtype=bool)
    p = np.asarray(y_pred, dtype=bool)
    if t.all() or not t.any():
        return float("nan")
    return float(((p & t).sum() / t.sum() + (~p & ~t).sum() / (~t).sum()) / 2)


def binary_f1(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """``2 TP / (2 TP + FP + FN)``; 0 when there are no positives, predicted or true."""
    t = np.asarray(y_true, dtype=bool)
    p = np.asarray(y_pred, dtype=bool)
    tp = (p & t).sum()
    denom = 2 * tp + (p & ~t).sum() + (~p & t).sum()
    return float(2 * tp / denom) if denom else 0.0


def macro_roc_auc(labels: np.ndarray, scores_nk: np.ndarray) -> float:
    """One-vs-rest macro ROC-AUC of class scores ``(n, K)`` for integer labels in ``0..K-1``.

    The mean is over the classes with both positives and negatives in ``labels`` (a class
    absent from an evaluation split has no AUC; NaN when no class has one). For ``K == 2``
    with a single score column, that column scores class 1.
    """
    labels = np.asarray(labels)
    if scores_nk.ndim == 1 or scores_nk.shape[1] == 1:
        return roc_auc(labels == 1, scores_nk.reshape(-1))
    aucs = np.array([roc_auc(labels == k, scores_nk[:, k]) for k in range(scores_nk.shape[1])])
    aucs = aucs[np.isfinite(aucs)]
    return float(aucs.mean()) if aucs.size else float("nan")


def balanced_accuracy(labels: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Mean per-class recall over the classes present in ``labels``."""
    recalls = [
        float((pred[labels == k] == k).mean()) for k in range(n_classes) if (labels == k).any()
    ]
    return float(np.mean(recalls)) if recalls else float("nan")


def f1_macro(labels: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Macro F1: mean over classes of 2TP / (2TP + FP + FN) (0 for a class never predicted nor present)."""
    f1s = []
    for k in range(n_classes):
        tp = float(((pred == k) & (labels == k)).sum())
        fp = float(((pred == k) & (labels != k)).sum())
        fn = float(((pred != k) & (labels == k)).sum())
        den = 2 * tp + fp + fn
        f1s.append(2 * tp / den if den > 0 else 0.0)
    return float(np.mean(f1s))


def predict_classes(scores_nk: np.ndarray) -> np.ndarray:
    """Predicted class: score > 0 (probability > 1/2) for one binary column, else the argmax."""
    if scores_nk.ndim == 1 or scores_nk.shape[1] == 1:
        return (scores_nk.reshape(-1) > 0).astype(np.int64)
    return np.asarray(scores_nk.argmax(1), dtype=np.int64)


def classification_report(
    labels: np.ndarray, scores_nk: np.ndarray, n_classes: int
) -> dict[str, float]:
    """``roc_auc`` (OvR macro), ``balanced_accuracy`` and ``f1`` (macro) of class scores."""
    pred = predict_classes(scores_nk)
    return {
        "roc_auc": macro_roc_auc(labels, scores_nk),
        "balanced_accuracy": balanced_accuracy(labels, pred, n_classes),
        "f1": f1_macro(labels, pred, n_classes),
    }
