"""A concept map without a language model: the label each feature detects best.

Labels are binary, one per class of every task of :mod:`medsae.evaluate.tasks` (``present``
only for structure and group presence; ``age_group_extremes`` is left out as it repeats
``age_group``), named ``<kind>=<value>`` (``structure=liver``, ``group=abdomen``,
``modality=CT``, ``age_group=>=80``...). Slices where a label is missing are excluded from that
label. On held-out slices, for latent ``j`` with activations ``a`` and label ``l``:

* AUROC(j, l) = ``P(a_pos > a_neg) + 1/2 P(a_pos = a_neg)`` (exact; the many zero activations
  are one block of ties);
* F1(j, l) of "fires" (``a > 0``) as a detector of the label: ``2TP / (2TP + FP + FN)``.

A latent's concept is the label of highest AUROC (ties: higher F1) among labels with at least
``min_positives`` positive slices; latents firing on fewer than ``min_fires`` held-out slices
get none. ``best_f1_concept`` is the label of highest F1, for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from medsae.evaluate.tasks import Task
from medsae.labels.table import LabelTable

"""The label table from ``(positive, valid, names, kinds)`` masks (the former name)."""


def labels_from_tasks(tasks: Sequence[Task], rows: np.ndarray | None = None) -> LabelTable:
    """One binary label per class of each task (``present`` only for presence tasks), in the
    one label table of :mod:`medsae.labels.table` (``defined`` where the task's label is known)."""
    pos, val, names, kinds = [], [], [], []
    for task in tasks:
        if task.name == "age_group_extremes":
            continue
        lab = task.labels if rows is None else task.labels[rows]
        kind = task.kind if task.kind in ("structure", "group") else task.name
        prefix = task.name.split(":", 1)[1] if ":" in task.name else None
        classes = [1] if task.kind in ("structure", "group") else range(task.n_classes)
        for k in classes:
            pos.append(lab == k)
            val.append(lab >= 0)
            names.append(f"{kind}={prefix if prefix is not None else task.classes[k]}")
            kinds.append(kind)
    n = len(tasks[0].labels) if rows is None and tasks else (len(rows) if rows is not None else 0)
    if not pos:
        return LabelTable([], np.zeros((n, 0), bool), np.zeros((n, 0), bool))
    return LabelTable(names, np.stack(pos, 1), np.stack(val, 1), kinds)


def auroc_matrix(codes: sp.spmatrix, labels: LabelTable) -> np.ndarray:
    """Exact AUROC of every latent (column of non-negative ``codes``) against every label, ``(L, C)``."""
    csc = sp.csc_matrix(codes, dtype=np.float32)
    pos = (labels.values & labels.defined).astype(np.float64)
    neg = (~labels.values & labels.defined).astype(np.float64)
    n_pos, n_neg = pos.sum(0), neg.sum(0)
    denom = n_pos * n_neg
    out = np.full((csc.shape[1], pos.shape[1]), np.nan)
    for j in range(csc.shape[1]):
        lo, hi = csc.indptr[j], csc.indptr[j + 1]
        rows, vals = csc.indices[lo:hi], csc.data[lo:hi]
        keep = vals > 0
        rows, vals = rows[keep], vals[keep]
        if len(rows) == 0:
            u = 0.5 * n_pos * n_neg
        else:
            order = np.argsort(vals, kind="stable")
            rows, vals = rows[order], vals[order]
            starts = np.flatnonzero(np.r_[True, vals[1:] != vals[:-1]])
            pos_g = np.add.reduceat(pos[rows], starts, axis=0)
            neg_g = np.add.reduceat(neg[rows], starts, axis=0)
            neg_before = np.cumsum(neg_g, 0) - neg_g
            zero_neg = n_neg - neg_g.sum(0)
            zero_pos = n_pos - pos_g.sum(0)
            u = (
                (pos_g * (neg_before + 0.5 * neg_g)).sum(0)
                + pos_g.sum(0) * zero_neg
                + 0.5 * zero_pos * zero_neg
            )
        out[j] = np.where(denom > 0, u / np.where(denom > 0, denom, 1.0), np.nan)
    return out


def f1_matrix(codes: sp.spmatrix, labels: LabelTable) -> np.ndarray:
    """F1 of "latent fires" as a detector of each label, ``(L, C)``."""
    fires = sp.csc_matrix(codes, dtype=np.float32)
    fires = sp.csc_matrix((fires > 0).astype(np.float32))
    pos = (labels.values & labels.defined).astype(np.float32)
    neg = (~labels.values & labels.defined).astype(np.float32)
    tp = np.asarray(fires.T @ pos, dtype=np.float64)
    fp = np.asarray(fires.T @ neg, dtype=np.float64)
    fn = pos.sum(0)[None, :] - tp
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1.0), 0.0)


def concept_map(
    codes: sp.spmatrix, labels: LabelTable, min_fires: int = 5, min_positives: int = 5
) -> pd.DataFrame:
    """Per latent: ``latent``, ``concept``, ``concept_kind``, ``auroc``, ``f1``, ``frequency``,
    ``n_fires``, ``best_f1_concept``, ``best_f1`` (see module docstring)."""
    csc = sp.csc_matrix(codes, dtype=np.float32)
    n_rows, n_lat = csc.shape
    n_fires = np.asarray((csc > 0).sum(0)).ravel()
    frame = pd.DataFrame(
        {"latent": np.arange(n_lat), "n_fires": n_fires, "frequency": n_fires / max(n_rows, 1)}
    )
    for col in ("concept", "concept_kind", "best_f1_concept"):
        frame[col] = None
    frame["auroc"] = np.nan
    frame["f1"] = np.nan
    frame["best_f1"] = np.nan
    usable = (labels.values & labels.defined).sum(0) >= min_positives
    usable &= (~labels.values & labels.defined).sum(0) >= 1
    active = np.flatnonzero(n_fires >= min_fires)
    if len(active) == 0 or not usable.any():
        return frame
    cols = np.flatnonzero(usable)
    sub = labels.columns(cols)
    auc = auroc_matrix(csc[:, active], sub)
    f1 = f1_matrix(csc[:, active], sub)
    auc_f = np.where(np.isnan(auc), -np.inf, auc)
    best = _best(auc_f, f1)
    best_f1 = f1.argmax(1)
    idx = np.arange(len(active))
    frame.loc[active, "concept"] = [sub.names[c] for c in best]
    frame.loc[active, "concept_kind"] = [sub.kinds[c] for c in best]
    frame.loc[active, "auroc"] = auc[idx, best]
    frame.loc[active, "f1"] = f1[idx, best]
    frame.loc[active, "best_f1_concept"] = [sub.names[c] for c in best_f1]
    frame.loc[active, "best_f1"] = f1[idx, best_f1]
    return frame


def _best(auc: np.ndarray, f1: np.ndarray) -> np.ndarray:
    """Per row: the column of highest AUROC, ties broken by higher F1."""
    top = auc.max(1, keepdims=True)
    cand = np.where(np.isclose(auc, top, rtol=0, atol=1e-12), f1, -np.inf)
    return np.asarray(cand.argmax(1), dtype=np.int64)
