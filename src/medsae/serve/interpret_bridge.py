"""The browser's link to ``medsae.interpret``: text search and fingerprint search.

* Fingerprints: :class:`medsae.interpret.fingerprint.FingerprintIndex`, loaded from
  ``WS/index/<encoder>/<run>/`` when the index stage wrote it, else built from the codes.
* Text: :class:`medsae.interpret.ask.TextRetriever` over that index and the feature
  descriptions (the sentence embedder is loaded once, when the retriever is first built).

Each function returns ``None`` when ``medsae.interpret`` or what it needs (descriptions) is
not available, so that :mod:`medsae.serve.search` can fall back and say so.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pandas as pd

from medsae.report.view import WorkspaceView
from medsae.serve.search import SearchHits

FINGERPRINT_K = 5  # the index stage's default fingerprint size (SearchConfig.k)
_lock = threading.RLock()
_state: dict[int, dict[str, Any]] = {}


def _slot(view: WorkspaceView) -> dict[str, Any]:
    with _lock:
        return _state.setdefault(id(view), {"view": view})


def fingerprint_index(view: WorkspaceView) -> Any:
    """The workspace's fingerprint index, or None when ``medsae.interpret`` lacks it."""
    slot = _slot(view)
    with _lock:
        if "index" not in slot:
            slot["index"] = None
            try:
                from medsae.interpret.fingerprint import FingerprintIndex
            except ImportError:
                return None
            folder = view.ws.index(view.encoder, view.run) if view.encoder and view.run else None
            index = None
            if folder is not None and (folder / "fingerprint_index.npz").is_file():
                try:
                    index = FingerprintIndex.load(folder)
                except Exception:  # an unreadable index is rebuilt from the codes below
                    index = None
                if index is not None and index.n_rows != len(view.table):
                    index = None
            if index is None and view.codes is not None:
                index = FingerprintIndex.build(view.codes, view.table)
            slot["index"] = index
        return slot["index"]


def _retriever(view: WorkspaceView) -> Any:
    slot = _slot(view)
    with _lock:
        if "retriever" not in slot:
            slot["retriever"] = None
            features = view.features_file
            index = fingerprint_index(view)
            if features is None or index is None or "description" not in features.columns:
                return None
            try:
                from medsae.interpret.ask import TextRetriever
            except ImportError:
                return None
            try:
                slot["retriever"] = TextRetriever(index, features)
            except Exception:  # no usable descriptions: the keyword fallback answers
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
    choices, df = retriever.search(query, n=k)
    feats = [
        {
            "latent": c.latent,
            "weight": c.weight,
            "similarity": c.similarity,
            "description": c.description,
        }
        for c in choices
    ]
    return _hits(df, "interpret.ask", feats)


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
