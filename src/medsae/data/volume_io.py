"""Reading image volumes and masks, with checks whose errors name the subject and the file."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import nibabel as nib
import numpy as np

from medsae.data.cases import Case
from medsae.errors import InputError

_READ_ERRORS = (
    OSError,
    EOFError,
    zlib.error,
    gzip.BadGzipFile,
    ValueError,
    nib.filebasedimages.ImageFileError,
)


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


def load_image(case: Case) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The image of a case as float32 ``(i, j, k)`` array, its affine, and warnings."""
    who = case.key
    if case.source_kind == "dicom":
        from medsae.data.dicom import load_series

        data, affine, warnings = load_series(case.dicom_files, f"{who} ({case.image})")
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
    n_nan = int(np.count_nonzero(~np.isfinite(data)))
    if n_nan:
        raise InputError(
            f"{who}: {case.image}", f"{n_nan} NaN or infinite voxel(s); expected finite intensities"
        )
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError(f"{who}: {case.image}", "invalid affine (singular or not finite)")
    return data, affine, warnings


def load_mask(path: str, who: str, shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """A mask or label map on the image grid (native dtype), checked against the image.

    Raises InputError when its shape or affine differs from the image's.
    """
    img = _load(path, who)
    mshape = _as_3d(tuple(img.shape), path, who)
    if mshape != tuple(shape):
        raise InputError(
            f"{who}: {path}", f"mask shape {mshape} differs from image shape {tuple(shape)}"
        )
    if not np.allclose(img.affine, affine, atol=1e-3, rtol=1e-5):
        raise InputError(
            f"{who}: {path}",
            "mask affine differs from the image affine (the mask is not on the image grid)",
        )
    data = _data(img, path, who, None)
    if data.ndim == 4:
        data = data[..., 0]
    return data
