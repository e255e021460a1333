"""Split-level metrics of a trained SAE in its inference form, per Matryoshka level.

For each split and level ``m`` (streamed, exact sums; formulas in :mod:`medsae.metrics.reconstruction`):

* ``r2`` = 1 - FVU with per-dimension means: the variance-weighted per-dimension R² (the
  honest form); ``r2_uniform``: the uniform mean over dimensions of 1 - SSE_j / SST_j; ``fvu``;
* ``r2_grand_mean``: the paper's form (one scalar mean), for comparison only;
* ``cosine``, ``mse``;
* ``l0``: mean number of non-zero latents among the first ``m`` (inference form);
  ``k_nominal``: the training k of the level (``k_levels[l]`` for ``matryoshka-perlevel``,
  whose prefixes are read from the full level's JumpReLU codes, so their L0 can differ from
  it; ``k`` at the full level of the other BatchTopK families);
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
from medsae.sae.config import SAEConfig
from medsae.sae.data import iter_split
from medsae.sae.registry import get

METRIC_NOTES = {
    "r2": "1 - FVU = 1 - sum_j SSE_j / sum_j SST_j: variance-weighted per-dimension R^2 "
    "(honest form)",
    "r2_uniform": "uniform mean over dimensions of 1 - SSE_j / SST_j",
    "k_nominal": "training k of the level (per-level k of matryoshka-perlevel); compare with l0",
    "r2_grand_mean": "paper's grand-mean form (one scalar mean over all entries), for comparison only",
    "fvu": "fraction of variance unexplained = 1 - r2",
    "l0": "mean non-zero latents per row among the level's prefix",
    "dead_fraction": "latents of the prefix never non-zero on the split",
    "dense_fraction": "latents of the prefix non-zero on more than 10% of the split's rows",
}


def nominal_k(cfg: SAEConfig) -> dict[int, int | None]:
    """The training k of each level, as the architecture states it (``k_nominal``)."""
    return get(cfg.arch).nominal_k(cfg)


@torch.no_grad()
def evaluate_rows(
    sae: SparseAutoencoder, store: EmbeddingStore, rows: np.ndarray, chunk_rows: int = 4096
) -> dict[str, dict[str, float | None]]:
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
    out: dict[str, dict[str, float | None]] = {}
    ks = nominal_k(sae.cfg)
    l0_per_latent = fires / max(n, 1)
    for m in levels:
        if n == 0:
            out[str(m)] = {"n": 0.0}
            continue
        res: dict[str, float | None] = dict(accs[m].result())
        res["l0"] = float(l0_per_latent[:m].sum())
        res["k_nominal"] = ks[m]
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
    return {k: float(res[k] or 0.0) for k in ("fvu", "r2", "l0")}
