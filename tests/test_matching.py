"""Dictionary matching (seed stability, planted ground truth) on cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from medsae.metrics.matching import abs_cosine, match_dictionaries, recovery_f1


def _dictionary(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def test_permuted_sign_flipped_scaled_copy_matches_exactly() -> None:
    a = _dictionary(40, 16)
    perm = np.random.default_rng(1).permutation(40)
    signs = np.where(np.arange(40) % 3 == 0, -1.0, 1.0)[:, None]
    b = a[perm] * signs * 2.5
    m = match_dictionaries(a, b)
    assert m.mcc == pytest.approx(1.0)
    assert m.frac_at_least(0.9) == 1.0
    # each row of a is paired with the row of b it was copied to
    inverse = np.argsort(perm)
    assert np.array_equal(m.cols[np.argsort(m.rows)], inverse)
    assert np.array_equal(m.best_index_a, inverse)


def test_hand_computed_two_by_two() -> None:
    # greedy best-per-row would pair both rows of a with b[0]; one to one gives 0.8 + 0.6
    a = np.array([[1.0, 0.0], [0.6, 0.8]])
    b = np.array([[0.8, 0.6], [0.0, 1.0]])
    m = match_dictionaries(a, b)
    cos = abs_cosine(a, b)
    assert cos == pytest.approx(np.array([[0.8, 0.0], [0.96, 0.8]]))
    assert m.mcc == pytest.approx(0.8)  # pairs (0,0) 0.8 and (1,1) 0.8 sum 1.6 > 0.96 + 0
    assert m.best_cosine_a == pytest.approx([0.8, 0.96])
    assert m.frac_at_least(0.9) == 0.0
    assert m.frac_at_least(0.7) == 1.0


def test_wider_dictionary_matches_min_rows_and_unmatched_are_nan() -> None:
    a = _dictionary(10, 8)
    b = np.vstack([a[:6], _dictionary(2, 8, seed=5)])
    m = match_dictionaries(a, b)
    assert len(m.rows) == 8
    per_row = m.matched_cosine_a()
    assert np.isnan(per_row).sum() == 2
    assert np.nanmax(per_row) == pytest.approx(1.0)


def test_zero_rows_match_nothing_and_dimension_mismatch_is_named() -> None:
    a = np.vstack([np.zeros((1, 4)), np.eye(4)[:2]])
    m = match_dictionaries(a, np.eye(4))
    assert m.best_cosine_a[0] == 0.0
    with pytest.raises(ValueError, match="different dimension"):
        match_dictionaries(np.eye(3), np.eye(4))


def test_random_dictionaries_have_low_mcc() -> None:
    m = match_dictionaries(_dictionary(64, 256, 0), _dictionary(64, 256, 1))
    assert m.mcc < 0.35


def test_recovery_f1_hand_computed() -> None:
    planted = np.eye(4)
    # two exact copies of planted 0, one of planted 1, one row matching nothing
    learned = np.array([[1, 0, 0, 0], [2, 0, 0, 0], [0, -1, 0, 0], [0, 0, 1, 1]], dtype=float)
    r = recovery_f1(learned, planted, threshold=0.9)
    assert r["precision"] == pytest.approx(3 / 4)
    assert r["recall"] == pytest.approx(2 / 4)
    assert r["f1"] == pytest.approx(2 * 0.75 * 0.5 / 1.25)
