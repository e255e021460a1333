"""Orientation and slice geometry: canonical RAS volumes, one display convention per plane.

Volumes are brought to the closest canonical orientation (RAS+: array index ``i`` grows
towards the patient's right, ``j`` towards anterior, ``k`` towards superior). Slices are then
shown in the radiological convention:

========  ===========  ====================  ====================
plane     cut along    image left            image top
========  ===========  ====================  ====================
axial     k (S-I)      patient right         anterior
coronal   j (A-P)      patient right         superior
sagittal  i (R-L)      anterior              superior
========  ===========  ====================  ====================

Voxels need not be square in the slice plane: each slice is resampled so that its pixels
are square (the longer physical side fills the output size), then padded (or centre
cropped) to a square.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform
from PIL import Image

PLANE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}


def canonical_transform(affine: np.ndarray) -> np.ndarray:
    """The orientation transform (nibabel ``ornt``) from an image's axes to RAS."""
    return ornt_transform(io_orientation(affine), axcodes2ornt(("R", "A", "S")))


def reorient(array: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Apply an orientation transform to the first three axes (a view: flips and transposes)."""
    return apply_orientation(array, ornt)


def canonical_affine(affine: np.ndarray, shape: tuple[int, ...], ornt: np.ndarray) -> np.ndarray:
    """The affine of the reoriented array (as ``nibabel.as_closest_canonical`` computes it)."""
    from nibabel.orientations import inv_ornt_aff

    return np.asarray(affine @ inv_ornt_aff(ornt, shape[:3]))


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel edge lengths in mm along the three array axes."""
    return np.asarray(nib.affines.voxel_sizes(affine), dtype=np.float64)


def display_slice(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """Slice ``index`` of a canonical (RAS) volume as a 2D image in the display convention.

    Rows run top to bottom, columns left to right (see the module docstring).
    Extra trailing axes (channels) are kept.
    """
    if (
        plane == "axial"
    ):  # rows: anterior -> posterior (j descending); cols: right -> left (i descending)
        sl = volume[::-1, ::-1, index]
        return np.swapaxes(sl, 0, 1)
    if plane == "coronal":  # rows: superior -> inferior; cols: right -> left
        sl = volume[::-1, index, ::-1]
        return np.swapaxes(sl, 0, 1)
    if plane == "sagittal":  # rows: superior -> inferior; cols: anterior -> posterior
        sl = volume[index, ::-1, ::-1]
        return np.swapaxes(sl, 0, 1)
    raise ValueError(f"unknown plane {plane!r}; expected axial, coronal or sagittal")


def slowest_axis(array: np.ndarray, n_axes: int | None = None) -> int:
    """The axis (of the first ``n_axes``) with the largest stride in memory, ignoring size-1 axes."""
    dims = range(array.ndim if n_axes is None else n_axes)
    return int(np.argmax([abs(array.strides[d]) if array.shape[d] > 1 else 0 for d in dims]))


_STACK_AXES = {"axial": (2, 1, 0), "coronal": (1, 2, 0), "sagittal": (0, 2, 1)}
_STACK_FLIPS = {
    "axial": (slice(None, None, -1), slice(None, None, -1), slice(None)),
    "coronal": (slice(None, None, -1), slice(None), slice(None, None, -1)),
    "sagittal": (slice(None), slice(None, None, -1), slice(None, None, -1)),
}


def display_stack(volume: np.ndarray, plane: str, indices: range) -> np.ndarray:
    """``display_slice(volume, plane, i)`` for each ``i`` of ``indices``, as one array.

    The result is C-contiguous, ``(len(indices), rows, cols, ...)``. It is copied in blocks
    of about 1 MB along the axis of the volume that is slowest in memory, so that each
    block is read once from memory and rearranged in the CPU cache (a slice across the
    memory order, read on its own, touches one cache line per voxel).
    """
    if plane not in _STACK_AXES:
        raise ValueError(f"unknown plane {plane!r}; expected axial, coronal or sagittal")
    if indices.step < 1:
        raise ValueError(f"indices must increase, got {indices}")
    perm = _STACK_AXES[plane]
    rest = tuple(range(3, volume.ndim))
    view = np.transpose(volume[_STACK_FLIPS[plane]], (*perm, *rest))
    view = view[indices.start : indices.stop : indices.step]
    out = np.empty(view.shape, dtype=volume.dtype)
    if out.size == 0:
        return out
    slow = slowest_axis(volume, 3)
    at = perm.index(slow)  # position of that axis in the stack
    per = out.size // out.shape[at]
    block = max(1, (1 << 20) // max(1, per * out.itemsize))
    for b0 in range(0, out.shape[at], block):
        sl = (slice(None),) * at + (slice(b0, b0 + block),)
        out[sl] = view[sl]
    return out


def in_plane_axes(plane: str) -> tuple[int, int]:
    """(row axis, column axis) of the canonical volume for a plane's display image."""
    return {"axial": (1, 0), "coronal": (2, 0), "sagittal": (2, 1)}[plane]


@dataclass(frozen=True)
class SliceLayout:
    """How a plane's native slices (rows x cols voxels) become S x S square-pixel images."""

    rows: int
    cols: int
    scaled_rows: int  # size after resampling to square pixels
    scaled_cols: int
    size: int
    pixel_mm: float  # spacing of the output pixels
    row_keep: tuple[int, int]  # native row range that ends up in the image (crop mode)
    col_keep: tuple[int, int]


def slice_layout(
    rows: int, cols: int, row_mm: float, col_mm: float, size: int, square: str = "pad"
) -> SliceLayout:
    """Resampling and padding/cropping of one plane's slices.

    ``pad``: the longer physical side maps to ``size`` pixels, the other is scaled by the
    same factor (square pixels) and padded with 0. ``crop``: the shorter side maps to
    ``size`` and the centre of the longer side is kept.
    """
    height_mm, width_mm = rows * row_mm, cols * col_mm
    if square == "pad":
        pixel_mm = max(height_mm, width_mm) / size
    elif square == "crop":
        pixel_mm = min(height_mm, width_mm) / size
    else:
        raise ValueError(f"square must be 'pad' or 'crop', got {square!r}")
    scaled_rows = max(1, round(height_mm / pixel_mm))
    scaled_cols = max(1, round(width_mm / pixel_mm))
    row_keep, col_keep = (0, rows), (0, cols)
    if square == "crop":
        row_keep = _native_keep(rows, scaled_rows, size)
        col_keep = _native_keep(cols, scaled_cols, size)
    return SliceLayout(rows, cols, scaled_rows, scaled_cols, size, pixel_mm, row_keep, col_keep)


def _native_keep(native: int, scaled: int, size: int) -> tuple[int, int]:
    if scaled <= size:
        return 0, native
    start = (scaled - size) // 2
    lo = int(np.floor(start * native / scaled))
    hi = int(np.ceil((start + size) * native / scaled))
    return max(0, lo), min(native, hi)


def fit_square(image: np.ndarray, layout: SliceLayout, nearest: bool = False) -> np.ndarray:
    """Resample a uint8 display image to square pixels and pad/crop it to ``size x size``.

    Bilinear interpolation (antialiased when shrinking), or nearest neighbour with
    ``nearest`` (label maps: values are ids, never blended); channels (a trailing axis of 3)
    are kept.
    """
    size = layout.size
    if image.shape[:2] != (layout.rows, layout.cols):
        raise ValueError(
            f"slice shape {image.shape[:2]} does not match layout {(layout.rows, layout.cols)}"
        )
    pil = Image.fromarray(np.ascontiguousarray(image))
    if (layout.scaled_rows, layout.scaled_cols) != (layout.rows, layout.cols):
        method = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
        pil = pil.resize((layout.scaled_cols, layout.scaled_rows), method)
    scaled = np.asarray(pil)
    out_shape = (size, size, *image.shape[2:])
    out = np.zeros(out_shape, dtype=np.uint8)
    r0 = (size - scaled.shape[0]) // 2
    c0 = (size - scaled.shape[1]) // 2
    sr0, dr0 = (0, r0) if r0 >= 0 else (-r0, 0)
    sc0, dc0 = (0, c0) if c0 >= 0 else (-c0, 0)
    nr = min(scaled.shape[0] - sr0, size - dr0)
    nc = min(scaled.shape[1] - sc0, size - dc0)
    out[dr0 : dr0 + nr, dc0 : dc0 + nc] = scaled[sr0 : sr0 + nr, sc0 : sc0 + nc]
    return out
