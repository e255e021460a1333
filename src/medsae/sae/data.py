"""Streaming training data from the memory-mapped embedding store, selected by split.

The whole matrix is never loaded: every epoch draws a fresh permutation of the training rows
(seeded by ``(seed, epoch)``, so no RNG state has to be saved to resume), reads it in chunks
of ``chunk_rows`` rows and cuts each chunk into batches. Batch ``b`` of epoch ``e`` is a pure
function of ``(seed, e, b)``: resuming at a batch reproduces the exact remaining stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medsae.encode.store import EmbeddingStore
from medsae.errors import InputError


@dataclass
class DataStats:
    """What one validating pass over the rows found."""

    n_rows: int
    mean_sq_norm: float


def split_rows(table: pd.DataFrame, split: str) -> np.ndarray:
    """Row numbers (slice-table order) of one split."""
    return np.flatnonzero(table["split"].to_numpy() == split).astype(np.int64)


def check_finite(
    x_bd: np.ndarray, rows: np.ndarray, table: pd.DataFrame | None, where: str
) -> None:
    """Raise an :class:`InputError` naming the rows (and slice ids) holding NaN or Inf."""
    bad = ~np.isfinite(x_bd).all(axis=1)
    if bad.any():
        bad_rows = rows[bad]
        ids = ""
        if table is not None and "slice_id" in table:
            ids = " (" + ", ".join(str(s) for s in table["slice_id"].to_numpy()[bad_rows[:5]]) + ")"
        raise InputError(
            where,
            f"{int(bad.sum())} embedding row(s) contain NaN or Inf, e.g. rows {bad_rows[:5].tolist()}{ids}; "
            "re-encode them or drop those slices",
        )


def scan_rows(
    store: EmbeddingStore, rows: np.ndarray, table: pd.DataFrame | None, chunk_rows: int
) -> DataStats:
    """Read ``rows`` once in chunks: check they are finite, return the mean squared norm."""
    total = 0.0
    for lo in range(0, len(rows), chunk_rows):
        idx = rows[lo : lo + chunk_rows]
        x = store.read(idx)
        check_finite(x, idx, table, str(store.folder))
        total += float(np.einsum("ij,ij->", x, x, dtype=np.float64))
    return DataStats(n_rows=len(rows), mean_sq_norm=total / max(len(rows), 1))


class TrainStream:
    """Shuffled batches of the training rows; counts chunk reads (``reads``)."""

    def __init__(
        self, store: EmbeddingStore, rows: np.ndarray, batch_size: int, seed: int, chunk_rows: int
    ) -> None:
        if len(rows) < batch_size:
            raise InputError(
                f"{store.folder}",
                f"the train split has {len(rows)} rows, fewer than one batch of {batch_size}; "
                "lower --batch-size or add training data",
            )
        self.store = store
        self.rows = np.asarray(rows, dtype=np.int64)
        self.batch_size = batch_size
        self.seed = seed
        self.chunk_batches = max(1, chunk_rows // batch_size)
        self.reads = 0

    @property
    def batches_per_epoch(self) -> int:
        """Full batches per epoch (the last partial batch of a permutation is dropped)."""
        return len(self.rows) // self.batch_size

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.rows)

    def epoch_chunks(
        self, epoch: int, start_batch: int = 0
    ) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(c0, c1, block)`` of one epoch from the chunk holding ``start_batch`` on:
        ``block`` holds batches ``c0 .. c1 - 1`` (batch ``b`` is rows
        ``(b - c0) * batch_size`` to ``(b - c0 + 1) * batch_size``)."""
        perm = self.permutation(epoch)
        n_b = self.batches_per_epoch
        bs = self.batch_size
        first_chunk = start_batch // self.chunk_batches
        for c0 in range(first_chunk * self.chunk_batches, n_b, self.chunk_batches):
            c1 = min(c0 + self.chunk_batches, n_b)
            block = self.store.read(perm[c0 * bs : c1 * bs])
            self.reads += 1
            yield c0, c1, block

    def epoch_batches(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """``(batch_index, x_bd)`` of one epoch from ``start_batch`` on."""
        bs = self.batch_size
        for c0, c1, block in self.epoch_chunks(epoch, start_batch):
            for b in range(max(c0, start_batch), c1):
                yield b, block[(b - c0) * bs : (b - c0 + 1) * bs]


def iter_split(
    store: EmbeddingStore, rows: np.ndarray, chunk_rows: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(row_numbers, x_bd)`` of some rows in order, in chunks."""
    for lo in range(0, len(rows), chunk_rows):
        idx = rows[lo : lo + chunk_rows]
        yield idx, store.read(idx)
