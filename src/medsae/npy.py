"""Writing ``.npy`` files with ordinary buffered writes.

``np.save`` writes an array with ``ndarray.tofile``, which reports a short write on a full
disk as an ``OSError`` without an error number ("N requested and M written"), and a memory
map of a new file (``np.lib.format.open_memmap``) crashes the process with SIGBUS when the
disk fills while its pages are written. The writers here go through Python's file objects,
so a full disk or a file size limit is an ``OSError`` with ``errno`` ENOSPC or EFBIG and the
file's name, which :func:`medsae.workspace.run_stage` turns into a clear error. The bytes
are those of ``np.save``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


class NpyWriter:
    """A ``.npy`` file of known dtype and shape, written front to back in blocks of rows.

    Use as a context manager (the file is closed on the way out) and call :meth:`close`
    after the last block: it checks that every row was written.
    """

    def __init__(self, path: Path, dtype: Any, shape: tuple[int, ...]) -> None:
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(s) for s in shape)
        if not self.shape:
            raise ValueError(f"{self.path}: NpyWriter writes arrays of at least one dimension")
        self.rows = 0
        self.file = open(self.path, "wb")  # noqa: SIM115 - closed by close() or __exit__
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": self.shape,
        }
        self._call(np.lib.format.write_array_header_1_0, self.file, header)

    def __enter__(self) -> NpyWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def _call(self, fn: Callable[..., object], *args: Any) -> None:
        try:
            fn(*args)
        except OSError as e:
            if e.filename is None:  # give the error the file's name
                raise OSError(e.errno, e.strerror or str(e), str(self.path)) from e
            raise

    def write(self, block: np.ndarray) -> None:
        """Append ``block``: the next rows of the array (cast to the file's dtype)."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.shape[1:] or self.rows + len(block) > self.shape[0]:
            raise ValueError(
                f"{self.path}: a block of shape {block.shape} does not fit after row "
                f"{self.rows} of {self.shape}"
            )
        if block.size:
            self._call(self.file.write, block.reshape(-1).view(np.uint8).data)
        self.rows += len(block)

    def close(self) -> None:
        """Flush and close the file; every row must have been written."""
        if self.rows != self.shape[0]:
            raise ValueError(f"{self.path}: {self.rows} of {self.shape[0]} rows written")
        self._call(self.file.flush)
        self.file.close()


def save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save(path, array)`` for an array of at least one dimension, through
    :class:`NpyWriter` (a full disk is an ``OSError`` with its error number and the path)."""
    array = np.asarray(array)
    with NpyWriter(path, array.dtype, array.shape) as writer:
        writer.write(array)
        writer.close()
