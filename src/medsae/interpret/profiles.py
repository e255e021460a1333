"""Concept profiles: every described feature's association with every label of the one
label vocabulary, on the training split.

For a described feature ``j`` (activating training slices ``A``) and a label ``L`` defined on
the training slices ``D_L`` (:class:`medsae.labels.table.LabelTable`):

* ``p_active = |A ∩ L| / |A ∩ D_L|`` and ``p_base = |L| / |D_L|``; ``lift = p_active / p_base``
  (the enrichment of :mod:`medsae.interpret.features`, kept for every label);
* ``auroc``: the exact AUROC of the feature's activation as a score for ``L`` over ``D_L``
  (:func:`medsae.evaluate.concepts.auroc_matrix`; ties, the zeros included, count one half);
* ``n_active_with_label = |A ∩ L|``, ``n_label = |L|`` (training slices);
* ``concept_map``: whether ``L`` is the feature's reported concept (the evaluate stage's
  monosemanticity concept map where it lists the feature, else the training concept).

The same association is also computed within every *stratum* of the training slices (one
modality, one plane, one modality and plane: ``stratum`` ``modality=CT``, ``plane=axial``,
``modality=CT&plane=axial``; ``""`` for all slices), kept there only where positive (lift
above 1): a feature of coronal CT slices of the torso is associated with the liver over all
slices, but says nothing of the liver on axial MRI.

Written beside ``features.parquet`` as ``profiles.parquet`` (:data:`PROFILE_COLUMNS`, one row
per described feature and label with at least one training slice in ``D_L``). Text search
chooses the features of a query's concepts from these profiles
(:mod:`medsae.retrieval.compose`), so that it does not depend on which structures a
description happened to name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from medsae.errors import ArtifactError
from medsae.evaluate.concepts import auroc_matrix
from medsae.interpret.io import PROFILES
from medsae.labels.table import LabelTable

STRATUM_KINDS = ("modality", "plane")
"""Label kinds whose values make the strata of the conditional profiles."""
PROFILE_COLUMNS = [
    "latent",
    "label",
    "p_active",
    "p_base",
    "lift",
    "auroc",
    "n_active_with_label",
    "n_label",
    "concept_map",
    "stratum",
]
"""Columns of :data:`PROFILES`, in order."""


def _association(
    sub: sp.csc_matrix, table: LabelTable, cols: np.ndarray, only_positive: bool
) -> pd.DataFrame:
    """Profile rows of the features ``cols`` (columns of ``sub``) on the rows of ``table``."""
    pos = (table.values & table.defined).astype(np.float32)
    defined = table.defined.astype(np.float32)
    fires = sp.csc_matrix((sub > 0).astype(np.float32))
    hits = np.asarray(fires.T @ pos, dtype=np.float64)  # (F, L)
    hits_defined = np.asarray(fires.T @ defined, dtype=np.float64)
    base = pos.sum(0) / np.maximum(defined.sum(0), 1)
    p_active = hits / np.maximum(hits_defined, 1)
    lift = p_active / np.maximum(base, 1e-12)
    keep = np.broadcast_to(defined.sum(0) > 0, hits.shape)
    if only_positive:
        keep = keep & (lift > 1) & (hits > 0)
    f_idx, l_idx = np.nonzero(keep)
    auroc = auroc_matrix(sub, table)
    names = np.asarray(table.names, dtype=object)
    return pd.DataFrame(
        {
            "latent": cols[f_idx],
            "label": names[l_idx],
            "p_active": p_active[f_idx, l_idx].astype(np.float32),
            "p_base": base[l_idx].astype(np.float32),
            "lift": lift[f_idx, l_idx].astype(np.float32),
            "auroc": auroc[f_idx, l_idx].astype(np.float32),
            "n_active_with_label": hits[f_idx, l_idx].astype(np.int64),
            "n_label": pos.sum(0)[l_idx].astype(np.int64),
        }
    )


def strata_of(labels: LabelTable) -> dict[str, np.ndarray]:
    """Row masks of the strata: every modality, every plane and every modality and plane
    (``modality=CT``, ``plane=axial``, ``modality=CT&plane=axial``)."""
    values = {k: [n for n in labels.names if n.startswith(f"{k}=")] for k in STRATUM_KINDS}
    masks: dict[str, np.ndarray] = {}
    for name in values["modality"] + values["plane"]:
        i = labels.index(name)
        masks[name] = labels.values[:, i] & labels.defined[:, i]
    for m in values["modality"]:
        for p in values["plane"]:
            masks[f"{m}&{p}"] = masks[m] & masks[p]
    return masks


def concept_profiles(
    codes: sp.spmatrix,
    labels: LabelTable,
    train_rows: np.ndarray,
    latents: Sequence[int],
    concept_of: Mapping[int, str | None] | None = None,
    strata: bool = True,
) -> pd.DataFrame:
    """The profiles of ``latents`` on the training rows (see the module docstring)."""
    cols = np.asarray(sorted({int(j) for j in latents}), dtype=np.int64)
    train_rows = np.asarray(train_rows, dtype=np.int64)
    if len(cols) == 0 or not labels.names:
        return pd.DataFrame(columns=PROFILE_COLUMNS)
    sub = sp.csc_matrix(sp.csr_matrix(codes)[train_rows][:, cols], dtype=np.float32)
    table = labels.rows(train_rows)
    frames = [_association(sub, table, cols, only_positive=False).assign(stratum="")]
    if strata:
        for name, mask in strata_of(table).items():
            rows = np.flatnonzero(mask)
            if len(rows) == 0:
                continue
            own = {part.split("=", 1)[0] for part in name.split("&")}
            other = [i for i, k in enumerate(table.kinds) if k not in own]
            part = table.rows(rows).columns(other)
            found = _association(sp.csc_matrix(sub[rows]), part, cols, only_positive=True)
            frames.append(found.assign(stratum=name))
    frame = pd.concat(frames, ignore_index=True)
    concept_of = concept_of or {}
    frame["concept_map"] = [
        concept_of.get(int(j)) == lab
        for j, lab in zip(frame["latent"], frame["label"], strict=True)
    ]
    frame["concept_map"] &= frame["stratum"] == ""
    return frame[PROFILE_COLUMNS]


def write_profiles(out: Path, frame: pd.DataFrame) -> None:
    """Write :data:`PROFILES` into the folder ``out``."""
    frame[PROFILE_COLUMNS].to_parquet(Path(out) / PROFILES, index=False)


def read_profiles(folder: Path) -> pd.DataFrame | None:
    """:data:`PROFILES` of a features folder; None when the folder has none (a workspace
    interpreted before profiles existed); ArtifactError naming the file when unreadable."""
    path = Path(folder) / PROFILES
    if not path.is_file():
        return None
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path}: unreadable ({e}); rerun `medsae interpret`") from e
    missing = [c for c in PROFILE_COLUMNS if c not in frame.columns]
    if missing:
        raise ArtifactError(f"{path}: missing column(s) {missing}; rerun `medsae interpret`")
    return frame


def profile_of(profiles: pd.DataFrame | None, latent: int) -> list[dict[str, Any]]:
    """One feature's profile rows, strongest AUROC first (the browser's feature page)."""
    if profiles is None or profiles.empty:
        return []
    mine = (profiles["latent"] == int(latent)) & (profiles["stratum"] == "")
    return _profile_rows(profiles[mine])


class ProfileIndex:
    """:func:`profile_of` for many lookups: the whole-gallery rows grouped by latent once
    (a lookup then sorts one latent's rows instead of scanning the table)."""

    def __init__(self, profiles: pd.DataFrame | None) -> None:
        self.frame = profiles
        self.groups: dict[int, np.ndarray] = {}
        if profiles is None or profiles.empty:
            return
        pos = np.flatnonzero((profiles["stratum"] == "").to_numpy())
        latents = profiles["latent"].to_numpy()[pos]
        order = np.argsort(latents, kind="stable")  # table order kept within a latent
        pos, latents = pos[order], latents[order]
        starts = np.flatnonzero(np.r_[True, latents[1:] != latents[:-1]])
        for lo, hi in zip(starts, [*starts[1:], len(pos)], strict=True):
            self.groups[int(latents[lo])] = pos[lo:hi]

    def rows(self, latent: int) -> list[dict[str, Any]]:
        """The same rows as ``profile_of(profiles, latent)``."""
        pos = self.groups.get(int(latent))
        if pos is None or self.frame is None:
            return []
        return _profile_rows(self.frame.iloc[pos])


def _profile_rows(mine: pd.DataFrame) -> list[dict[str, Any]]:
    rows = mine.sort_values(["auroc", "lift"], ascending=False, kind="stable")
    out = []
    for r in rows.itertuples(index=False):
        out.append(
            {
                "label": str(r.label),
                "auroc": None if not np.isfinite(r.auroc) else round(float(r.auroc), 4),
                "lift": round(float(r.lift), 4),
                "p_active": round(float(r.p_active), 4),
                "p_base": round(float(r.p_base), 4),
                "n_active_with_label": int(r.n_active_with_label),
                "n_label": int(r.n_label),
                "concept_map": bool(r.concept_map),
            }
        )
    return out
