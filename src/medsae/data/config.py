"""Typed configs of the data stages: the phantom dataset, ``prepare`` and ``split``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from medsae.config import PATH_FIELD, StageConfig

Plane = Literal["axial", "coronal", "sagittal"]
_ALL_PLANES: tuple[Plane, ...] = ("axial", "coronal", "sagittal")
SourceKind = Literal["auto", "totalsegmentator", "nifti", "dicom"]
PREPARE_RUNTIME = ("workers", "backend", "ray_address")
"""PrepareConfig fields that only decide how the work runs (not in the stage key)."""


class PhantomConfig(StageConfig):
    """A synthetic dataset in the TotalSegmentator CT and MRI layouts (see ``medsae.data.phantom``)."""

    ct_subjects: int = Field(default=16, ge=0, description="Number of CT subjects (OUT/ct/sXXXX).")
    mri_subjects: int = Field(
        default=8, ge=0, description="Number of MRI subjects (OUT/mri/sXXXX)."
    )
    seed: int = Field(default=0, description="Seed: the same seed writes the same dataset.")
    size_xy: int = Field(
        default=96, ge=16, le=1024, description="In-plane size of each volume in voxels (square)."
    )
    n_slices: int = Field(
        default=120,
        ge=8,
        le=2048,
        description="Number of slices along the body axis; the z spacing follows from the "
        "field of view of the study type (anisotropic voxels).",
    )
    field_mm: float = Field(
        default=420.0,
        gt=50,
        description="In-plane field of view in mm for body studies "
        "(head studies use 60% of it); the in-plane spacing is field_mm / size_xy.",
    )
    noise: float = Field(
        default=1.0, ge=0.0, description="Multiplier of the scanner noise (0 = noiseless images)."
    )
    all_structure_files: bool = Field(
        default=True,
        description="Write a mask file for every structure of the modality (empty when the "
        "structure is not in the field of view or not modelled), as TotalSegmentator does.",
    )


class PrepareConfig(StageConfig):
    """Volumes -> 2D slices with metadata and anatomy labels (``medsae prepare``)."""

    source: str | None = Field(
        default=None,
        description="Dataset folder, or a folder holding several dataset folders side by side.",
        json_schema_extra=PATH_FIELD,
    )
    source_kind: SourceKind = Field(
        default="auto",
        description="Layout of the source: detected from the folder ('auto') or named.",
    )
    planes: list[Plane] = Field(
        default_factory=lambda: list(_ALL_PLANES),
        description="Planes to cut (applies to CT and MRI unless mri_planes is set).",
    )
    mri_planes: list[Plane] | None = Field(
        default=None, description="Planes for MRI volumes; None uses `planes`."
    )
    step: int = Field(default=1, ge=1, description="Keep every `step`-th slice along each plane.")
    restrict_to_labelled: bool = Field(
        default=True,
        description="Keep only slices between the first and last slice holding any annotated "
        "structure (per plane), as the paper does; volumes without annotations keep all slices.",
    )
    size: int = Field(default=224, ge=8, le=4096, description="Output image size S (S x S pixels).")
    square: Literal["pad", "crop"] = Field(
        default="pad",
        description="'pad': the longer physical side fills S and the image is padded with 0 to "
        "a square (nothing is lost); 'crop': the shorter side fills S and the centre is kept.",
    )
    multi_window: bool = Field(
        default=False,
        description="CT: store an RGB image (lung, soft-tissue, bone windows) instead of the "
        "study-type window; MRI slices repeat their grey image in the 3 channels.",
    )
    default_window: tuple[float, float] = Field(
        default=(40.0, 400.0),
        description="(centre, width) in HU for CT study types not in the window table "
        "(counted in the manifest, not an error).",
    )
    window_override: tuple[float, float] | None = Field(
        default=None, description="(centre, width) in HU applied to every CT volume."
    )
    mri_percentiles: tuple[float, float] = Field(
        default=(1.0, 99.0),
        description="MRI intensities are clipped to these percentiles of the foreground "
        "(voxels > 0) and scaled to 0..255.",
    )
    min_pixels: int = Field(
        default=1,
        ge=1,
        description="A structure is present in a slice when at least this many mask voxels lie in it.",
    )
    workers: int = Field(
        default=1, ge=1, description="Worker processes (one volume at a time each; local backend)."
    )
    backend: Literal["local", "ray"] = Field(
        default="local",
        description="'local': worker processes on this machine; 'ray': one Ray task per volume "
        "(with a memory request from the volume's size) on a Ray cluster. The workspace must "
        "then be on a file system every node sees at the same path.",
    )
    ray_address: str | None = Field(
        default=None, description="Ray cluster address (default: start or join a local one)."
    )
    thumbnails: bool = Field(
        default=False, description="Also write a 64 px PNG thumbnail per slice."
    )
    label_maps: bool = Field(
        default=False,
        description="Also write per-slice uint8 pixel label maps (label_maps.npy: 1 + the "
        "index in ALL_STRUCTURES, 0 background), row-aligned with the images; needed for the "
        "localisation scores of feature maps. Costs S*S bytes per slice.",
    )
    column_map: dict[str, str] = Field(
        default_factory=dict,
        description="NIfTI folders: our column name -> the table's column name "
        "(for example {'subject': 'PatientID', 'image': 'path'}).",
    )
    table: str | None = Field(
        default=None,
        description="NIfTI folders: metadata table file name (default: metadata.csv / "
        "metadata.parquet / the only table in the folder).",
    )
    label_names: dict[int, str] | None = Field(
        default=None,
        description="NIfTI folders: label value -> structure name for label maps "
        "(default: labels.json in the folder).",
    )
    modality: Literal["CT", "MR"] | None = Field(
        default=None,
        description="Modality of NIfTI folder volumes without a modality column.",
    )

    @field_validator("planes")
    @classmethod
    def _planes_unique(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one plane is needed")
        if len(set(v)) != len(v):
            raise ValueError(f"planes repeat: {v}")
        return v

    def content(self) -> dict[str, Any]:
        """The config hashed into the stage key: every field but how the work runs.

        ``workers``, ``backend`` and ``ray_address`` never change the slices, so changing them
        neither invalidates a finished artifact nor stops an interrupted build from resuming.
        """
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in PREPARE_RUNTIME}

    def planes_for(self, modality: str) -> list[str]:
        """The planes to cut for a modality."""
        if modality == "MR" and self.mri_planes:
            return list(self.mri_planes)
        return list(self.planes)


class SplitConfig(StageConfig):
    """Subject-level train / val / test split (``medsae split``)."""

    test_institutes: list[str] = Field(
        default_factory=lambda: ["A", "D", "E"],
        description="Institutes held out as the test set (the paper: A, D, E).",
    )
    val_fraction: float = Field(
        default=0.2,
        ge=0.0,
        lt=1.0,
        description="Fraction of the remaining subjects in val, per stratum "
        "(modality x sex x age group).",
    )
    seed: int = Field(default=0, description="Seed of the stratified train/val draw.")
