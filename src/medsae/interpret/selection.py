"""Which features the interpret stage describes, chosen without the rows that score them.

``select = "all"``: every alive feature. ``select = "top_n"``: the ``top_n`` best by
``rank_by``, measured on the rows of ``selection_split`` only (default ``train``; ``val``
requires scoring on ``test`` only):

* ``concept``: ``AUROC(j) * sqrt(f_j)``, with ``AUROC(j)`` the highest AUROC of feature ``j``'s
  activation for any label (:func:`medsae.evaluate.concepts.concept_map`; 0.5 where the feature
  fires on fewer than ``min_active`` selection slices or no label has 5 positives) and ``f_j``
  its activation frequency, both on the selection rows;
* ``frequency``: ``f_j`` on the selection rows.

Ties go to the lower latent index; the chosen features are returned in latent order. The
evaluate stage's concept map (measured on held-out splits) is never used to choose: a feature
chosen by its held-out AUROC and then scored on the same slices would be scored too well.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from medsae.evaluate.concepts import concept_map
from medsae.interpret.config import InterpretConfig
from medsae.interpret.features import FeatureStats
from medsae.labels.table import LabelTable


def selection_values(
    codes: sp.csc_matrix,
    labels: LabelTable,
    rows: np.ndarray,
    latents: list[int],
    config: InterpretConfig,
) -> dict[int, float]:
    """The ``rank_by`` value of each latent on the selection ``rows`` only (module docstring)."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        raise ValueError(f"selection split {config.selection_split!r} has no slices")
    sub = sp.csc_matrix(codes[rows][:, latents])
    frequency = np.diff(sub.indptr) / len(rows)
    if config.rank_by == "frequency":
        return {j: float(f) for j, f in zip(latents, frequency, strict=True)}
    frame = concept_map(sub, labels.rows(rows), min_fires=config.min_active)
    auc = frame["auroc"].to_numpy(dtype=np.float64)
    auc = np.where(np.isfinite(auc), auc, 0.5)
    return {j: float(a * np.sqrt(f)) for j, a, f in zip(latents, auc, frequency, strict=True)}


def select_features(
    stats: list[FeatureStats],
    codes: sp.csc_matrix,
    labels: LabelTable,
    rows: np.ndarray,
    config: InterpretConfig,
) -> list[FeatureStats]:
    """All alive features, or the top ``config.top_n`` by ``rank_by`` measured on ``rows`` (the
    selection split's rows; module docstring)."""
    if config.select == "all" or len(stats) <= config.top_n:
        return stats
    value = selection_values(codes, labels, rows, [s.latent for s in stats], config)
    ranked = sorted(stats, key=lambda s: (-value[s.latent], s.latent))
    return sorted(ranked[: config.top_n], key=lambda s: s.latent)
