"""A text embedder wrapper for a server: concurrent requests share batches and a cache.

Many simultaneous searches each embed one or two short texts. Embedding them one by one
(on request threads that also fight over the CPU threads of the model) is slow;
:class:`BatchingEmbedder` hands every text to one worker thread, which waits a few
milliseconds for more texts, embeds them in one batch and answers every waiting request.
Embeddings of texts seen before come from a bounded LRU cache (the fixed aspect phrases of
``medsae.retrieval.language`` such as "CT scan" are embedded once).
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np


class BatchingEmbedder:
    """Same interface as :class:`medsae.llm.embed.TextEmbedder` (``embed``, ``name``).

    Parameters
    ----------
    inner:
        The embedder doing the work (called from one thread only).
    max_batch:
        Most texts embedded in one call.
    wait_s:
        How long the worker waits for more texts after the first one arrived.
    cache_size:
        Texts whose embeddings are kept.
    """

    def __init__(
        self, inner: Any, max_batch: int = 64, wait_s: float = 0.004, cache_size: int = 4096
    ) -> None:
        self.inner = inner
        self.name: str = str(getattr(inner, "name", "embedder"))
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._queue: queue.Queue[tuple[str, Future[np.ndarray]]] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="medsae-text-embedder", daemon=True)
        self._worker.start()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _cached(self, text: str) -> np.ndarray | None:
        with self._cache_lock:
            vec = self._cache.get(text)
            if vec is not None:
                self._cache.move_to_end(text)
            return vec

    def _store(self, text: str, vec: np.ndarray) -> None:
        with self._cache_lock:
            self._cache[text] = vec
            self._cache.move_to_end(text)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings of ``texts`` (float32, one row per text)."""
        texts = [str(t) for t in texts]
        rows: list[np.ndarray | Future[np.ndarray]] = []
        for t in texts:
            vec = self._cached(t)
            if vec is None:
                fut: Future[np.ndarray] = Future()
                self._queue.put((t, fut))
                rows.append(fut)
            else:
                rows.append(vec)
        out = [r.result() if isinstance(r, Future) else r for r in rows]
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack(out).astype(np.float32, copy=False)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            try:
                while len(batch) < self.max_batch:
                    batch.append(self._queue.get(timeout=self.wait_s))
            except queue.Empty:
                pass
            unique = list(dict.fromkeys(t for t, _ in batch))
            try:
                vectors = np.asarray(self.inner.embed(unique), dtype=np.float32)
            except Exception as e:  # every waiting request gets the error
                for _, fut in batch:
                    fut.set_exception(e)
                continue
            by_text = dict(zip(unique, vectors, strict=True))
            for text, vec in by_text.items():
                self._store(text, vec)
            for text, fut in batch:
                fut.set_result(by_text[text])
