"""Study and acquisition concepts: what was scanned, how, and the patient's recorded finding.

Four facets of labels, read from the slice table's metadata (TotalSegmentator's ``meta.csv``
columns; undefined where the value is null), so that a description can say when a feature
follows the study protocol or the scanner setting rather than the anatomy — a confounder
a model can learn as a shortcut:

``study`` (``study_type``)
    The body coverage of the study, with the modality word removed so that CT and MRI
    studies of one region share a value: ``"ct thorax-abdomen-pelvis"`` ->
    ``study=thorax-abdomen-pelvis``.
``kvp`` (``kvp``; CT)
    Tube voltage in kV: ``kvp=80`` (from ``80``, ``80.0`` or ``"80 kV"``).
``field_strength`` (``field_strength``; MRI)
    Magnetic field strength in tesla: ``field_strength=1.5``, ``field_strength=3`` (from
    ``3.0`` or ``"3T"``).
``pathology`` (``pathology``)
    The recorded finding of the patient, lower case: ``pathology=liver lesion``; values
    meaning none (``"no pathology"``, ``"none"``, ``"healthy"``...) become
    ``pathology=none``. A subject-level label: it does not say the finding is in the slice.

The words of these labels are in :mod:`medsae.labels.words`.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

STUDY_FACETS = ("study", "kvp", "field_strength", "pathology")
_NO_FINDING = {"", "no pathology", "no_pathology", "none", "no", "normal", "healthy", "nan"}
_MODALITY_WORD = re.compile(r"^\s*(ct|mr|mri)[\s_:-]+", re.IGNORECASE)
_NUMBER = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?:kv|kvp|t|tesla)?\s*$", re.IGNORECASE)


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def study_value(facet: str, raw: Any) -> str | None:
    """One slice's value of a facet from the raw metadata (None where it is unknown)."""
    if _missing(raw):
        return None
    if facet == "study":
        text = _MODALITY_WORD.sub("", str(raw)).strip().lower().replace("_", " ")
        return text or None
    if facet in ("kvp", "field_strength"):  # a number, with or without its unit ("3T", "120 kV")
        match = _NUMBER.match(str(raw))
        number = float(match.group(1)) if match else float("nan")
        return f"{number:g}" if np.isfinite(number) and number > 0 else None
    if facet == "pathology":  # a blank finding is none: the column is filled for the subject
        text = str(raw).strip().lower().replace("_", " ")
        return "none" if text in _NO_FINDING else text
    raise KeyError(facet)


SOURCE_COLUMNS = {
    "study": "study_type",
    "kvp": "kvp",
    "field_strength": "field_strength",
    "pathology": "pathology",
}
"""The slice table column each facet is read from."""


def study_values(table: pd.DataFrame, facet: str) -> pd.Series:
    """The facet's value of every row (strings; None where the metadata is null or blank)."""
    column = SOURCE_COLUMNS[facet]
    if column not in table.columns:
        return pd.Series([None] * len(table), index=table.index, dtype=object)
    return pd.Series(
        [study_value(facet, v) for v in table[column].to_numpy(dtype=object)],
        index=table.index,
        dtype=object,
    )


def study_codes(table: pd.DataFrame) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Label codes of the four facets: per facet, the code of every row (``-1`` where the
    facet is unknown) and its sorted values (label ``facet=value``).

    A facet whose column is missing or has fewer than two values is left out (it cannot
    set any slice apart).
    """
    out: dict[str, tuple[np.ndarray, list[str]]] = {}
    for facet in STUDY_FACETS:
        vals = study_values(table, facet)
        known = vals.notna().to_numpy()
        levels = sorted(set(vals[known]))
        if len(levels) < 2:
            continue
        position = {level: i for i, level in enumerate(levels)}
        codes = np.full(len(vals), -1, dtype=np.int64)
        codes[known] = [position[v] for v in vals[known]]
        out[facet] = (codes, [str(v) for v in levels])
    return out
