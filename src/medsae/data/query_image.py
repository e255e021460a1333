"""A new image as a search query, prepared like the workspace's slices: the one preprocessing.

``medsae search --image`` and the browser's upload both call :func:`prepare_query_image`, so
the same file gives the same image array through either.

The file type is recognised from its content (magic bytes), never from its name:

* PNG (``\\x89PNG``) and JPEG (``\\xff\\xd8\\xff``): read with Pillow as grayscale (RGB when
  the workspace stores three channels);
* DICOM (``DICM`` at byte 128): pixel data times ``RescaleSlope`` plus ``RescaleIntercept``;
  a CT is windowed as the ``prepare`` stage windows it (the workspace's window override, else
  the window of its study description, ``StudyDescription``, from
  :data:`medsae.data.intensity.CT_WINDOWS`, else the default window; the three windows of
  ``MULTI_WINDOWS`` when the workspace stores them), any other modality scaled between the
  workspace's MRI foreground percentiles; of a multi-frame file, the middle frame;
* NIfTI-1 (``sizeof_hdr`` 348 with magic ``n+1``/``ni1``; gzip-compressed allowed): brought
  to the canonical RAS orientation, the slice ``index`` (default: the middle one) of
  ``plane`` cut in the display convention of :mod:`medsae.data.geometry`, scaled by the
  1st-99th percentile of the volume (its modality is not known);
* a 2D array (or ``(H, W, 3|4)``): used as it is when uint8, else scaled by its 1st-99th
  percentile.

The image is then zero-padded to a square (centred), resized to the workspace's image size
(bilinear) and given the workspace's number of channels. Errors are
:class:`QueryImageError` naming the file and saying whether it is unreadable, of an
unsupported type or too large.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medsae.data.query_limits import (
    NIFTI_MAGIC,
    QueryImageError,
    QueryLimits,
    gunzip_capped,
    nifti_size,
    pil_bomb,
)

Kind = Literal["png", "jpeg", "dicom", "nifti", "array"]


@dataclass(frozen=True)
class QueryIntensity:
    """How intensities become 0..255: the ``prepare`` settings of the workspace.

    ``from_prepare_config`` takes the ``config`` recorded in the slices artifact's manifest
    (:class:`medsae.data.config.PrepareConfig` fields); missing fields keep these defaults,
    which are PrepareConfig's.
    """

    default_window: tuple[float, float] = (40.0, 400.0)
    window_override: tuple[float, float] | None = None
    mri_percentiles: tuple[float, float] = (1.0, 99.0)
    multi_window: bool = False

    @classmethod
    def from_prepare_config(cls, config: dict[str, Any] | None) -> QueryIntensity:
        """The settings of a recorded ``prepare`` config (defaults for what it lacks)."""
        cfg = config or {}
        base = cls()
        override = cfg.get("window_override")
        return cls(
            default_window=_pair(cfg.get("default_window"), base.default_window),
            window_override=None if override is None else _pair(override, (0.0, 1.0)),
            mri_percentiles=_pair(cfg.get("mri_percentiles"), base.mri_percentiles),
            multi_window=bool(cfg.get("multi_window", base.multi_window)),
        )


@dataclass(frozen=True)
class QueryImage:
    """A prepared query image and the type of the file it came from."""

    image: np.ndarray  # uint8 (size, size) or (size, size, 3)
    kind: Kind


def _pair(value: Any, default: tuple[float, float]) -> tuple[float, float]:
    if value is None:
        return default
    a, b = value
    return float(a), float(b)


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
    if len(data) >= 348 and data[344:348] in NIFTI_MAGIC:
        return "nifti"
    return None


def _percentile_uint8(x: np.ndarray) -> np.ndarray:
    """uint8 of ``x`` scaled by its 1st-99th percentile of finite values."""
    from medsae.data.intensity import to_uint8

    x = np.asarray(x, dtype=np.float32)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return np.zeros(x.shape, dtype=np.uint8)
    low, high = (float(v) for v in np.percentile(finite, [1, 99]))
    return to_uint8(np.nan_to_num(x, nan=low), low, high)


def _read_pil(data: bytes, what: str, channels: int, limits: QueryLimits) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:  # reads the header only
            width, height = im.size
            limits.check("max_pixels", width * height, what, f"image of {width} x {height} pixels")
            im.load()
            return np.asarray(im.convert("RGB" if channels == 3 else "L"))
    except Image.DecompressionBombError as e:  # beyond Pillow's own limit
        raise pil_bomb(e, what, limits) from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise QueryImageError(what, f"cannot read the image: {e}") from e


def _read_dicom(
    data: bytes, what: str, intensity: QueryIntensity, limits: QueryLimits
) -> np.ndarray:
    import pydicom

    from medsae.data.intensity import MULTI_WINDOWS, ct_window, mri_bounds, to_uint8, window_bounds

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except Exception as e:  # pydicom raises many types for broken files
        raise QueryImageError(what, f"cannot read the DICOM header: {e}") from e
    limits.check("max_pixels", rows * cols, what, f"DICOM frame of {rows} x {cols} pixels")
    limits.check("max_voxels", rows * cols * frames, what, f"DICOM of {frames} frames, voxels")
    try:
        pixels = ds.pixel_array.astype(np.float32)
    except Exception as e:  # pydicom raises many types for broken files
        raise QueryImageError(what, f"cannot read the DICOM pixel data: {e}") from e
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        pixels = pixels[..., :3].mean(axis=-1)
    elif pixels.ndim == 3:
        pixels = pixels[pixels.shape[0] // 2]
    if pixels.ndim != 2:
        raise QueryImageError(what, f"DICOM image has shape {pixels.shape}; expected a 2D slice")
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    pixels = pixels * np.float32(slope) + np.float32(intercept)
    if str(getattr(ds, "Modality", "")).upper() != "CT":
        grey = to_uint8(pixels, *mri_bounds(pixels, intensity.mri_percentiles))
        return np.stack([grey] * 3, axis=-1) if intensity.multi_window else grey
    if intensity.multi_window:
        return np.stack([to_uint8(pixels, *window_bounds(*w)) for _, w in MULTI_WINDOWS], axis=-1)
    if intensity.window_override is not None:
        center, width = intensity.window_override
    else:
        study = str(getattr(ds, "StudyDescription", "") or "") or None
        (center, width), _known = ct_window(study, intensity.default_window)
    return to_uint8(pixels, *window_bounds(center, width))


def _read_nifti(
    data: bytes, what: str, plane: str | None, index: int | None, limits: QueryLimits
) -> np.ndarray:
    import nibabel as nib

    from medsae.data import geometry

    packed = data.startswith(b"\x1f\x8b")
    cap = limits.max_decompressed_bytes
    head = gunzip_capped(data, cap, what, head=352) if packed else data[:352]
    need = nifti_size(head, what, limits)
    if packed:
        limits.check("max_decompressed_bytes", need, what, "NIfTI header declares bytes")
        raw = gunzip_capped(data, cap, what, head=need)
    else:
        raw = data
    if len(raw) < need:
        raise QueryImageError(
            what,
            f"NIfTI file is truncated: its header declares {need:,} bytes, it has {len(raw):,}",
        )
    if plane not in geometry.PLANE_AXIS:
        raise QueryImageError(
            what, f"a volume needs a plane (axial, coronal or sagittal), got {plane!r}"
        )
    try:
        img = nib.Nifti1Image.from_bytes(raw[:need])
        vol = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as e:  # nibabel raises several types for broken headers
        raise QueryImageError(what, f"cannot read the NIfTI volume: {e}") from e
    if vol.ndim == 2:
        vol = vol[:, :, None]
    if vol.ndim > 3:
        vol = vol.reshape((*vol.shape[:3], -1))[..., 0]
    vol = geometry.reorient(vol, geometry.canonical_transform(img.affine))
    n = vol.shape[geometry.PLANE_AXIS[plane]]
    index = n // 2 if index is None else int(index)
    if not 0 <= index < n:
        raise QueryImageError(what, f"slice index {index} out of range 0..{n - 1} for {plane}")
    vol = np.ascontiguousarray(vol)
    finite = vol[np.isfinite(vol)]
    if finite.size == 0:
        return np.zeros(geometry.display_slice(vol, plane, index).shape, dtype=np.uint8)
    from medsae.data.intensity import to_uint8

    low, high = (float(v) for v in np.percentile(finite, [1, 99]))
    return to_uint8(np.ascontiguousarray(geometry.display_slice(vol, plane, index)), low, high)


def _read_array(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = arr[..., :3] if arr.dtype == np.uint8 else arr[..., :3].mean(axis=2)
    if arr.ndim not in (2, 3):
        raise QueryImageError("image", f"expected a 2D image array, got shape {arr.shape}")
    return arr if arr.dtype == np.uint8 else _percentile_uint8(arr)


def read_query_image(
    source: bytes | str | Path | np.ndarray,
    *,
    plane: str | None = None,
    index: int | None = None,
    channels: int = 1,
    intensity: QueryIntensity | None = None,
    name: str | None = None,
    limits: QueryLimits | None = None,
) -> QueryImage:
    """The query's image at its own size (uint8, 2D or RGB) and its file type.

    ``source`` is the file's bytes, a path or an array; ``plane`` (and ``index``, default
    the middle slice) choose the slice of a volume; ``name`` names bytes in errors;
    ``limits`` bound what the file may decode to (:class:`QueryLimits`' defaults).
    """
    if isinstance(source, np.ndarray):
        return QueryImage(_read_array(source), "array")
    if isinstance(source, bytes):
        data, what = source, name or "upload"
    else:
        path = Path(source)
        what = name or str(path)
        if not path.is_file():
            raise QueryImageError(what, "image file not found")
        data = path.read_bytes()
    if not data:
        raise QueryImageError(what, "the file is empty")
    kind = sniff(data)
    if kind is None:
        raise QueryImageError(
            what, "unsupported file type; give a PNG, JPEG, DICOM or NIfTI file", "unsupported"
        )
    settings = intensity or QueryIntensity()
    bounds = limits or QueryLimits()
    if kind in ("png", "jpeg"):
        img = _read_pil(data, what, channels, bounds)
    elif kind == "dicom":
        img = _read_dicom(data, what, settings, bounds)
    else:
        img = _read_nifti(data, what, plane, index, bounds)
    return QueryImage(np.ascontiguousarray(img, dtype=np.uint8), kind)


def fit_to_size(image: np.ndarray, size: int, channels: int = 1) -> np.ndarray:
    """Zero-pad to a square (centred), resize to ``size`` (bilinear), give ``channels`` (1 or 3)."""
    from PIL import Image

    img = np.asarray(image, dtype=np.uint8)
    if img.ndim == 3 and channels == 1:
        img = img.mean(axis=-1).astype(np.uint8)
    if img.ndim == 2 and channels == 3:
        img = np.repeat(img[..., None], 3, axis=-1)
    if min(img.shape[:2]) < 4:
        raise QueryImageError("image", f"image of shape {img.shape} is too small")
    h, w = img.shape[:2]
    side = max(h, w)
    square = np.zeros((side, side, *img.shape[2:]), dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    square[top : top + h, left : left + w] = img
    resized = Image.fromarray(square).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def prepare_query_image(
    source: bytes | str | Path | np.ndarray,
    size: int,
    channels: int = 1,
    *,
    plane: str | None = None,
    index: int | None = None,
    intensity: QueryIntensity | None = None,
    name: str | None = None,
    limits: QueryLimits | None = None,
) -> QueryImage:
    """The query as the workspace stores its slices: uint8 ``(size, size)`` or ``(size, size, 3)``.

    Read with :func:`read_query_image`, then :func:`fit_to_size`.
    """
    read = read_query_image(
        source,
        plane=plane,
        index=index,
        channels=channels,
        intensity=intensity,
        name=name,
        limits=limits,
    )
    try:
        fitted = fit_to_size(read.image, size, channels)
    except QueryImageError as e:
        raise QueryImageError(name or _name_of(source), e.problem, e.reason) from e
    return QueryImage(fitted, read.kind)


def _name_of(source: bytes | str | Path | np.ndarray) -> str:
    return str(source) if isinstance(source, str | Path) else "image"


@dataclass(frozen=True)
class QueryFormat:
    """The image format of a workspace's slices: size, channels and intensity settings."""

    size: int
    channels: int
    intensity: QueryIntensity
    limits: QueryLimits = field(default_factory=QueryLimits)

    @classmethod
    def of_slices(cls, slices_dir: Path, images: np.ndarray | None = None) -> QueryFormat:
        """The format of the slices artifact (``images`` when it is already open)."""
        from medsae.data.table import open_images
        from medsae.workspace import read_manifest

        stored = open_images(slices_dir) if images is None else images
        manifest = read_manifest(slices_dir) or {}
        return cls(
            size=int(stored.shape[1]),
            channels=int(stored.shape[3]) if stored.ndim == 4 else 1,
            intensity=QueryIntensity.from_prepare_config(manifest.get("config")),
        )

    def prepare(
        self,
        source: bytes | str | Path | np.ndarray,
        *,
        plane: str | None = None,
        index: int | None = None,
        name: str | None = None,
    ) -> QueryImage:
        """:func:`prepare_query_image` in this format."""
        return prepare_query_image(
            source,
            self.size,
            self.channels,
            plane=plane,
            index=index,
            intensity=self.intensity,
            name=name,
            limits=self.limits,
        )
