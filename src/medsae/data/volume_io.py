"""Reading image volumes and masks, with checks whose errors name the subject and the file.

Single-file NIfTI (``.nii`` / ``.nii.gz``, NIfTI-1 or NIfTI-2) is read as a stream: the
header is parsed by nibabel from the first bytes, then the voxel data is inflated in slabs
of whole ``k`` slices (NIfTI stores voxels in Fortran order, so a slab is contiguous).
Masks are thus never held whole in memory, and each slab is processed while it is still in
the CPU cache. The gzip stream is inflated with ISA-L (the ``isal`` package) when it is
installed, else with zlib; both check the gzip CRC. Files the stream cannot read as they
are (other formats, masks with intensity scaling) go through ``nibabel.load``, which gives
the same values.
"""

from __future__ import annotations

import gzip
import io
import types
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medsae.data.cases import Case
from medsae.errors import InputError

_inflate_lib: types.ModuleType
try:  # ISA-L inflates about 2-3x faster than zlib; optional
    from isal import isal_zlib

    _inflate_lib = isal_zlib
except ImportError:  # pragma: no cover - depends on the environment
    _inflate_lib = zlib

_READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    gzip.BadGzipFile,
    ValueError,
    nib.filebasedimages.ImageFileError,
    nib.spatialimages.HeaderDataError,
    zlib.error,
    _inflate_lib.error,
)
SLAB_BYTES = 1 << 21  # bytes of voxel data per slab (whole k slices, at least one)
_HEADERS = {348: nib.Nifti1Header, 540: nib.Nifti2Header}
_MAGIC = (b"n+1\x00", b"n+2\x00")


def _load(path: str, who: str) -> Any:
    try:
        return nib.load(path)
    except FileNotFoundError as e:
        raise InputError(f"{who}: {path}", "file not found") from e
    except _READ_ERRORS as e:
        raise InputError(
            f"{who}: {path}", f"cannot read NIfTI header ({type(e).__name__}: {e})"
        ) from e


def _data(img: Any, path: str, who: str, dtype: Any) -> np.ndarray:
    try:
        if dtype is None:
            return np.asarray(img.dataobj)
        return np.asarray(img.get_fdata(dtype=dtype))
    except _READ_ERRORS as e:
        raise InputError(
            f"{who}: {path}", f"corrupt or truncated file ({type(e).__name__}: {e})"
        ) from e


def _as_3d(shape: tuple[int, ...], path: str, who: str) -> tuple[int, int, int]:
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(f"{who}: {path}", f"expected a 3D volume, got shape {shape}")
    if min(shape) < 1:
        raise InputError(f"{who}: {path}", f"empty volume (shape {shape})")
    return (int(shape[0]), int(shape[1]), int(shape[2]))


class _ByteStream:
    """Exact-size reads of a file's bytes, inflating gzip (one or more members) on the way.

    Compressed input is fed to the inflater ``feed`` bytes at a time, so that what it
    keeps of the input between calls stays small (its unconsumed tail is a copy).
    """

    def __init__(self, raw: bytes, gz: bool, feed: int = 1 << 20) -> None:
        self._raw = memoryview(raw)
        self._pos = 0
        self._gz = gz
        self._feed = feed
        self._d: Any = _inflate_lib.decompressobj(31) if gz else None
        self._tail: bytes | memoryview = b""

    def read(self, n: int) -> bytes | memoryview:
        """The next ``n`` bytes; EOFError when the file ends before."""
        if not self._gz:
            out = self._raw[self._pos : self._pos + n]
            self._pos += len(out)
            if len(out) < n:
                raise EOFError(f"file ends {n - len(out)} bytes early")
            return out
        parts: list[bytes] = []
        need = n
        while need:
            got = self._pull(need)
            if not got:
                raise EOFError(f"file ends {need} bytes early")
            parts.append(got)
            need -= len(got)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _pull(self, limit: int) -> bytes:
        """Up to ``limit`` inflated bytes; b"" at the end of the last gzip member."""
        while True:
            if self._d.eof:  # end of a member (its CRC checked): another may follow
                # what follows the member is the end of the fed input, then the rest
                start = self._pos - len(self._d.unused_data)
                if bytes(self._raw[start : start + 2]) != b"\x1f\x8b":
                    return b""
                self._d = _inflate_lib.decompressobj(31)
                self._pos, self._tail = start, b""
            if not self._tail and self._pos < len(self._raw):
                self._tail = self._raw[self._pos : self._pos + self._feed]
                self._pos += len(self._tail)
            before = len(self._tail)
            got: bytes = self._d.decompress(self._tail, limit)
            self._tail = self._d.unconsumed_tail
            if got:
                return got
            if self._d.eof:
                continue
            if not self._tail and self._pos >= len(self._raw):
                raise EOFError("truncated gzip stream (the file ends inside the data)")
            if self._tail and len(self._tail) >= before:
                raise EOFError("the gzip stream does not progress")

    def finish(self) -> None:
        """Inflate the rest of the stream, which checks the CRC and length of each member."""
        if self._gz:
            while self._pull(SLAB_BYTES):
                pass


@dataclass
class NiftiStream:
    """A single-file NIfTI whose header is read and whose voxels can be streamed in slabs."""

    path: str
    who: str
    header: Any
    shape: tuple[int, int, int]
    affine: np.ndarray
    dtype: np.dtype[Any]
    slope: float  # nibabel's scaling (1.0 and 0.0 when the header has none)
    inter: float
    _stream: _ByteStream

    @property
    def scaled(self) -> bool:
        """Whether the stored values are scaled (``value = stored * slope + inter``)."""
        return not (self.slope == 1.0 and self.inter == 0.0)

    def raw_slabs(self, slab_bytes: int = SLAB_BYTES) -> Iterator[tuple[int, np.ndarray]]:
        """``(k0, stored values of slices k0..k0+n)`` as read-only ``(i, j, n)`` arrays.

        Read once only. Raises InputError (naming the subject and file) when the data is
        corrupt or ends early.
        """
        ni, nj, nk = self.shape
        per = ni * nj * self.dtype.itemsize
        step = max(1, slab_bytes // max(1, per))
        try:
            for k0 in range(0, nk, step):
                n = min(nk, k0 + step) - k0
                buf = self._stream.read(n * per)
                yield k0, np.frombuffer(buf, dtype=self.dtype).reshape((ni, nj, n), order="F")
            self._stream.finish()
        except _READ_ERRORS as e:
            raise InputError(
                f"{self.who}: {self.path}", f"corrupt or truncated file ({type(e).__name__}: {e})"
            ) from e


def open_nifti(path: str, who: str) -> NiftiStream | None:
    """Read the header of a single-file NIfTI; None when the file needs ``nibabel.load``.

    Raises InputError when the file is missing or its header cannot be read.
    """
    name = path.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return None
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError as e:
        raise InputError(f"{who}: {path}", "file not found") from e
    except OSError as e:
        raise InputError(f"{who}: {path}", f"cannot read ({type(e).__name__}: {e})") from e
    stream = _ByteStream(raw, gz=name.endswith(".gz"))
    try:
        head = bytes(stream.read(348))
        sizes = {int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")}
        size = next((s for s in sizes if s in _HEADERS), None)
        if size is None:
            return None  # not NIfTI-1/2: nibabel says what it is
        if size > len(head):
            head += bytes(stream.read(size - len(head)))
        if (head[344:348] if size == 348 else head[4:8]) not in _MAGIC:
            return None  # header/image pairs and other variants
        header = _HEADERS[size].from_fileobj(io.BytesIO(head))
        offset = int(header.get_data_offset())
        if offset < size:
            return None
        if offset > size:
            stream.read(offset - size)  # extensions: not needed for the voxels
        slope, inter = header.get_slope_inter()
        affine = np.asarray(header.get_best_affine(), dtype=np.float64)
    except _READ_ERRORS as e:
        raise InputError(
            f"{who}: {path}", f"cannot read NIfTI header ({type(e).__name__}: {e})"
        ) from e
    shape = _as_3d(tuple(int(s) for s in header.get_data_shape()), path, who)
    return NiftiStream(
        path=path,
        who=who,
        header=header,
        shape=shape,
        affine=affine,
        dtype=np.dtype(header.get_data_dtype()),
        slope=1.0 if slope is None else float(slope),
        inter=0.0 if inter is None else float(inter),
        _stream=stream,
    )


def _scaled_float32(nii: NiftiStream, slab: np.ndarray) -> np.ndarray:
    """A slab as ``get_fdata(dtype=float32)`` gives it (nibabel's own scaling code)."""
    proxy = nib.arrayproxy.ArrayProxy(
        io.BytesIO(slab.tobytes(order="F")),
        (slab.shape, nii.dtype, 0, nii.slope, nii.inter),
        order="F",
    )
    return np.asarray(proxy, dtype=np.float32)


def _stream_image(nii: NiftiStream) -> tuple[np.ndarray, int]:
    """The float32 image (Fortran order) and its number of non-finite voxels."""
    data = np.empty(nii.shape, dtype=np.float32, order="F")
    n_bad = 0
    for k0, slab in nii.raw_slabs():
        part = data[:, :, k0 : k0 + slab.shape[2]]
        if nii.scaled:
            part[...] = _scaled_float32(nii, slab)
        else:
            part[...] = slab
        if nii.dtype.kind == "f" or nii.scaled:
            n_bad += part.size - int(np.count_nonzero(np.isfinite(part)))
    return data, n_bad


def load_image(case: Case) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The image of a case as float32 ``(i, j, k)`` array, its affine, and warnings."""
    who = case.key
    n_bad: int | None = None
    nii = None if case.source_kind == "dicom" else open_nifti(case.image, who)
    if case.source_kind == "dicom":
        from medsae.data.dicom import load_series

        data, affine, warnings = load_series(case.dicom_files, f"{who} ({case.image})")
    elif nii is not None:
        data, n_bad = _stream_image(nii)
        affine, warnings = nii.affine, []
    else:
        img = _load(case.image, who)
        _as_3d(tuple(img.shape), case.image, who)
        data = _data(img, case.image, who, np.float32)
        affine = np.asarray(img.affine, dtype=np.float64)
        warnings = []
        if data.ndim == 4:
            data = data[..., 0]
    if data.size == 0:
        raise InputError(f"{who}: {case.image}", f"empty volume (shape {data.shape})")
    if n_bad is None:
        n_bad = int(np.count_nonzero(~np.isfinite(data)))
    if n_bad:
        raise InputError(
            f"{who}: {case.image}", f"{n_bad} NaN or infinite voxel(s); expected finite intensities"
        )
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError(f"{who}: {case.image}", "invalid affine (singular or not finite)")
    return data, affine, warnings


def _check_grid(
    mshape: tuple[int, int, int],
    maffine: np.ndarray,
    path: str,
    who: str,
    shape: tuple[int, int, int],
    affine: np.ndarray,
) -> None:
    if mshape != tuple(shape):
        raise InputError(
            f"{who}: {path}", f"mask shape {mshape} differs from image shape {tuple(shape)}"
        )
    if not np.allclose(maffine, affine, atol=1e-3, rtol=1e-5):
        raise InputError(
            f"{who}: {path}",
            "mask affine differs from the image affine (the mask is not on the image grid)",
        )


def mask_slabs(
    path: str, who: str, shape: tuple[int, int, int], affine: np.ndarray
) -> Iterator[tuple[int, np.ndarray]]:
    """A mask's values (native dtype) as ``(k0, (i, j, n) array)`` slabs along ``k``.

    Checked against the image first: raises InputError when its shape or affine differs,
    or when it cannot be read. Masks with intensity scaling come as one slab.
    """
    nii = open_nifti(path, who)
    if nii is not None and not nii.scaled:
        _check_grid(nii.shape, nii.affine, path, who, shape, affine)
        return nii.raw_slabs()
    return iter([(0, _load_whole_mask(path, who, shape, affine))])


def load_mask(path: str, who: str, shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """A mask or label map on the image grid (native dtype), checked against the image.

    Raises InputError when its shape or affine differs from the image's.
    """
    nii = open_nifti(path, who)
    if nii is None or nii.scaled:
        return _load_whole_mask(path, who, shape, affine)
    _check_grid(nii.shape, nii.affine, path, who, shape, affine)
    out = np.empty(nii.shape, dtype=nii.dtype, order="F")
    for k0, slab in nii.raw_slabs():
        out[:, :, k0 : k0 + slab.shape[2]] = slab
    return out


def _load_whole_mask(
    path: str, who: str, shape: tuple[int, int, int], affine: np.ndarray
) -> np.ndarray:
    """:func:`load_mask` through ``nibabel.load`` (other formats, scaled values)."""
    img = _load(path, who)
    mshape = _as_3d(tuple(img.shape), path, who)
    _check_grid(mshape, np.asarray(img.affine), path, who, shape, affine)
    data = _data(img, path, who, None)
    if data.ndim == 4:
        data = data[..., 0]
    return np.asarray(data)
