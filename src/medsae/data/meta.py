"""Metadata: reading TotalSegmentator ``meta.csv`` files and normalising values.

Normalised metadata fields (the slice-table columns they feed): ``age`` (float years),
``sex`` ('M' / 'F'), ``institute``, ``manufacturer``, ``scanner_model``, ``kvp`` (float),
``field_strength`` (float tesla), ``study_type``, ``pathology``, ``pathology_location``.
Unknown values are None, never invented.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from medsae.errors import InputError

META_FIELDS = (
    "age",
    "sex",
    "institute",
    "manufacturer",
    "scanner_model",
    "kvp",
    "field_strength",
    "study_type",
    "pathology",
    "pathology_location",
)

CT_META_COLUMNS = (
    "image_id",
    "age",
    "gender",
    "institute",
    "study_type",
    "split",
    "manufacturer",
    "scanner_model",
    "kvp",
    "pathology",
    "pathology_location",
)
MRI_META_COLUMNS = (
    *CT_META_COLUMNS,
    "magnetic_field_strength",
    "echo_time",
    "repetition_time",
    "scanning_sequence",
    "slice_thickness",
    "source",
)
# Column of a TotalSegmentator meta.csv -> normalised field.
TS_COLUMN_FIELDS = {
    "age": "age",
    "gender": "sex",
    "institute": "institute",
    "manufacturer": "manufacturer",
    "scanner_model": "scanner_model",
    "kvp": "kvp",
    "magnetic_field_strength": "field_strength",
    "study_type": "study_type",
    "pathology": "pathology",
    "pathology_location": "pathology_location",
}

_MISSING = {"", "nan", "none", "null", "na", "n/a", "unknown", "-"}


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return str(value).strip().lower() in _MISSING


def clean_text(value: Any) -> str | None:
    """A stripped string, or None for empty / missing markers."""
    return None if is_missing(value) else str(value).strip()


def parse_age(value: Any) -> float | None:
    """Age in years from a number or a DICOM age string ('045Y', '006M', '010W', '003D').

    Raises ValueError for values that are neither.
    """
    if is_missing(value):
        return None
    text = str(value).strip()
    m = re.fullmatch(r"(\d{1,3})\s*([YMWD])", text, flags=re.IGNORECASE)
    if m:
        n, unit = float(m.group(1)), m.group(2).upper()
        return n / {"Y": 1.0, "M": 12.0, "W": 52.1775, "D": 365.25}[unit]
    age = float(text.replace(",", "."))  # raises ValueError for non-numbers
    if not math.isfinite(age) or age < 0 or age > 150:
        raise ValueError(f"age {text!r} is outside 0..150 years")
    return age


def parse_sex(value: Any) -> str | None:
    """'M' or 'F' from m/male/M/f/female/F (any case); None otherwise."""
    text = clean_text(value)
    if text is None:
        return None
    key = text.lower()
    if key in {"m", "male", "man"}:
        return "M"
    if key in {"f", "female", "w", "woman"}:
        return "F"
    return None


def parse_float(value: Any) -> float | None:
    """A float, or None for missing or non-numeric values."""
    if is_missing(value):
        return None
    try:
        out = float(str(value).strip().replace(",", "."))
    except ValueError:
        return None
    return out if math.isfinite(out) else None


def normalise_meta(raw: dict[str, Any], where: str) -> tuple[dict[str, Any], list[str]]:
    """Normalise raw field values (keys are META_FIELDS) into typed metadata.

    Returns the metadata and a list of problems that make the subject fail (for example
    a non-numeric age). ``where`` names the file and subject in messages.
    """
    meta: dict[str, Any] = dict.fromkeys(META_FIELDS)
    problems: list[str] = []
    try:
        meta["age"] = parse_age(raw.get("age"))
    except ValueError:
        problems.append(f"{where}: age {raw.get('age')!r} is not a number of years")
    meta["sex"] = parse_sex(raw.get("sex"))
    for key in (
        "institute",
        "manufacturer",
        "scanner_model",
        "study_type",
        "pathology",
        "pathology_location",
    ):
        meta[key] = clean_text(raw.get(key))
    meta["kvp"] = parse_float(raw.get("kvp"))
    meta["field_strength"] = parse_float(raw.get("field_strength"))
    return meta, problems


def read_meta_csv(path: Path, modality: str) -> tuple[pd.DataFrame, list[str]]:
    """Read a TotalSegmentator ``meta.csv`` (semicolon separated, optional UTF-8 BOM).

    Comma- or tab-separated files are read too, with a warning. Raises InputError when the
    file cannot be read or has no ``image_id`` column; missing optional columns are warned
    about and read as unknown.
    """
    path = Path(path)
    warnings: list[str] = []
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot read metadata table: {e}") from e
    header = text.splitlines()[0] if text.strip() else ""
    if not header:
        raise InputError(
            path, "metadata table is empty; expected a header line with image_id;age;gender;..."
        )
    if ";" in header:
        sep = ";"
    elif "\t" in header:
        sep = "\t"
        warnings.append(f"{path}: tab-separated; TotalSegmentator uses ';' (read anyway)")
    elif "," in header:
        sep = ","
        warnings.append(f"{path}: comma-separated; TotalSegmentator uses ';' (read anyway)")
    else:
        sep = ";"
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, ValueError) as e:
        raise InputError(path, f"cannot parse metadata table (separator {sep!r}): {e}") from e
    df.columns = [str(c).strip().lstrip("\ufeff").lower() for c in df.columns]
    if "image_id" not in df.columns:
        raise InputError(
            path,
            f"missing column 'image_id' (found: {', '.join(df.columns) or 'none'}); "
            f"expected the TotalSegmentator columns {', '.join(CT_META_COLUMNS)}",
        )
    expected = MRI_META_COLUMNS if modality == "MR" else CT_META_COLUMNS
    # Only the columns we use matter; the others (split, echo_time, ...) are informative.
    used = [
        c
        for c in expected
        if c in TS_COLUMN_FIELDS and (modality == "MR" or c != "magnetic_field_strength")
    ]
    missing = [c for c in used if c not in df.columns]
    if missing:
        warnings.append(f"{path}: missing column(s) {', '.join(missing)}; read as unknown")
    df["image_id"] = df["image_id"].str.strip()
    dup = df["image_id"][df["image_id"].duplicated()].unique()
    if len(dup):
        warnings.append(f"{path}: image_id repeated ({', '.join(dup[:5])}); the first row is used")
        df = df.drop_duplicates("image_id")
    return df, warnings


def ts_row_to_raw(row: dict[str, Any]) -> dict[str, Any]:
    """A meta.csv row -> raw field values keyed by META_FIELDS."""
    return {field: row.get(col) for col, field in TS_COLUMN_FIELDS.items()}
