"""Search behind the browser: text queries, similar slices, uploaded images.

:class:`SearchBackend` is the interface the web app calls. :class:`WorkspaceSearch` is the
default: it delegates to ``medsae.interpret`` (``ask`` for text, ``FingerprintIndex`` /
``search_similar`` for fingerprints) and to the workspace's encoder and SAE for uploaded
images. Where a part is not available in the workspace (no index artifact, an encoder that
cannot be rebuilt), it falls back to a plain computation over the sparse codes and says so
in ``method`` (``"keyword"`` text matching over feature descriptions; cosine similarity of
fingerprints), or raises :class:`SearchUnavailable` (the app answers 503).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp

from medsae.view import WorkspaceView


class SearchUnavailable(Exception):
    """This kind of search cannot run on this workspace (the message says why)."""


@dataclass
class SearchHits:
    """Ranked slices (row numbers of the slice table) with scores and how they were found."""

    rows: list[int]
    scores: list[float]
    method: str
    features: list[dict[str, Any]] = field(default_factory=list)


class SearchBackend(Protocol):
    """What the web app needs from a search implementation."""

    def text(self, query: str, k: int) -> SearchHits: ...

    def similar(self, row: int, k: int) -> SearchHits: ...

    def image(self, image: np.ndarray, k: int) -> SearchHits: ...


def fingerprint_vector(codes_n: np.ndarray, k: int) -> np.ndarray:
    """Keep the ``k`` largest activations of a dense code vector (the slice's fingerprint)."""
    out = np.zeros_like(codes_n, dtype=np.float32)
    if k <= 0 or not np.any(codes_n > 0):
        return out
    top = np.argpartition(-codes_n, min(k, len(codes_n) - 1))[:k]
    top = top[codes_n[top] > 0]
    out[top] = codes_n[top]
    return out


class WorkspaceSearch:
    """Default search over a :class:`WorkspaceView` (see the module docstring).

    Parameters
    ----------
    view:
        The workspace to search.
    fingerprint_k:
        Features kept in a fingerprint for the cosine fallback.
    load_text_model:
        Load the text model at construction (the server does, so that the first query is
        fast); otherwise on first use.
    use_interpret:
        Answer text queries with ``medsae.interpret`` (sentence embedder over descriptions)
        where available; False uses the keyword fallback (no model to load).
    """

    def __init__(
        self,
        view: WorkspaceView,
        fingerprint_k: int = 16,
        load_text_model: bool = False,
        use_interpret: bool = True,
    ) -> None:
        self.view = view
        self.use_interpret = use_interpret
        self.fingerprint_k = fingerprint_k
        self._lock = threading.Lock()
        self._image_model: tuple[Any, Any] | None = None
        self._fp_matrix: sp.csr_matrix | None = None
        self._words: list[set[str]] | None = None
        if load_text_model and use_interpret:
            self._interpret_text_ready()

    # ----------------------------------------------------------------- text
    def _interpret_text_ready(self) -> bool:
        if not self.use_interpret:
            return False
        from medsae.serve import interpret_bridge

        return interpret_bridge.text_ready(self.view)

    def text(self, query: str, k: int) -> SearchHits:
        from medsae.serve import interpret_bridge

        hits = interpret_bridge.ask(self.view, query, k) if self.use_interpret else None
        if hits is not None:
            return hits
        return self._keyword_text(query, k)

    def _keyword_text(self, query: str, k: int) -> SearchHits:
        """Fallback: features whose description or concept shares words with the query,
        slices ranked by the sum of those features' activations."""
        table = self.view.feature_table
        if self.view.codes is None or table.empty:
            raise SearchUnavailable("no sparse codes in this workspace")
        words = {w for w in re.findall(r"[a-z0-9]+", query.lower()) if len(w) > 1}
        if not words:
            return SearchHits([], [], "keyword")
        overlap = pd.Series([len(words & w) for w in self._feature_words()], index=table.index)
        best = overlap[overlap > 0].sort_values(ascending=False, kind="stable").head(5)
        if best.empty:
            return SearchHits([], [], "keyword")
        latents = table.loc[best.index, "latent"].to_numpy(dtype=np.int64)
        weights = best.to_numpy(dtype=np.float32)
        score_n = np.asarray(self.view.codes[:, latents] @ weights).ravel()
        order = np.argsort(-score_n, kind="stable")[:k]
        order = order[score_n[order] > 0]
        feats = [
            {
                "latent": int(j),
                "description": _str_or_none(table.at[int(j), "description"])
                if "description" in table
                else None,
            }
            for j in latents
        ]
        return SearchHits(order.tolist(), score_n[order].astype(float).tolist(), "keyword", feats)

    def _feature_words(self) -> list[set[str]]:
        with self._lock:
            if self._words is None:
                table = self.view.feature_table
                words = []
                for j in range(len(table)):
                    parts = [
                        _str_or_none(table.at[j, c]) if c in table.columns else None
                        for c in ("description", "concept")
                    ]
                    text = (
                        " ".join(p for p in parts if p).lower().replace("=", " ").replace("_", " ")
                    )
                    words.append(set(re.findall(r"[a-z0-9]+", text)))
                self._words = words
            return self._words

    # ----------------------------------------------------------------- similar
    def _fingerprints(self) -> sp.csr_matrix:
        with self._lock:
            if self._fp_matrix is None:
                codes = self.view.codes
                if codes is None:
                    raise SearchUnavailable("no sparse codes in this workspace")
                rows = []
                for r in range(codes.shape[0]):
                    lo, hi = codes.indptr[r], codes.indptr[r + 1]
                    idx, vals = codes.indices[lo:hi], codes.data[lo:hi]
                    keep = np.argsort(-vals, kind="stable")[: self.fingerprint_k]
                    row = np.zeros(codes.shape[1], dtype=np.float32)
                    row[idx[keep]] = vals[keep]
                    rows.append(sp.csr_matrix(row))
                fp = (
                    sp.vstack(rows).tocsr()
                    if rows
                    else sp.csr_matrix(codes.shape, dtype=np.float32)
                )
                norms = np.sqrt(np.asarray(fp.multiply(fp).sum(axis=1)).ravel())
                self._fp_matrix = sp.diags(1.0 / np.maximum(norms, 1e-12)) @ fp
            return self._fp_matrix

    def _cosine(self, fp_n: np.ndarray, k: int, exclude: int | None) -> SearchHits:
        norm = float(np.linalg.norm(fp_n))
        if norm == 0:
            return SearchHits([], [], "fingerprint-cosine")
        sims = np.asarray(self._fingerprints() @ (fp_n / norm)).ravel()
        if exclude is not None:
            sims[exclude] = -np.inf
        order = np.argsort(-sims, kind="stable")[:k]
        order = order[np.isfinite(sims[order]) & (sims[order] > 0)]
        return SearchHits(order.tolist(), sims[order].astype(float).tolist(), "fingerprint-cosine")

    def similar(self, row: int, k: int) -> SearchHits:
        from medsae.serve import interpret_bridge

        hits = interpret_bridge.similar(self.view, row, k)
        if hits is not None:
            return hits
        codes = self.view.codes
        if codes is None:
            raise SearchUnavailable("no sparse codes in this workspace")
        dense = np.asarray(codes[row].toarray()).ravel()
        return self._cosine(fingerprint_vector(dense, self.fingerprint_k), k, exclude=row)

    # ----------------------------------------------------------------- image
    def _models(self) -> tuple[Any, Any]:
        with self._lock:
            if self._image_model is None:
                self._image_model = _load_image_models(self.view)
            return self._image_model

    def encode_image(self, image: np.ndarray) -> np.ndarray:
        """Dense SAE codes ``(n_latents,)`` of one uint8 image, as the pipeline would encode it."""
        import torch

        encoder, sae = self._models()
        emb_1d = encoder.encode(image[None])
        with torch.no_grad():
            codes = sae.encode(torch.as_tensor(np.asarray(emb_1d, dtype=np.float32)))
        return codes.detach().cpu().numpy().ravel()

    def image(self, image: np.ndarray, k: int) -> SearchHits:
        dense = self.encode_image(image)
        from medsae.serve import interpret_bridge

        hits = interpret_bridge.similar_to_codes(self.view, dense, k)
        if hits is None:
            hits = self._cosine(fingerprint_vector(dense, self.fingerprint_k), k, exclude=None)
        order = np.argsort(-dense, kind="stable")[: min(10, self.fingerprint_k)]
        hits.features = [
            {"latent": int(j), "activation": float(dense[j])} for j in order if dense[j] > 0
        ]
        return hits


def _load_image_models(view: WorkspaceView) -> tuple[Any, Any]:
    """The workspace's encoder (rebuilt from its store) and SAE, or SearchUnavailable."""
    if view.encoder is None or view.run is None:
        raise SearchUnavailable("no SAE run with codes in this workspace")
    try:
        from medsae.encode import encoder_from_store  # type: ignore[attr-defined]
        from medsae.encode.store import EmbeddingStore
        from medsae.sae import load_sae  # type: ignore[attr-defined]
    except ImportError as e:
        raise SearchUnavailable(f"image search needs the encode and sae stages: {e}") from e
    try:
        store = EmbeddingStore(view.ws.embeddings(view.encoder))
        encoder = encoder_from_store(store)
        sae = load_sae(view.ws.sae(view.encoder, view.run))
    except Exception as e:  # any failure to rebuild the models means no image search
        raise SearchUnavailable(
            f"cannot rebuild encoder {view.encoder!r} and SAE {view.run!r}: {e}"
        ) from e
    return encoder, sae


def _str_or_none(v: Any) -> str | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
