"""How far descriptions made of labels can go in the detection protocol, on a workspace.

On a finished workspace (codes, slices, split and the interpret stage's descriptions of one
run), draws each described feature's held-out detection sample exactly as the interpret
stage does (``detection_sample`` with the stage's seed and sizes, hard negatives from other
stacks) and scores rules that read only a slice's labels (``build_label_table``: metadata,
scanner, structures, groups, position, coverage):

* ``label_or_pair_train``: per feature, the single label or the conjunction of two labels
  with the best balanced accuracy for "the feature is active" on *all* training slices,
  applied to the held-out sample;
* ``label_or_pair_train_near_miss``: the same, chosen by the mean of that balanced accuracy
  and the one on five near-miss training draws (as the offline describer does);
* ``tree_depth3``: a depth-3 decision tree on the labels plus structure areas, position
  along the axis, age and four image statistics (mean, spread, foreground share, median
  foreground intensity), fitted on five training draws (balanced class weights);
* ``count_rule``: the offline describer's own rule ("at least m of up to six literals",
  absent anatomy included; ``OfflineDescriber.count_rule`` with the stage's near-miss draws),
  a slice matching when it holds ``m`` of the literals;
* ``logistic_labels``: an L1 logistic regression on every label (and so on their absence),
  fitted on all training slices and the near-miss draws (balanced weights): a model over the
  label vocabulary with dozens of terms, not a description, to show what the labels hold;
* ``label_or_pair_oracle``: the best single label or pair chosen *with the held-out
  answers* (not a method: an upper bound for any one- or two-label description).

Reports the median and mean held-out balanced accuracy of each over the scored features, and
the stage's own figure from ``scores.json`` for comparison. Prints JSON and writes
``benchmarks/results/detection_bounds.json``.

    python benchmarks/detection_bounds.py --workspace demo-workspace
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from _workspace import workspace_run, write_result
from medsae.data.table import open_images, read_anatomy, slices_with_split
from medsae.interpret.config import InterpretConfig
from medsae.interpret.describe import NOT, OfflineDescriber
from medsae.interpret.io import SCORES, read_features
from medsae.interpret.scoring import CodeSpace, detection_draw, detection_sample, near_miss_sample
from medsae.labels.table import build_label_table
from medsae.metrics.classification import binary_balanced_accuracy as balanced_accuracy
from medsae.sae.codes_io import load_codes


def pair_scores(values: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Balanced accuracy of every label and of every pair of labels (conjunction)."""
    v = values.astype(np.float32)
    p, n = v[positive], v[~positive]
    single = (p.mean(0) + 1 - n.mean(0)) / 2
    pair = ((p.T @ p) / len(p) + 1 - (n.T @ n) / len(n)) / 2
    return single, pair


def pick(single: np.ndarray, pair: np.ndarray) -> tuple[int, ...]:
    """The best single label or pair (a pair only when strictly better)."""
    i = int(np.argmax(single))
    j = int(np.argmax(pair))
    if pair.ravel()[j] > single[i] + 1e-9:
        return tuple(int(x) for x in np.unravel_index(j, pair.shape))
    return (i,)


def rule_ba(values: np.ndarray, rule: tuple[int, ...], positive: np.ndarray) -> float:
    return balanced_accuracy(positive, values[:, list(rule)].all(axis=1))


def image_statistics(images: np.ndarray) -> np.ndarray:
    out = np.zeros((len(images), 4), dtype=np.float64)
    for start in range(0, len(images), 512):
        part = np.asarray(images[start : start + 512], dtype=np.float32)
        if part.ndim == 4:
            part = part.mean(-1)
        fg = part > 13
        out[start : start + 512, 0] = part.mean((1, 2))
        out[start : start + 512, 1] = part.std((1, 2))
        out[start : start + 512, 2] = fg.mean((1, 2))
        out[start : start + 512, 3] = [
            np.median(im[m]) if m.any() else 0 for im, m in zip(part, fg, strict=True)
        ]
    return out


def summary(values: list[float]) -> dict[str, Any]:
    v = np.asarray([x for x in values if np.isfinite(x)])
    return {"median": round(float(np.median(v)), 4), "mean": round(float(v.mean()), 4), "n": len(v)}


def main() -> None:
    args, ws, encoder, run = workspace_run(__doc__.splitlines()[0], "detection_bounds.json")
    cfg = InterpretConfig()
    table = slices_with_split(ws.slices, ws.split)
    anatomy = read_anatomy(ws.slices)
    images = open_images(ws.slices)
    labels = build_label_table(table, anatomy, images)
    values = labels.values
    space = CodeSpace(load_codes(ws.codes(encoder, run)))
    features = read_features(ws.features(encoder, run))
    described = features.loc[features["description"].notna(), "latent"].astype(int).tolist()
    split = table["split"].to_numpy()
    held = np.flatnonzero(np.isin(split, list(cfg.score_splits)))
    train = np.flatnonzero(split == "train")
    draw = detection_draw(cfg, table)
    area = np.nan_to_num(np.asarray(anatomy.area, dtype=np.float64))
    rel = pd.to_numeric(table["rel_position"], errors="coerce").to_numpy(dtype=np.float64)
    age = pd.to_numeric(table.get("age"), errors="coerce").to_numpy(dtype=np.float64)
    dense = np.nan_to_num(
        np.concatenate([values, area, rel[:, None], age[:, None], image_statistics(images)], 1),
        nan=-1.0,
    )
    results: dict[str, list[float]] = {
        "label_or_pair_train": [],
        "label_or_pair_train_near_miss": [],
        "tree_depth3": [],
        "count_rule": [],
        "logistic_labels": [],
        "label_or_pair_oracle": [],
    }
    n_terms: list[int] = []
    index = {n: i for i, n in enumerate(labels.names)}

    def contrast(latent: int) -> tuple[np.ndarray, np.ndarray]:
        near = near_miss_sample(space, latent, train, cfg, draw)
        return near.rows[near.positive], near.rows[~near.positive]

    describer = OfflineDescriber(labels, space.csc.tocsr(), train, contrast=contrast)
    for latent in described:
        held_sample = detection_sample(space, latent, held, seed=cfg.seed, **draw)
        pos = held_sample.positive
        if pos.sum() < cfg.min_positive or (~pos).sum() == 0:
            continue
        hv = values[held_sample.rows]
        rows, _ = space.active(latent, train)
        active_train = np.zeros(len(table), dtype=bool)
        active_train[rows] = True
        s_all, p_all = pair_scores(values[train], active_train[train])
        results["label_or_pair_train"].append(rule_ba(hv, pick(s_all, p_all), pos))
        near = near_miss_sample(space, latent, train, cfg, draw)
        near_rows, near_pos = near.rows, near.positive
        if near_pos.any() and (~near_pos).any():
            s_near, p_near = pair_scores(values[near_rows], near_pos)
            rule = pick((s_all + s_near) / 2, (p_all + p_near) / 2)
            tree = DecisionTreeClassifier(
                max_depth=3, class_weight="balanced", min_samples_leaf=3, random_state=0
            ).fit(dense[near_rows], near_pos)
            results["tree_depth3"].append(
                balanced_accuracy(pos, tree.predict(dense[held_sample.rows]))
            )
        else:
            rule = pick(s_all, p_all)
        results["label_or_pair_train_near_miss"].append(rule_ba(hv, rule, pos))
        literals, m = describer.count_rule(latent)
        if literals:
            held_literals = np.stack(
                [
                    ~hv[:, index[x[len(NOT) :]]] if x.startswith(NOT) else hv[:, index[x]]
                    for x in literals
                ],
                axis=1,
            )
            results["count_rule"].append(balanced_accuracy(pos, held_literals.sum(axis=1) >= m))
        else:
            results["count_rule"].append(0.5)
        fit_rows = np.concatenate([train, near_rows])
        y = np.concatenate([active_train[train], near_pos])
        groups = (active_train[train], near_pos)
        w = np.concatenate(
            [np.where(g, 0.5 / max(1, g.sum()), 0.5 / max(1, (~g).sum())) for g in groups]
        )
        if y.any() and not y.all():
            model = LogisticRegression(l1_ratio=1.0, solver="liblinear", C=1.0)
            model.fit(values[fit_rows], y, sample_weight=w * len(w))
            n_terms.append(int((model.coef_ != 0).sum()))
            results["logistic_labels"].append(
                balanced_accuracy(pos, model.predict(values[held_sample.rows]).astype(bool))
            )
        s_held, p_held = pair_scores(hv, pos)
        results["label_or_pair_oracle"].append(float(max(s_held.max(), p_held.max())))
    scores_file = ws.features(encoder, run) / SCORES
    stage = json.loads(scores_file.read_text()) if scores_file.is_file() else {}
    report = {
        "benchmark": "detection_bounds",
        "workspace": str(args.workspace),
        "encoder": encoder,
        "run": run,
        "labels": len(labels.names),
        "held_out_balanced_accuracy": {k: summary(v) for k, v in results.items()},
        "logistic_labels_terms_median": float(np.median(n_terms)) if n_terms else None,
        "stage": {
            "embedding_scorer": (stage.get("detection") or {}).get("balanced_accuracy"),
            "label_scorer": ((stage.get("detection_by_scorer") or {}).get("labels") or {}).get(
                "balanced_accuracy"
            ),
            "by_kind": (stage.get("detection") or {}).get("by_kind"),
        },
    }
    write_result(report, args.out)


if __name__ == "__main__":
    main()
