"""Per-feature statistics on the training split: frequency, activations, top slices, enrichment.

Labels of a slice (:class:`LabelTable`), each with the rows where it is *defined*:

* ``modality=CT``, ``plane=axial``, ``sex=F``, ``age_group=>=80`` and the acquisition
  ``manufacturer=Siemens``: from the slice table (undefined where the metadata is null), so
  that a feature that tracks the scanner rather than the anatomy says so;
* ``structure=<name>``: anatomy presence (undefined where the structure is not annotated
  for the slice's modality);
* ``group=<name>``: any structure of ``medsae.data.structures.GROUPS[name]`` present;
* ``position=edge|central`` (outer 15% of the slice's axis or not) and, when the slice images
  are given, ``coverage=sliver|partial|full`` (share of the image that is body): fixed bins,
  see :mod:`medsae.labels.concepts_extra`;
* ``study=thorax-abdomen-pelvis``, ``kvp=80``, ``field_strength=3`` and
  ``pathology=liver lesion``: the study's body coverage, the acquisition setting and the
  patient's recorded finding, see :mod:`medsae.labels.concepts_study`.

For a feature (latent) ``j`` with activating training slices ``A`` and a label ``L``, the
enrichment compares ``P(L | A) = |A ∩ L| / |A ∩ defined(L)|`` with the base rate
``P(L) = |L| / |defined(L)|`` (both on the training split): ``lift = P(L | A) / P(L)`` and
``gain = P(L | A) - P(L)``; the strongest few by gain are kept, with their counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from medsae.data.structures import GROUPS
from medsae.data.table import Anatomy
from medsae.errors import ArtifactError
from medsae.labels.concepts_extra import extra_labels
from medsae.labels.concepts_study import study_labels

META_LABELS = ("modality", "plane", "sex", "age_group", "manufacturer")


@dataclass(frozen=True)
class LabelTable:
    """Binary labels of every slice: ``values`` and ``defined`` are bool ``(N, L)``."""

    names: list[str]
    values: np.ndarray
    defined: np.ndarray

    def index(self, name: str) -> int:
        return self.names.index(name)

    def present(self, row: int) -> list[str]:
        """Names of the labels slice ``row`` carries."""
        return [self.names[i] for i in np.flatnonzero(self.values[row])]


def build_label_table(
    table: pd.DataFrame,
    anatomy: Anatomy | None,
    images: np.ndarray | None = None,
    geometry: bool = True,
) -> LabelTable:
    """Metadata, structure, group, position, coverage, study and acquisition labels (see the
    module docstring).

    Structures never present in any slice are left out; coverage labels need ``images`` (one
    uint8 image per row, e.g. memory-mapped ``WS/slices/images.npy``); ``geometry=False``
    leaves out the position and coverage labels.
    """
    n = len(table)
    names: list[str] = []
    values: list[np.ndarray] = []
    defined: list[np.ndarray] = []
    for column in META_LABELS:
        if column not in table.columns:
            continue
        col = table[column]
        known = col.notna().to_numpy()
        for value in sorted(col.dropna().astype(str).unique()):
            names.append(f"{column}={value}")
            values.append(np.asarray((col.astype(str) == value).to_numpy() & known, dtype=bool))
            defined.append(known)
    if anatomy is not None:
        presence = np.asarray(anatomy.presence)
        if presence.shape[0] != n:
            raise ArtifactError(
                f"anatomy labels have {presence.shape[0]} rows but the slice table has {n}"
            )
        column_of = {s: i for i, s in enumerate(anatomy.structures)}
        for i, s in enumerate(anatomy.structures):
            present: np.ndarray = np.asarray(presence[:, i] == 1)
            if present.any():
                names.append(f"structure={s}")
                values.append(present)
                defined.append(presence[:, i] >= 0)
        for group, members in GROUPS.items():
            cols = [column_of[s] for s in members if s in column_of]
            if not cols:
                continue
            sub = presence[:, cols]
            present = np.asarray((sub == 1).any(axis=1), dtype=bool)
            if present.any():
                names.append(f"group={group}")
                values.append(present)
                defined.append(np.asarray((sub >= 0).any(axis=1), dtype=bool))
    if geometry:
        extra_names, extra_values, extra_defined = extra_labels(table, images)
        names += extra_names
        values += extra_values
        defined += extra_defined
    study_names, study_vals, study_defined = study_labels(table)
    names += study_names
    values += study_vals
    defined += study_defined
    if not names:
        return LabelTable([], np.zeros((n, 0), bool), np.zeros((n, 0), bool))
    return LabelTable(names, np.stack(values, axis=1), np.stack(defined, axis=1))


@dataclass
class FeatureStats:
    """Training-split statistics of one feature (latent)."""

    latent: int
    level: int
    frequency: float
    n_active: int
    mean_activation: float
    max_activation: float
    top_rows: list[int]
    display_rows: list[int]
    quantile_rows: list[int]
    enrichment: list[dict[str, Any]] = field(default_factory=list)
    concept: str | None = None
    concept_f1: float = float("nan")
    label_p_active: np.ndarray | None = field(default=None, repr=False)
    label_lift: np.ndarray | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-ready fields (without the per-label arrays)."""
        d = asdict(self)
        d.pop("label_p_active")
        d.pop("label_lift")
        return d


def latent_levels(n_latents: int, levels: Sequence[int] | None) -> np.ndarray:
    """The Matryoshka level of each latent: the smallest prefix size that contains it."""
    sizes = sorted(int(s) for s in (levels or []) if 0 < int(s) <= n_latents)
    if not sizes or sizes[-1] != n_latents:
        sizes.append(n_latents)
    return np.asarray(sizes)[np.searchsorted(np.asarray(sizes), np.arange(n_latents), side="right")]


def _diverse(rows: np.ndarray, codes: sp.csr_matrix, k: int) -> list[int]:
    """Greedy farthest-point choice of ``k`` rows (cosine distance in code space), first row kept."""
    if len(rows) <= k:
        return [int(r) for r in rows]
    x = codes[rows].toarray().astype(np.float64)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    chosen = [0]
    dist = 1.0 - x @ x[0]
    for _ in range(k - 1):
        dist[chosen] = -np.inf
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, 1.0 - x @ x[nxt])
    return [int(rows[i]) for i in chosen]


def feature_statistics(
    codes: sp.csr_matrix,
    table: pd.DataFrame,
    labels: LabelTable,
    train_rows: np.ndarray,
    *,
    latents: Sequence[int] | None = None,
    levels: Sequence[int] | None = None,
    min_active: int = 1,
    n_top: int = 20,
    n_display: int = 5,
    n_quantiles: int = 10,
    n_enrichment: int = 8,
    seed: int = 0,
) -> list[FeatureStats]:
    """Statistics of the features active on at least ``min_active`` training slices.

    ``frequency`` = active training slices / training slices; ``mean_activation`` and
    ``max_activation`` are over the active slices. ``top_rows``: the ``n_top`` highest
    activations, at most one per subject; ``display_rows``: the ``n_display`` most diverse of
    them (farthest-point in code space, starting from the top one); ``quantile_rows``: one
    random active slice per activation quantile bin (``n_quantiles`` bins). ``enrichment``: the
    ``n_enrichment`` labels with the largest gain ``P(L|A) - P(L) > 0`` (module docstring).
    ``concept``: the label with the best ``F1 = 2 |A ∩ L| / (|A| + |L|)`` on the training split.
    Row numbers index the full slice table.
    """
    rng = np.random.default_rng(seed)
    train_rows = np.asarray(train_rows, dtype=np.int64)
    if len(train_rows) == 0:
        raise ArtifactError("the training split has no slices; feature statistics need some")
    n_latents = codes.shape[1]
    sub = sp.csc_matrix(codes[train_rows])
    n_active_all = np.diff(sub.indptr)
    level_of = latent_levels(n_latents, levels)
    wanted = np.arange(n_latents) if latents is None else np.asarray(list(latents), dtype=np.int64)
    wanted = wanted[n_active_all[wanted] >= min_active]

    subjects = pd.factorize(table["subject_key"])[0][train_rows]
    v_train = labels.values[train_rows].astype(np.float32)
    d_train = labels.defined[train_rows].astype(np.float32)
    label_count = v_train.sum(0)
    base = label_count / np.maximum(d_train.sum(0), 1)
    active_ind = (sub[:, wanted] != 0).astype(np.float32).T.tocsr()  # (F, n_train)
    hits = np.asarray(active_ind @ v_train)  # (F, L)
    hits_defined = np.asarray(active_ind @ d_train)

    out: list[FeatureStats] = []
    for f, j in enumerate(wanted):
        start, stop = sub.indptr[j], sub.indptr[j + 1]
        local = sub.indices[start:stop]
        vals = sub.data[start:stop]
        order = np.argsort(-vals, kind="stable")
        local, vals = local[order], vals[order]
        _, first = np.unique(subjects[local], return_index=True)
        top_local = local[np.sort(first)[:n_top]]
        top_rows = train_rows[top_local]
        display = _diverse(top_rows, codes, n_display)
        bins = np.array_split(np.arange(len(local))[::-1], min(n_quantiles, len(local)))
        quantile_rows = [int(train_rows[local[rng.choice(b)]]) for b in bins if len(b)]
        p_active = hits[f] / np.maximum(hits_defined[f], 1)
        gain = np.where(hits_defined[f] > 0, p_active - base, -np.inf)
        lift = p_active / np.maximum(base, 1e-12)
        f1 = 2 * hits[f] / np.maximum(len(local) + label_count, 1e-12)
        best = int(np.argmax(f1)) if len(f1) else -1
        enrich = []
        for li in np.argsort(-gain, kind="stable")[:n_enrichment]:
            if not gain[li] > 0:
                break
            enrich.append(
                {
                    "label": labels.names[li],
                    "p_active": round(float(p_active[li]), 4),
                    "p_base": round(float(base[li]), 4),
                    "lift": round(float(lift[li]), 3),
                    "n_active_with_label": int(hits[f, li]),
                    "n_active_defined": int(hits_defined[f, li]),
                }
            )
        out.append(
            FeatureStats(
                latent=int(j),
                level=int(level_of[j]),
                frequency=float(len(local) / len(train_rows)),
                n_active=len(local),
                mean_activation=float(vals.mean()),
                max_activation=float(vals.max()),
                top_rows=[int(r) for r in top_rows],
                display_rows=display,
                quantile_rows=quantile_rows,
                enrichment=enrich,
                concept=labels.names[best] if best >= 0 else None,
                concept_f1=float(f1[best]) if best >= 0 else float("nan"),
                label_p_active=p_active,
                label_lift=lift,
            )
        )
    return out
