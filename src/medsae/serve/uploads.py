"""Turning an uploaded file (PNG/JPEG, DICOM, NIfTI) into a slice image like those in images.npy.

The file type is recognised from its content (magic bytes), never from its name:

* PNG (``\\x89PNG``) and JPEG (``\\xff\\xd8\\xff``): read with Pillow, converted to grayscale
  (or RGB when the workspace stores three-channel images);
* DICOM (``DICM`` at byte 128): pixel data rescaled to HU / stored units; CT is windowed with
  ``ct_window`` of its study description, MR scaled between foreground percentiles;
* NIfTI-1 (``sizeof_hdr`` 348 with magic ``n+1``; gzip-compressed allowed): reoriented to RAS,
  the middle axial slice shown in the radiological convention (``display_slice``).

The result is resized to the workspace's image size. Errors are :class:`UploadError` with the
HTTP status to answer (400 unreadable, 415 unsupported type).
"""

from __future__ import annotations

import gzip
import io
from typing import Literal

import numpy as np

Kind = Literal["png", "jpeg", "dicom", "nifti"]
MAX_NIFTI_VOXELS = 512 * 512 * 1024


class UploadError(Exception):
    """An uploaded file that cannot be used, with the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


def sniff(data: bytes) -> Kind | None:
    """The file type from its first bytes, or None when it is not a supported type."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    if data.startswith(b"\x1f\x8b"):
        return "nifti"
    if len(data) >= 348 and data[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "nifti"
    return None


def _to_uint8_auto(arr: np.ndarray) -> np.ndarray:
    from medsae.data.intensity import mri_bounds, to_uint8

    lo, hi = mri_bounds(arr.astype(np.float32), (0.5, 99.5))
    return to_uint8(arr.astype(np.float32), lo, hi)


def _read_pil(data: bytes, channels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return np.asarray(im.convert("RGB" if channels == 3 else "L"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UploadError(400, f"cannot read the image: {e}") from e


def _read_dicom(data: bytes) -> np.ndarray:
    import pydicom

    from medsae.data.intensity import ct_window, to_uint8, window_bounds

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        pixels = ds.pixel_array.astype(np.float32)
    except Exception as e:  # pydicom raises many types for broken files
        raise UploadError(400, f"cannot read the DICOM pixel data: {e}") from e
    if pixels.ndim == 3 and pixels.shape[-1] not in (3, 4):
        pixels = pixels[pixels.shape[0] // 2]
    if pixels.ndim == 3:
        pixels = pixels[..., :3].mean(axis=-1)
    if pixels.ndim != 2:
        raise UploadError(400, f"DICOM image has shape {pixels.shape}; expected one 2D slice")
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    pixels = pixels * slope + intercept
    if str(getattr(ds, "Modality", "")).upper() == "CT":
        (center, width), _ = ct_window(
            str(getattr(ds, "StudyDescription", "") or ""), (40.0, 400.0)
        )
        lo, hi = window_bounds(center, width)
        return to_uint8(pixels, lo, hi)
    return _to_uint8_auto(pixels)


def _read_nifti(data: bytes) -> np.ndarray:
    import nibabel as nib

    from medsae.data.geometry import canonical_transform, display_slice, reorient

    try:
        raw = gzip.decompress(data) if data.startswith(b"\x1f\x8b") else data
    except (OSError, EOFError) as e:
        raise UploadError(400, f"cannot decompress the gzip file: {e}") from e
    if len(raw) < 348 or raw[344:348] not in (b"n+1\x00", b"ni1\x00"):
        raise UploadError(415, "gzip content is not a NIfTI-1 image")
    try:
        img = nib.Nifti1Image.from_bytes(raw)
        shape = img.shape
        if int(np.prod(shape)) > MAX_NIFTI_VOXELS:
            raise UploadError(413, f"NIfTI volume {shape} is too large")
        vol = np.asarray(img.dataobj, dtype=np.float32)
    except UploadError:
        raise
    except Exception as e:  # nibabel raises several types for broken headers
        raise UploadError(400, f"cannot read the NIfTI image: {e}") from e
    if vol.ndim == 2:
        vol = vol[:, :, None]
    if vol.ndim > 3:
        vol = vol.reshape((*vol.shape[:3], -1))[..., 0]
    vol = reorient(vol, canonical_transform(img.affine))
    image = display_slice(vol, "axial", vol.shape[2] // 2)
    return _to_uint8_auto(np.ascontiguousarray(image))


def _pad_square(img: np.ndarray) -> np.ndarray:
    """Zero-pad the shorter side so the image is square (aspect ratio kept, centred)."""
    h, w = img.shape[:2]
    side = max(h, w)
    if h == w:
        return img
    out = np.zeros((side, side, *img.shape[2:]), dtype=img.dtype)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = img
    return out


def decode_upload(data: bytes, size: int, channels: int = 1) -> tuple[np.ndarray, Kind]:
    """The uploaded file as a uint8 image ``(size, size)`` (or ``(size, size, 3)``) and its type."""
    from PIL import Image

    if not data:
        raise UploadError(400, "the uploaded file is empty")
    kind = sniff(data)
    if kind is None:
        raise UploadError(415, "unsupported file type; upload a PNG, JPEG, DICOM or NIfTI file")
    if kind in ("png", "jpeg"):
        img = _read_pil(data, channels)
    elif kind == "dicom":
        img = _read_dicom(data)
    else:
        img = _read_nifti(data)
    if img.ndim == 3 and channels == 1:
        img = img.mean(axis=-1).astype(np.uint8)
    if img.ndim == 2 and channels == 3:
        img = np.repeat(img[..., None], 3, axis=-1)
    if min(img.shape[:2]) < 4:
        raise UploadError(400, f"image of shape {img.shape} is too small")
    img = _pad_square(np.ascontiguousarray(img, dtype=np.uint8))
    pil = Image.fromarray(img)
    pil = pil.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(pil, dtype=np.uint8), kind
