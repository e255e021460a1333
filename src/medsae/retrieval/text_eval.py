"""Evaluation of text-to-image retrieval on the query suite.

For each query, the retriever returns the top ``n`` slices (one per subject) from a gallery
(the slices of the held-out splits by default). With ``R`` the results and ``G`` the
number of subjects in the gallery:

* ``precision_at_n = |{r in R : r satisfies the whole ground-truth filter}| / min(n, G)``
  (missing results count as misses);
* per aspect (modality, plane, anatomy, demographics), the same fraction for the aspect's
  own part of the filter (e.g. ``plane = axial``), over the queries that have that aspect.

Beside each, an oracle that reads the labels (per subject the slice satisfying the whole
filter, else the most aspects) gives the achievable precision, and ``ratio`` is the one over
the other. The suite is split by intent into a tune half and a report half
(:func:`medsae.retrieval.queries.split_halves`, seed :data:`SPLIT_SEED`); settings are chosen
on the tune half, and ``text_precision_at_10`` (the headline) is the mean ``precision_at_n``
over the report half (``precision_at_n`` over every query). ``paraphrase_consistency``: per
intent worded several ways, the mean pairwise overlap of the top-``n`` subjects.
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
from medsae.retrieval.queries import (
    ASPECT_KEYS,
    HALVES,
    SPLIT_SEED,
    Query,
    split_halves,
    truth_mask,
)


def precision_at(
    result_rows: Sequence[int] | np.ndarray, relevant: np.ndarray, n: int, available: int
) -> float:
    """``|relevant results among the first n| / min(n, available)`` (0 when nothing is available)."""
    denom = min(n, available)
    if denom <= 0:
        return 0.0
    rows = np.asarray(result_rows, dtype=np.int64)[:n]
    return float(relevant[rows].sum()) / denom


def _oracle(
    whole: np.ndarray,
    parts: dict[str, np.ndarray],
    gallery: np.ndarray,
    subjects: np.ndarray,
    n: int,
) -> np.ndarray:
    """The rows an oracle that reads the labels returns: per subject its slice satisfying the
    whole filter, else the most aspects; the ``n`` best subjects (ties: lower row)."""
    score = whole.astype(np.int64) * 100 + sum(m.astype(np.int64) for m in parts.values())
    rows = np.flatnonzero(gallery)
    order = rows[np.lexsort((rows, -score[rows]))]
    _, first = np.unique(subjects[order], return_index=True)
    best = order[np.sort(first)]
    return best[np.lexsort((best, -score[best]))][:n]


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
    """One query's answer and its precision, overall and per aspect, beside the oracle's."""
    subjects = retriever.index.subject_ids
    found = retriever.answer(q.text, n, gallery)
    hits, choices = found.hits, found.features
    relevant = truth_mask(q.truth, table, presence, structures)
    parts = {a: truth_mask(q.aspect_truth(a), table, presence, structures) for a in q.aspects}
    oracle = _oracle(relevant, parts, gallery, subjects, n)
    n_relevant = len(np.unique(subjects[gallery & relevant]))
    entry: dict[str, Any] = {
        "id": q.id,
        "text": q.text,
        "source": q.source,
        "intent": q.intent,
        "reading": found.reading.summary(),
        "not_understood": list(found.reading.not_understood),
        "precision_at_n": precision_at(hits.rows, relevant, n, available),
        "results": len(hits),
        "result_subjects": [int(x) for x in hits.subjects],
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
                **({"concept": c.concept, "negated": c.negated} if c.concept else {}),
            }
            for c in choices
        ],
        "aspects": {a: precision_at(hits.rows, m, n, available) for a, m in parts.items()},
        "achievable_aspects": {a: precision_at(oracle, m, n, available) for a, m in parts.items()},
    }
    return entry


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def paraphrase_consistency(entries: Sequence[dict[str, Any]], n: int) -> float | None:
    """Mean over intents with several wordings of the mean pairwise top-``n`` overlap
    ``|A ∩ B| / n`` of the subjects their wordings returned."""
    by_intent: dict[str, list[set[int]]] = {}
    for e in entries:
        by_intent.setdefault(e["intent"], []).append(set(e["result_subjects"]))
    per_intent = []
    for sets in by_intent.values():
        pairs = [len(a & b) / n for i, a in enumerate(sets) for b in sets[i + 1 :]]
        if pairs:
            per_intent.append(float(np.mean(pairs)))
    return _mean(per_intent)


def summarise(entries: Sequence[dict[str, Any]], n: int) -> dict[str, Any]:
    """Precision, the oracle's achievable precision and their ratio, overall and per aspect,
    over the answerable entries; paraphrase consistency over all of them."""
    scored = [e for e in entries if e["answerable"]]
    precision = _mean([e["precision_at_n"] for e in scored])
    achievable = _mean([e["max_achievable"] for e in scored])
    aspects: dict[str, Any] = {}
    for a in ASPECT_KEYS:
        mine = [e for e in scored if a in e["aspects"]]
        p = _mean([e["aspects"][a] for e in mine])
        best = _mean([e["achievable_aspects"][a] for e in mine])
        aspects[a] = {
            "precision": p,
            "achievable": best,
            "ratio": _ratio(p, best),
            "queries": len(mine),
        }
    return {
        "precision_at_n": precision,
        "achievable": achievable,
        "ratio": _ratio(precision, achievable),
        "aspects": aspects,
        "paraphrase_consistency": paraphrase_consistency(entries, n),
        "scored_queries": len(scored),
        "queries": len(entries),
    }


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
    """Precision@n of every query, overall and per aspect, on the tune and report halves
    (see the module docstring)."""
    n_rows = len(table)
    gallery = (
        np.ones(n_rows, dtype=bool)
        if gallery_mask is None
        else np.asarray(gallery_mask, dtype=bool)
    )
    subjects = retriever.index.subject_ids
    available = len(np.unique(subjects[gallery]))
    halves = split_halves(queries)
    per_query: list[dict[str, Any]] = []
    if retriever.selector is None:
        retriever.prefetch([q.text for q in queries])
    for i, q in enumerate(queries):
        entry = _query_entry(retriever, q, table, presence, structures, gallery, available, n)
        entry["half"] = halves[q.id]
        per_query.append(entry)
        if progress is not None:
            progress(i + 1)
    summaries = {h: summarise([e for e in per_query if e["half"] == h], n) for h in HALVES}
    everything = summarise(per_query, n)
    report = summaries["report"]
    by_source = {
        s: _mean([e["precision_at_n"] for e in per_query if e["answerable"] and e["source"] == s])
        for s in sorted({e["source"] for e in per_query})
    }
    key = "text_precision_at_10" if n == 10 else f"text_precision_at_{n}"
    return {
        key: report["precision_at_n"],
        f"{key}_achievable": report["achievable"],
        "precision_at_n": everything["precision_at_n"],
        "n": n,
        "aspects": {a: v["precision"] for a, v in report["aspects"].items()},
        "halves": summaries,
        "all": everything,
        "split": {
            "seed": SPLIT_SEED,
            "by": "intent",
            "tune": [q.id for q in queries if halves[q.id] == "tune"],
            "report": [q.id for q in queries if halves[q.id] == "report"],
        },
        "by_source": by_source,
        "queries": per_query,
        "scored_queries": everything["scored_queries"],
        "unanswerable": [e["id"] for e in per_query if not e["answerable"]],
        "gallery_slices": int(gallery.sum()),
        "gallery_subjects": available,
        "mode": retriever.effective_mode() if retriever.selector is None else "selector",
        "features_per_query": retriever.config.features,
        "embedder": retriever.embedder.name,
        "definitions": {
            "precision_at_n": "relevant results among the top n (one per subject) / min(n, gallery subjects)",
            "aspect": "the same fraction for the aspect's part of the ground-truth filter",
            "achievable": "the same fraction for an oracle that reads the labels (per subject its "
            "slice satisfying the whole filter, else the most aspects)",
            "ratio": "precision / achievable",
            "paraphrase_consistency": "per intent, mean over pairs of its wordings of "
            "|top-n subjects in common| / n; mean over intents",
            "text_precision_at_10": "mean precision@10 of the answerable queries of the report half",
            "unanswerable": "queries with no relevant slice in the gallery, left out of the means",
        },
    }
