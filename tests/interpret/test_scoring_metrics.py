"""Metrics and sampling of the description scores, on constructed data."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.metrics import f1_score as sk_f1

from medsae.interpret.scoring import (
    CodeSpace,
    best_threshold,
    detection_rates,
    detection_sample,
    rank_of_true,
    ranking_slices,
    ranking_summary,
    score_detection,
    score_ranking,
)
from medsae.metrics.classification import binary_balanced_accuracy as balanced_accuracy
from medsae.metrics.classification import binary_f1 as f1_score
from medsae.metrics.classification import roc_auc as auroc


def test_balanced_accuracy_by_hand() -> None:
    y = [1, 1, 1, 1, 0, 0]
    p = [1, 1, 1, 0, 0, 1]
    # TPR = 3/4, TNR = 1/2
    assert balanced_accuracy(y, p) == pytest.approx((0.75 + 0.5) / 2)
    assert np.isnan(balanced_accuracy([1, 1], [1, 0]))


def test_f1_by_hand() -> None:
    y = [1, 1, 1, 0, 0]
    p = [1, 0, 1, 1, 0]
    # TP 2, FP 1, FN 1 -> 4 / 6
    assert f1_score(y, p) == pytest.approx(4 / 6)
    assert f1_score([0, 0], [0, 0]) == 0.0


def test_auroc_by_hand_with_ties() -> None:
    y = [1, 1, 0, 0]
    s = [0.9, 0.5, 0.5, 0.1]
    # pairs (pos, neg): (0.9,0.5)=1 (0.9,0.1)=1 (0.5,0.5)=0.5 (0.5,0.1)=1 -> 3.5/4
    assert auroc(y, s) == pytest.approx(3.5 / 4)
    assert auroc(y, [1, 1, 1, 1]) == pytest.approx(0.5)
    assert np.isnan(auroc([0, 0], [0.1, 0.2]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_agree_with_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.random(200) < 0.3
    s = np.round(rng.random(200) + 0.5 * y, 1)  # ties on purpose
    p = s > 0.7
    assert balanced_accuracy(y, p) == pytest.approx(balanced_accuracy_score(y, p))
    assert f1_score(y, p) == pytest.approx(sk_f1(y, p))
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_best_threshold_separates_separable_scores() -> None:
    y = np.array([0, 0, 0, 1, 1, 1], bool)
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8])
    th = best_threshold(y, s)
    assert 0.3 < th < 0.6
    assert balanced_accuracy(y, s >= th) == 1.0


def test_rank_of_true_and_summary() -> None:
    assert rank_of_true([0.1, 0.9, 0.5], 1) == 1.0
    assert rank_of_true([0.1, 0.9, 0.5], 0) == 3.0
    assert rank_of_true([0.5, 0.5, 0.1], 0) == 1.5  # ties share the average rank
    summary = ranking_summary([1, 2, 3, 5, float("nan")], n_choices=5)
    assert summary["top2"] == pytest.approx(0.5)
    assert summary["mean_rank"] == pytest.approx(11 / 4)
    assert summary["chance_top2"] == pytest.approx(0.4)
    assert summary["n"] == 4


def _codes() -> tuple[sp.csr_matrix, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 400
    dense = np.zeros((n, 6), np.float32)
    active = rng.random(n) < 0.25
    dense[active, 0] = rng.uniform(0.5, 2.0, active.sum())
    dense[:, 1:] = (rng.random((n, 5)) < 0.3) * rng.uniform(0.1, 1, (n, 5))
    dense[active, 1] += 1.0  # latent 1 co-fires with latent 0: hard negatives share it
    return sp.csr_matrix(dense), active


def test_detection_sample_draws_positives_and_hard_negatives() -> None:
    codes, active = _codes()
    space = CodeSpace(codes)
    rows = np.arange(200, 400)
    sample = detection_sample(space, 0, rows, n_positive=10, n_hard=5, n_random=5, seed=3)
    assert set(sample.rows) <= set(rows)
    assert len(set(sample.rows)) == len(sample.rows) == 20
    assert np.array_equal(sample.positive, active[sample.rows])
    assert sample.positive.sum() == 10
    hard = sample.rows[sample.kind == "hard"]
    assert not active[hard].any()
    # hard negatives are closer to the positives than random inactive slices on average
    unit = space.unit
    pos = sample.rows[sample.positive]
    sim_hard = (unit[hard] @ unit[pos].T).max(axis=1).toarray().mean()
    inactive = rows[~active[rows]]
    sim_all = (unit[inactive] @ unit[pos].T).max(axis=1).toarray().mean()
    assert sim_hard > sim_all
    # positives span the activation range (drawn across quantile bins)
    values = codes[pos, 0].toarray().ravel()
    all_values = codes[rows[active[rows]], 0].toarray().ravel()
    assert values.min() <= np.quantile(all_values, 0.15) and values.max() >= np.quantile(
        all_values, 0.85
    )
    again = detection_sample(space, 0, rows, n_positive=10, n_hard=5, n_random=5, seed=3)
    assert np.array_equal(again.rows, sample.rows)


def test_detection_sample_hard_negatives_from_other_series() -> None:
    codes, active = _codes()
    space = CodeSpace(codes)
    rows = np.arange(200, 400)
    series = np.arange(400) // 10  # stacks of 10 neighbouring rows
    kw = {"n_positive": 10, "n_hard": 5, "n_random": 5, "seed": 3}
    free = detection_sample(space, 0, rows, **kw)
    split = detection_sample(space, 0, rows, series=series, **kw)
    assert np.array_equal(free.rows[free.positive], split.rows[split.positive])
    hard = split.rows[split.kind == "hard"]
    assert len(hard) == 5 and not active[hard].any()
    positive_series = set(series[split.rows[split.positive]])
    assert not positive_series & set(series[hard])  # never a neighbour of a positive
    # without series the nearest inactive rows include neighbours of positives
    assert positive_series & set(series[free.rows[free.kind == "hard"]])


class _Oracle:
    """Scores a slice by whether it truly activates (a perfect description)."""

    name = "oracle"
    calibrated = True

    def __init__(self, truth: np.ndarray, flip: bool = False) -> None:
        self.truth = truth
        self.flip = flip

    def detect(self, description: str, rows: np.ndarray) -> tuple[np.ndarray, None]:
        t = self.truth[rows].astype(float)
        return (1 - t if self.flip else t), None

    def rank(self, descriptions: list[str], rows: np.ndarray) -> np.ndarray:
        return np.array([1.0 if d == "true" else 0.0 for d in descriptions])


def test_score_detection_perfect_and_inverted() -> None:
    codes, active = _codes()
    space = CodeSpace(codes)
    train, held = np.arange(200), np.arange(200, 400)
    good = score_detection(_Oracle(active), "x", 0, space, held, calibration_rows=train)
    assert good.balanced_accuracy == 1.0 and good.f1 == 1.0 and good.auroc == 1.0
    bad = score_detection(_Oracle(active, flip=True), "x", 0, space, held, calibration_rows=train)
    assert bad.auroc == 0.0 and bad.balanced_accuracy <= 0.5
    few = score_detection(_Oracle(active), "x", 0, space, held[:3], min_positive=3)
    assert np.isnan(few.balanced_accuracy) and few.error
    assert good.rates == {"tpr_strong": 1.0, "tpr_weak": 1.0, "tnr_hard": 1.0, "tnr_random": 1.0}


def test_detection_rates_split_positives_by_activation_and_negatives_by_kind() -> None:
    codes, _active = _codes()
    space = CodeSpace(codes)
    sample = detection_sample(space, 0, np.arange(200, 400), n_positive=10, n_hard=4, n_random=4)
    values = codes[sample.rows[sample.positive], 0].toarray().ravel()
    assert np.all(np.diff(values) >= 0)  # positives come in rising activation order
    # say yes to the strongest positives only and to every hard negative
    decisions = np.zeros(len(sample.rows), dtype=bool)
    decisions[np.flatnonzero(sample.positive)[-3:]] = True
    decisions[sample.kind == "hard"] = True
    rates = detection_rates(sample, decisions)
    assert rates == {"tpr_strong": 3 / 5, "tpr_weak": 0.0, "tnr_hard": 0.0, "tnr_random": 1.0}


def test_score_ranking_finds_true_description() -> None:
    codes, _ = _codes()
    space = CodeSpace(codes)
    subjects = np.arange(codes.shape[0]) // 4
    descriptions = {0: "true", 1: "a", 2: "b", 3: "c", 4: "d", 5: "e"}
    ranks = score_ranking(
        _Oracle(np.zeros(400, bool)), descriptions, space, np.arange(400), subjects
    )
    assert ranks[0] == 1.0
    rows = ranking_slices(space, 0, np.arange(400), subjects, 5)
    assert len(rows) == 5 and len(set(subjects[rows])) == 5
