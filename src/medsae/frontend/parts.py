"""Building blocks of the workspace view: parts opened once, tolerant readers, PNG images."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

import numpy as np
import pandas as pd

from medsae.artifacts import load_json, read_artifact, read_optional

T = TypeVar("T")
_LOCKS_GUARD = threading.Lock()


class once(Generic[T]):  # lower case: a decorator, like functools.cached_property
    """A property computed once per instance, under a per-instance, per-property lock.

    Like :func:`functools.cached_property`, but two threads asking at once (the browser's
    background warm-up and a request) compute it once on every Python version (the
    standard one locks only up to 3.11).
    """

    def __init__(self, func: Callable[[Any], T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> once[T]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> T | once[T]:
        if obj is None:
            return self
        cache = obj.__dict__
        if self.name in cache:
            return cache[self.name]  # type: ignore[no-any-return]
        with _LOCKS_GUARD:
            lock = cache.setdefault("_once_locks", {}).setdefault(self.name, threading.RLock())
        with lock:
            if self.name not in cache:
                cache[self.name] = self.func(obj)
            return cache[self.name]  # type: ignore[no-any-return]


def read_json(path: Path) -> Any:
    """A JSON file's content, None when it is missing (not computed); a damaged file raises
    :class:`medsae.artifacts.DamagedArtifact` naming it."""
    return read_optional(path, load_json)


def read_parquet(path: Path) -> pd.DataFrame | None:
    """A Parquet table, None when it is missing; a damaged file raises (as :func:`read_json`)."""
    return read_optional(path, pd.read_parquet)


def image_to_png(img: np.ndarray, size: int | None = None) -> bytes:
    """PNG bytes of a uint8 image ``(S, S)`` or ``(S, S, 3)``, optionally resized to ``size``."""
    from PIL import Image

    arr = np.ascontiguousarray(img, dtype=np.uint8)
    pil = Image.fromarray(arr, mode="RGB" if arr.ndim == 3 else "L")
    if size is not None and size != pil.width:
        pil = pil.resize((size, size), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=False, compress_level=3)
    return buf.getvalue()


def parquet_footer(path: Path) -> Any:
    """The footer of a Parquet file (rows, schema; milliseconds at any size), or an
    :class:`ArtifactError` naming a missing or damaged file."""
    import pyarrow.parquet as pq

    return read_artifact(path, lambda p: pq.ParquetFile(p).metadata, "slice table not found")
