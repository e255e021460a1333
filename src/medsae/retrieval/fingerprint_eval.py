"""Evaluation of fingerprint retrieval against dense baselines.

A seeded sample of query slices (from ``query_splits``) is searched within a gallery (the
slices of ``gallery_splits``), one result per subject, the query's own subject excluded,
by three methods:

* ``sparse``: the SAE fingerprint (the query's top-K active latents, leaving out latents active
  on nearly every slice, cosine restricted to them; ``1 / (1 + |q_j - c_j|)`` at K = 1;
  :mod:`medsae.retrieval.fingerprint`);
* ``dense_topk``: the query's K largest-magnitude embedding dimensions ``D``, cosine
  restricted to them: ``x_q[D]·x_c[D] / (||x_q[D]|| ||x_c[D]||)``; at K = 1 (where that cosine
  is ±1) the closeness ``1 / (1 + |x_q[d] - x_c[d]|)``;
* ``dense_full``: cosine of the full embeddings.

For every (query, result) pair the evaluation counts

* agreement of ``modality``, ``plane``, ``sex`` and ``age_group``: the fraction of pairs with
  equal values, among pairs where both are known;
* ``structure_jaccard``: ``|S_q ∩ S_r| / |S_q ∪ S_r|`` of the sets of structures present
  (1 when both sets are empty);
* ``dense_cosine``: cosine of the full embeddings of query and result (the paper's
  comparison figure: how close sparse results are in the dense space).

The headline ``fingerprint_agreement`` is the mean of the sparse method's modality and
plane agreement.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from medsae.errors import InputError
from medsae.retrieval.config import SearchConfig
from medsae.retrieval.fingerprint import (
    FingerprintIndex,
    Hits,
    closeness,
    fingerprint_of,
    top_subjects,
)

AGREEMENT_FIELDS = ("modality", "plane", "sex", "age_group")
METHODS = ("sparse", "dense_topk", "dense_full")


def dense_topk_dims(x_d: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` largest-magnitude dimensions of a dense embedding (ties: lower index)."""
    order = np.lexsort((np.arange(len(x_d)), -np.abs(x_d)))
    return order[:k]


def restricted_cosine(gallery_gd: np.ndarray, x_d: np.ndarray, dims: np.ndarray) -> np.ndarray:
    """Cosine of each gallery row with ``x`` restricted to ``dims`` (0 where a norm is 0).

    With one dimension ``d`` the cosine is only the sign agreement, so the closeness
    ``1 / (1 + |x_d - g_d|)`` is returned instead (the fingerprint rule at K = 1).
    """
    g = gallery_gd[:, dims].astype(np.float64)
    q = x_d[dims].astype(np.float64)
    if len(dims) == 1:
        return closeness(float(q[0]), g[:, 0])
    denom = np.linalg.norm(g, axis=1) * np.linalg.norm(q)
    out = np.zeros(len(g), dtype=np.float64)
    ok = denom > 0
    out[ok] = (g[ok] @ q) / denom[ok]
    return out


def _pair_metrics(
    pairs: np.ndarray,
    table: pd.DataFrame,
    presence: np.ndarray,
    emb: np.ndarray,
    norms: np.ndarray,
) -> dict[str, Any]:
    """Metrics over (query row, result row) pairs (see the module docstring); ``norms`` are
    the rows' L2 norms (at least 1e-12)."""
    out: dict[str, Any] = {"pairs": len(pairs)}
    if len(pairs) == 0:
        return out
    q, r = pairs[:, 0], pairs[:, 1]
    for field in AGREEMENT_FIELDS:
        if field not in table.columns:
            continue
        col = table[field]
        known = (col.notna().to_numpy()[q]) & (col.notna().to_numpy()[r])
        values = col.astype(str).to_numpy()
        out[f"{field}_agreement"] = (
            float(np.mean(values[q][known] == values[r][known])) if known.any() else None
        )
    inter = np.sum(presence[q] & presence[r], axis=1)
    union = np.sum(presence[q] | presence[r], axis=1)
    jac = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    out["structure_jaccard"] = float(jac.mean())
    cosine = np.sum(emb[q] * emb[r], axis=1) / (norms[q] * norms[r])
    out["dense_cosine"] = float(np.mean(cosine))
    return out


def evaluate_fingerprints(
    index: FingerprintIndex,
    table: pd.DataFrame,
    presence: np.ndarray,
    embeddings: np.ndarray,
    config: SearchConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Agreement of sparse fingerprint retrieval vs dense top-K and full dense retrieval.

    Parameters
    ----------
    index:
        The fingerprint index of the codes (rows aligned with ``table``).
    table:
        The slice table with a ``split`` column.
    presence:
        Anatomy presence ``(N, n_structures)``: 1 present (other values: not present).
    embeddings:
        Dense embeddings ``(N, dim)``, rows aligned with the table.
    config:
        Sample size, splits, K and n (:class:`SearchConfig`).

    Returns the metrics per method, the K sweep and the headline ``fingerprint_agreement``.
    """
    cfg = config or SearchConfig()
    queries, gallery = _sample(index, table, presence, embeddings, cfg)
    present = np.asarray(presence) == 1
    # no normalised copy of the embeddings: at a million rows each copy is 4 GB
    emb = np.asarray(embeddings, dtype=np.float32)
    norms = np.maximum(np.linalg.norm(emb, axis=1), 1e-12)
    ks = sorted({cfg.k, *cfg.sweep_k})
    pairs = _retrieve_pairs(index, queries, gallery, emb, norms, ks, cfg, progress)

    def metrics(method: str, k: int) -> dict[str, Any]:
        arr = np.asarray(pairs.get((method, k), []), dtype=np.int64).reshape(-1, 2)
        return _pair_metrics(arr, table, present, emb, norms)

    methods = {
        "sparse": metrics("sparse", cfg.k),
        "dense_topk": metrics("dense_topk", cfg.k),
        "dense_full": metrics("dense_full", 0),
    }
    sweep = {
        str(k): {"sparse": metrics("sparse", k), "dense_topk": metrics("dense_topk", k)} for k in ks
    }
    sparse = methods["sparse"]
    parts = [sparse.get("modality_agreement"), sparse.get("plane_agreement")]
    known = [p for p in parts if p is not None]
    return {
        "fingerprint_agreement": float(np.mean(known)) if known else None,
        "modality_agreement": sparse.get("modality_agreement"),
        "plane_agreement": sparse.get("plane_agreement"),
        "methods": methods,
        "sweep_k": sweep,
        "k": cfg.k,
        "n": cfg.n,
        "queries": len(queries),
        "query_splits": list(cfg.query_splits),
        "gallery_splits": list(cfg.gallery_splits),
        "gallery_slices": len(gallery),
        "seed": cfg.seed,
        "excluded_latents": index.excluded.tolist(),
        "definitions": DEFINITIONS,
    }


DEFINITIONS = {
    "sparse": "cosine restricted to the query's top-K active SAE latents (latents "
    "active on nearly every slice left out); 1 / (1 + |q - c|) at K = 1",
    "dense_topk": "cosine restricted to the query's K largest-magnitude embedding dims; "
    "1 / (1 + |q - c|) at K = 1",
    "dense_full": "cosine of the full embeddings",
    "agreement": "fraction of (query, result) pairs with equal values, both known",
    "structure_jaccard": "|S_q & S_r| / |S_q | S_r| of present structures (1 if both empty)",
    "dense_cosine": "mean full-embedding cosine between query and result",
}
"""What each method and measure of :func:`evaluate_fingerprints` means (written with them)."""


def _sample(
    index: FingerprintIndex,
    table: pd.DataFrame,
    presence: np.ndarray,
    embeddings: np.ndarray,
    cfg: SearchConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """The seeded query rows and the gallery rows, after checking the inputs line up."""
    n_rows = len(table)
    if index.n_rows != n_rows or len(presence) != n_rows or len(embeddings) != n_rows:
        raise InputError(
            "evaluate_fingerprints",
            f"row counts differ: index {index.n_rows}, table {n_rows}, anatomy {len(presence)}, "
            f"embeddings {len(embeddings)}",
        )
    if "split" not in table.columns:
        raise InputError("table", "needs a 'split' column (use slices_with_split)")
    split = table["split"].astype(str).to_numpy()
    query_pool = np.flatnonzero(np.isin(split, cfg.query_splits))
    gallery = np.flatnonzero(np.isin(split, cfg.gallery_splits))
    if len(query_pool) == 0 or len(gallery) == 0:
        raise InputError(
            "split",
            f"no query slices in {cfg.query_splits} or no gallery slices in {cfg.gallery_splits}",
        )
    rng = np.random.default_rng(cfg.seed)
    queries = np.sort(
        rng.choice(query_pool, size=min(cfg.eval_queries, len(query_pool)), replace=False)
    )
    return queries, gallery


def _retrieve_pairs(
    index: FingerprintIndex,
    queries: np.ndarray,
    gallery: np.ndarray,
    emb: np.ndarray,
    norms: np.ndarray,
    ks: list[int],
    cfg: SearchConfig,
    progress: Callable[[int], None] | None,
) -> dict[tuple[str, int], list[tuple[int, int]]]:
    """(query, result) row pairs per (method, K): sparse and dense top-K at every K, and
    full dense retrieval (K = 0), one result per subject, never the query's own subject."""
    gallery_mask = np.zeros(index.n_rows, dtype=bool)
    gallery_mask[gallery] = True
    gal_emb, gal_norms = emb[gallery], norms[gallery]
    gal_subjects = index.subject_ids[gallery]
    pairs: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for i, row in enumerate(queries):
        own = int(index.subject_ids[row])
        codes_row = index.codes_row(int(row))
        keep = gal_subjects != own
        for k in ks:
            lat, w = fingerprint_of(codes_row, k, index.excluded)
            hits = index.search_fingerprint(lat, w, cfg.n, gallery_mask, own)
            pairs.setdefault(("sparse", k), []).extend((int(row), int(h)) for h in hits.rows)
            dims = dense_topk_dims(emb[row], k)
            score = restricted_cosine(gal_emb, emb[row], dims)
            hits = _dense_hits(gallery, score, gal_subjects, keep, cfg.n)
            pairs.setdefault(("dense_topk", k), []).extend((int(row), int(h)) for h in hits.rows)
        cosine = (gal_emb @ (emb[row] / norms[row])) / gal_norms
        hits = _dense_hits(gallery, cosine, gal_subjects, keep, cfg.n)
        pairs.setdefault(("dense_full", 0), []).extend((int(row), int(h)) for h in hits.rows)
        if progress is not None:
            progress(i + 1)
    return pairs


def _dense_hits(
    gallery: np.ndarray, score: np.ndarray, subjects: np.ndarray, keep: np.ndarray, n: int
) -> Hits:
    ok = keep & np.isfinite(score)
    return top_subjects(gallery[ok], score[ok], subjects[ok], n)
