"""The formulas of organ rediscovery: token masks, average precision, Purity@k, Coverage@tau.

Definitions follow saev's rediscovery protocol (Stevens et al., "Towards open-ended visual
scientific discovery with sparse autoencoders", arXiv 2511.17735, Table 1):

* **token mask**: token ``t`` (grid cell ``(r, c)`` of a ``G x G`` grid over an ``S``-pixel
  slice, pixels ``[r S / G, (r + 1) S / G)``) is positive for structure ``s`` when at least
  half of its pixels hold ``s`` in the slice's label map (:func:`token_labels`);
* **AP** of a score ``a`` (a latent's token activations) against a mask ``y``: the area
  under the precision-recall step curve, ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct
  score thresholds in decreasing order (tied scores enter together, as scikit-learn's
  ``average_precision_score``); 0 when ``y`` has no positive (:func:`average_precision`);
* per structure the **best latent** is the one of highest AP on the *selection* tokens
  (validation slices); its AP on the *scored* tokens (test slices) is the structure's AP;
  **mAP** is the mean of those over the structures with positives in both;
* **Purity@k**: the precision of the ``k`` highest-scoring scored tokens of a structure's
  best latent against that structure (``k = 16``), averaged over the structures;
* **Coverage@tau**: the fraction of structures whose best latent reaches ``AP >= tau``
  (``tau = 0.3``).
"""

from __future__ import annotations

import numpy as np

PURITY_K = 16
COVERAGE_TAU = 0.3


def token_labels(label_maps: np.ndarray, positions: np.ndarray, grid: int) -> np.ndarray:
    """uint8 ``(n_tokens, 256)`` share flags: ``out[t, v]`` is True when at least half of
    token ``t``'s pixels hold label value ``v``.

    ``label_maps``: ``(n_slices_of_positions, S, S)`` indexed by ``positions[:, 0]`` (already
    local rows); ``positions``: ``(n_tokens, 3)`` local slice row, grid row, grid column.
    """
    n = len(positions)
    out = np.zeros((n, 256), dtype=bool)
    if n == 0:
        return out
    size = int(label_maps.shape[1])
    edges = np.round(np.arange(grid + 1) * size / grid).astype(np.int64)
    for t, (row, gr, gc) in enumerate(np.asarray(positions, dtype=np.int64)):
        block = label_maps[row, edges[gr] : edges[gr + 1], edges[gc] : edges[gc + 1]]
        counts = np.bincount(block.reshape(-1), minlength=256)
        out[t] = 2 * counts >= block.size
    return out


def average_precision(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AP of each column of ``scores`` ``(n, L)`` against each column of ``labels`` ``(n, K)``:
    float64 ``(L, K)`` (ties grouped; 0 for a mask with no positive)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    n, n_lat = scores.shape
    n_pos = y.sum(axis=0)
    out = np.zeros((n_lat, y.shape[1]))
    if n == 0:
        return out
    for j in range(n_lat):
        a = scores[:, j]
        # scores above the minimum, sorted; the tokens at the minimum (most of them for a
        # sparse code) form the last group, whose counts are the totals
        above = np.flatnonzero(a > a.min())
        order = above[np.argsort(-a[above], kind="stable")]
        sa = a[order]
        ends = np.flatnonzero(np.r_[sa[1:] != sa[:-1], True]) if len(sa) else above
        tp = np.cumsum(y[order], axis=0)[ends]  # (groups, K)
        seen = (ends + 1).astype(np.float64)
        tp = np.vstack([tp, n_pos[None, :]])
        seen = np.r_[seen, float(n)][:, None]
        d_tp = np.diff(np.vstack([np.zeros((1, y.shape[1])), tp]), axis=0)
        out[j] = (d_tp * (tp / seen)).sum(axis=0) / np.maximum(n_pos, 1)
    out[:, n_pos == 0] = 0.0
    return out


def purity_at_k(scores: np.ndarray, labels: np.ndarray, k: int = PURITY_K) -> float:
    """Precision of the ``k`` highest scores of one latent against one mask (ties broken by
    token order)."""
    a = np.asarray(scores, dtype=np.float64)
    top = np.argsort(-a, kind="stable")[: min(k, len(a))]
    return float(np.asarray(labels, dtype=bool)[top].mean()) if len(top) else float("nan")


def coverage(ap: np.ndarray, tau: float = COVERAGE_TAU) -> float:
    """Fraction of structures whose best AP is at least ``tau``."""
    ap = np.asarray(ap, dtype=np.float64)
    return float((ap >= tau).mean()) if ap.size else float("nan")


def best_latents(ap_select: np.ndarray) -> np.ndarray:
    """Per structure (column) the latent (row) of highest selection AP (first on ties)."""
    return np.asarray(np.argmax(ap_select, axis=0), dtype=np.int64)
