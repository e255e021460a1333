"""A case: one volume to cut into slices, with where its labels and metadata come from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Case:
    """One volume of one subject, as found by a source reader (picklable, no data loaded).

    ``masks`` maps structure -> mask file (per-structure masks, TotalSegmentator style);
    ``label_map`` is one integer volume whose values ``label_names`` names. ``annotated``
    lists the structures annotated for this case: the others are *missing* in its slices.
    ``problems`` are errors found while listing (the case fails with them); ``warnings``
    are reported but do not stop the case.
    """

    subject: str
    modality: str  # "CT" | "MR"
    dataset: str
    source_kind: str  # "totalsegmentator" | "nifti" | "dicom"
    image: str  # image file (NIfTI) or series folder (DICOM)
    meta: dict[str, Any]
    dicom_files: tuple[str, ...] = ()
    masks: dict[str, str] = field(default_factory=dict)
    mask_dir: str | None = None
    label_map: str | None = None
    label_names: dict[int, str] = field(default_factory=dict)
    annotated: tuple[str, ...] = ()
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """'<modality>:<subject>': unique across CT and MRI (their ids collide)."""
        return f"{self.modality}:{self.subject}"

    @property
    def where(self) -> str:
        """Subject and file, for messages."""
        return f"{self.key} ({self.image})"
