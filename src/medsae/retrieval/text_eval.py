"""Evaluation of text-to-image retrieval on the query suite.

For each query, the retriever returns the top ``n`` slices (one per subject) from a gallery
(the slices of the held-out splits by default). With ``R`` the results and ``G`` the
number of subjects in the gallery:

* ``precision_at_n = |{r in R : r satisfies the whole ground-truth filter}| / min(n, G)``
  (missing results count as misses);
* per aspect (modality, plane, anatomy, demographics), the same fraction for the aspect's
  own part of the filter (e.g. ``plane = axial``), over the queries that have that aspect.

``text_precision_at_10`` (the headline) is the mean of ``precision_at_n`` over queries.
A query with no relevant slice in the gallery (its filter matches nothing there, e.g.
"coronal CT kidneys" when no coronal CT slice of the gallery shows a kidney) has no
defined precision: it is still run and listed (``answerable: false``, and by id under
``unanswerable``) but left out of every mean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from medsae.retrieval.language import TextRetriever
from medsae.retrieval.queries import ASPECT_KEYS, Query, truth_mask


def precision_at(
    result_rows: Sequence[int] | np.ndarray, relevant: np.ndarray, n: int, available: int
) -> float:
    """``|relevant results among the first n| / min(n, available)`` (0 when nothing is available)."""
    denom = min(n, available)
    if denom <= 0:
        return 0.0
    rows = np.asarray(result_rows, dtype=np.int64)[:n]
    return float(relevant[rows].sum()) / denom


def _query_entry(
    retriever: TextRetriever,
    q: Query,
    table: pd.DataFrame,
    presence: np.ndarray,
    structures: Sequence[str],
    gallery: np.ndarray,
    available: int,
    n: int,
) -> dict[str, Any]:
    """One query's answer and its precision, overall and per aspect."""
    subjects = retriever.index.subject_ids
    choices = retriever.choose(q.text)
    hits = retriever.rank(choices, n, gallery)
    relevant = truth_mask(q.truth, table, presence, structures)
    n_relevant = len(np.unique(subjects[gallery & relevant]))
    entry: dict[str, Any] = {
        "id": q.id,
        "text": q.text,
        "source": q.source,
        "precision_at_n": precision_at(hits.rows, relevant, n, available),
        "results": len(hits),
        "relevant_subjects_in_gallery": n_relevant,
        "answerable": n_relevant > 0,
        "max_achievable": min(n, n_relevant) / max(min(n, available), 1),
        "features": [
            {
                "latent": c.latent,
                "weight": round(c.weight, 4),
                "similarity": round(c.similarity, 4),
                "description": c.description,
                "matched": c.matched,
            }
            for c in choices
        ],
        "aspects": {},
    }
    for aspect in q.aspects:
        sub = q.aspect_truth(aspect)
        entry["aspects"][aspect] = precision_at(
            hits.rows, truth_mask(sub, table, presence, structures), n, available
        )
    return entry


def evaluate_text_retrieval(
    retriever: TextRetriever,
    queries: Sequence[Query],
    table: pd.DataFrame,
    presence: np.ndarray,
    structures: Sequence[str],
    gallery_mask: np.ndarray | None = None,
    n: int = 10,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Precision@n of every query, overall and per aspect (see the module docstring)."""
    n_rows = len(table)
    gallery = (
        np.ones(n_rows, dtype=bool)
        if gallery_mask is None
        else np.asarray(gallery_mask, dtype=bool)
    )
    subjects = retriever.index.subject_ids
    available = len(np.unique(subjects[gallery]))
    per_query: list[dict[str, Any]] = []
    if retriever.selector is None:
        retriever.prefetch([q.text for q in queries])
    for i, q in enumerate(queries):
        per_query.append(
            _query_entry(retriever, q, table, presence, structures, gallery, available, n)
        )
        if progress is not None:
            progress(i + 1)

    def mean(values: list[float]) -> float | None:
        return float(np.mean(values)) if values else None

    scored = [e for e in per_query if e["answerable"]]
    aspects = {a: mean([e["aspects"][a] for e in scored if a in e["aspects"]]) for a in ASPECT_KEYS}
    by_source = {
        s: mean([e["precision_at_n"] for e in scored if e["source"] == s])
        for s in sorted({e["source"] for e in per_query})
    }
    headline = mean([e["precision_at_n"] for e in scored])
    return {
        "text_precision_at_10" if n == 10 else f"text_precision_at_{n}": headline,
        "precision_at_n": headline,
        "n": n,
        "aspects": aspects,
        "by_source": by_source,
        "queries": per_query,
        "scored_queries": len(scored),
        "unanswerable": [e["id"] for e in per_query if not e["answerable"]],
        "gallery_slices": int(gallery.sum()),
        "gallery_subjects": available,
        "mode": retriever.config.mode if retriever.selector is None else "selector",
        "features_per_query": retriever.config.features,
        "embedder": retriever.embedder.name,
        "definitions": {
            "precision_at_n": "relevant results among the top n (one per subject) / min(n, gallery subjects)",
            "aspect": "the same fraction for the aspect's part of the ground-truth filter",
            "unanswerable": "queries with no relevant slice in the gallery, left out of the means",
        },
    }
