"""Per-feature statistics on the training split: frequency, activations, top slices, enrichment.

Labels of a slice: the one label table, :class:`medsae.labels.table.LabelTable` (metadata,
scanner, structures, groups, slice position and coverage, study and acquisition), each label
with the rows where it is *defined*.

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

from medsae.errors import ArtifactError
from medsae.labels.table import LabelTable, build_label_table

__all__ = [
    "FeatureStats",
    "LabelTable",
    "build_label_table",
    "feature_statistics",
    "label_enrichment",
    "latent_levels",
]


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


def label_enrichment(
    hits: np.ndarray, hits_defined: np.ndarray, label_count: np.ndarray, label_defined: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(P(L | A), P(L), lift)`` per label (module docstring): ``hits`` active slices carry
    the label among ``hits_defined`` where it is defined; ``label_count`` slices of the base
    set carry it among ``label_defined``. The lift of a label absent from the base set is 0.

    The one enrichment arithmetic: the interpret stage's (base set: the training split) and
    the browser's and report's (base set: every slice, :mod:`medsae.frontend.features`).
    """
    p_active = hits / np.maximum(hits_defined, 1)
    base = label_count / np.maximum(label_defined, 1)
    out = np.zeros(np.shape(p_active), dtype=np.result_type(p_active, base))
    lift = np.divide(p_active, base, out=out, where=base > 0)
    return p_active, base, lift


def _enrichment(
    names: list[str],
    gain: np.ndarray,
    p_active: np.ndarray,
    base: np.ndarray,
    lift: np.ndarray,
    hits: np.ndarray,
    hits_defined: np.ndarray,
    n: int,
) -> list[dict[str, Any]]:
    """The ``n`` labels of largest positive gain, with their shares and counts."""
    out = []
    for li in np.argsort(-gain, kind="stable")[:n]:
        if not gain[li] > 0:
            break
        out.append(
            {
                "label": names[li],
                "p_active": round(float(p_active[li]), 4),
                "p_base": round(float(base[li]), 4),
                "lift": round(float(lift[li]), 3),
                "n_active_with_label": int(hits[li]),
                "n_active_defined": int(hits_defined[li]),
            }
        )
    return out


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
    label_defined = d_train.sum(0)
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
        p_active, base, lift = label_enrichment(
            hits[f], hits_defined[f], label_count, label_defined
        )
        gain = np.where(hits_defined[f] > 0, p_active - base, -np.inf)
        f1 = 2 * hits[f] / np.maximum(len(local) + label_count, 1e-12)
        best = int(np.argmax(f1)) if len(f1) else -1
        enrich = _enrichment(
            labels.names, gain, p_active, base, lift, hits[f], hits_defined[f], n_enrichment
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
