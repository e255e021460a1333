"""Batched, prefetching, shard-by-shard encoding into a folder (the local backend).

The rows to encode are cut into shards of ``shard_rows`` (the unit of resume and of job
splits). Loader threads read image batches from the memory-mapped ``images.npy`` and
preprocess them (uint8 -> normalised tensor) ahead of the model, so the forward pass never
waits on I/O; each finished shard is checked (shape, finite values) and written atomically.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress, TaskID

from medsae.encode.store import Shard, save_shard, shard_header, shard_name
from medsae.errors import ArtifactError
from medsae.progress import make_progress, plain_column


def plan_shards(n_rows: int, shard_rows: int) -> list[Shard]:
    """Cut rows ``0..n_rows`` into consecutive shards of at most ``shard_rows`` rows."""
    return [
        Shard(shard_name(k), lo, min(lo + shard_rows, n_rows))
        for k, lo in enumerate(range(0, n_rows, shard_rows))
    ]


def job_shards(plan: Sequence[Shard], shard_index: int, num_shards: int) -> list[Shard]:
    """The contiguous block of shards that job ``shard_index`` of ``num_shards`` encodes."""
    blocks = np.array_split(np.arange(len(plan)), num_shards)
    return [plan[int(k)] for k in blocks[shard_index]]


def check_finite(x_bd: np.ndarray, start: int, slice_ids: Sequence[str], encoder: str) -> None:
    """Raise :class:`ArtifactError` naming the slices whose embeddings hold NaN or Inf."""
    bad = np.flatnonzero(~np.isfinite(x_bd).all(axis=1))
    if len(bad):
        ids = [str(slice_ids[start + int(r)]) for r in bad[:10]]
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise ArtifactError(
            f"encoder {encoder} produced NaN/Inf embeddings for {len(bad)} slice(s): "
            f"{', '.join(ids)}{more} (rows {start + int(bad[0])}...); check these images and the "
            "encoder's precision settings"
        )


def finish_shard(
    folder: Path, shard: Shard, x_bd: np.ndarray, dtype: str, slice_ids: Sequence[str], encoder: str
) -> None:
    """Check one shard's values and write it atomically in the storage dtype."""
    check_finite(x_bd, shard.start, slice_ids, encoder)
    with np.errstate(over="ignore"):  # overflow shows up as Inf and is reported below
        stored = x_bd.astype(dtype, copy=False)
    if dtype != "float32":
        check_finite(stored, shard.start, slice_ids, f"{encoder} (after conversion to {dtype})")
    save_shard(folder, shard.file, stored)


def existing_shard_ok(folder: Path, shard: Shard, dim: int, dtype: str, encoder: str) -> bool:
    """True when ``folder`` already holds this shard, complete; refuse a shard of another encoder."""
    header = shard_header(folder / shard.file)
    if header is None:
        return False
    shape, found = header
    rows = shard.stop - shard.start
    if len(shape) != 2 or shape[0] != rows:
        return False  # an incomplete or foreign-layout shard: encode it again
    if shape[1] != dim:
        raise ArtifactError(
            f"{folder / shard.file}: holds {shape[1]}-d embeddings but encoder {encoder} gives "
            f"{dim}-d ones; refusing to mix encoders in one store (use --force to start over, "
            "or another --name)"
        )
    return str(found) == dtype  # e.g. an adapter's float32 shard not yet converted: redo it


def _batches(shards: Sequence[Shard], batch_size: int) -> Iterator[tuple[int, int]]:
    for shard in shards:
        for lo in range(shard.start, shard.stop, batch_size):
            yield lo, min(lo + batch_size, shard.stop)


def _prefetch(
    load: Callable[[int, int], Any], ranges: Iterator[tuple[int, int]], workers: int, depth: int
) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(lo, hi, load(lo, hi))`` in order, with up to ``depth`` loads running ahead."""
    if workers == 0:
        for lo, hi in ranges:
            yield lo, hi, load(lo, hi)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="medsae-load") as pool:
        queue: deque[tuple[int, int, Future[Any]]] = deque()
        for lo, hi in ranges:
            queue.append((lo, hi, pool.submit(load, lo, hi)))
            if len(queue) >= depth:
                a, b, fut = queue.popleft()
                yield a, b, fut.result()
        while queue:
            a, b, fut = queue.popleft()
            yield a, b, fut.result()


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Temporarily set the number of torch CPU threads."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class RateProgress:
    """A progress bar over slices that shows the encoding rate (slices/s) of this run."""

    def __init__(self, total: int, description: str, done: int = 0) -> None:
        self.progress: Progress = make_progress(plain_column("{task.fields[rate]}"))
        self.task: TaskID = self.progress.add_task(
            description, total=total, completed=done, rate=""
        )
        self.t0 = time.perf_counter()
        self.encoded = 0

    def __enter__(self) -> RateProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def advance(self, rows: int) -> None:
        self.encoded += rows
        rate = self.encoded / max(time.perf_counter() - self.t0, 1e-9)
        self.progress.update(self.task, advance=rows, rate=f"{rate:,.1f} slices/s")


def encode_local(
    encoder: Any,
    images: np.ndarray,
    shards: Sequence[Shard],
    folder: Path,
    *,
    dtype: str,
    batch_size: int,
    workers: int,
    prefetch: int,
    slice_ids: Sequence[str],
    progress: RateProgress | None = None,
) -> None:
    """Encode ``shards`` of ``images`` with an in-process encoder, writing each into ``folder``.

    Encoders with ``preprocess``/``forward`` have preprocessing done on the loader threads;
    others get raw uint8 batches on the loader threads and ``encode`` on this one.
    """
    split = hasattr(encoder, "preprocess") and hasattr(encoder, "forward")

    def load(lo: int, hi: int) -> Any:
        batch = np.array(images[lo:hi])  # reads from the memory map on this thread
        if not split:
            return batch
        with torch.inference_mode():
            return encoder.preprocess(batch)

    dim = int(encoder.dim)
    by_start = {s.start: s for s in shards}
    current: Shard | None = None
    buf_bd = np.empty((0, dim), dtype=np.float32)
    for lo, hi, batch in _prefetch(
        load, _batches(shards, batch_size), workers, max(1, workers) * prefetch
    ):
        if lo in by_start:
            current = by_start[lo]
            buf_bd = np.empty((current.stop - current.start, dim), dtype=np.float32)
        assert current is not None
        out_bd = (
            encoder.forward(batch) if split else np.asarray(encoder.encode(batch), dtype=np.float32)
        )
        if out_bd.shape != (hi - lo, dim):
            raise ArtifactError(
                f"encoder {encoder.name}: output shape {out_bd.shape} for rows {lo}-{hi}, expected {(hi - lo, dim)}"
            )
        check_finite(out_bd, lo, slice_ids, encoder.name)
        buf_bd[lo - current.start : hi - current.start] = out_bd
        if hi == current.stop:
            finish_shard(folder, current, buf_bd, dtype, slice_ids, encoder.name)
        if progress is not None:
            progress.advance(hi - lo)


def finish_external_shard(
    folder: Path, shard: Shard, dim: int, dtype: str, slice_ids: Sequence[str], encoder: str
) -> None:
    """Check a shard an adapter wrote (shape, finite) and convert it to the storage dtype."""
    path = folder / shard.file
    arr = np.load(path)
    if arr.shape != (shard.stop - shard.start, dim):
        path.unlink()
        raise ArtifactError(
            f"{path}: adapter wrote shape {arr.shape}, expected {(shard.stop - shard.start, dim)}"
        )
    try:
        check_finite(arr, shard.start, slice_ids, encoder)
    except ArtifactError:
        path.unlink()
        raise
    if str(arr.dtype) != dtype:
        finish_shard(folder, shard, arr.astype(np.float32), dtype, slice_ids, encoder)
