"""Headline figures of the recovery curves: per-target rows, the Table 1 term, summary means.

Two kinds of rows feed them:

* per task (``recovery.parquet``, :func:`medsae.evaluate.recovery.task_rows`): the task's
  macro ROC-AUC over its classes;
* per target (``recovery_targets.parquet``, :func:`target_rows`): each class of each task
  against the rest of its task (binary ROC-AUC), the unit of the paper's figures. The
  denominator is the dense probe's ROC-AUC of the same target and split; ``above_floor``
  holds when the target's dense *validation* ROC-AUC reaches the floor.

:func:`recovery_figures` turns both into the summary figures of one split.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medsae.evaluate.config import EvaluateConfig
from medsae.evaluate.probes import HeadTable, target_score
from medsae.metrics.classification import roc_auc

if TYPE_CHECKING:
    from medsae.evaluate.recovery import RecoveryScores
    from medsae.evaluate.tasks import Task

RECOVERY_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
"""Fractions of the dense ROC-AUC of the paper's Table 1 term."""
HEADLINE_N = 10
TARGET_COLUMNS = [
    "task",
    "target",
    "paper",
    "method",
    "mode",
    "n_features",
    "split",
    "roc_auc",
    "dense_roc_auc",
    "dense_val_roc_auc",
    "recovery",
    "above_floor",
]


def mean_features_to_threshold(
    curves: Sequence[tuple[str, int, float, float]],
    ns: Sequence[int],
    thresholds: Sequence[float] = RECOVERY_THRESHOLDS,
    dense_min: float = 0.6,
    unmet: str = "paper",
) -> float | None:
    """The paper's Table 1 performance term: mean N needed to reach each fraction of dense.

    ``curves`` holds ``(target, N, roc_auc(N), dense roc_auc)`` rows. For every target with
    dense ROC-AUC ``> dense_min`` and every threshold ``t``, ``N_t`` = the smallest N with
    ``roc_auc(N) / dense >= t``. A threshold a target never reaches counts
    (``unmet = "paper"``, the paper's ``evaluate_sae_configs.py``) the largest ``N_t`` that
    any target needed for that threshold, plus one, or ``max(ns)`` when no target reached it;
    (``unmet = "grid"``) ``max(ns) + 1``. The result is the mean over targets and thresholds;
    lower is better. ``None`` when no target passes the filter.
    """
    if unmet not in ("paper", "grid"):
        raise ValueError(f"unmet: expected 'paper' or 'grid', got {unmet!r}")
    by_target: dict[str, list[tuple[int, float, float]]] = {}
    for target, n, auc, dense in curves:
        by_target.setdefault(str(target), []).append((int(n), float(auc), float(dense)))
    table: list[list[float]] = []
    for rows in by_target.values():
        dense = rows[0][2]
        if not np.isfinite(dense) or dense <= dense_min:
            continue
        met = []
        for t in thresholds:
            hits = [n for n, auc, _ in rows if np.isfinite(auc) and auc / dense >= t]
            met.append(float(min(hits)) if hits else np.nan)
        table.append(met)
    if not table:
        return None
    arr = np.asarray(table, dtype=np.float64)
    n_max = float(max(ns))
    for c in range(arr.shape[1]):
        col = arr[:, c]
        if unmet == "grid":
            fill = n_max + 1
        else:
            fill = float(np.nanmax(col)) + 1 if np.isfinite(col).any() else n_max
        col[~np.isfinite(col)] = fill
    return float(arr.mean())


def task_blocks(
    heads: HeadTable, rows: Mapping[str, np.ndarray], scored: Sequence[RecoveryScores]
) -> Iterator[tuple[RecoveryScores, int, str, Task, np.ndarray, np.ndarray]]:
    """``(rule, N, split, task, labels, scores)`` for every rule, N, split and task: the
    task's labelled rows of the split and its heads' scores there."""
    for rs in scored:
        for (n, sp_), score in rs.scores.items():
            for t, task in enumerate(heads.tasks):
                lab = task.labels[rows[sp_]]
                m = lab >= 0
                yield rs, n, sp_, task, lab[m], score[m][:, heads.slices[t]]


def target_rows(
    heads: HeadTable,
    rows: Mapping[str, np.ndarray],
    scored: Sequence[RecoveryScores],
    dense_target_auc: Mapping[tuple[str, str, str], float],
    dense_floor: float = 0.55,
    paper: Collection[tuple[str, str]] = (),
) -> list[dict[str, Any]]:
    """One row per target (class of a task against the rest of it), rule, N and split.

    ``dense_target_auc`` maps ``(task, class, split)`` to the dense probe's ROC-AUC of that
    target (:func:`medsae.evaluate.probes.target_aucs`); ``paper``: the ``(task, class)``
    pairs of the paper's target list (``paper`` column).
    """
    out: list[dict[str, Any]] = []
    for rs, n, sp_, task, lab, block in task_blocks(heads, rows, scored):
        for k, cls in enumerate(task.classes):
            auc = roc_auc(lab == k, target_score(task, k, block))
            dense = float(dense_target_auc.get((task.name, cls, sp_), np.nan))
            dense_val = float(dense_target_auc.get((task.name, cls, "val"), np.nan))
            out.append(
                {
                    "task": task.name,
                    "target": cls,
                    "paper": (task.name, cls) in paper,
                    "method": rs.method,
                    "mode": rs.mode,
                    "n_features": n,
                    "split": sp_,
                    "roc_auc": auc,
                    "dense_roc_auc": dense,
                    "dense_val_roc_auc": dense_val,
                    "recovery": auc / dense if dense > 0 else float("nan"),
                    "above_floor": bool(dense_val >= dense_floor),
                }
            )
    return out


def mean_finite(values: Any) -> float | None:
    """Mean of the finite values (None when there are none)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if len(arr) else None


def _table1(sub: pd.DataFrame, key: str, cfg: EvaluateConfig, dense_col: str) -> float | None:
    return mean_features_to_threshold(
        list(zip(sub[key], sub["n_features"], sub["roc_auc"], sub[dense_col], strict=True)),
        cfg.recovery_ns,
        dense_min=cfg.table1_dense_min,
        unmet=cfg.table1_unmet,
    )


def recovery_figures(
    frame: pd.DataFrame,
    cfg: EvaluateConfig,
    split: str,
    targets: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Summary figures of the recovery curves on one split.

    Per task (tasks above the dense floor):

    * ``recovery_at_10`` / ``roc_auc_at_10`` / ``recovery_above_chance_at_10``: mean over
      tasks at N = 10 in the shared mode (at most 10 latents per task; None when the shared
      mode was not run);
    * ``recovery_at_10_per_class`` (and ``roc_auc_...``, ``recovery_above_chance_...``): the
      same per class, ``headline_method`` (a K-class task may use K x 10 latents);
      ``recovery_at_10_<method>`` for the other per-class rules;
    * ``mean_n_features``: the paper's Table 1 term on the curves of ``table1_mode``, and
      ``mean_n_features_<mode>`` for each mode run;
    * ``recovery_curve``: ``{method: {N: mean recovery}}`` (per class) and ``{"shared": ...}``.

    Per target of the paper's list (``targets``, the rows of :func:`target_rows`):

    * ``recovery_at_10_paper_tasks`` (shared) and ``recovery_at_10_per_class_paper_tasks``:
      mean recovery(10) over the paper's targets above the floor;
    * ``auc_at_10_mean``: mean ROC-AUC at N = 10 (shared) over the paper's targets whose
      dense validation ROC-AUC exceeds ``table1_dense_min`` (the paper's Figure 2G);
    * ``mean_n_features_paper_targets``: the Table 1 term over the paper's targets (shared);
    * ``n_paper_targets``: how many of the paper's targets the figures cover.
    """
    out: dict[str, Any] = {}
    on_split = frame[(frame["split"] == split) & frame["above_floor"].astype(bool)]
    per_class = on_split[on_split["mode"] == "per_class"]
    shared = on_split[on_split["mode"] == "shared"]
    curves: dict[str, dict[int, float | None]] = {
        str(method): {int(n): mean_finite(sub["recovery"]) for n, sub in per.groupby("n_features")}
        for method, per in per_class.groupby("method")
    }
    if not shared.empty:
        curves["shared"] = {
            int(n): mean_finite(sub["recovery"]) for n, sub in shared.groupby("n_features")
        }
    out["recovery_curve"] = curves
    at10 = on_split[on_split["n_features"] == HEADLINE_N]
    groups: list[tuple[str, pd.DataFrame | None]] = [
        ("", at10[at10["mode"] == "shared"] if "shared" in cfg.recovery_modes else None)
    ]
    for m in cfg.recovery_methods:
        suffix = "_per_class" if m == cfg.headline_method else f"_{m}"
        groups.append((suffix, at10[(at10["mode"] == "per_class") & (at10["method"] == m)]))
    for suffix, sub in groups:
        for fig, col in (
            ("recovery_at_10", "recovery"),
            ("roc_auc_at_10", "roc_auc"),
            ("recovery_above_chance_at_10", "recovery_above_chance"),
        ):
            out[f"{fig}{suffix}"] = None if sub is None else mean_finite(sub[col])
    out["n_recovery_tasks"] = int(on_split["task"].nunique())
    for mode in cfg.recovery_modes:
        sub = shared if mode == "shared" else per_class[per_class["method"] == cfg.headline_method]
        value = _table1(sub, "task", cfg, "dense_roc_auc")
        out[f"mean_n_features_{mode}"] = value
        if mode == cfg.table1_mode:
            out["mean_n_features"] = value
    out.setdefault("mean_n_features", None)
    out.update(paper_target_figures(targets, cfg, split))
    return out


def paper_target_figures(
    targets: pd.DataFrame | None, cfg: EvaluateConfig, split: str
) -> dict[str, Any]:
    """The ``*_paper_tasks`` figures, ``auc_at_10_mean`` and the paper-target Table 1 term."""
    keys = (
        "recovery_at_10_paper_tasks",
        "recovery_at_10_per_class_paper_tasks",
        "auc_at_10_mean",
        "mean_n_features_paper_targets",
    )
    out: dict[str, Any] = dict.fromkeys(keys)
    out["n_paper_targets"] = 0
    if targets is None or targets.empty:
        return out
    paper = targets[(targets["split"] == split) & targets["paper"].astype(bool)]
    floor = paper[paper["above_floor"].astype(bool)]
    key = floor["task"] + "=" + floor["target"]
    out["n_paper_targets"] = int(key.nunique())
    shared = floor[floor["mode"] == "shared"]
    per_class = floor[(floor["mode"] == "per_class") & (floor["method"] == cfg.headline_method)]
    at10 = shared[shared["n_features"] == HEADLINE_N]
    if not shared.empty:
        out["recovery_at_10_paper_tasks"] = mean_finite(at10["recovery"])
        strong = at10[at10["dense_val_roc_auc"] > cfg.table1_dense_min]
        out["auc_at_10_mean"] = mean_finite(strong["roc_auc"])
        named = shared.assign(key=shared["task"] + "=" + shared["target"])
        out["mean_n_features_paper_targets"] = _table1(named, "key", cfg, "dense_roc_auc")
    if not per_class.empty:
        out["recovery_at_10_per_class_paper_tasks"] = mean_finite(
            per_class.loc[per_class["n_features"] == HEADLINE_N, "recovery"]
        )
    return out
