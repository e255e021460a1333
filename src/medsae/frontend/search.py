"""The search service of the front ends (report and browser): text, similar slices, images.

:class:`WorkspaceSearch` answers every search over one open
:class:`medsae.frontend.view.WorkspaceView`, with the same functions as the library API:

* similar slices and new images: the run's :class:`FingerprintIndex` (the index stage's
  artifact, else built in memory from the view's codes and table) with the fingerprint
  size ``k`` of the index stage's :class:`SearchConfig`;
* text: a :class:`TextRetriever` over the view's feature table with the index stage's
  :class:`AskConfig` (the mode its query-suite evaluation used), its sentence embedder
  wrapped in a :class:`BatchingEmbedder` so that concurrent requests share batches; where
  the workspace has no descriptions (or ``text_model=False``), a keyword match over
  feature descriptions and concepts (``method="keyword"``);
* images: prepared by :mod:`medsae.data.query_image` by the caller, then encoded and coded
  with the run's encoder and SAE, loaded once per process (:mod:`medsae.sae.run_models`,
  shared with the feature maps and the library's ``search_similar``).

What one service loads (index, retriever) belongs to it and goes with it: a front end builds
one service per open view. A part that cannot run on the workspace raises
:class:`SearchUnavailable` (the browser answers 503).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd

from medsae.errors import MedsaeError
from medsae.frontend.view import WorkspaceView
from medsae.retrieval.config import AskConfig, IndexConfig
from medsae.retrieval.fingerprint import FingerprintIndex
from medsae.retrieval.language import TextRetriever, load_descriptions
from medsae.sae.run_models import RunModels, run_models


class SearchUnavailable(Exception):
    """This kind of search cannot run on this workspace (the message says why)."""


@dataclass
class SearchHits:
    """Ranked slices (row numbers of the slice table) with scores and how they were found."""

    rows: list[int]
    scores: list[float]
    method: str
    features: list[dict[str, Any]] = field(default_factory=list)
    reading: dict[str, Any] | None = None


class SearchBackend(Protocol):
    """What the front ends need from a search implementation."""

    def text(self, query: str, k: int) -> SearchHits: ...

    def similar(self, row: int, k: int) -> SearchHits: ...

    def image(self, image: np.ndarray, k: int) -> SearchHits: ...


_UNSET: Any = object()


class WorkspaceSearch:
    """Search over one open :class:`WorkspaceView` (see the module docstring).

    Parameters
    ----------
    view:
        The open workspace; its tables and codes are used, never read again.
    config:
        Fingerprint size and text settings; by default those the index stage recorded
        (:func:`medsae.retrieval.index.index_config`).
    load_text_model:
        Build the text retriever (loads the sentence embedder) at construction, so that the
        first query is fast (the browser does); otherwise on first use.
    use_interpret:
        Answer text through the feature descriptions and the sentence embedder where
        available; False always uses the keyword match (no model to load).
    """

    def __init__(
        self,
        view: WorkspaceView,
        config: IndexConfig | None = None,
        load_text_model: bool = False,
        use_interpret: bool = True,
    ) -> None:
        self.view = view
        self.use_interpret = use_interpret
        self.config = config or _recorded_config(view)
        self._lock = threading.RLock()
        self._index: FingerprintIndex | None = _UNSET
        self._retriever: TextRetriever | None = _UNSET
        self._words: list[set[str]] | None = None
        if load_text_model and use_interpret:
            self.text_ready()

    @property
    def k(self) -> int:
        """Fingerprint size: the query's top-K active latents (``SearchConfig.k``)."""
        return self.config.search.k

    @property
    def ask_config(self) -> AskConfig:
        """The text settings (``AskConfig``; its ``mode`` chooses the features)."""
        return self.config.ask

    # ----------------------------------------------------------------- shared parts
    def index(self) -> FingerprintIndex | None:
        """The run's fingerprint index (built once), or None without codes."""
        with self._lock:
            if self._index is _UNSET:
                self._index = _open_index(self.view)
            return self._index

    def retriever(self) -> TextRetriever | None:
        """The text retriever over the view's descriptions (built once), or None."""
        with self._lock:
            if self._retriever is _UNSET:
                self._retriever = self._open_retriever() if self.use_interpret else None
            return self._retriever

    def text_ready(self) -> bool:
        """Build the text retriever now and load its sentence embedder; whether it is usable."""
        retriever = self.retriever()
        if retriever is None:
            return False
        warm = getattr(retriever.embedder, "warm", None)
        if callable(warm):
            warm()
        retriever.prepare_probes()
        return True

    def text_mode(self) -> Literal["interpret", "keyword"]:
        """How text queries are answered, without building the retriever: ``interpret``
        (the feature descriptions and the sentence embedder) or ``keyword``.

        Before the retriever is built this is decided from what it is built of (usable
        descriptions of latents of this run); once built, from the retriever itself.
        """
        built = self._retriever  # read without the lock, which a build holds: never waits
        if built is not _UNSET:
            return "keyword" if built is None else "interpret"
        return "interpret" if self._descriptions_usable() else "keyword"

    def _descriptions_usable(self) -> bool:
        view = self.view
        features = view.features_file
        if not self.use_interpret or view.encoder is None or features is None:
            return False
        try:
            latents = load_descriptions(features)["latent"].astype(int)
        except MedsaeError:
            return False
        return bool(((latents >= 0) & (latents < view.n_latents)).all())

    def _open_retriever(self) -> TextRetriever | None:
        view = self.view
        features = view.features_file
        index = self.index()
        if index is None or features is None or "description" not in features.columns:
            return None
        assert view.encoder is not None and view.run is not None
        from medsae.llm.embed import shared_embedder
        from medsae.retrieval.batching import BatchingEmbedder
        from medsae.retrieval.index import (
            cached_description_embeddings,
            load_probes,
            load_profiles,
        )

        embedder = shared_embedder()
        try:
            cached = cached_description_embeddings(
                view.ws.index(view.encoder, view.run), features, embedder
            )
            # concurrent requests share embedding batches and a cache of embedded texts
            batching: Any = BatchingEmbedder(embedder)
            profiles = load_profiles(view.ws, view.encoder, view.run)
            probes = load_probes(view.ws, view.encoder, view.run)
            return TextRetriever(
                index,
                features,
                batching,
                self.ask_config,
                cached,
                profiles=profiles,
                probes=probes,
            )
        except MedsaeError:  # no usable descriptions: the keyword match answers
            return None

    # ----------------------------------------------------------------- text
    def text(self, query: str, k: int) -> SearchHits:
        """Slices matching a text query, ``k`` subjects at most."""
        retriever = self.retriever()
        if retriever is None:
            return self._keyword_text(query, k)
        found = retriever.answer(query, k)
        feats = [
            {
                "latent": c.latent,
                "weight": c.weight,
                "similarity": c.similarity,
                "description": c.description,
                **({"concept": c.concept, "negated": c.negated} if c.concept else {}),
                **({"probe": c.probe} if c.probe else {}),
                **({"against": c.against} if c.against else {}),
            }
            for c in found.features
        ]
        return SearchHits(
            rows=[int(r) for r in found.hits.rows],
            scores=[float(x) for x in found.hits.scores],
            method="interpret.ask",
            features=feats,
            reading=found.reading.as_dict(),
        )

    def _keyword_text(self, query: str, k: int) -> SearchHits:
        """Features whose description or concept shares words with the query, slices ranked
        by the sum of those features' activations."""
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
        has_desc = "description" in table
        feats = [
            {
                "latent": int(j),
                "description": _str_or_none(table.at[int(j), "description"]) if has_desc else None,
            }
            for j in latents
        ]
        return SearchHits(order.tolist(), score_n[order].astype(float).tolist(), "keyword", feats)

    def _feature_words(self) -> list[set[str]]:
        with self._lock:
            if self._words is None:
                table = self.view.feature_table
                cols = [c for c in ("description", "concept") if c in table.columns]
                words = []
                for j in range(len(table)):
                    parts = [_str_or_none(table.at[j, c]) for c in cols]
                    text = " ".join(p for p in parts if p).lower()
                    words.append(
                        set(re.findall(r"[a-z0-9]+", text.replace("=", " ").replace("_", " ")))
                    )
                self._words = words
            return self._words

    # ----------------------------------------------------------------- fingerprints
    def _hits(self, df: pd.DataFrame) -> SearchHits:
        return SearchHits(
            rows=[int(r) for r in df["row"]],
            scores=[float(s) for s in df["score"]],
            method="fingerprint",
        )

    def _require_index(self) -> FingerprintIndex:
        index = self.index()
        if index is None:
            raise SearchUnavailable("no sparse codes in this workspace")
        return index

    def similar(self, row: int, k: int) -> SearchHits:
        """Slices similar to table row ``row``: one per subject, its own subject excluded."""
        return self._hits(self._require_index().search(int(row), k=self.k, n=k))

    def similar_to_codes(self, codes_n: np.ndarray, k: int) -> SearchHits:
        """Slices whose fingerprints match a dense code vector (a new image)."""
        query = np.asarray(codes_n, dtype=np.float64)
        return self._hits(
            self._require_index().search(query, k=self.k, n=k, exclude_own_subject=False)
        )

    # ----------------------------------------------------------------- images
    def _image_models(self) -> RunModels:
        view = self.view
        if view.encoder is None or view.run is None:
            raise SearchUnavailable("no SAE run with codes in this workspace")
        return run_models(view.ws, view.encoder, view.run, view.device)

    def encode_image(self, image: np.ndarray) -> np.ndarray:
        """Dense SAE codes ``(n_latents,)`` of one prepared uint8 image."""
        models = self._image_models()
        try:
            models.load()
        except Exception as e:  # any failure to rebuild the models means no image search
            raise SearchUnavailable(
                f"cannot rebuild encoder {models.encoder_name!r} and SAE {models.run!r}: {e}"
            ) from e
        return models.code(models.embed(image))

    def image(self, image: np.ndarray, k: int) -> SearchHits:
        """Slices similar to a prepared image (:mod:`medsae.data.query_image`)."""
        dense = self.encode_image(image)
        hits = self.similar_to_codes(dense, k)
        order = np.argsort(-dense, kind="stable")[: min(10, self.k)]
        hits.features = [
            {"latent": int(j), "activation": float(dense[j])} for j in order if dense[j] > 0
        ]
        return hits


def _recorded_config(view: WorkspaceView) -> IndexConfig:
    """The index stage's config of the view's run (defaults without a run)."""
    if view.encoder is None or view.run is None:
        return IndexConfig()
    from medsae.retrieval.index import index_config

    return index_config(view.ws, view.encoder, view.run)


def _open_index(view: WorkspaceView) -> FingerprintIndex | None:
    """The index stage's artifact of the view's run, else an index of the view's codes."""
    if view.encoder is None or view.run is None or view.codes is None:
        return None
    from medsae.workspace import read_manifest

    folder = view.ws.index(view.encoder, view.run)
    index = None
    if read_manifest(folder) is not None:  # a damaged index artifact raises, naming its file
        index = FingerprintIndex.load(folder)
    if index is None or index.n_rows != len(view.table):
        index = FingerprintIndex.build(view.codes, view.table)
    return index


def _str_or_none(v: Any) -> str | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
