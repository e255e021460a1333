"""Metric formulas on data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from medsae.metrics.reconstruction import (
    ReconstructionAccumulator,
    firing_stats,
    reconstruction_metrics,
)


def test_perfect_and_mean_reconstruction() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)) + np.arange(8) * 10
    assert reconstruction_metrics(x, x)["r2"] == pytest.approx(1.0)
    mean_pred = np.broadcast_to(x.mean(0), x.shape)
    m = reconstruction_metrics(x, mean_pred)
    assert m["fvu"] == pytest.approx(1.0)
    assert m["r2"] == pytest.approx(0.0, abs=1e-9)
    # the grand-mean form is inflated when dimensions have different means
    assert m["r2_grand_mean"] > 0.9


def test_streaming_equals_batch() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 5))
    xh = x + 0.3 * rng.normal(size=x.shape)
    acc = ReconstructionAccumulator(d=5)
    for lo in range(0, 300, 70):
        acc.update(x[lo : lo + 70], xh[lo : lo + 70])
    full = reconstruction_metrics(x, xh)
    for k, v in acc.result().items():
        assert v == pytest.approx(full[k])


def test_firing_stats() -> None:
    s = firing_stats(np.array([0, 0, 5, 50]), n_rows=100)
    assert s["dead_fraction"] == 0.5
    assert s["dense_fraction"] == 0.25


def test_one_auroc_for_evaluate_and_interpret() -> None:
    import medsae.evaluate.probes as probes
    import medsae.evaluate.recovery as recovery
    import medsae.interpret.scoring as interpret_scoring
    from medsae.metrics.classification import binary_balanced_accuracy, roc_auc

    assert probes.roc_auc is roc_auc and recovery.roc_auc is roc_auc
    assert interpret_scoring.roc_auc is roc_auc
    assert interpret_scoring.binary_balanced_accuracy is binary_balanced_accuracy
    # 2 positives, 2 negatives: pairs (0.8 > 0.1), (0.8 > 0.5), (0.5 = 0.5) -> 0.5, (0.5 > 0.1)
    assert roc_auc([1, 1, 0, 0], [0.8, 0.5, 0.5, 0.1]) == pytest.approx(3.5 / 4)
