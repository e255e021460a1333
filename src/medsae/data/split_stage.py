"""The ``split`` stage: subject -> train / val / test (``WS/split/split.parquet``).

* Subjects of the held-out institutes (default A, D, E, the paper's choice) are the test set.
* The others are split into train and val per stratum (modality x sex x age group), with
  ``round(val_fraction * n)`` subjects of each stratum in val, drawn with a seeded RNG.
  Unknown sex or age group form their own stratum value. Subjects without an institute go
  to train/val.

Every slice of a subject lands in the same split (the split is by ``subject_key``, which
includes the modality, so CT and MRI subjects with the same id stay distinct).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from medsae.data.config import SplitConfig
from medsae.data.table import SPLIT_FILE, read_slices
from medsae.errors import ArtifactError
from medsae.workspace import (
    StageOutcome,
    StageResult,
    Workspace,
    artifact_key,
    require_artifact,
    run_stage,
)


def subjects_table(slices: pd.DataFrame) -> pd.DataFrame:
    """One row per subject_key with modality, sex, age_group and institute."""
    cols = ["subject_key", "modality", "sex", "age_group", "institute"]
    subj = slices[cols].drop_duplicates("subject_key").reset_index(drop=True)
    return subj


def _stratum_seed(seed: int, stratum: str) -> int:
    digest = hashlib.sha256(f"{seed}:{stratum}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def assign_splits(subjects: pd.DataFrame, config: SplitConfig) -> pd.DataFrame:
    """``subject_key``, ``split`` for a subject table (see the module docstring)."""
    held = {str(i).strip().upper() for i in config.test_institutes}
    inst = subjects["institute"].astype("object")
    is_test = inst.map(
        lambda v: v is not None and not pd.isna(v) and str(v).strip().upper() in held
    )
    out = pd.Series("train", index=subjects.index, dtype="object")
    out[is_test.astype(bool)] = "test"
    rest = subjects[~is_test.astype(bool)]
    strata = (
        rest["modality"].astype(str)
        + "|"
        + rest["sex"].fillna("?").astype(str)
        + "|"
        + rest["age_group"].fillna("?").astype(str)
    )
    for stratum, members in rest.groupby(strata, sort=True):
        keys = members["subject_key"].sort_values()
        n_val = round(config.val_fraction * len(keys))
        rng = np.random.default_rng(_stratum_seed(config.seed, str(stratum)))
        val_idx = rng.permutation(len(keys))[:n_val]
        val_keys = set(keys.iloc[val_idx])
        out[members.index[members["subject_key"].isin(val_keys)]] = "val"
    return pd.DataFrame(
        {"subject_key": subjects["subject_key"].astype(str), "split": out.astype(str)}
    )


def split(
    workspace: str | Path | Workspace, config: SplitConfig | None = None, force: bool = False
) -> StageOutcome:
    """Write ``WS/split`` from the slice table of ``WS/slices``."""
    config = config or SplitConfig()
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    require_artifact(ws.slices, "slices", "run `medsae prepare` first")
    inputs = {"slices": artifact_key(ws.slices)}

    def build(partial: Path) -> StageResult:
        table = read_slices(ws.slices)
        if table.empty:
            raise ArtifactError(f"{ws.slices}: the slice table is empty; nothing to split")
        result = assign_splits(subjects_table(table), config).sort_values("subject_key")
        result.to_parquet(partial / SPLIT_FILE, index=False)
        counts = {
            f"subjects_{s}": int((result["split"] == s).sum()) for s in ("train", "val", "test")
        }
        per_slice = table["subject_key"].map(
            dict(zip(result["subject_key"], result["split"], strict=True))
        )
        counts.update(
            {f"slices_{s}": int((per_slice == s).sum()) for s in ("train", "val", "test")}
        )
        return StageResult(counts=counts)

    return run_stage(ws.split, "split", config, inputs, build, force=force)
