"""The embedding store: float matrices in shards, rows aligned with the slice table.

``WS/embeddings/<encoder>/``
    ``store.json``          ``{"encoder", "dim", "dtype", "n_rows", "shards": [{"file", "start",
                            "stop"}], ...}`` plus whatever the encoder records (weights
                            fingerprint, preprocessing, norms summary)
    ``shard-00000.npy``...  ``(stop - start, dim)`` float32 (or float16), row ``r`` of shard
                            ``s`` is slice ``s.start + r``

Normalisation (e.g. the paper's per-sample L2) is a transform applied when reading
(:meth:`EmbeddingStore.read`), never baked into the stored values.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medsae.atomic import atomic_path
from medsae.encode.io import STORE_FILE
from medsae.errors import ArtifactError
from medsae.npy import save_npy

Normalize = Literal["none", "l2"]


@dataclass(frozen=True)
class Shard:
    file: str
    start: int
    stop: int


def normalize_rows(x: np.ndarray, normalize: Normalize) -> np.ndarray:
    """Apply a read-time transform: ``none`` or per-row ``l2`` (rows of zero norm stay zero)."""
    if normalize == "none":
        return x
    if normalize == "l2":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.maximum(norms, 1e-12)
    raise ValueError(f"unknown normalisation {normalize!r}; expected 'none' or 'l2'")


class EmbeddingStore:
    """Read access to one encoder's embeddings (memory-mapped shards)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        from medsae.artifacts import load_json_object, read_artifact

        meta_path = self.folder / STORE_FILE

        def read_meta(path: Path) -> tuple[dict[str, Any], list[Shard]]:
            meta = load_json_object(path)
            shards = [Shard(s["file"], int(s["start"]), int(s["stop"])) for s in meta["shards"]]
            int(meta["dim"]), int(meta["n_rows"]), str(meta["encoder"])  # the schema's fields
            return meta, shards

        self.meta, self.shards = read_artifact(
            meta_path, read_meta, "embedding store not found", "encode"
        )
        self.encoder: str = self.meta["encoder"]
        self.dim: int = int(self.meta["dim"])
        self.n_rows: int = int(self.meta["n_rows"])
        covered = sum(s.stop - s.start for s in self.shards)
        if covered != self.n_rows:
            raise ArtifactError(
                f"{self.folder}: shards cover {covered} rows, store says {self.n_rows}"
            )

    def __len__(self) -> int:
        return self.n_rows

    def _shard_array(self, shard: Shard) -> np.ndarray:
        path = self.folder / shard.file
        try:
            arr = np.load(path, mmap_mode="r")
        except FileNotFoundError as e:
            raise ArtifactError(
                f"{path}: embedding shard missing; rerun `medsae encode --force`"
            ) from e
        except (OSError, ValueError, EOFError) as e:  # a truncated or corrupt .npy
            raise ArtifactError(
                f"{path}: unreadable embedding shard (truncated or corrupt: {e}); "
                "rerun `medsae encode --force`"
            ) from e
        if arr.shape != (shard.stop - shard.start, self.dim):
            raise ArtifactError(
                f"{self.folder / shard.file}: shape {arr.shape}, expected "
                f"{(shard.stop - shard.start, self.dim)}"
            )
        return arr

    def read(
        self, rows: np.ndarray | slice | None = None, normalize: Normalize = "none"
    ) -> np.ndarray:
        """Rows as a float32 array (all rows when ``rows`` is None), normalised on the way out."""
        if rows is None:
            rows = slice(0, self.n_rows)
        if isinstance(rows, slice):
            idx = np.arange(self.n_rows)[rows]
        else:
            idx = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(idx), self.dim), dtype=np.float32)
        if len(idx) == 0:
            return out
        if idx.min() < 0 or idx.max() >= self.n_rows:
            raise IndexError(f"row index out of range for {self.n_rows} rows in {self.folder}")
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        for shard in self.shards:
            lo, hi = np.searchsorted(sorted_idx, [shard.start, shard.stop])
            if lo == hi:
                continue
            arr = self._shard_array(shard)
            out[order[lo:hi]] = arr[sorted_idx[lo:hi] - shard.start]
        return normalize_rows(out, normalize)

    def iter_chunks(
        self, chunk_rows: int = 65536, normalize: Normalize = "none"
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Stream ``(start_row, block)`` in order without loading the whole matrix."""
        for shard in self.shards:
            arr = self._shard_array(shard)
            for lo in range(0, len(arr), chunk_rows):
                block = np.asarray(arr[lo : lo + chunk_rows], dtype=np.float32)
                yield shard.start + lo, normalize_rows(block, normalize)


def shard_name(number: int) -> str:
    """File name of shard ``number`` (``shard-00003.npy``)."""
    return f"shard-{number:05d}.npy"


def save_shard(folder: Path, name: str, arr: np.ndarray) -> Path:
    """Write one shard atomically (:func:`~medsae.atomic.atomic_path`): a kill never leaves
    half a shard, and a full disk is a :class:`~medsae.atomic.DiskFull` naming the shard."""
    final = Path(folder) / name
    with atomic_path(final, needed=arr.nbytes) as tmp:
        save_npy(tmp, arr)
    return final


def shard_header(path: Path) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype of a finished ``.npy`` shard, or None when missing or unreadable."""
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    return tuple(arr.shape), arr.dtype


def norms_summary(store: EmbeddingStore, chunk_rows: int = 65536) -> dict[str, float]:
    """Summary of the per-row L2 norms ``||x_i||_2`` (min, mean, max and the 1/50/99th percentiles)."""
    parts = [np.linalg.norm(block, axis=1) for _, block in store.iter_chunks(chunk_rows)]
    if not parts:
        return {}
    norms = np.concatenate(parts)
    p01, p50, p99 = np.percentile(norms, [1, 50, 99])
    return {
        "min": float(norms.min()),
        "mean": float(norms.mean()),
        "max": float(norms.max()),
        "p01": float(p01),
        "p50": float(p50),
        "p99": float(p99),
    }


def write_store_meta(
    folder: Path,
    encoder: str,
    shards: list[Shard],
    dim: int,
    dtype: str | None,
    extra: dict[str, Any] | None = None,
) -> EmbeddingStore:
    """Write ``store.json`` for shards already on disk (in row order); returns the opened store."""
    folder = Path(folder)
    start = 0
    entries = []
    for shard in shards:
        if shard.start != start:
            raise ValueError(f"shard {shard.file} starts at row {shard.start}, expected {start}")
        entries.append({"file": shard.file, "start": shard.start, "stop": shard.stop})
        start = shard.stop
    meta: dict[str, Any] = {
        "encoder": encoder,
        "dim": int(dim),
        "dtype": dtype,
        "n_rows": start,
        "shards": entries,
    }
    meta.update(extra or {})
    with atomic_path(folder / STORE_FILE) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    return EmbeddingStore(folder)


def write_store(
    folder: Path,
    encoder: str,
    shards: list[tuple[str, np.ndarray]],
    extra: dict[str, Any] | None = None,
) -> EmbeddingStore:
    """Write shards (name, array) in order and the store metadata; returns the opened store."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    start = 0
    dim = None
    dtype = None
    for name, arr in shards:
        if arr.ndim != 2:
            raise ValueError(f"shard {name}: expected a 2-D array, got shape {arr.shape}")
        dim = arr.shape[1] if dim is None else dim
        if arr.shape[1] != dim:
            raise ValueError(f"shard {name}: dimension {arr.shape[1]} != {dim}")
        dtype = str(arr.dtype)
        save_shard(folder, name, arr)
        entries.append(Shard(name, start, start + len(arr)))
        start += len(arr)
    return write_store_meta(folder, encoder, entries, int(dim or 0), dtype, extra)
