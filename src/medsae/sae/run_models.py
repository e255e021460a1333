"""The models of an SAE run, loaded once per process: the encoder rebuilt from the run's
embedding store and the trained SAE.

Every front end that needs them asks :func:`run_models` (the browser's image search and
feature maps, the report's map overlays, the library's ``search_similar``), so that a process
holds each run's encoder and SAE once. An entry is reloaded when the run's checkpoint or
embedding store changed on disk (a retrained run is never answered with the old weights);
the last :data:`CACHED_RUNS` runs are kept. Each model loads on first use, under a lock, so
that two requests asking at once load it once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from medsae.sae.io import CFG, WEIGHTS
from medsae.workspace import MANIFEST, Workspace

CACHED_RUNS = 4
"""Runs whose models a process keeps loaded (least recently used dropped first)."""
DEVICE = "auto"
"""Where the front ends' encoder runs by default (:mod:`medsae.device`); the SAE, one code
at a time, stays on the CPU."""


def load_run_encoder(ws: Workspace, encoder: str, device: str) -> Any:
    """The encoder that wrote ``ws``'s embedding store of ``encoder``, rebuilt on ``device``."""
    from medsae.encode.registry import encoder_from_store
    from medsae.encode.store import EmbeddingStore

    return encoder_from_store(EmbeddingStore(ws.embeddings(encoder)), device=device)


def load_run_sae(ws: Workspace, encoder: str, run: str) -> Any:
    """The trained SAE of ``(encoder, run)``, on the CPU (ArtifactError naming the folder
    when it holds no checkpoint)."""
    from medsae.sae.checkpoint import load_sae

    return load_sae(ws.sae(encoder, run))


class RunModels:
    """The encoder and SAE of one ``(encoder, run)`` of a workspace, each loaded on first use."""

    def __init__(self, ws: Workspace, encoder: str, run: str, device: str = DEVICE) -> None:
        self.ws, self.encoder_name, self.run, self.device = ws, encoder, run, device
        self._lock = threading.Lock()
        self._encoder: Any = None
        self._sae: Any = None

    @property
    def encoder(self) -> Any:
        """The encoder that wrote the run's embedding store, rebuilt (ArtifactError when the
        store cannot rebuild it)."""
        with self._lock:
            if self._encoder is None:
                self._encoder = load_run_encoder(self.ws, self.encoder_name, self.device)
            return self._encoder

    @property
    def sae(self) -> Any:
        """The run's trained SAE (ArtifactError naming the folder when it holds none)."""
        with self._lock:
            if self._sae is None:
                self._sae = load_run_sae(self.ws, self.encoder_name, self.run)
            return self._sae

    def load(self) -> RunModels:
        """Both models loaded now (the first that fails raises)."""
        _ = (self.encoder, self.sae)
        return self

    def embed(self, image_uint8: np.ndarray) -> np.ndarray:
        """Embedding ``(dim,)`` of one prepared image."""
        return np.asarray(self.encoder.encode(image_uint8[None]), dtype=np.float32)[0]

    def code(self, embedding_d: np.ndarray) -> np.ndarray:
        """Sparse code ``(n_latents,)`` of one embedding (float32, dense)."""
        import torch

        with torch.no_grad():
            x = torch.as_tensor(np.asarray(embedding_d, dtype=np.float32)[None])
            codes = self.sae.encode(x)
        return codes.detach().cpu().numpy().astype(np.float32)[0]


_CACHE: OrderedDict[tuple[str, str, str, str], tuple[tuple[Any, ...], RunModels]] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def _stamp(ws: Workspace, encoder: str, run: str) -> tuple[Any, ...]:
    """What changes when the run is retrained or its embeddings rewritten."""
    paths = (
        ws.sae(encoder, run) / CFG,
        ws.sae(encoder, run) / WEIGHTS,
        ws.embeddings(encoder) / MANIFEST,
    )
    out: list[Any] = []
    for p in paths:
        try:
            st = p.stat()
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


def run_models(
    workspace: str | Path | Workspace, encoder: str, run: str, device: str = DEVICE
) -> RunModels:
    """The process's :class:`RunModels` of ``(encoder, run)`` (see the module docstring)."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    key = (str(ws.root), encoder, run, device)
    stamp = _stamp(ws, encoder, run)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is None or hit[0] != stamp:
            hit = (stamp, RunModels(ws, encoder, run, device))
            _CACHE[key] = hit
        _CACHE.move_to_end(key)
        while len(_CACHE) > CACHED_RUNS:
            _CACHE.popitem(last=False)
        return hit[1]


def clear_run_models() -> None:
    """Forget every loaded run (the next :func:`run_models` loads again)."""
    with _CACHE_LOCK:
        _CACHE.clear()
