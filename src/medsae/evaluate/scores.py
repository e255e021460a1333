"""Classification metrics (exact, tie-aware, vectorised where it matters).

* ROC-AUC of scores ``s`` for a binary label: the Mann-Whitney probability
  ``P(s_pos > s_neg) + 1/2 P(s_pos = s_neg)`` over all positive/negative pairs.
* Multi-class (one-vs-rest, macro) ROC-AUC: the mean over classes ``k`` of the ROC-AUC of
  class ``k``'s score against ``label == k``.
* Balanced accuracy: the mean over classes of the recall of that class.
* F1 (macro): the mean over classes of ``2 TP / (2 TP + FP + FN)`` (both classes of a binary
  task count).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """Binary ROC-AUC (Mann-Whitney form, ties count 1/2); NaN when a class is empty."""
    y = np.asarray(y).astype(bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc_columns(y_n: np.ndarray, scores_nk: np.ndarray) -> np.ndarray:
    """ROC-AUC of every column of ``scores_nk`` against the same binary labels ``y_n``."""
    y = np.asarray(y_n).astype(bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.full(scores_nk.shape[1], np.nan)
    ranks = rankdata(scores_nk, axis=0)
    return (ranks[y].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def macro_roc_auc(labels: np.ndarray, scores_nk: np.ndarray) -> float:
    """One-vs-rest macro ROC-AUC of class scores ``(n, K)`` for integer labels in ``0..K-1``.

    For ``K == 2`` with a single score column, that column scores class 1.
    """
    labels = np.asarray(labels)
    if scores_nk.ndim == 1 or scores_nk.shape[1] == 1:
        return roc_auc(labels == 1, scores_nk.reshape(-1))
    return float(
        np.mean([roc_auc(labels == k, scores_nk[:, k]) for k in range(scores_nk.shape[1])])
    )


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
