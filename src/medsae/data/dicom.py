"""DICOM series: one volume per SeriesInstanceUID.

Slices are ordered along the slice normal (row cosine x column cosine of
ImageOrientationPatient) by the projection of ImagePositionPatient; the rescale slope and
intercept are applied (CT values in HU). The affine maps voxel (column, row, slice) to
RAS millimetres (DICOM's LPS with x and y negated). Metadata come from the tags
PatientAge / PatientSex / InstitutionName / Manufacturer / ManufacturerModelName / KVP /
MagneticFieldStrength / StudyDescription (or BodyPartExamined).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from medsae.data.cases import Case
from medsae.data.meta import normalise_meta
from medsae.errors import InputError


def looks_like_dicom(path: Path) -> bool:
    """True for files with the DICM preamble, or ``.dcm`` files pydicom can parse."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    if head[128:132] == b"DICM":
        return True
    if path.suffix.lower() != ".dcm":
        return False
    import pydicom

    try:
        pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception:
        return False
    return True


def _read_header(path: Path) -> Any:
    import pydicom

    return pydicom.dcmread(path, stop_before_pixels=True, force=True)


def dicom_cases(folder: Path) -> tuple[list[Case], list[str]]:
    """Cases of a folder of DICOM files (searched recursively), one per series."""
    folder = Path(folder)
    series: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
    warnings: list[str] = []
    for p in sorted(f for f in folder.rglob("*") if f.is_file()):
        if not looks_like_dicom(p):
            continue
        try:
            ds = _read_header(p)
        except Exception as e:
            warnings.append(f"{p}: unreadable DICOM header ({e}); skipped")
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or p.parent)
        series[uid].append((p, ds))
    cases: list[Case] = []
    used: set[tuple[str, str]] = set()
    for uid, items in sorted(series.items(), key=lambda kv: str(kv[1][0][0])):
        ds = items[0][1]
        modality = {"CT": "CT", "MR": "MR"}.get(str(ds.get("Modality", "")).upper())
        subject = (
            str(ds.get("PatientID", "") or items[0][0].parent.name).strip()
            or items[0][0].parent.name
        )
        mod = modality or "CT"
        if (mod, subject) in used:
            subject = f"{subject}_{ds.get('SeriesNumber', len(used))}"
        used.add((mod, subject))
        raw = {
            "age": ds.get("PatientAge"),
            "sex": ds.get("PatientSex"),
            "institute": ds.get("InstitutionName"),
            "manufacturer": ds.get("Manufacturer"),
            "scanner_model": ds.get("ManufacturerModelName"),
            "kvp": ds.get("KVP"),
            "field_strength": ds.get("MagneticFieldStrength"),
            "study_type": ds.get("StudyDescription") or ds.get("BodyPartExamined"),
        }
        raw = {k: (None if v is None else str(v)) for k, v in raw.items()}
        where = f"{items[0][0]} (series {uid})"
        meta, problems = normalise_meta(raw, where)
        case = Case(
            subject=subject,
            modality=mod,
            dataset=folder.name,
            source_kind="dicom",
            image=str(items[0][0].parent),
            meta=meta,
            problems=problems,
            dicom_files=tuple(str(p) for p, _ in items),
        )
        if modality is None:
            case.problems.append(f"{where}: modality {ds.get('Modality')!r} is not CT or MR")
        cases.append(case)
    if not cases:
        raise InputError(folder, "no readable DICOM files found")
    return cases, warnings


def load_series(
    files: tuple[str, ...] | list[str], where: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read a DICOM series into a float32 volume ``(columns, rows, slices)`` and its RAS affine.

    Returns (volume, affine, warnings). Raises InputError naming the file on bad input.
    """
    import pydicom

    warnings: list[str] = []
    slices = []
    for f in files:
        try:
            ds = pydicom.dcmread(f, force=True)
            pixels = ds.pixel_array
        except Exception as e:
            raise InputError(f"{where}: {f}", f"cannot read DICOM pixels: {e}") from e
        if pixels.ndim != 2:
            raise InputError(
                f"{where}: {f}", f"expected one 2D frame per file, got shape {pixels.shape}"
            )
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        slices.append(
            (ds, pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept), f)
        )
    shapes = {s[1].shape for s in slices}
    if len(shapes) != 1:
        raise InputError(where, f"slices of the series differ in size: {sorted(shapes)}")
    ds0 = slices[0][0]
    iop = ds0.get("ImageOrientationPatient")
    row_cos = np.array([float(v) for v in iop[:3]]) if iop is not None else np.array([1.0, 0, 0])
    col_cos = np.array([float(v) for v in iop[3:]]) if iop is not None else np.array([0, 1.0, 0])
    normal = np.cross(row_cos, col_cos)
    if iop is None:
        warnings.append(f"{where}: no ImageOrientationPatient; assumed axial")

    def position(ds: Any) -> np.ndarray | None:
        ipp = ds.get("ImagePositionPatient")
        return None if ipp is None else np.array([float(v) for v in ipp])

    positions = [position(s[0]) for s in slices]
    if all(p is not None for p in positions):
        dist = np.array([float(np.dot(p, normal)) for p in positions if p is not None])
        order = np.argsort(dist, kind="stable")
        dist = dist[order]
        gaps = np.diff(dist)
        if len(gaps) and np.any(gaps < 1e-3):
            raise InputError(where, "two slices share one position along the slice normal")
        dz = float(np.median(gaps)) if len(gaps) else float(ds0.get("SliceThickness", 1.0) or 1.0)
        if len(gaps) and np.ptp(gaps) > 0.05 * dz:
            warnings.append(
                f"{where}: uneven slice spacing ({gaps.min():.2f}..{gaps.max():.2f} mm); median used"
            )
        origin = positions[int(order[0])]
    else:
        order = np.argsort(
            [int(s[0].get("InstanceNumber", i)) for i, s in enumerate(slices)], kind="stable"
        )
        dz = float(ds0.get("SpacingBetweenSlices", ds0.get("SliceThickness", 1.0)) or 1.0)
        origin = np.zeros(3)
        warnings.append(f"{where}: no ImagePositionPatient; slices ordered by InstanceNumber")
    spacing = ds0.get("PixelSpacing", [1.0, 1.0])
    dr, dc = float(spacing[0]), float(spacing[1])  # row spacing, column spacing
    volume = np.stack([slices[int(i)][1].T for i in order], axis=-1)  # (cols, rows, slices)
    lps = np.eye(4)
    lps[:3, 0] = row_cos * dc  # column index moves along the row direction
    lps[:3, 1] = col_cos * dr
    lps[:3, 2] = normal * dz
    lps[:3, 3] = origin if origin is not None else 0.0
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return np.asfortranarray(volume), affine, warnings
