"""Source readers: find the cases of a dataset folder (TotalSegmentator, NIfTI folder, DICOM).

``discover(root, config)`` accepts one dataset folder or a folder holding several dataset
folders side by side (as ``medsae phantom`` writes ``OUT/ct`` and ``OUT/mri``). The kind
of each dataset is detected from its layout unless ``config.source_kind`` names it:

* ``totalsegmentator``: ``meta.csv`` and ``sXXXX/ct.nii.gz`` (or ``mri.nii.gz``) with
  ``sXXXX/segmentations/<structure>.nii.gz``;
* ``nifti``: NIfTI files plus a metadata table (CSV or Parquet), see ``nifti_folder``;
* ``dicom``: DICOM files, one volume per series (see ``dicom``).
"""

from __future__ import annotations

import re
from pathlib import Path

from medsae.data.cases import Case
from medsae.data.config import PrepareConfig
from medsae.data.meta import normalise_meta, read_meta_csv, ts_row_to_raw
from medsae.data.structures import ALL_STRUCTURES, STRUCTURES_BY_MODALITY
from medsae.errors import InputError

TS_IMAGES = {"CT": "ct", "MR": "mri"}
_NII = (".nii.gz", ".nii")


def _nifti_in(folder: Path, stem: str) -> Path | None:
    for ext in _NII:
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def nifti_stem(path: Path) -> str:
    name = path.name
    for ext in _NII:
        if name.endswith(ext):
            return name[: -len(ext)]
    return path.stem


def is_totalsegmentator(folder: Path) -> bool:
    if (folder / "meta.csv").is_file():
        return True
    return any(
        d.is_dir() and (_nifti_in(d, "ct") or _nifti_in(d, "mri") or (d / "segmentations").is_dir())
        for d in folder.iterdir()
    )


def is_nifti_folder(folder: Path) -> bool:
    tables = [p for p in folder.iterdir() if p.suffix.lower() in {".csv", ".parquet", ".tsv"}]
    return bool(tables) and any(folder.rglob("*.nii*"))


def is_dicom_folder(folder: Path) -> bool:
    from medsae.data.dicom import looks_like_dicom

    for i, p in enumerate(f for f in folder.rglob("*") if f.is_file()):
        if looks_like_dicom(p):
            return True
        if i > 50:
            break
    return False


def detect_kind(folder: Path) -> str | None:
    """The layout of a dataset folder, or None when it is not one."""
    if is_totalsegmentator(folder):
        return "totalsegmentator"
    if is_nifti_folder(folder):
        return "nifti"
    if is_dicom_folder(folder):
        return "dicom"
    return None


def dataset_folders(root: Path, kind: str) -> list[tuple[Path, str]]:
    """(folder, kind) of each dataset under ``root`` (root itself, or its subfolders)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "dataset folder not found")
    if kind != "auto":
        own = detect_kind(root)
        if own is not None:
            return [(root, kind)]
        subs = [d for d in sorted(root.iterdir()) if d.is_dir() and detect_kind(d) is not None]
        return [(d, kind) for d in subs] or [(root, kind)]
    own = detect_kind(root)
    if own is not None:
        return [(root, own)]
    found = []
    for d in sorted(root.iterdir()):
        if d.is_dir() and not d.name.startswith("."):
            k = detect_kind(d)
            if k is not None:
                found.append((d, k))
    if not found:
        raise InputError(
            root,
            "no dataset found: expected a TotalSegmentator folder (meta.csv, sXXXX/ct.nii.gz or "
            "mri.nii.gz with segmentations/), a folder of NIfTI files with a metadata table, "
            "DICOM series, or folders of these side by side",
        )
    return found


def discover(root: Path, config: PrepareConfig) -> tuple[list[Case], list[str]]:
    """Every case under ``root`` and dataset-level warnings.

    Dataset-level errors (an unreadable meta.csv, for example) raise InputError naming the file.
    """
    cases: list[Case] = []
    warnings: list[str] = []
    for folder, kind in dataset_folders(root, config.source_kind):
        if kind == "totalsegmentator":
            c, w = totalsegmentator_cases(folder)
        elif kind == "nifti":
            from medsae.data.nifti_folder import nifti_folder_cases

            c, w = nifti_folder_cases(folder, config)
        elif kind == "dicom":
            from medsae.data.dicom import dicom_cases

            c, w = dicom_cases(folder)
        else:  # pragma: no cover - guarded by the config type
            raise InputError(folder, f"unknown source kind {kind!r}")
        cases.extend(c)
        warnings.extend(w)
    seen: dict[str, Case] = {}
    for case in cases:
        if case.key in seen:
            case.problems.append(
                f"{case.key}: the same subject key comes from {seen[case.key].image} and "
                f"{case.image}; subject ids must be unique per modality"
            )
        else:
            seen[case.key] = case
    cases.sort(key=lambda c: (c.dataset, c.modality, c.subject))
    return cases, warnings


def _ts_modality(folder: Path, subject_dirs: list[Path]) -> str:
    n_ct = sum(1 for d in subject_dirs if _nifti_in(d, "ct"))
    n_mr = sum(1 for d in subject_dirs if _nifti_in(d, "mri"))
    if n_mr > n_ct:
        return "MR"
    if n_ct or not re.search(r"mr", folder.name, re.IGNORECASE):
        return "CT"
    return "MR"


def totalsegmentator_cases(folder: Path) -> tuple[list[Case], list[str]]:
    """Cases of a TotalSegmentator CT or MRI v2 folder."""
    folder = Path(folder)
    subject_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    modality = _ts_modality(folder, subject_dirs)
    warnings: list[str] = []
    meta_path = folder / "meta.csv"
    rows: dict[str, dict[str, str]] = {}
    if meta_path.is_file():
        df, w = read_meta_csv(meta_path, modality)
        warnings.extend(w)
        rows = {str(r["image_id"]): r for r in df.to_dict("records")}
    else:
        warnings.append(f"{meta_path}: not found; metadata of {folder.name} is unknown")
    expected = STRUCTURES_BY_MODALITY[modality]
    known = set(ALL_STRUCTURES)
    # a folder with its own metadata table and no meta.csv is likely a NIfTI folder
    hint = (
        "; if this is a NIfTI folder with a metadata table, pass --source-kind nifti"
        if not meta_path.is_file() and is_nifti_folder(folder)
        else ""
    )
    cases = []
    for d in subject_dirs:
        subject = d.name
        stem = TS_IMAGES[modality]
        image = _nifti_in(d, stem)
        row = rows.get(subject)
        meta, problems = normalise_meta(ts_row_to_raw(row or {}), f"{meta_path} row {subject}")
        case = Case(
            subject=subject,
            modality=modality,
            dataset=folder.name,
            source_kind="totalsegmentator",
            image=str(image or d / f"{stem}.nii.gz"),
            meta=meta,
            problems=problems,
        )
        if row is None and meta_path.is_file():
            case.warnings.append(f"{case.key}: no row in {meta_path}; metadata unknown")
        if image is None:
            case.problems.append(f"{case.key}: missing image file {d / (stem + '.nii.gz')}")
        seg = d / "segmentations"
        case.mask_dir = str(seg)
        if not seg.is_dir():
            case.problems.append(f"{case.key}: missing segmentation folder {seg}{hint}")
        else:
            files = {nifti_stem(p): p for p in seg.iterdir() if p.name.endswith(_NII)}
            if not files:
                case.problems.append(f"{case.key}: segmentation folder {seg} holds no mask files")
            unknown = sorted(s for s in files if s not in known)
            if unknown:
                case.warnings.append(
                    f"{case.key}: {len(unknown)} mask(s) with unknown structure names ignored "
                    f"({', '.join(unknown[:5])})"
                )
            case.masks = {s: str(p) for s, p in files.items() if s in known}
            absent_files = [s for s in expected if s not in files]
            if files and absent_files:
                case.warnings.append(
                    f"{case.key}: no mask file for {len(absent_files)} structure(s) "
                    f"({', '.join(absent_files[:5])}); marked missing"
                )
            case.annotated = tuple(s for s in ALL_STRUCTURES if s in case.masks)
        cases.append(case)
    if not cases:
        warnings.append(f"{folder}: no subject folders found")
    return cases, warnings
