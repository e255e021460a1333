"""Performance recovery: how much of the dense probe's ROC-AUC N sparse latents keep.

Every kept task has one one-vs-rest classifier per class (one for a binary task). Latents are
ranked on the training sample in one of two modes:

* ``per_class``: each classifier ranks the latents for itself, so a K-class task uses up to
  K*N latents in all. Rules (``method``):

  * ``l1``: order of entry on an L1-regularised logistic path (class-balanced log-loss, the
    scaled codes of :func:`medsae.evaluate.probes.scale_sparse`); lambda decreases
    geometrically from ``lambda_max = max_j |X_j^T s (1/2 - y)|`` (no latent active) over
    ``path_length`` values down to ``ratio * lambda_max``; a latent's rank is the first lambda
    at which its weight is non-zero, ties broken by the weight's magnitude there, then
    latents that never entered by ``|X_j^T s (1/2 - y)|``;
  * ``mean_diff``: ``|mean(pos) - mean(neg)|`` of the raw codes (SAEBench-style probing).

* ``shared`` (the paper's rule, method ``coef``): one ranking per task, by the mean over the
  task's classifiers of ``|w_jc|``, the coefficients of the full sparse probe (scaled codes);
  every class uses the same N latents.

For each N, an L2 logistic classifier is refitted per class on its top-N latents only (L2
strength fixed by ``C``, or chosen on validation, as for the full probes) and scored. Reported per task, method,
mode, N and evaluation split::

    ROC-AUC(N),   recovery(N) = ROC-AUC(N) / dense ROC-AUC   (the paper's ratio),
    recovery_above_chance(N) = (ROC-AUC(N) - 1/2) / (dense ROC-AUC - 1/2),

and ``above_floor``: whether the task's dense validation ROC-AUC reaches ``dense_floor``
(the paper skips targets below 0.55; summaries average over ``above_floor`` rows only).

:func:`mean_features_to_threshold` turns the curves into the paper's Table 1 term.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from medsae.evaluate.config import EvaluateConfig
from medsae.evaluate.headline import (  # noqa: F401  (re-exported)
    RECOVERY_THRESHOLDS,
    mean_features_to_threshold,
    task_blocks,
)
from medsae.evaluate.linear import (
    Design,
    balanced_weights,
    block_decision,
    fit_logistic_blocks,
    fixed_c_lambda,
    threads_for,
)
from medsae.evaluate.paper import PAPER_TASKS  # noqa: F401  (re-exported)
from medsae.evaluate.probes import HeadTable, check_l2_select, select_by_validation
from medsae.evaluate.tasks import Task
from medsae.metrics.classification import classification_report, roc_auc

BLOCK_ELEMENTS = 48_000_000  # floats per gathered (heads, rows, N) block (~190 MB)


def shared_ranking(coef_dh: np.ndarray, heads: HeadTable, n_top: int) -> np.ndarray:
    """Top-``n_top`` columns per head, shared by every head of a task, ``(H, n_top)``.

    A task's latents are ordered by ``mean over its heads h of |coef_dh[j, h]|`` (ties: lower
    column), the paper's ranking of a multi-class probe; every head of the task gets it.
    """
    coef = np.abs(np.asarray(coef_dh, dtype=np.float64))
    if coef.ndim != 2 or coef.shape[1] != heads.n_heads:
        raise ValueError(
            f"coef: expected (latents, {heads.n_heads}) probe weights, got shape {coef.shape}"
        )
    out = np.empty((heads.n_heads, min(n_top, coef.shape[0])), dtype=np.int64)
    for sl in heads.slices:
        score = coef[:, sl].mean(1)
        order = np.lexsort((np.arange(len(score)), -score))[: out.shape[1]]
        out[sl] = order
    return out


def mean_diff_ranking(
    x_raw: sp.csr_matrix, y_nh: np.ndarray, valid_nh: np.ndarray, n_top: int
) -> np.ndarray:
    """Top-``n_top`` columns per head by ``|mean over positives - mean over negatives|``, ``(H, n_top)``."""
    pos = (y_nh > 0) & valid_nh
    neg = (y_nh <= 0) & valid_nh
    w = pos / np.maximum(pos.sum(0), 1) - neg / np.maximum(neg.sum(0), 1)
    diff_dh = np.abs(np.asarray(x_raw.T @ w.astype(np.float64)))
    order = np.argsort(-diff_dh, axis=0, kind="stable")[:n_top]
    return np.ascontiguousarray(order.T)


def _power_lipschitz(
    design: Design, s_nh: torch.Tensor, iters: int = 15, seed: int = 0
) -> torch.Tensor:
    """Largest eigenvalue of X^T diag(s_h) X per head (power iteration)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(design.d, s_nh.shape[1], generator=g)
    v /= v.norm(dim=0, keepdim=True)
    eig = torch.ones(s_nh.shape[1])
    for _ in range(iters):
        u = design.tmm(s_nh * design.mm(v))
        eig = u.norm(dim=0)
        v = u / eig.clamp_min(1e-12)
    return eig


def l1_path_ranking(
    x_scaled: sp.csr_matrix,
    y_nh: np.ndarray,
    weights_nh: np.ndarray,
    n_top: int,
    path_length: int = 20,
    ratio: float = 1e-3,
    iters: int = 20,
    seed: int = 0,
) -> np.ndarray:
    """Top-``n_top`` columns per head by order of entry on an L1 logistic path, ``(H, n_top)``.

    Proximal gradient with momentum (FISTA) for every head at once, warm-started along the path;
    the path stops early once every head has ``n_top`` active latents. See the module docstring.
    """
    design = Design(x_scaled)
    with threads_for(max(design.n, design.d) * y_nh.shape[1]):
        return _l1_path(design, y_nh, weights_nh, n_top, path_length, ratio, iters, seed)


def _l1_path(
    design: Design,
    y_nh: np.ndarray,
    weights_nh: np.ndarray,
    n_top: int,
    path_length: int,
    ratio: float,
    iters: int,
    seed: int,
) -> np.ndarray:
    y = torch.from_numpy(np.asarray(y_nh, dtype=np.float32))
    s = torch.from_numpy(np.asarray(weights_nh, dtype=np.float32))
    n_heads = y.shape[1]
    grad0 = design.tmm(s * (0.5 - y)).abs()  # (d, H)
    lam_max = grad0.max(0).values.clamp_min(1e-12)
    step = 1.0 / (0.25 * (_power_lipschitz(design, s, seed=seed) + 1.0) * 1.05)
    w = torch.zeros(design.d, n_heads)
    b = torch.zeros(n_heads)
    entry = torch.full((design.d, n_heads), path_length, dtype=torch.int64)
    mag = torch.zeros(design.d, n_heads)
    for k, frac in enumerate(np.geomspace(1.0, ratio, path_length)):
        lam = lam_max * float(frac)
        w_prev, b_prev = w.clone(), b.clone()
        v_w, v_b, t = w.clone(), b.clone(), 1.0
        for _ in range(iters):
            r = s * (torch.sigmoid(design.mm(v_w) + v_b) - y)
            u = v_w - step * design.tmm(r)
            w_new = torch.sign(u) * (u.abs() - step * lam).clamp_min(0.0)
            b_new = v_b - step * r.sum(0)
            t_new = (1 + (1 + 4 * t * t) ** 0.5) / 2
            v_w = w_new + ((t - 1) / t_new) * (w_new - w_prev)
            v_b = b_new + ((t - 1) / t_new) * (b_new - b_prev)
            w_prev, b_prev, w, b, t = w_new, b_new, w_new, b_new, t_new
        new = (w != 0) & (entry == path_length)
        entry[new] = k
        mag[new] = w.abs()[new]
        if bool(((entry < path_length).sum(0) >= n_top).all()):
            break
    # Sort key per head: entry step, then larger magnitude at entry, then larger |grad at 0|.
    e = entry.numpy().astype(np.float64)
    m = mag.numpy() / (mag.numpy().max(0, keepdims=True) + 1e-12)
    g0 = grad0.numpy() / (grad0.numpy().max(0, keepdims=True) + 1e-12)
    out = np.empty((n_heads, min(n_top, design.d)), dtype=np.int64)
    for h in range(n_heads):
        order = np.lexsort((-g0[:, h], -m[:, h], e[:, h]))
        out[h] = order[: out.shape[1]]
    return out


def _gather(x_csc: sp.csc_matrix, ranking_hk: np.ndarray) -> np.ndarray:
    """Dense block ``(H, n, K)``: head h's columns ``ranking_hk[h]`` of ``x``."""
    h, k = ranking_hk.shape
    block = x_csc[:, ranking_hk.reshape(-1)].toarray().astype(np.float32)
    return np.ascontiguousarray(block.reshape(x_csc.shape[0], h, k).transpose(1, 0, 2))


@dataclass
class RecoveryScores:
    """The refitted classifiers' scores of one ranking rule: ``(N, split) -> (rows, heads)``."""

    method: str
    mode: str
    scores: dict[tuple[int, str], np.ndarray]


def recovery_scores(
    features: Mapping[str, sp.csr_matrix],
    raw_train: sp.csr_matrix,
    rows: Mapping[str, np.ndarray],
    tasks: Sequence[Task],
    ns: Sequence[int],
    methods: Sequence[str] = ("l1", "mean_diff"),
    l2_grid: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1),
    max_iter: int = 100,
    path_length: int = 20,
    path_ratio: float = 1e-3,
    path_iter: int = 20,
    seed: int = 0,
    modes: Sequence[str] = ("per_class",),
    coef: np.ndarray | None = None,
    l2_select: str = "fixed",
    probe_c: float = 1.0,
) -> tuple[HeadTable, list[RecoveryScores]]:
    """Rank the latents and refit every head on its top N, for every rule and N.

    Parameters as :func:`performance_recovery`; returns the heads and, per rule, the scores
    of every evaluation split (the input of :func:`task_rows` and
    :func:`medsae.evaluate.headline.target_rows`).
    """
    check_l2_select(l2_select)
    heads = HeadTable.build(tasks)
    if not tasks:
        return heads, []
    for mode in modes:
        if mode not in ("per_class", "shared"):
            raise ValueError(f"unknown recovery mode {mode!r}; expected 'per_class' or 'shared'")
    if "shared" in modes and coef is None:
        raise ValueError("coef: the shared mode needs the full sparse probe's weights")
    y, valid = heads.targets(rows["train"])
    weights = balanced_weights(y, valid)
    n_cols = features["train"].shape[1]
    n_max = min(max(ns), n_cols)
    ns_eff = sorted({min(n, n_cols) for n in ns})
    if l2_select == "fixed":
        lam = fixed_c_lambda(valid, probe_c)[:, None]  # (H, 1): one strength per head
    else:
        lam = np.array(sorted(l2_grid, reverse=True), dtype=np.float32)
    eval_splits = [sp_ for sp_ in features if sp_ != "train"]
    csc = {k: sp.csc_matrix(v, dtype=np.float32) for k, v in features.items()}
    yv, vv = heads.targets(rows["val"])
    vv = vv.astype(bool)
    plans: list[tuple[str, str]] = [(m, "per_class") for m in methods if "per_class" in modes]
    if "shared" in modes:
        plans.append(("coef", "shared"))
    out: list[RecoveryScores] = []
    for method, mode in plans:
        if method == "l1":
            ranking = l1_path_ranking(
                features["train"], y, weights, n_max, path_length, path_ratio, path_iter, seed
            )
        elif method == "mean_diff":
            ranking = mean_diff_ranking(raw_train, y, valid, n_max)
        elif method == "coef" and coef is not None:
            ranking = shared_ranking(coef, heads, n_max)
        else:
            raise ValueError(f"unknown recovery method {method!r}; expected 'l1' or 'mean_diff'")
        n_rows = sum(v.shape[0] for v in features.values())
        chunk = max(1, BLOCK_ELEMENTS // max(n_rows * n_max, 1))
        scores = {
            (n, sp_): np.zeros((len(rows[sp_]), heads.n_heads), np.float32)
            for n in ns_eff
            for sp_ in eval_splits
        }
        for lo in range(0, heads.n_heads, chunk):
            hs = np.arange(lo, min(lo + chunk, heads.n_heads))
            blocks = {k: _gather(csc[k], ranking[hs]) for k in csc}
            lam_block = lam[hs] if lam.ndim == 2 else lam
            init: tuple[np.ndarray, np.ndarray] | None = None
            for n in ns_eff:  # increasing N: each fit starts from the previous one
                w, b = fit_logistic_blocks(
                    blocks["train"][:, :, :n], y[:, hs], weights[:, hs], lam_block, max_iter, init
                )
                init = (w, b)
                z_val = block_decision(blocks["val"][:, :, :n], w, b)  # (h, n_val, G)
                if l2_select == "fixed":
                    best = np.zeros(len(hs), dtype=np.int64)
                else:
                    auc = np.array(
                        [
                            [
                                roc_auc(yv[vv[:, h], h], z_val[i, vv[:, h], g])
                                for g in range(len(lam))
                            ]
                            for i, h in enumerate(hs)
                        ]
                    )
                    best = select_by_validation(auc)
                for sp_ in eval_splits:
                    z = z_val if sp_ == "val" else block_decision(blocks[sp_][:, :, :n], w, b)
                    scores[(n, sp_)][:, hs] = z[np.arange(len(hs)), :, best].T
        out.append(RecoveryScores(method, mode, scores))
    return heads, out


def task_rows(
    heads: HeadTable,
    rows: Mapping[str, np.ndarray],
    scored: Sequence[RecoveryScores],
    dense_auc: Mapping[tuple[str, str], float],
    dense_floor: float = 0.55,
) -> list[dict[str, Any]]:
    """One row per task, rule, N and split: macro ROC-AUC(N), recovery, ``above_floor``."""
    results: list[dict[str, Any]] = []
    for rs, n, sp_, task, lab, block in task_blocks(heads, rows, scored):
        rep = classification_report(lab, block, task.n_classes)
        dense = float(dense_auc.get((task.name, sp_), np.nan))
        dense_val = float(dense_auc.get((task.name, "val"), np.nan))
        results.append(
            {
                "task": task.name,
                "kind": task.kind,
                "method": rs.method,
                "mode": rs.mode,
                "n_features": n,
                "split": sp_,
                "roc_auc": rep["roc_auc"],
                "balanced_accuracy": rep["balanced_accuracy"],
                "f1": rep["f1"],
                "dense_roc_auc": dense,
                "recovery": rep["roc_auc"] / dense if dense > 0 else float("nan"),
                "recovery_above_chance": (rep["roc_auc"] - 0.5) / (dense - 0.5)
                if dense > 0.5
                else float("nan"),
                "above_floor": bool(dense_val >= dense_floor),
            }
        )
    results.sort(key=lambda r: (r["n_features"], r["split"]))
    return results


def performance_recovery(
    features: Mapping[str, sp.csr_matrix],
    raw_train: sp.csr_matrix,
    rows: Mapping[str, np.ndarray],
    tasks: Sequence[Task],
    dense_auc: Mapping[tuple[str, str], float],
    ns: Sequence[int],
    methods: Sequence[str] = ("l1", "mean_diff"),
    l2_grid: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1),
    max_iter: int = 100,
    path_length: int = 20,
    path_ratio: float = 1e-3,
    path_iter: int = 20,
    seed: int = 0,
    modes: Sequence[str] = ("per_class",),
    coef: np.ndarray | None = None,
    dense_floor: float = 0.55,
    l2_select: str = "fixed",
    probe_c: float = 1.0,
) -> list[dict[str, Any]]:
    """ROC-AUC(N) and recovery(N) per task, selection method and mode, N and evaluation split.

    ``features`` are the scaled codes per split (``'train'``, ``'val'``, ...), ``raw_train`` the
    unscaled training codes with the same columns (for ``mean_diff``), ``dense_auc`` maps
    ``(task, split)`` to the dense probe's ROC-AUC. ``modes``: ``per_class`` runs every rule
    of ``methods``; ``shared`` runs the ``coef`` rule, which needs ``coef`` ``(latents, heads)``,
    the full sparse probe's weights on the same scaled columns. ``dense_floor``: a task whose
    dense validation ROC-AUC is below it gets ``above_floor = False``. ``l2_select``:
    ``"fixed"`` refits with ``C = probe_c``; ``"val"`` keeps the strength of ``l2_grid`` with
    the best validation ROC-AUC per head.
    """
    heads, scored = recovery_scores(
        features, raw_train, rows, tasks, ns, methods, l2_grid, max_iter, path_length,
        path_ratio, path_iter, seed, modes, coef, l2_select, probe_c,
    )  # fmt: skip
    return task_rows(heads, rows, scored, dense_auc, dense_floor)


def recovery_with_config(
    features: Mapping[str, sp.csr_matrix],
    raw_train: sp.csr_matrix,
    rows: Mapping[str, np.ndarray],
    tasks: Sequence[Task],
    cfg: EvaluateConfig,
    coef: np.ndarray | None = None,
) -> tuple[HeadTable, list[RecoveryScores]]:
    """:func:`recovery_scores` with every setting taken from an ``EvaluateConfig``."""
    return recovery_scores(
        features,
        raw_train,
        rows,
        tasks,
        cfg.recovery_ns,
        cfg.recovery_methods,
        cfg.recovery_l2_grid,
        max_iter=cfg.recovery_max_iter,
        path_length=cfg.l1_path_length,
        path_ratio=cfg.l1_path_ratio,
        path_iter=cfg.l1_iter,
        seed=cfg.seed,
        modes=cfg.recovery_modes,
        coef=coef,
        l2_select=cfg.l2_select,
        probe_c=cfg.probe_c,
    )
