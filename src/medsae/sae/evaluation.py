"""Split-level metrics of a trained SAE in its inference form, per Matryoshka level.

For each split and level ``m`` (streamed, exact sums; formulas in :mod:`medsae.metrics.reconstruction`):

* ``r2`` = 1 - FVU with per-dimension means (the honest form); ``fvu``;
* ``r2_grand_mean``: the paper's form (one scalar mean), for comparison only;
* ``cosine``, ``mse``;
* ``l0``: mean number of non-zero latents among the first ``m``;
* ``dead_fraction`` / ``alive_fraction`` / ``dense_fraction`` of the first ``m`` latents over
  the whole split (dense: firing on more than 10% of rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medsae.encode.store import EmbeddingStore
from medsae.metrics.reconstruction import ReconstructionAccumulator, firing_stats
from medsae.sae.base import SparseAutoencoder
from medsae.sae.data import iter_split

METRIC_NOTES = {
    "r2": "per-dimension R^2 = 1 - SSE / sum_j sum_i (x_ij - mean_j)^2 (honest form)",
    "r2_grand_mean": "paper's grand-mean form (one scalar mean over all entries), for comparison only",
    "fvu": "fraction of variance unexplained = 1 - r2",
    "l0": "mean non-zero latents per row among the level's prefix",
    "dead_fraction": "latents of the prefix never non-zero on the split",
    "dense_fraction": "latents of the prefix non-zero on more than 10% of the split's rows",
}


@torch.no_grad()
def evaluate_rows(
    sae: SparseAutoencoder, store: EmbeddingStore, rows: np.ndarray, chunk_rows: int = 4096
) -> dict[str, dict[str, float]]:
    """Metrics of ``rows`` for every level, keyed by the level size as a string."""
    levels = list(sae.cfg.levels)
    accs = {m: ReconstructionAccumulator(d=sae.cfg.d_in) for m in levels}
    fires = np.zeros(sae.cfg.n_latents, dtype=np.int64)
    n = 0
    for _, x in iter_split(store, rows, chunk_rows):
        x_pre = sae.preprocess(x)
        codes = sae.encode(x)
        active = codes > 0
        fires += active.sum(0).cpu().numpy()
        n += len(x)
        x_np = x_pre.cpu().numpy()
        for m in levels:
            accs[m].update(x_np, sae.decode(codes, level=m).cpu().numpy())
    out: dict[str, dict[str, float]] = {}
    l0_per_latent = fires / max(n, 1)
    for m in levels:
        if n == 0:
            out[str(m)] = {"n": 0.0}
            continue
        res: dict[str, float] = dict(accs[m].result())
        res["l0"] = float(l0_per_latent[:m].sum())
        res.update(firing_stats(fires[:m], n))
        out[str(m)] = res
    return out


def evaluate_splits(
    sae: SparseAutoencoder,
    store: EmbeddingStore,
    split_rows: dict[str, np.ndarray],
    chunk_rows: int = 4096,
) -> dict[str, Any]:
    """``{"splits": {split: {level: metrics}}, "notes": ...}`` for the given splits."""
    return {
        "splits": {
            name: evaluate_rows(sae, store, rows, chunk_rows) for name, rows in split_rows.items()
        },
        "levels": list(sae.cfg.levels),
        "notes": METRIC_NOTES,
    }


def val_summary(
    sae: SparseAutoencoder, store: EmbeddingStore, rows: np.ndarray, chunk_rows: int = 4096
) -> dict[str, float]:
    """Validation figures of the full level for the training history."""
    if len(rows) == 0:
        return {}
    res = evaluate_rows(sae, store, rows, chunk_rows)[str(sae.cfg.n_latents)]
    return {"fvu": res["fvu"], "r2": res["r2"], "l0": res["l0"]}
