"""The paper's monosemanticity score of SAE features, computed exactly.

For a feature, take its ``top_n`` (10) highest-activating slices with at most one slice per
subject (``subject_key``, so CT and MRI subjects with the same id stay distinct), among the
slices of the chosen splits on which it fires (activation > 0). With ``P`` the 0/1
structure-presence matrix of those slices (``top_n x S``; a structure that is missing, i.e.
not annotated for the modality, counts as not present):

* raw coherence = mean over pairs ``i < j`` of ``Jaccard(P_i, P_j) = |P_i & P_j| / |P_i | P_j|``
  (two empty rows count 1, the paper's convention);
* coherence = ``max(0, raw coherence - baseline)``, where the baseline is the mean raw
  coherence of ``draws`` random sets of ``top_n`` slices, one per subject, drawn (seeded) from
  the same splits (the paper reports about 0.113);
* specificity = ``1 - H(c) / ln(S)`` with ``c_s = sum_i P_is`` the structure counts,
  ``H(c) = -sum_s p_s ln p_s``, ``p = c / sum(c)``, ``S`` the number of structures (121); 0 when
  no structure is present at all;
* score = coherence x specificity.

A feature firing on fewer than ``top_n`` subjects is not scored (NaN, ``scored = False``). The
configuration's score is the mean score of its ``top_features`` best-scoring features (the
paper: top 10); the mean over the top 100 and over every scored feature are reported beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp


def mean_pairwise_jaccard(p_ks: np.ndarray) -> float:
    """Mean Jaccard similarity over all pairs of rows of a 0/1 matrix (empty vs empty = 1)."""
    p = np.asarray(p_ks, dtype=np.float64)
    k = p.shape[0]
    if k < 2:
        raise ValueError(f"need at least 2 rows for pairwise Jaccard, got {k}")
    inter = p @ p.T
    size = p.sum(1)
    union = size[:, None] + size[None, :] - inter
    jac = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 1.0)
    iu = np.triu_indices(k, 1)
    return float(jac[iu].mean())


def specificity(p_ks: np.ndarray, n_structures: int | None = None) -> float:
    """``1 - H(structure counts) / ln(n_structures)``; 0 when no structure is present."""
    p = np.asarray(p_ks, dtype=np.float64)
    s = n_structures if n_structures is not None else p.shape[1]
    counts = p.sum(0)
    total = counts.sum()
    if total <= 0 or s < 2:
        return 0.0
    q = counts[counts > 0] / total
    return float(1.0 - (-(q * np.log(q)).sum()) / np.log(s))


def top_one_per_subject(
    rows: np.ndarray, values: np.ndarray, subjects: np.ndarray, top_n: int
) -> np.ndarray:
    """The rows of the ``top_n`` largest values, at most one per subject (ties: lower row first)."""
    pos = values > 0
    rows, values = rows[pos], values[pos]
    order = np.lexsort((rows, -values))
    subj = subjects[rows[order]]
    _, first = np.unique(subj, return_index=True)
    keep = np.sort(first)[:top_n]
    return np.asarray(rows[order][keep], dtype=np.int64)


def random_baseline(
    presence: np.ndarray, subjects: np.ndarray, top_n: int, draws: int, seed: int = 0
) -> tuple[float, float]:
    """Mean and std of the raw coherence of random ``top_n``-slice sets, one slice per subject."""
    rng = np.random.default_rng(seed)
    order = np.argsort(subjects, kind="stable")
    uniq, start, count = np.unique(subjects[order], return_index=True, return_counts=True)
    if len(uniq) < top_n:
        return float("nan"), float("nan")
    vals = []
    for _ in range(draws):
        chosen = rng.choice(len(uniq), size=top_n, replace=False)
        pick = order[start[chosen] + (rng.random(top_n) * count[chosen]).astype(np.int64)]
        vals.append(mean_pairwise_jaccard(presence[pick]))
    return float(np.mean(vals)), float(np.std(vals))


def level_of(latents: np.ndarray, levels: Sequence[int]) -> np.ndarray:
    """Index of the smallest Matryoshka prefix holding each latent."""
    return np.searchsorted(np.asarray(sorted(levels)), latents, side="right").astype(np.int64)


def monosemanticity(
    codes: sp.spmatrix,
    presence: np.ndarray,
    subjects: np.ndarray,
    slice_ids: np.ndarray | None = None,
    top_n: int = 10,
    baseline: float | None = None,
    draws: int = 200,
    seed: int = 0,
    levels: Sequence[int] | None = None,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Score every latent of ``codes`` (rows = the evaluated slices, see module docstring).

    Parameters
    ----------
    codes: ``(n, n_latents)`` activations of the evaluated slices.
    presence: ``(n, S)`` structure presence of those slices (1 present; 0 or -1 not present).
    subjects: ``(n,)`` subject keys of those slices.
    baseline: the random-set coherence to subtract; estimated with ``draws`` seeded draws if None.

    Returns
    -------
    One row per latent (``latent``, ``level``, ``frequency``, ``n_subjects``, ``coherence_raw``,
    ``coherence``, ``specificity``, ``score``, ``scored``, ``top_rows``, ``top_slice_ids``) and
    the baseline (``baseline``, ``baseline_std``).
    """
    present = np.asarray(presence) == 1
    n_rows, n_struct = present.shape
    subj_codes = pd.factorize(pd.Series(np.asarray(subjects)))[0]
    if baseline is None:
        base, base_std = random_baseline(present, subj_codes, top_n, draws, seed)
    else:
        base, base_std = float(baseline), float("nan")
    csc = sp.csc_matrix(codes, dtype=np.float32)
    records: list[dict[str, Any]] = []
    for j in range(csc.shape[1]):
        lo, hi = csc.indptr[j], csc.indptr[j + 1]
        rows, vals = csc.indices[lo:hi], csc.data[lo:hi]
        fires = vals > 0
        n_subj = len(np.unique(subj_codes[rows[fires]])) if fires.any() else 0
        rec: dict[str, Any] = {
            "latent": j,
            "frequency": float(fires.sum()) / max(n_rows, 1),
            "n_subjects": n_subj,
            "coherence_raw": np.nan,
            "coherence": np.nan,
            "specificity": np.nan,
            "score": np.nan,
            "scored": False,
            "top_rows": [],
        }
        if n_subj >= top_n and np.isfinite(base):
            top = top_one_per_subject(rows, vals, subj_codes, top_n)
            p = present[top]
            raw = mean_pairwise_jaccard(p)
            spec = specificity(p, n_struct)
            coh = max(0.0, raw - base)
            rec.update(
                coherence_raw=raw,
                coherence=coh,
                specificity=spec,
                score=coh * spec,
                scored=True,
                top_rows=top.tolist(),
            )
        records.append(rec)
    df = pd.DataFrame.from_records(records)
    df["level"] = level_of(df["latent"].to_numpy(), levels) if levels else 0
    if slice_ids is not None:
        ids = np.asarray(slice_ids)
        df["top_slice_ids"] = [ids[np.asarray(r, dtype=np.int64)].tolist() for r in df["top_rows"]]
    return df, {"baseline": base, "baseline_std": base_std}


def config_score(scores: pd.Series | np.ndarray, top_features: int = 10) -> float:
    """Mean of the ``top_features`` highest scores (NaN ignored; NaN if nothing was scored)."""
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if len(s) == 0:
        return float("nan")
    return float(np.sort(s)[::-1][:top_features].mean())
