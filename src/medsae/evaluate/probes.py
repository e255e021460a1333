"""Linear probes on dense embeddings and on sparse codes.

Inputs are scaled with training-sample statistics only:

* dense embeddings: standardised per dimension, ``(x - mean_train) / std_train``;
* sparse codes: divided by the per-latent standard deviation on the training sample (no
  centring, so sparsity is kept); latents that never fire in the training sample are dropped.

Every task becomes one-vs-rest L2 logistic classifiers (one for a binary task, one per class
otherwise) with class-balanced sample weights, fitted jointly for every task
(:mod:`medsae.evaluate.linear`), along the L2 grid from the strongest penalty to the weakest,
each fit warm-started from the previous one. The strength is fixed (``l2_select =
"fixed"``: ``C = probe_c`` for every classifier, the paper's rule) or, with ``l2_select =
"val"``, each classifier keeps the strength with the best validation ROC-AUC (ties go to the
stronger penalty). Reported per task, feature
kind and evaluation split: one-vs-rest macro ROC-AUC, balanced accuracy and macro F1
(:mod:`medsae.metrics.classification`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import scipy.sparse as sp

from medsae.evaluate.linear import (
    Design,
    LinearFit,
    balanced_weights,
    fit_logistic,
    fixed_c_lambda,
)
from medsae.evaluate.tasks import Task
from medsae.metrics.classification import classification_report, roc_auc

Features: TypeAlias = np.ndarray | sp.csr_matrix


def standardize_dense(features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """z-score every split with the mean and std of ``features['train']`` (std 0 -> 1)."""
    train = np.asarray(features["train"], dtype=np.float64)
    mean = train.mean(0)
    std = train.std(0)
    std[std == 0] = 1.0
    return {
        k: ((np.asarray(v, dtype=np.float64) - mean) / std).astype(np.float32)
        for k, v in features.items()
    }


def sparse_scale(train: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Columns that fire in ``train`` and their standard deviations there."""
    train = sp.csr_matrix(train, dtype=np.float64)
    n = max(train.shape[0], 1)
    mean = np.asarray(train.mean(0)).ravel()
    sq = np.asarray(train.multiply(train).sum(0)).ravel() / n
    std = np.sqrt(np.maximum(sq - mean**2, 0.0))
    keep = np.flatnonzero(std > 0)
    return keep, std[keep]


def scale_sparse(
    features: Mapping[str, sp.csr_matrix],
) -> tuple[dict[str, sp.csr_matrix], np.ndarray]:
    """Keep latents that fire in the training sample and divide them by their std there.

    Returns the scaled splits and the kept latent indices (column ``c`` of the output is
    latent ``kept[c]``).
    """
    keep, std = sparse_scale(features["train"])
    scale = sp.diags((1.0 / std).astype(np.float32))
    out = {
        k: sp.csr_matrix(sp.csr_matrix(v, dtype=np.float32)[:, keep] @ scale, dtype=np.float32)
        for k, v in features.items()
    }
    return out, keep


@dataclass
class HeadTable:
    """The one-vs-rest heads of a list of tasks: head ``h`` belongs to ``task_of[h]``."""

    tasks: list[Task]
    task_of: np.ndarray
    class_of: np.ndarray
    slices: list[slice] = field(default_factory=list)

    @classmethod
    def build(cls, tasks: Sequence[Task]) -> HeadTable:
        task_of, class_of, slices, start = [], [], [], 0
        for t, task in enumerate(tasks):
            for k in range(task.n_heads):
                task_of.append(t)
                class_of.append(1 if task.n_heads == 1 else k)
            slices.append(slice(start, start + task.n_heads))
            start += task.n_heads
        return cls(
            list(tasks),
            np.array(task_of, dtype=np.int64),
            np.array(class_of, dtype=np.int64),
            slices,
        )

    @property
    def n_heads(self) -> int:
        return len(self.task_of)

    def targets(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """0/1 targets ``(n, H)`` and validity ``(n, H)`` of the rows."""
        ys, valids = [], []
        for task in self.tasks:
            _, y, valid = task.targets(rows)
            ys.append(y)
            valids.append(np.repeat(valid[:, None], y.shape[1], axis=1))
        return np.concatenate(ys, 1), np.concatenate(valids, 1)

    def head_auc(self, rows: np.ndarray, scores_nh: np.ndarray) -> np.ndarray:
        """Validation ROC-AUC of every head column (NaN where a class is empty)."""
        y, valid = self.targets(rows)
        out = np.full(scores_nh.shape[1], np.nan)
        n_h = self.n_heads
        for c in range(scores_nh.shape[1]):
            h = c % n_h
            m = valid[:, h]
            out[c] = roc_auc(y[m, h], scores_nh[m, c])
        return out


L2_SELECT = ("fixed", "val")


def check_l2_select(l2_select: str) -> None:
    """Refuse an unknown way of choosing the L2 strength."""
    if l2_select not in L2_SELECT:
        raise ValueError(f"l2_select: expected one of {L2_SELECT}, got {l2_select!r}")


def select_by_validation(auc_hg: np.ndarray) -> np.ndarray:
    """Index of the best column per head (``auc_hg`` ordered from strongest to weakest penalty)."""
    filled = np.where(np.isnan(auc_hg), -np.inf, auc_hg)
    return np.asarray(filled.argmax(1), dtype=np.int64)


def task_reports(
    heads: HeadTable, rows: np.ndarray, scores_nh: np.ndarray
) -> list[dict[str, float]]:
    """Per task: ROC-AUC / balanced accuracy / F1 of the head scores on ``rows``."""
    out = []
    for t, task in enumerate(heads.tasks):
        lab = task.labels[rows]
        m = lab >= 0
        rep = classification_report(lab[m], scores_nh[m][:, heads.slices[t]], task.n_classes)
        rep["n"] = float(m.sum())
        out.append(rep)
    return out


def target_score(task: Task, k: int, scores_nk: np.ndarray) -> np.ndarray:
    """The one-vs-rest score of class ``k`` from a task's head scores ``(n, n_heads)``.

    A binary task's one head scores its second class; its first class is scored by the
    negated score (the same ROC-AUC).
    """
    if task.n_heads == 1:
        return np.asarray(scores_nk[:, 0] if k == 1 else -scores_nk[:, 0])
    return np.asarray(scores_nk[:, k])


def target_aucs(
    heads: HeadTable, rows: np.ndarray, scores_nh: np.ndarray
) -> list[tuple[str, str, float]]:
    """``(task, class, ROC-AUC)`` of every class against the rest of its task, on ``rows``.

    NaN where the class, or the rest, is absent from ``rows``.
    """
    out = []
    for t, task in enumerate(heads.tasks):
        lab = task.labels[rows]
        m = lab >= 0
        block = scores_nh[m][:, heads.slices[t]]
        for k, cls in enumerate(task.classes):
            out.append((task.name, cls, roc_auc(lab[m] == k, target_score(task, k, block))))
    return out


def run_probes(
    features: Mapping[str, Features],
    rows: Mapping[str, np.ndarray],
    tasks: Sequence[Task],
    l2_grid: Sequence[float],
    max_iter: int = 150,
    feature_kind: str = "dense",
    l2_select: str = "fixed",
    probe_c: float = 1.0,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Fit and score the probes of every task on one kind of features.

    Parameters
    ----------
    features: ``{'train': X, 'val': X, 'test': X, ...}`` already scaled (see
        :func:`standardize_dense`, :func:`scale_sparse`), rows aligned with ``rows``.
    rows: the slice-table rows of each split (labels are read from the tasks at these rows).
    tasks: the kept tasks.
    l2_select: ``"fixed"``: every head uses the strength of ``C = probe_c``
        (:func:`medsae.evaluate.linear.fixed_c_lambda`; the paper's fixed ``C = 1``) and
        ``l2_grid`` is not used; ``"val"``: each head keeps the strength of ``l2_grid`` with
        the best ``'val'`` ROC-AUC (validation then serves twice when it also ranks runs).

    Returns
    -------
    The result rows (task, kind, features, split, roc_auc, balanced_accuracy, f1, n_train,
    n_eval, l2) and the chosen head scores per evaluation split, plus under ``'coef'`` the
    chosen weights ``(d, H)`` of every one-vs-rest head (the shared recovery ranking's input).
    """
    if not tasks:
        return [], {}
    check_l2_select(l2_select)
    heads = HeadTable.build(tasks)
    n_h = heads.n_heads
    y, valid = heads.targets(rows["train"])
    weights = balanced_weights(y, valid)
    design = Design(features["train"])
    if l2_select == "fixed":
        lam_h = fixed_c_lambda(valid, probe_c)
        fit = fit_logistic(design, y, weights, lam_h, max_iter)
        val_scores = fit.decision(features["val"])
        chosen_cols = np.arange(n_h)
        lam_of = lam_h.astype(np.float64)
    else:
        grid = np.array(sorted(l2_grid, reverse=True), dtype=np.float32)  # strongest first
        fits: list[LinearFit] = []
        for lam in grid:  # strongest penalty first, each fit warm-starts the next (a path)
            fits.append(
                fit_logistic(
                    design, y, weights, np.full(n_h, lam), max_iter, init=fits[-1] if fits else None
                )
            )
        fit = LinearFit(
            np.concatenate([f.w_dh for f in fits], 1), np.concatenate([f.b_h for f in fits]), 0
        )
        val_scores = fit.decision(features["val"])
        auc = heads.head_auc(rows["val"], val_scores).reshape(len(grid), n_h).T
        best_g = select_by_validation(auc)
        chosen_cols = best_g * n_h + np.arange(n_h)
        lam_of = grid[best_g].astype(np.float64)
    results: list[dict[str, Any]] = []
    chosen: dict[str, np.ndarray] = {"coef": fit.w_dh[:, chosen_cols]}
    n_train = [int(valid[:, sl.start].sum()) for sl in heads.slices]
    for split in [s for s in features if s != "train"]:
        scores = val_scores if split == "val" else fit.decision(features[split])
        scores = scores[:, chosen_cols]
        chosen[split] = scores
        for t, rep in enumerate(task_reports(heads, rows[split], scores)):
            task = heads.tasks[t]
            results.append(
                {
                    "task": task.name,
                    "kind": task.kind,
                    "n_classes": task.n_classes,
                    "features": feature_kind,
                    "split": split,
                    "roc_auc": rep["roc_auc"],
                    "balanced_accuracy": rep["balanced_accuracy"],
                    "f1": rep["f1"],
                    "n_train": int(n_train[t]),
                    "n_eval": int(rep["n"]),
                    "l2": float(np.median(lam_of[heads.slices[t]])),
                }
            )
    return results, chosen
