"""Matching two dictionaries of directions one to one: seed stability and ground truth.

Two dictionaries (the decoder rows of two SAEs, or an SAE and a planted set of directions)
describe the same features when their rows can be paired with high |cosine|. The pairing is
the one-to-one assignment that maximises the summed |cosine| (the Hungarian algorithm,
``scipy.optimize.linear_sum_assignment``); the sign is ignored, since a direction and its
negation are the same feature to a linear probe and to a sign-split baseline.

- ``mcc``: the mean |cosine| over the matched pairs (the "mean max correlation coefficient"
  used for dictionaries with known ground truth, e.g. SAELens's synthetic benchmark);
  ``min(n_a, n_b)`` pairs are matched.
- ``recovery_f1``: a feature-recovery F1 against a planted dictionary. Recall is the
  fraction of planted directions whose best learned row has |cosine| >= threshold;
  precision is the fraction of learned rows whose best planted direction has
  |cosine| >= threshold; F1 is their harmonic mean. Best matches here are not one to one,
  so two learned copies of one planted feature both count as precise (and a dictionary
  wider than the planted set is not penalised for its width alone, only for rows that
  match nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["DictionaryMatch", "abs_cosine", "match_dictionaries", "recovery_f1"]


def _unit_rows(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array of row directions, got shape {a.shape}")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    # an all-zero row (a dead, zeroed latent) matches nothing: cosine 0 with every row
    return np.divide(a, norms, out=np.zeros_like(a), where=norms > 0)


def abs_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|cosine| between every row of ``a`` (n_a, d) and every row of ``b`` (n_b, d)."""
    ua, ub = _unit_rows(a, "a"), _unit_rows(b, "b")
    if ua.shape[1] != ub.shape[1]:
        raise ValueError(
            f"dictionaries of different dimension: a has rows of {ua.shape[1]}, b of {ub.shape[1]}"
        )
    return np.abs(ua @ ub.T)


@dataclass(frozen=True)
class DictionaryMatch:
    """The one-to-one matching of the rows of ``a`` to the rows of ``b``."""

    rows: np.ndarray  # indices into a, one per matched pair
    cols: np.ndarray  # indices into b, paired with rows
    cosine: np.ndarray  # |cosine| of each matched pair
    best_cosine_a: np.ndarray  # (n_a,) each row of a: its best |cosine| to any row of b
    best_index_a: np.ndarray  # (n_a,) and which row of b that is

    @property
    def mcc(self) -> float:
        """The mean |cosine| over the one-to-one matched pairs."""
        return float(self.cosine.mean()) if self.cosine.size else float("nan")

    def frac_at_least(self, threshold: float) -> float:
        """The fraction of matched pairs whose |cosine| is at least ``threshold``."""
        return float((self.cosine >= threshold).mean()) if self.cosine.size else float("nan")

    def matched_cosine_a(self, n_a: int | None = None) -> np.ndarray:
        """Per row of a, the |cosine| of its one-to-one partner (NaN when unmatched)."""
        n = len(self.best_cosine_a) if n_a is None else n_a
        out = np.full(n, np.nan)
        out[self.rows] = self.cosine
        return out


def match_dictionaries(a: np.ndarray, b: np.ndarray) -> DictionaryMatch:
    """Pair the rows of ``a`` and ``b`` one to one, maximising the summed |cosine|."""
    cos = abs_cosine(a, b)
    if cos.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return DictionaryMatch(
            rows=empty,
            cols=empty,
            cosine=np.zeros(0),
            best_cosine_a=np.zeros(cos.shape[0]),
            best_index_a=np.zeros(cos.shape[0], dtype=np.int64),
        )
    rows, cols = linear_sum_assignment(cos, maximize=True)
    return DictionaryMatch(
        rows=rows.astype(np.int64),
        cols=cols.astype(np.int64),
        cosine=cos[rows, cols],
        best_cosine_a=cos.max(axis=1),
        best_index_a=cos.argmax(axis=1).astype(np.int64),
    )


def recovery_f1(
    learned: np.ndarray, planted: np.ndarray, threshold: float = 0.9
) -> dict[str, float]:
    """Precision, recall and F1 of recovering ``planted`` directions by ``learned`` rows."""
    cos = abs_cosine(learned, planted)
    if cos.size == 0:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "threshold": threshold}
    precision = float((cos.max(axis=1) >= threshold).mean())
    recall = float((cos.max(axis=0) >= threshold).mean())
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "threshold": threshold}
