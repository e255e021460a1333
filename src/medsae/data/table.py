"""Reading and writing the ``slices`` and ``split`` artifacts (see docs/ARTIFACTS.md).

``WS/slices/``
    ``slices.parquet``          one row per slice; row ``i`` is image ``i`` and anatomy row ``i``
    ``images.npy``              uint8 ``(N, S, S)`` (grayscale) or ``(N, S, S, 3)`` (multi-window)
    ``anatomy_presence.npy``    int8 ``(N, len(structures))``: 1 present, 0 absent, -1 missing
                                (the structure is not annotated for that slice's modality)
    ``anatomy_area.npy``        float32 ``(N, len(structures))``: area fraction of the slice,
                                NaN where missing
    ``structures.json``         the column names of the anatomy arrays
    ``labels.json``             imported slices only: the table's user label columns
``WS/split/``
    ``split.parquet``           ``subject_key``, ``split`` in {"train", "val", "test"}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medsae.artifacts import read_artifact
from medsae.data.io import (
    AREA_FILE,
    IMAGES_FILE,
    LABELS_FILE,
    PRESENCE_FILE,
    SLICES_FILE,
    SPLIT_FILE,
    STRUCTURES_FILE,
)
from medsae.errors import ArtifactError

__all__ = [
    "AREA_FILE",
    "IMAGES_FILE",
    "LABELS_FILE",
    "PRESENCE_FILE",
    "SLICES_FILE",
    "SPLIT_FILE",
    "STRUCTURES_FILE",
]


SPLITS = ("train", "val", "test")
AGE_GROUPS = ("<40", "40-60", "60-80", ">=80")

# Columns of slices.parquet. Metadata that a source does not provide is null, never invented.
SLICE_COLUMNS: dict[str, str] = {
    "slice_id": "unique id '<modality>:<subject>:<plane>:<index>' (e.g. 'CT:s0001:axial:0042')",
    "subject": "subject id as in the source (e.g. 's0001'); ids may repeat across modalities",
    "subject_key": "'<modality>:<subject>' (unique across CT and MRI)",
    "dataset": "name of the source dataset folder",
    "source_kind": "totalsegmentator | nifti | dicom",
    "modality": "'CT' or 'MR'",
    "plane": "'axial', 'coronal' or 'sagittal'",
    "index": "slice index along the plane's axis in the canonical (RAS) volume",
    "n_slices": "number of slices of the volume along that axis",
    "position_mm": "position of the slice along the axis, in mm (RAS world coordinate)",
    "rel_position": "index / (n_slices - 1), 0 = left/posterior/inferior end (RAS)",
    "age": "age in years (float, null when unknown)",
    "age_group": "'<40', '40-60', '60-80', '>=80' or null",
    "sex": "'M', 'F' or null",
    "institute": "institute code or null",
    "manufacturer": "scanner manufacturer or null",
    "scanner_model": "scanner model or null",
    "kvp": "CT tube voltage (float) or null",
    "field_strength": "MRI field strength in tesla (float) or null",
    "study_type": "study type (e.g. 'thorax-abdomen-pelvis') or null",
    "pathology": "pathology or null",
    "pathology_location": "pathology location or null",
    "window_center": "CT window centre used (HU), null for MRI",
    "window_width": "CT window width used (HU), null for MRI",
    "intensity_low": "intensity mapped to 0",
    "intensity_high": "intensity mapped to 255",
    "pixel_spacing_mm": "in-plane pixel spacing of the stored image, in mm",
    "source_file": "path of the image file the slice was cut from",
}


@dataclass(frozen=True)
class Anatomy:
    """Per-slice anatomy labels, rows aligned with the slice table."""

    presence: np.ndarray  # int8 (N, S): 1 present, 0 absent, -1 missing
    area: np.ndarray  # float32 (N, S): area fraction, NaN where missing
    structures: list[str]

    def column(self, name: str) -> np.ndarray:
        return self.presence[:, self.structures.index(name)]


def read_slices(slices_dir: Path) -> pd.DataFrame:
    """The slice table of a ``slices`` artifact."""
    return read_artifact(
        Path(slices_dir) / SLICES_FILE, _read_table, "slice table not found", "prepare"
    )


def _read_table(path: Path) -> pd.DataFrame:
    """A Parquet table, its ``slice_id`` / ``subject_key`` columns required where named."""
    table = pd.read_parquet(path)
    needed = {SLICES_FILE: ("slice_id", "subject_key"), SPLIT_FILE: ("subject_key", "split")}
    missing = [c for c in needed.get(path.name, ()) if c not in table.columns]
    if missing:
        raise KeyError(f"no column {', '.join(missing)}")
    return table


def open_images(slices_dir: Path) -> np.ndarray:
    """The slice images, memory-mapped read-only (uint8, ``(N, S, S)`` or ``(N, S, S, 3)``)."""
    return read_artifact(
        Path(slices_dir) / IMAGES_FILE,
        lambda p: np.load(p, mmap_mode="r"),
        "slice images not found",
        "prepare",
    )


def read_anatomy(slices_dir: Path, mmap: bool = True) -> Anatomy:
    """Anatomy presence and area arrays with their structure names."""
    d = Path(slices_dir)
    try:
        structures = json.loads((d / STRUCTURES_FILE).read_text())
        if mmap:
            presence = np.load(d / PRESENCE_FILE, mmap_mode="r")
            area = np.load(d / AREA_FILE, mmap_mode="r")
        else:
            presence = np.load(d / PRESENCE_FILE)
            area = np.load(d / AREA_FILE)
    except FileNotFoundError as e:
        raise ArtifactError(f"{e.filename}: anatomy labels not found; run `medsae prepare`") from e
    if presence.shape != area.shape or presence.shape[1] != len(structures):
        raise ArtifactError(
            f"{d}: anatomy arrays {presence.shape}/{area.shape} do not match "
            f"{len(structures)} structures"
        )
    return Anatomy(presence=presence, area=area, structures=list(structures))


def write_anatomy(
    slices_dir: Path, presence: np.ndarray, area: np.ndarray, structures: list[str]
) -> None:
    d = Path(slices_dir)
    np.save(d / PRESENCE_FILE, presence.astype(np.int8, copy=False))
    np.save(d / AREA_FILE, area.astype(np.float32, copy=False))
    (d / STRUCTURES_FILE).write_text(json.dumps(list(structures)))


def read_label_columns(slices_dir: Path) -> list[str]:
    """The user label columns of imported slices (``labels.json``; none for prepared slices)."""
    p = Path(slices_dir) / LABELS_FILE
    if not p.is_file():
        return []
    try:
        names = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{p}: unreadable label column list ({e})") from e
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ArtifactError(f"{p}: expected a JSON list of column names")
    return names


def read_split(split_dir: Path) -> pd.DataFrame:
    return read_artifact(Path(split_dir) / SPLIT_FILE, _read_table, "split not found", "split")


def slices_with_split(slices_dir: Path, split_dir: Path) -> pd.DataFrame:
    """The slice table with a ``split`` column joined from the split artifact.

    Raises if a subject of the table has no split (the split is stale).
    """
    table = read_slices(slices_dir)
    split = read_split(split_dir)
    mapping = dict(zip(split["subject_key"], split["split"], strict=True))
    table = table.copy()
    table["split"] = table["subject_key"].map(mapping)
    missing = table.loc[table["split"].isna(), "subject_key"].unique()
    if len(missing):
        raise ArtifactError(
            f"{split_dir}: no split for {len(missing)} subject(s) such as {list(missing[:3])}; "
            "rerun `medsae split`"
        )
    return table


def age_group(age: float | None) -> str | None:
    """The paper's age bins: <40, 40-60, 60-80, >=80 (None for unknown ages)."""
    if age is None or not np.isfinite(age):
        return None
    if age < 40:
        return "<40"
    if age < 60:
        return "40-60"
    if age < 80:
        return "60-80"
    return ">=80"
