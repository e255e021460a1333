"""Feeding the training loop: chunks read ahead on a background thread.

The store read of a chunk (a gather of ``chunk_rows`` shuffled rows from the memory-mapped
embeddings, about 176 ms for 65,536 x 1,024 on CPU) runs on a background thread while the
SAEs train on the previous chunk. On a GPU the chunk goes into pinned memory on that thread
and is copied to the device in one asynchronous copy; batches are then slices of the chunk
on the device. The stream is the same as :meth:`TrainStream.epoch_batches` (batch ``b`` of
epoch ``e`` a pure function of ``(seed, e, b)``), so resume is unchanged.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from medsae.sae.data import TrainStream

_DONE = object()


class ChunkFeed:
    """Batches ``(epoch, batch_index, x_bd)`` of ``stream`` from global ``start_step`` until
    ``total_steps``, as tensors on ``device``; ``ahead`` chunks are read in advance.

    ``wait_s`` accumulates the time the training loop waited for data (the read of a chunk
    not ready yet, the copy to the device): the data share of the training time.
    """

    def __init__(
        self,
        stream: TrainStream,
        device: torch.device,
        start_step: int,
        total_steps: int,
        ahead: int = 1,
    ) -> None:
        self.stream = stream
        self.device = device
        self.start_step = start_step
        self.total_steps = total_steps
        self.pin = device.type == "cuda"
        self.wait_s = 0.0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, ahead))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _chunks(self) -> Iterator[tuple[int, int, int, int, torch.Tensor]]:
        """``(epoch, first, c0, c1, chunk)`` in training order, read on the calling thread."""
        bpe = self.stream.batches_per_epoch
        step = self.start_step
        while step < self.total_steps:
            epoch, b0 = divmod(step, bpe)
            for c0, c1, block in self._epoch_chunks(epoch, b0):
                chunk = torch.from_numpy(np.ascontiguousarray(block))
                if self.pin:
                    chunk = chunk.pin_memory()
                first = max(c0, b0)
                yield epoch, first, c0, c1, chunk
                step += c1 - first
                if step >= self.total_steps:
                    return

    def _epoch_chunks(self, epoch: int, b0: int) -> Iterator[tuple[int, int, Any]]:
        """The stream's chunks; a stream that only gives batches (``epoch_batches``, e.g.
        batches a caller brings) gives chunks of one batch."""
        chunks = getattr(self.stream, "epoch_chunks", None)
        if chunks is not None:
            yield from chunks(epoch, b0)
            return
        for b, x in self.stream.epoch_batches(epoch, b0):
            yield b, b + 1, x

    def _produce(self) -> None:
        try:
            for item in self._chunks():
                if not self._put(item):
                    return
        except BaseException as e:  # handed to the training loop, raised there
            self._put(e)
            return
        self._put(_DONE)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[tuple[int, int, torch.Tensor]]:
        self._thread = threading.Thread(target=self._produce, name="medsae-feed", daemon=True)
        self._thread.start()
        bs = self.stream.batch_size
        bpe = self.stream.batches_per_epoch
        try:
            while True:
                t0 = time.perf_counter()
                item = self._queue.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                epoch, first, c0, c1, chunk = item
                x = chunk.to(self.device, non_blocking=True)
                self.wait_s += time.perf_counter() - t0
                for b in range(first, min(c1, self.total_steps - epoch * bpe)):
                    yield epoch, b, x[(b - c0) * bs : (b - c0 + 1) * bs]
        finally:
            self.close()

    def close(self) -> None:
        """Stop the reader thread (the loop ended, or stopped early)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
