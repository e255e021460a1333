"""A small synthetic workspace with known structure, for tests of downstream stages.

It writes finished ``slices``, ``split``, ``embeddings/<encoder>`` and ``codes/<encoder>/<run>``
artifacts (with manifests) in the documented formats, without running the real prepare,
encode or train stages. The ground truth is planted:

* every slice has metadata (modality, plane, sex, age, institute...) and anatomy presence
  derived from its position along the body;
* embedding = sum of one random unit direction per active concept + Gaussian noise;
* latent ``j < len(concepts)`` of the codes fires (value ~ 1) exactly when concept ``j`` is
  active ("planted" monosemantic features); the remaining latents fire at random (noise
  features that must not look monosemantic).

``SyntheticTruth`` returned by :func:`make_synthetic_workspace` lists the concepts in latent
order so that tests can check what a metric should find.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from medsae.data.io import IMAGES_FILE, SLICES_FILE, SPLIT_FILE
from medsae.data.structures import ALL_STRUCTURES, STRUCTURES_BY_MODALITY
from medsae.data.table import age_group, write_anatomy
from medsae.encode.store import shard_name, write_store
from medsae.sae.codes_io import save_codes
from medsae.workspace import StageResult, Workspace, artifact_key, run_stage

# (structure, lower, upper) extent along the body axis: 0 = feet end, 1 = top of the head.
_BODY_MAP: tuple[tuple[str, float, float], ...] = (
    ("brain", 0.88, 0.99),
    ("skull", 0.86, 1.0),
    ("heart", 0.62, 0.72),
    ("lung_upper_lobe_left", 0.66, 0.78),
    ("lung_lower_lobe_right", 0.58, 0.70),
    ("lung_left", 0.58, 0.78),
    ("liver", 0.50, 0.62),
    ("spleen", 0.53, 0.61),
    ("kidney_left", 0.46, 0.55),
    ("urinary_bladder", 0.30, 0.38),
    ("hip_left", 0.28, 0.40),
    ("femur_left", 0.10, 0.32),
)


@dataclass(frozen=True)
class SyntheticTruth:
    concepts: list[str]  # concept name of planted latent j (j < len(concepts))
    n_latents: int
    encoder: str
    run: str
    dim: int


def _concepts() -> list[str]:
    return (
        ["modality=CT", "modality=MR", "plane=axial", "plane=coronal", "plane=sagittal", "sex=F"]
        + ["age_group=>=80"]
        + [f"structure={s}" for s, _, _ in _BODY_MAP]
    )


def make_synthetic_workspace(
    root: Path,
    n_subjects: int = 24,
    slices_per_plane: int = 12,
    dim: int = 64,
    n_latents: int = 128,
    image_size: int = 32,
    encoder: str = "synthetic",
    run: str = "synthetic-run",
    noise: float = 0.1,
    seed: int = 0,
) -> tuple[Workspace, SyntheticTruth]:
    """Write a small finished workspace under ``root`` (see module docstring)."""
    rng = np.random.default_rng(seed)
    ws = Workspace(root).ensure()
    institutes = ["A", "B", "C", "D", "E", "F", "G", "H"]
    rows = []
    for s in range(n_subjects):
        modality = "CT" if s % 3 != 2 else "MR"
        subject = f"s{s:04d}"
        sex = "F" if s % 2 else "M"
        age = float(25 + (s * 7) % 65)
        inst = institutes[s % len(institutes)]
        planes = ("axial", "coronal", "sagittal")
        for plane in planes:
            for i in range(slices_per_plane):
                rel = i / max(slices_per_plane - 1, 1)
                rows.append(
                    {
                        "slice_id": f"{modality}:{subject}:{plane}:{i:04d}",
                        "subject": subject,
                        "subject_key": f"{modality}:{subject}",
                        "dataset": f"synthetic-{modality.lower()}",
                        "source_kind": "totalsegmentator",
                        "modality": modality,
                        "plane": plane,
                        "index": i,
                        "n_slices": slices_per_plane,
                        "position_mm": float(i * 5.0),
                        "rel_position": rel,
                        "age": age,
                        "age_group": age_group(age),
                        "sex": sex,
                        "institute": inst,
                        "manufacturer": ["Siemens", "GE", "Philips"][s % 3],
                        "scanner_model": ["A1", "B2", "C3", "D4"][s % 4],
                        "kvp": 120.0 if modality == "CT" else np.nan,
                        "field_strength": 1.5 if modality == "MR" else np.nan,
                        "study_type": ["thorax-abdomen-pelvis", "head", "abdomen"][s % 3],
                        "pathology": ["none", "tumor"][s % 2],
                        "pathology_location": None,
                        "window_center": 40.0 if modality == "CT" else np.nan,
                        "window_width": 400.0 if modality == "CT" else np.nan,
                        "intensity_low": -160.0,
                        "intensity_high": 240.0,
                        "pixel_spacing_mm": 1.5,
                        "source_file": f"{subject}/{'ct' if modality == 'CT' else 'mri'}.nii.gz",
                    }
                )
    table = pd.DataFrame(rows)
    n = len(table)
    structures = list(ALL_STRUCTURES)
    presence = np.zeros((n, len(structures)), dtype=np.int8)
    area = np.zeros((n, len(structures)), dtype=np.float32)
    for r, row in enumerate(table.itertuples()):
        annotated = set(STRUCTURES_BY_MODALITY[row.modality])
        for j, name in enumerate(structures):
            if name not in annotated:
                presence[r, j] = -1
                area[r, j] = np.nan
        for name, lo, hi in _BODY_MAP:
            if name not in annotated:
                continue
            j = structures.index(name)
            inside = lo <= row.rel_position <= hi if row.plane == "axial" else (lo + hi) / 2 > 0.3
            if inside:
                presence[r, j] = 1
                area[r, j] = float(rng.uniform(0.01, 0.1))

    concepts = _concepts()
    active = np.zeros((n, len(concepts)), dtype=bool)
    for c, concept in enumerate(concepts):
        key, value = concept.split("=", 1)
        if key == "structure":
            active[:, c] = presence[:, structures.index(value)] == 1
        else:
            active[:, c] = (table[key].astype(str) == value).to_numpy()

    directions = rng.normal(size=(len(concepts), dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    emb = active.astype(np.float64) @ directions + noise * rng.normal(size=(n, dim))
    emb = emb.astype(np.float32)

    values = np.zeros((n, n_latents), dtype=np.float32)
    values[:, : len(concepts)] = active * rng.uniform(0.8, 1.2, size=active.shape)
    noise_latents = n_latents - len(concepts)
    if noise_latents > 0:
        fire = rng.random((n, noise_latents)) < 0.05
        values[:, len(concepts) :] = fire * rng.uniform(0.1, 1.0, size=fire.shape)
    codes = sp.csr_matrix(values)

    yy, xx = np.mgrid[:image_size, :image_size]
    images = np.zeros((n, image_size, image_size), dtype=np.uint8)
    for r, row in enumerate(table.itertuples()):
        radius = image_size * (0.2 + 0.25 * row.rel_position)
        disk = (yy - image_size / 2) ** 2 + (xx - image_size / 2) ** 2 < radius**2
        level = 200 if row.modality == "CT" else 120
        images[r] = np.where(disk, level, 20).astype(np.uint8)

    def build_slices(tmp: Path) -> StageResult:
        table.to_parquet(tmp / SLICES_FILE, index=False)
        np.save(tmp / IMAGES_FILE, images)
        write_anatomy(tmp, presence, area, structures)
        return StageResult(counts={"slices": n, "subjects": n_subjects})

    run_stage(ws.slices, "prepare", {"synthetic": seed}, {}, build_slices, quiet=True)

    subjects = table.drop_duplicates("subject_key")[["subject_key", "institute"]]
    split = np.where(subjects["institute"].isin(["A", "D", "E"]), "test", "train")
    train_idx = np.flatnonzero(split == "train")
    split[train_idx[rng.permutation(len(train_idx))[: max(1, len(train_idx) // 4)]]] = "val"
    split_df = pd.DataFrame({"subject_key": subjects["subject_key"].to_numpy(), "split": split})

    def build_split(tmp: Path) -> StageResult:
        split_df.to_parquet(tmp / SPLIT_FILE, index=False)
        return StageResult(counts=split_df["split"].value_counts().to_dict())

    run_stage(
        ws.split,
        "split",
        {"synthetic": seed},
        {"slices": artifact_key(ws.slices)},
        build_split,
        quiet=True,
    )

    def build_emb(tmp: Path) -> StageResult:
        half = n // 2
        write_store(tmp, encoder, [(shard_name(0), emb[:half]), (shard_name(1), emb[half:])])
        return StageResult(counts={"rows": n, "dim": dim})

    run_stage(
        ws.embeddings(encoder),
        "encode",
        {"encoder": encoder},
        {"slices": artifact_key(ws.slices)},
        build_emb,
        quiet=True,
    )

    def build_codes(tmp: Path) -> StageResult:
        save_codes(
            tmp, codes, {"encoder": encoder, "run": run, "levels": [n_latents], "mode": "planted"}
        )
        return StageResult(counts={"rows": n, "nnz": int(codes.nnz)})

    run_stage(
        ws.codes(encoder, run),
        "codes",
        {"run": run},
        {"embeddings": artifact_key(ws.embeddings(encoder))},
        build_codes,
        quiet=True,
    )
    return ws, SyntheticTruth(
        concepts=concepts, n_latents=n_latents, encoder=encoder, run=run, dim=dim
    )
