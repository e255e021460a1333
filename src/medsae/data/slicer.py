"""One volume -> its slices: images, slice-table rows and anatomy rows, written as a piece.

A piece is a folder holding ``images.npy``, ``rows.parquet``, ``presence.npy``, ``area.npy``,
``label_maps.npy`` when pixel label maps are asked for (see :mod:`medsae.data.io`) and,
written last, ``summary.json`` (its presence marks the piece as complete, so an
interrupted prepare resumes at the volume level).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsae.atomic import atomic_path
from medsae.data import geometry as geo
from medsae.data.anatomy import Ranges, plane_counts, slab_counts
from medsae.data.cases import Case
from medsae.data.config import PrepareConfig
from medsae.data.intensity import MULTI_WINDOWS, ct_window, mri_bounds, to_uint8, window_bounds
from medsae.data.io import (
    LABEL_MAPS_FILE,
    PIECE_AREA,
    PIECE_IMAGES,
    PIECE_PRESENCE,
    PIECE_ROWS,
    label_id,
)
from medsae.data.structures import ALL_STRUCTURES
from medsae.data.table import age_group
from medsae.data.volume_io import load_image, load_mask, mask_slabs
from medsae.errors import InputError
from medsae.npy import save_npy
from medsae.workspace import SUMMARY

_COL = {s: i for i, s in enumerate(ALL_STRUCTURES)}


def piece_done(piece: Path) -> bool:
    return (piece / SUMMARY).is_file()


def _keep_ranges(layout: geo.SliceLayout, plane: str, shape: tuple[int, ...]) -> Ranges:
    """Canonical index ranges of the in-plane axes that the image keeps (display axes are flipped)."""
    row_ax, col_ax = geo.in_plane_axes(plane)
    out: Ranges = {}
    for ax, (lo, hi) in ((row_ax, layout.row_keep), (col_ax, layout.col_keep)):
        n = shape[ax]
        out[ax] = (n - hi, n - lo)
    return out


def _painted(
    slabs: Iterator[tuple[int, np.ndarray]], native_labels: np.ndarray | None, value: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Pass mask slabs through, writing ``value`` into ``native_labels`` where a slab is nonzero."""
    for k0, block in slabs:
        if native_labels is not None:
            native_labels[:, :, k0 : k0 + block.shape[2]][block != 0] = value
        yield k0, block


def _anatomy_counts(
    case: Case,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    ornt: np.ndarray,
    planes: list[str],
    keep: dict[str, Ranges],
    warnings: list[str],
    native_labels: np.ndarray | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """structure -> plane -> voxel counts per slice, for the annotated structures.

    With ``native_labels`` (uint8, the image's native shape) the masks are also painted into
    it as label-map values (:func:`medsae.data.io.label_id`), in ``ALL_STRUCTURES`` order, so a
    later structure wins where masks overlap; the masks are read once for both.
    """
    counts: dict[str, dict[str, np.ndarray]] = {}
    for structure in sorted(case.annotated, key=lambda s: _COL.get(s, len(_COL))):
        path = case.masks.get(structure)
        if path is None:
            continue
        slabs = _painted(
            mask_slabs(path, case.key, shape, affine), native_labels, label_id(structure)
        )
        counts[structure] = slab_counts(slabs, shape, ornt, planes, keep)
    if case.label_map:
        native = load_mask(case.label_map, case.key, shape, affine)
        if native_labels is not None:
            for value, structure in sorted(
                case.label_names.items(), key=lambda kv: _COL.get(kv[1], len(_COL))
            ):
                if structure in _COL:
                    native_labels[native == value] = label_id(structure)
        labels = geo.reorient(native, ornt)
        values = set(np.unique(labels).tolist()) - {0}
        unnamed = sorted(v for v in values if int(v) not in case.label_names)
        if unnamed:
            warnings.append(
                f"{case.key}: label values {unnamed[:8]} of {case.label_map} have no name; ignored"
            )
        for value, structure in case.label_names.items():
            if structure in counts:
                continue
            if value in values:
                counts[structure] = plane_counts(labels == value, planes, keep)
            else:
                counts[structure] = {
                    p: np.zeros(labels.shape[geo.PLANE_AXIS[p]], np.int64) for p in planes
                }
    return counts


def _intensity(
    case: Case, vol: np.ndarray, config: PrepareConfig
) -> tuple[np.ndarray, dict[str, Any]]:
    """uint8 volume (or (..., 3) RGB) and the window / scaling columns."""
    info: dict[str, Any] = {
        "window_center": None,
        "window_width": None,
        "unknown_study_type": False,
    }
    if case.modality == "CT":
        if config.multi_window:
            channels = [to_uint8(vol, *window_bounds(*w)) for _, w in MULTI_WINDOWS]
            out = np.stack(channels, axis=-1)
            info.update(
                intensity_low=None, intensity_high=None, window_center=None, window_width=None
            )
            return out, info
        if config.window_override is not None:
            (c, w), known = tuple(config.window_override), True
        else:
            (c, w), known = ct_window(case.meta.get("study_type"), config.default_window)
        lo, hi = window_bounds(c, w)
        info.update(
            window_center=c,
            window_width=w,
            intensity_low=lo,
            intensity_high=hi,
            unknown_study_type=not known,
        )
        return to_uint8(vol, lo, hi), info
    lo, hi = mri_bounds(vol, config.mri_percentiles)
    info.update(intensity_low=lo, intensity_high=hi)
    grey = to_uint8(vol, lo, hi)
    if config.multi_window:
        return np.stack([grey, grey, grey], axis=-1), info
    return grey, info


def process_case(case: Case, config: PrepareConfig, piece: Path) -> dict[str, Any]:
    """Cut one case into slices and write its piece; returns the piece summary.

    Raises InputError (naming the subject and file) when the case cannot be read.
    """
    if case.problems:
        raise InputError(case.key, "; ".join(case.problems))
    warnings = list(case.warnings)
    data, affine, w = load_image(case)
    warnings.extend(w)
    shape = (int(data.shape[0]), int(data.shape[1]), int(data.shape[2]))
    ornt = geo.canonical_transform(affine)
    vol = geo.reorient(data, ornt)
    can_affine = geo.canonical_affine(affine, shape, ornt)
    cshape = vol.shape
    spacing = geo.voxel_sizes(can_affine)
    planes = [p for p in config.planes_for(case.modality) if cshape[geo.PLANE_AXIS[p]] >= 1]
    layouts: dict[str, geo.SliceLayout] = {}
    for p in list(planes):
        r_ax, c_ax = geo.in_plane_axes(p)
        if min(cshape[r_ax], cshape[c_ax]) < 2:
            warnings.append(f"{case.key}: {p} plane skipped (the volume is {cshape} voxels)")
            planes.remove(p)
            continue
        layouts[p] = geo.slice_layout(
            cshape[r_ax], cshape[c_ax], spacing[r_ax], spacing[c_ax], config.size, config.square
        )
    keep = {p: _keep_ranges(layouts[p], p, cshape) for p in planes}
    native_labels = np.zeros(shape, dtype=np.uint8, order="F") if config.label_maps else None
    counts = _anatomy_counts(case, shape, affine, ornt, planes, keep, warnings, native_labels)
    label_vol = geo.reorient(native_labels, ornt) if native_labels is not None else None

    # Slices kept per plane: the labelled range (optional), then every step-th.
    selected: dict[str, range] = {}
    for p in planes:
        n = cshape[geo.PLANE_AXIS[p]]
        lo, hi = 0, n - 1
        if config.restrict_to_labelled and counts:
            any_present = np.zeros(n, dtype=bool)
            for per_plane in counts.values():
                any_present |= per_plane[p] >= config.min_pixels
            idx = np.flatnonzero(any_present)
            if idx.size:
                lo, hi = int(idx[0]), int(idx[-1])
            elif p == planes[0]:
                warnings.append(f"{case.key}: no annotated structure present; all slices kept")
        selected[p] = range(lo, hi + 1, config.step)

    vol_u8, info = _intensity(case, vol, config)
    del data, vol
    n_total = int(sum(len(v) for v in selected.values()))
    channels = vol_u8.shape[3:]
    images = np.zeros((n_total, config.size, config.size, *channels), dtype=np.uint8)
    label_maps = (
        np.zeros((n_total, config.size, config.size), dtype=np.uint8)
        if label_vol is not None
        else None
    )
    presence = np.full((n_total, len(ALL_STRUCTURES)), -1, dtype=np.int8)
    area = np.full((n_total, len(ALL_STRUCTURES)), np.nan, dtype=np.float32)
    for s in case.annotated:  # annotated but without a mask in this case: stays missing
        if s in counts:
            presence[:, _COL[s]] = 0
            area[:, _COL[s]] = 0.0
    rows: list[dict[str, Any]] = []
    meta = case.meta
    center = (np.asarray(cshape[:3], dtype=np.float64) - 1) / 2
    r = 0
    for p in planes:
        a = geo.PLANE_AXIS[p]
        layout = layouts[p]
        n = cshape[a]
        (r0, r1), (c0, c1) = keep[p][geo.in_plane_axes(p)[0]], keep[p][geo.in_plane_axes(p)[1]]
        n_pixels = float((r1 - r0) * (c1 - c0))
        idx = np.asarray(selected[p], dtype=np.int64)
        for s, per_plane in counts.items():
            c = per_plane[p][idx]
            presence[r : r + idx.size, _COL[s]] = c >= config.min_pixels
            area[r : r + idx.size, _COL[s]] = c / n_pixels
        stack = geo.display_stack(vol_u8, p, selected[p])
        label_stack = (
            geo.display_stack(label_vol, p, selected[p]) if label_vol is not None else None
        )
        for t, i in enumerate(selected[p]):
            images[r] = geo.fit_square(stack[t], layout)
            if label_maps is not None and label_stack is not None:
                label_maps[r] = geo.fit_square(label_stack[t], layout, nearest=True)
            vox = center.copy()
            vox[a] = i
            position = float(can_affine[a, :3] @ vox + can_affine[a, 3])
            rows.append(
                {
                    "slice_id": f"{case.modality}:{case.subject}:{p}:{i:04d}",
                    "subject": case.subject,
                    "subject_key": case.key,
                    "dataset": case.dataset,
                    "source_kind": case.source_kind,
                    "modality": case.modality,
                    "plane": p,
                    "index": i,
                    "n_slices": n,
                    "position_mm": position,
                    "rel_position": i / (n - 1) if n > 1 else 0.0,
                    "age": meta.get("age"),
                    "age_group": age_group(meta.get("age")),
                    "sex": meta.get("sex"),
                    "institute": meta.get("institute"),
                    "manufacturer": meta.get("manufacturer"),
                    "scanner_model": meta.get("scanner_model"),
                    "kvp": meta.get("kvp"),
                    "field_strength": meta.get("field_strength"),
                    "study_type": meta.get("study_type"),
                    "pathology": meta.get("pathology"),
                    "pathology_location": meta.get("pathology_location"),
                    "window_center": info["window_center"],
                    "window_width": info["window_width"],
                    "intensity_low": info.get("intensity_low"),
                    "intensity_high": info.get("intensity_high"),
                    "pixel_spacing_mm": layout.pixel_mm,
                    "source_file": case.image,
                }
            )
            r += 1
        del stack
    del vol_u8, label_vol, native_labels
    write_piece(piece, images, rows, presence, area, config.thumbnails, label_maps)
    summary = {
        "subject_key": case.key,
        "n_slices": n_total,
        "warnings": warnings,
        "unknown_study_type": bool(info["unknown_study_type"]),
        "study_type": meta.get("study_type"),
        "shape": list(cshape[:3]),
        "spacing_mm": [round(float(x), 4) for x in spacing],
    }
    _write_json(piece / SUMMARY, summary)
    return summary


def _write_json(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, default=str))


def write_piece(
    piece: Path,
    images: np.ndarray,
    rows: list[dict[str, Any]],
    presence: np.ndarray,
    area: np.ndarray,
    thumbnails: bool,
    label_maps: np.ndarray | None = None,
) -> None:
    piece.mkdir(parents=True, exist_ok=True)
    (piece / SUMMARY).unlink(missing_ok=True)
    save_npy(piece / PIECE_IMAGES, images)
    if label_maps is not None:
        save_npy(piece / LABEL_MAPS_FILE, label_maps)
    save_npy(piece / PIECE_PRESENCE, presence)
    save_npy(piece / PIECE_AREA, area)
    from medsae.data.table import SLICE_COLUMNS

    pd.DataFrame(rows, columns=list(SLICE_COLUMNS)).to_parquet(piece / PIECE_ROWS, index=False)
    if thumbnails:
        from PIL import Image

        tdir = piece / "thumbnails"
        tdir.mkdir(exist_ok=True)
        for row, img in zip(rows, images, strict=True):
            name = row["slice_id"].replace(":", "_") + ".png"
            Image.fromarray(img).resize((64, 64), Image.Resampling.BILINEAR).save(tdir / name)
