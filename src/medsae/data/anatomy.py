"""Per-slice anatomy: voxel counts of each structure in each slice of each plane.

Counts are taken on the native (canonically oriented) voxel grid, so they do not depend on
the resampling of the stored images. For a slice with ``rows x cols`` voxels (inside the
kept region, see ``geometry.SliceLayout``):

* presence = 1 when ``count >= min_pixels``, else 0;
* area fraction = ``count / (rows * cols)``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from medsae.data.geometry import PLANE_AXIS

Ranges = dict[int, tuple[int, int]]  # canonical axis -> kept index range [lo, hi)


def bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Bounding box of the nonzero voxels of a 3D boolean mask, or None when empty."""
    k_any = np.flatnonzero(mask.any(axis=(0, 1)))
    if k_any.size == 0:
        return None
    ks = slice(int(k_any[0]), int(k_any[-1]) + 1)
    sub = mask[:, :, ks]
    j_any = np.flatnonzero(sub.any(axis=(0, 2)))
    js = slice(int(j_any[0]), int(j_any[-1]) + 1)
    i_any = np.flatnonzero(sub[:, js].any(axis=(1, 2)))
    is_ = slice(int(i_any[0]), int(i_any[-1]) + 1)
    return is_, js, ks


def _nonzero_along(block: np.ndarray, axes: tuple[int, int]) -> np.ndarray:
    """Whether each index of the remaining axis has a nonzero voxel."""
    if block.dtype.kind in "ub":  # unsigned: max is a fast SIMD reduction
        return np.asarray(block.max(axis=axes) != 0)
    return np.asarray(block.any(axis=axes))


def _slab_box(slab: np.ndarray) -> tuple[slice, slice, slice] | None:
    """:func:`bounding_box` of ``slab != 0``, with a fast test for all-zero slabs."""
    if slab.dtype.kind in "ub" and slab.max() == 0:
        return None
    k_any = np.flatnonzero(_nonzero_along(slab, (0, 1)))
    if k_any.size == 0:
        return None
    ks = slice(int(k_any[0]), int(k_any[-1]) + 1)
    sub = slab[:, :, ks]
    j_any = np.flatnonzero(_nonzero_along(sub, (0, 2)))
    js = slice(int(j_any[0]), int(j_any[-1]) + 1)
    i_any = np.flatnonzero(_nonzero_along(sub[:, js], (1, 2)))
    return slice(int(i_any[0]), int(i_any[-1]) + 1), js, ks


def slab_counts(
    slabs: Iterable[tuple[int, np.ndarray]],
    native_shape: tuple[int, int, int],
    ornt: np.ndarray,
    planes: list[str],
    keep: dict[str, Ranges],
) -> dict[str, np.ndarray]:
    """:func:`plane_counts` of ``data != 0``, for data in native voxel order given in slabs.

    ``slabs`` yields ``(k0, block)`` with ``block`` holding native slices ``k0 ..
    k0 + block.shape[2]`` (as ``volume_io.NiftiStream.raw_slabs`` gives them); ``ornt`` maps
    native axes to canonical ones (see ``geometry.canonical_transform``). The counts are
    taken per slab on the native grid, inside each slab's bounding box, and mapped to
    canonical order at the end, so the volume is never held whole nor reoriented.
    """
    shape = [0, 0, 0]
    for n in range(3):
        shape[int(ornt[n, 0])] = native_shape[n]
    spec: dict[str, tuple[int, list[tuple[int, int]]]] = {}
    for p in planes:
        cut = next(n for n in range(3) if int(ornt[n, 0]) == PLANE_AXIS[p])
        ranges = []
        for n in range(3):
            size, t = native_shape[n], int(ornt[n, 0])
            lo, hi = (0, size) if n == cut else keep[p].get(t, (0, size))
            ranges.append((size - hi, size - lo) if ornt[n, 1] < 0 else (lo, hi))
        spec[p] = (cut, ranges)
    acc = {p: np.zeros(native_shape[spec[p][0]], dtype=np.int64) for p in planes}
    for k0, slab in slabs:
        box = _slab_box(slab)
        if box is None:
            continue
        starts = (box[0].start, box[1].start, box[2].start + k0)
        stops = (box[0].stop, box[1].stop, box[2].stop + k0)
        sub = slab[box] != 0
        for p in planes:
            cut, ranges = spec[p]
            index: list[slice] = []
            for n in range(3):
                lo, hi = max(ranges[n][0], starts[n]), min(ranges[n][1], stops[n])
                if hi <= lo:
                    break
                index.append(slice(lo - starts[n], hi - starts[n]))
            else:
                others = tuple(n for n in range(3) if n != cut)
                part = np.count_nonzero(sub[tuple(index)], axis=others)
                lo = starts[cut] + index[cut].start
                acc[p][lo : lo + part.shape[0]] += part
    return {p: (acc[p][::-1].copy() if ornt[spec[p][0], 1] < 0 else acc[p]) for p in planes}


def native_counts(
    data: np.ndarray, ornt: np.ndarray, planes: list[str], keep: dict[str, Ranges]
) -> dict[str, np.ndarray]:
    """:func:`plane_counts` of ``data != 0`` given in native voxel order (one slab)."""
    shape = (int(data.shape[0]), int(data.shape[1]), int(data.shape[2]))
    return slab_counts([(0, data)], shape, ornt, planes, keep)


def plane_counts(
    mask: np.ndarray, planes: list[str], keep: dict[str, Ranges]
) -> dict[str, np.ndarray]:
    """Voxel count of ``mask`` in every slice of each plane (int64 arrays, one per plane).

    ``keep[plane]`` gives, for the two in-plane axes, the index range kept in the image
    (the whole axis in pad mode); voxels outside it are not counted.
    """
    box = bounding_box(mask)
    if box is None:
        return {p: np.zeros(mask.shape[PLANE_AXIS[p]], dtype=np.int64) for p in planes}
    return _counts_in_box(mask[box], box, mask.shape, planes, keep)


def _counts_in_box(
    sub: np.ndarray,
    box: tuple[slice, slice, slice],
    shape: tuple[int, ...],
    planes: list[str],
    keep: dict[str, Ranges],
) -> dict[str, np.ndarray]:
    out = {p: np.zeros(shape[PLANE_AXIS[p]], dtype=np.int64) for p in planes}
    starts = [b.start for b in box]
    for p in planes:
        a = PLANE_AXIS[p]
        index: list[slice] = []
        ok = True
        for ax in range(3):
            if ax == a:
                index.append(slice(None))
                continue
            lo, hi = keep[p].get(ax, (0, shape[ax]))
            lo, hi = max(lo, box[ax].start) - starts[ax], min(hi, box[ax].stop) - starts[ax]
            if hi <= lo:
                ok = False
                break
            index.append(slice(lo, hi))
        if not ok:
            continue
        others = tuple(ax for ax in range(3) if ax != a)
        counts = np.count_nonzero(sub[tuple(index)], axis=others)
        out[p][box[a]] = counts
    return out
