import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from medsae.metrics.classification import (
    balanced_accuracy,
    classification_report,
    f1_macro,
    macro_roc_auc,
    roc_auc,
    roc_auc_columns,
)


def test_roc_auc_known_cases() -> None:
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert roc_auc(y, np.zeros(4)) == 0.5  # all tied
    assert np.isnan(roc_auc(np.ones(3), np.arange(3.0)))


def test_roc_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.3
    s = rng.integers(0, 5, size=(300, 4)).astype(float)
    cols = roc_auc_columns(y, s)
    for k in range(4):
        assert cols[k] == pytest.approx(roc_auc_score(y, s[:, k]))
        assert roc_auc(y, s[:, k]) == pytest.approx(roc_auc_score(y, s[:, k]))


def test_multiclass_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 200)
    scores = rng.normal(size=(200, 3)) + np.eye(3)[labels]
    own = np.mean([roc_auc_score(labels == k, scores[:, k]) for k in range(3)])
    assert macro_roc_auc(labels, scores) == pytest.approx(own)
    pred = scores.argmax(1)
    assert balanced_accuracy(labels, pred, 3) == pytest.approx(
        balanced_accuracy_score(labels, pred)
    )
    assert f1_macro(labels, pred, 3) == pytest.approx(f1_score(labels, pred, average="macro"))


def test_binary_report_uses_sign_of_single_column() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([-2.0, 1.0, 3.0, 0.5, -0.1])[:, None]
    rep = classification_report(labels, scores, 2)
    pred = (scores[:, 0] > 0).astype(int)
    assert rep["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, pred))
    assert rep["f1"] == pytest.approx(f1_score(labels, pred, average="macro"))
    assert rep["roc_auc"] == pytest.approx(roc_auc_score(labels, scores[:, 0]))
