"""The browser's link to ``medsae.interpret``: text search and fingerprint search.

* Fingerprints: ``medsae.retrieval.index.load_index`` (the index stage's artifact, else an
  index built in memory from the codes).
* Text: ``medsae.retrieval.index.text_retriever``, the reusable form of
  ``medsae.retrieval.language`` (the sentence embedder and the description embeddings are loaded
  once, when the retriever is first built).

Each function returns ``None`` when ``medsae.interpret`` or what it needs (descriptions) is
not available, so that :mod:`medsae.retrieval.service` can fall back and say so.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pandas as pd

from medsae.errors import MedsaeError
from medsae.retrieval.batching import BatchingEmbedder
from medsae.retrieval.service import SearchHits
from medsae.view import WorkspaceView

FINGERPRINT_K = 5  # the index stage's default fingerprint size (SearchConfig.k)
_lock = threading.RLock()
_state: dict[int, dict[str, Any]] = {}


def _slot(view: WorkspaceView) -> dict[str, Any]:
    with _lock:
        return _state.setdefault(id(view), {"view": view})


def fingerprint_index(view: WorkspaceView) -> Any:
    """The run's fingerprint index (``medsae.retrieval.index.load_index``: the index stage's
    artifact, or built from the codes), or None when it is not available."""
    slot = _slot(view)
    with _lock:
        if "index" not in slot:
            slot["index"] = None
            if view.encoder is None or view.run is None or view.codes is None:
                return None
            try:
                from medsae.retrieval.index import load_index
            except ImportError:
                return None
            try:
                index = load_index(view.ws, view.encoder, view.run)
            except MedsaeError:  # an unreadable index artifact: index the codes in memory
                from medsae.retrieval.fingerprint import FingerprintIndex

                index = FingerprintIndex.build(view.codes, view.table)
            slot["index"] = index if index.n_rows == len(view.table) else None
        return slot["index"]


def _retriever(view: WorkspaceView) -> Any:
    """``medsae.retrieval.index.text_retriever`` for the run (built once), or None."""
    slot = _slot(view)
    with _lock:
        if "retriever" not in slot:
            slot["retriever"] = None
            features = view.features_file
            if (
                view.encoder is None
                or view.run is None
                or features is None
                or "description" not in features.columns
            ):
                return None
            try:
                from medsae.retrieval.index import text_retriever
            except ImportError:
                return None
            try:
                retriever: Any = text_retriever(view.ws, view.encoder, view.run)
                # concurrent requests share embedding batches and a cache of embedded texts
                retriever.embedder = BatchingEmbedder(retriever.embedder)
                slot["retriever"] = retriever
            except MedsaeError:  # no usable descriptions: the keyword fallback answers
                slot["retriever"] = None
        return slot["retriever"]


def text_ready(view: WorkspaceView) -> bool:
    """Build the text retriever now (loads the sentence embedder); whether it is usable."""
    return _retriever(view) is not None


def _hits(
    df: pd.DataFrame, method: str, features: list[dict[str, Any]] | None = None
) -> SearchHits:
    return SearchHits(
        rows=[int(r) for r in df["row"]],
        scores=[float(s) for s in df["score"]],
        method=method,
        features=features or [],
    )


def ask(view: WorkspaceView, query: str, k: int) -> SearchHits | None:
    """Text search through the feature descriptions, or None when it is not available."""
    retriever = _retriever(view)
    if retriever is None:
        return None
    # choose + rank (what ``ask`` does) without building the results table: the browser
    # needs only rows and scores
    choices = retriever.choose(query)
    hits = retriever.rank(choices, k)
    feats = [
        {
            "latent": c.latent,
            "weight": c.weight,
            "similarity": c.similarity,
            "description": c.description,
        }
        for c in choices
    ]
    return SearchHits(
        rows=[int(r) for r in hits.rows],
        scores=[float(x) for x in hits.scores],
        method="interpret.ask",
        features=feats,
    )


def similar(view: WorkspaceView, row: int, k: int) -> SearchHits | None:
    """Slices similar to table row ``row`` (one per subject, own subject excluded), or None."""
    index = fingerprint_index(view)
    if index is None:
        return None
    return _hits(index.search(int(row), k=FINGERPRINT_K, n=k), "fingerprint")


def similar_to_codes(view: WorkspaceView, codes_n: np.ndarray, k: int) -> SearchHits | None:
    """Slices whose fingerprints match a dense code vector (a new image), or None."""
    index = fingerprint_index(view)
    if index is None:
        return None
    return _hits(
        index.search(np.asarray(codes_n, dtype=np.float64), k=FINGERPRINT_K, n=k), "fingerprint"
    )
