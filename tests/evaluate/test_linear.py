import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from medsae.evaluate.linear import Design, balanced_weights, fit_logistic, fit_logistic_blocks


def _data(seed: int = 0, n: int = 400, d: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    logits = x @ rng.normal(size=d) - 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    return x, y


def test_balanced_weights_sum_to_half_per_class() -> None:
    y = np.array([[1, 0], [0, 0], [0, 1], [1, 1]], dtype=np.float32)
    valid = np.array([[True, True], [True, False], [True, True], [False, True]])
    w = balanced_weights(y, valid)
    for h in range(2):
        pos = (y[:, h] > 0) & valid[:, h]
        neg = (y[:, h] == 0) & valid[:, h]
        assert w[pos, h].sum() == pytest.approx(0.5)
        assert w[neg, h].sum() == pytest.approx(0.5)
        assert (w[~valid[:, h], h] == 0).all()


def test_fit_matches_sklearn_weighted_l2() -> None:
    x, y = _data()
    lam = 0.05
    w = balanced_weights(y[:, None], np.ones((len(y), 1), bool))
    fit = fit_logistic(Design(x), y[:, None], w, np.array([lam]), max_iter=300, tol=1e-9)
    # sklearn minimises C * sum_i s_i loss_i + 1/2 ||w||^2; ours sum_i s_i loss_i + lam/2 ||w||^2
    ref = LogisticRegression(C=1 / lam, tol=1e-10, max_iter=10_000).fit(x, y, sample_weight=w[:, 0])
    np.testing.assert_allclose(fit.w_dh[:, 0], ref.coef_[0], atol=2e-3)
    assert fit.b_h[0] == pytest.approx(ref.intercept_[0], abs=2e-3)


def test_sparse_dense_and_block_designs_agree() -> None:
    x, y = _data(1)
    x[np.abs(x) < 0.8] = 0
    y2 = np.stack([y, 1 - y], 1)
    w = balanced_weights(y2, np.ones_like(y2, bool))
    lam = np.array([0.01, 0.1], dtype=np.float32)
    dense = fit_logistic(Design(x), y2, w, lam, max_iter=300, tol=1e-9)
    sparse = fit_logistic(Design(sp.csr_matrix(x)), y2, w, lam, max_iter=300, tol=1e-9)
    np.testing.assert_allclose(dense.w_dh, sparse.w_dh, atol=1e-3)
    blocks_w, blocks_b = fit_logistic_blocks(
        np.stack([x, x]), y2, w, np.array([0.01, 0.1]), max_iter=300, tol=1e-9
    )
    np.testing.assert_allclose(blocks_w[0, 0], dense.w_dh[:, 0], atol=2e-3)
    np.testing.assert_allclose(blocks_w[1, 1], dense.w_dh[:, 1], atol=2e-3)
    assert blocks_b[0, 0] == pytest.approx(dense.b_h[0], abs=2e-3)


def test_warm_start_from_a_prefix_reaches_the_same_solution() -> None:
    x, y = _data(2)
    yy = y[:, None]
    w = balanced_weights(yy, np.ones_like(yy, bool))
    lam = np.array([0.01])
    w_small, b_small = fit_logistic_blocks(x[None, :, :3], yy, w, lam, max_iter=300, tol=1e-9)
    cold_w, cold_b = fit_logistic_blocks(x[None], yy, w, lam, max_iter=300, tol=1e-9)
    warm_w, warm_b = fit_logistic_blocks(
        x[None], yy, w, lam, max_iter=300, init=(w_small, b_small), tol=1e-9
    )
    np.testing.assert_allclose(warm_w, cold_w, atol=2e-3)
    np.testing.assert_allclose(warm_b, cold_b, atol=2e-3)


def test_fixed_c_matches_sklearn_c_with_balanced_classes() -> None:
    from medsae.evaluate.linear import fixed_c_lambda

    x, y = _data()
    valid = np.ones((len(y), 1), bool)
    w = balanced_weights(y[:, None], valid)
    lam = fixed_c_lambda(valid, 1.0)
    assert lam[0] == pytest.approx(1 / len(y))
    fit = fit_logistic(Design(x), y[:, None], w, lam, max_iter=300, tol=1e-9)
    ref = LogisticRegression(C=1.0, class_weight="balanced", tol=1e-10, max_iter=10_000).fit(x, y)
    np.testing.assert_allclose(fit.w_dh[:, 0], ref.coef_[0], atol=2e-3)
    with pytest.raises(ValueError, match="probe_c"):
        fixed_c_lambda(valid, 0.0)
