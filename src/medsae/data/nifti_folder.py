"""A folder of NIfTI volumes described by a metadata table (CSV or Parquet).

The table has one row per volume. Columns (our names; ``PrepareConfig.column_map`` maps
them to other names, e.g. ``{"subject": "PatientID"}``):

==================  =========================================================
``subject``         subject id (required; ``image_id`` is accepted too)
``image``           image file, relative to the folder (required)
``modality``        'CT' or 'MR' (else ``PrepareConfig.modality``, else CT)
``labels``          optional integer label map (same grid as the image)
``masks``           optional folder of per-structure masks ``<structure>.nii.gz``
``age``, ``sex``    age in years; sex M/F (``gender`` is accepted too)
``institute``, ``manufacturer``, ``scanner_model``, ``kvp``, ``field_strength``,
``study_type``, ``pathology``, ``pathology_location``: optional
==================  =========================================================

Label values of label maps are named by ``PrepareConfig.label_names`` or a ``labels.json``
(``{"1": "liver", ...}``) in the folder; names must be in ``ALL_STRUCTURES``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from medsae.data.cases import Case
from medsae.data.config import PrepareConfig
from medsae.data.meta import META_FIELDS, clean_text, normalise_meta
from medsae.data.sources import _NII, nifti_stem
from medsae.data.structures import ALL_STRUCTURES
from medsae.errors import InputError

ALIASES = {"image_id": "subject", "gender": "sex", "magnetic_field_strength": "field_strength"}


def _find_table(folder: Path, config: PrepareConfig) -> Path:
    if config.table:
        p = folder / config.table
        if not p.is_file():
            raise InputError(p, "metadata table named in the config not found")
        return p
    for name in ("metadata.parquet", "metadata.csv"):
        if (folder / name).is_file():
            return folder / name
    tables = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".csv", ".parquet", ".tsv"})
    if len(tables) != 1:
        raise InputError(
            folder,
            f"expected one metadata table (metadata.csv or metadata.parquet), found "
            f"{[t.name for t in tables]}; name it with --table",
        )
    return tables[0]


def read_table(path: Path) -> pd.DataFrame:
    """A CSV (',' ';' or tab separated, optional BOM) or Parquet table, values as text."""
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(
            path, sep=None, engine="python", dtype=str, keep_default_na=False, encoding="utf-8-sig"
        )
    except Exception as e:  # pandas raises many kinds
        raise InputError(path, f"cannot read metadata table: {e}") from e


def _label_names(folder: Path, config: PrepareConfig) -> dict[int, str]:
    if config.label_names:
        names = {int(k): v for k, v in config.label_names.items()}
        source: str | Path = "config label_names"
    elif (folder / "labels.json").is_file():
        source = folder / "labels.json"
        try:
            names = {int(k): str(v) for k, v in json.loads(Path(source).read_text()).items()}
        except (ValueError, json.JSONDecodeError) as e:
            raise InputError(source, f"expected a JSON object label value -> structure: {e}") from e
    else:
        return {}
    unknown = sorted(set(names.values()) - set(ALL_STRUCTURES))
    if unknown:
        raise InputError(source, f"unknown structure names {unknown}; see medsae.data.structures")
    return names


def nifti_folder_cases(folder: Path, config: PrepareConfig) -> tuple[list[Case], list[str]]:
    """Cases of a NIfTI folder with a metadata table."""
    folder = Path(folder)
    table_path = _find_table(folder, config)
    df = read_table(table_path)
    inverse = {theirs: ours for ours, theirs in config.column_map.items()}
    df.columns = [inverse.get(str(c), str(c).strip().lower()) for c in df.columns]
    present = set(df.columns)
    df.columns = [
        ALIASES[c] if c in ALIASES and ALIASES[c] not in present else c for c in df.columns
    ]
    for need in ("subject", "image"):
        if need not in df.columns:
            raise InputError(
                table_path,
                f"missing column {need!r} (found: {', '.join(map(str, df.columns))}); "
                "map yours with column_map",
            )
    names = _label_names(folder, config)
    warnings: list[str] = []
    cases = []
    for i, row in enumerate(df.to_dict("records")):
        cases.append(_case(folder, table_path, i, row, config, names))
    return cases, warnings


def _case(
    folder: Path,
    table: Path,
    i: int,
    row: dict[str, Any],
    config: PrepareConfig,
    names: dict[int, str],
) -> Case:
    raw = row.get("subject")
    # a subject id is text as written ("nan", "NA" and "none" are ids); only an empty cell
    # (or a missing value of a Parquet table) falls back to the row number
    subject = (raw.strip() if isinstance(raw, str) else clean_text(raw)) or f"row{i + 1}"
    modality = (clean_text(row.get("modality")) or config.modality or "CT").upper()
    modality = {"MRI": "MR"}.get(modality, modality)
    where = f"{table} row {i + 1} ({subject})"
    meta, problems = normalise_meta({k: row.get(k) for k in META_FIELDS}, where)
    if modality not in {"CT", "MR"}:
        problems.append(f"{where}: modality {modality!r} is not CT or MR")
        modality = "CT"
    image_rel = clean_text(row.get("image")) or ""
    image = folder / image_rel
    case = Case(
        subject=subject,
        modality=modality,
        dataset=folder.name,
        source_kind="nifti",
        image=str(image),
        meta=meta,
        problems=problems,
    )
    if not image_rel or not image.is_file():
        case.problems.append(f"{where}: missing image file {image}")
    labels = clean_text(row.get("labels"))
    if labels:
        lp = folder / labels
        case.label_map = str(lp)
        if not lp.is_file():
            case.problems.append(f"{where}: missing label map {lp}")
        elif not names:
            case.problems.append(
                f"{where}: label map given but no label names (labels.json or label_names)"
            )
        case.label_names = names
        case.annotated = tuple(s for s in ALL_STRUCTURES if s in set(names.values()))
    masks = clean_text(row.get("masks"))
    if masks:
        md = folder / masks
        case.mask_dir = str(md)
        files = (
            {nifti_stem(p): p for p in md.iterdir() if p.name.endswith(_NII)} if md.is_dir() else {}
        )
        if not files:
            case.problems.append(f"{where}: mask folder {md} is missing or holds no mask files")
        case.masks = {s: str(p) for s, p in files.items() if s in set(ALL_STRUCTURES)}
        case.annotated = tuple(s for s in ALL_STRUCTURES if s in case.masks or s in case.annotated)
    return case
