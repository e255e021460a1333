"""Per-slice anatomy: voxel counts of each structure in each slice of each plane.

Counts are taken on the native (canonically oriented) voxel grid, so they do not depend on
the resampling of the stored images. For a slice with ``rows x cols`` voxels (inside the
kept region, see ``geometry.SliceLayout``):

* presence = 1 when ``count >= min_pixels``, else 0;
* area fraction = ``count / (rows * cols)``.
"""

from __future__ import annotations

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


def native_counts(
    data: np.ndarray, ornt: np.ndarray, planes: list[str], keep: dict[str, Ranges]
) -> dict[str, np.ndarray]:
    """:func:`plane_counts` of ``data != 0`` given in native voxel order.

    The bounding box is found on the native array (contiguous, no copy), and only the
    boxed part is compared, reoriented (``ornt``, see ``geometry.canonical_transform``) and
    counted: fast for the small structures that make most masks.
    """
    from nibabel.orientations import apply_orientation

    native_shape = data.shape
    shape = [0, 0, 0]
    for n in range(3):
        shape[int(ornt[n, 0])] = native_shape[n]
    box = bounding_box(data)
    if box is None:
        return {p: np.zeros(shape[PLANE_AXIS[p]], dtype=np.int64) for p in planes}
    sub = apply_orientation(data[box] != 0, ornt)
    canon = [slice(0, 0)] * 3
    for n in range(3):
        t, flip = int(ornt[n, 0]), ornt[n, 1] < 0
        a, b = box[n].start, box[n].stop
        canon[t] = slice(native_shape[n] - b, native_shape[n] - a) if flip else slice(a, b)
    return _counts_in_box(sub, (canon[0], canon[1], canon[2]), tuple(shape), planes, keep)


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
