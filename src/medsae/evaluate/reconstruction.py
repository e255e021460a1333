"""Reconstruction and sparsity of an SAE, per split and per Matryoshka level.

Streams the rows (an embedding store, or any ``(N, d)`` array: NumPy, memory-mapped or a
torch tensor) in batches through any object with ``preprocess``, ``encode``,
``decode(codes, level=None)`` and ``cfg.levels`` (the interface of ``medsae.sae.load_sae``),
comparing ``preprocess(x)`` with ``decode(encode(x), level)`` for every level ``L`` (the
reconstruction from the first ``L`` latents). Formulas (:mod:`medsae.metrics.reconstruction`):

* ``r2`` = 1 - SSE / sum_j sum_i (x_ij - mean_j)^2 (per-dimension means), ``fvu`` = 1 - r2;
* ``r2_grand_mean``: the paper's form, one scalar mean over all entries; reported for
  comparison only (it is inflated when dimensions have different means);
* ``r2_grand_mean_batched`` (validation split only): the paper's reported figure, the same
  form per batch of 2,048 validation rows in order, averaged weighted by batch size;
* ``cosine``: mean over slices of cos(x_i, x_hat_i);
* ``l0``: mean number of non-zero latents among the first ``L`` per slice;
* ``dead_fraction``: latents (of the first ``L``) that never fire on the split;
  ``dense_fraction``: latents firing on more than 10% of the split's slices;
  ``alive_fraction`` = 1 - dead_fraction.

The split ``all`` pools every slice. :func:`sparsity_from_codes` gives the sparsity figures
from stored codes alone (when no checkpoint is available).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
import torch

from medsae.errors import InputError
from medsae.metrics.reconstruction import (
    BatchedGrandMeanR2,
    ReconstructionAccumulator,
    firing_stats,
)

PAPER_SPLIT = "val"
"""The split of the paper's reported R² (``r2_grand_mean_batched``)."""


class SAELike(Protocol):
    """What reconstruction needs of an SAE."""

    cfg: Any

    def preprocess(self, x_bd: torch.Tensor) -> torch.Tensor: ...

    def encode(self, x_bd: torch.Tensor) -> torch.Tensor: ...

    def decode(self, codes_bn: torch.Tensor, level: int | None = None) -> torch.Tensor: ...


def _np(t: Any) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().to(torch.float32).cpu().numpy()
    return np.asarray(t, dtype=np.float32)


def sae_levels(sae: SAELike) -> list[int]:
    """The SAE's Matryoshka prefix sizes (its latent count when it has none)."""
    levels = list(getattr(sae.cfg, "levels", None) or [])
    return sorted(int(v) for v in levels) or [int(sae.cfg.n_latents)]


def _firing(counts: np.ndarray, n: int, level: int, l0_sum: float) -> dict[str, float]:
    stats = firing_stats(counts[:level], n)
    return {
        "l0": l0_sum / max(n, 1),
        "dead_fraction": stats["dead_fraction"],
        "dense_fraction": stats["dense_fraction"],
        "alive_fraction": stats["alive_fraction"],
    }


def iter_blocks(x: Any, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(start_row, float32 block)`` of an embedding store (its ``iter_chunks``) or of an
    ``(N, d)`` array (NumPy, memory-mapped, torch), never loading more than a block."""
    if hasattr(x, "iter_chunks"):
        yield from x.iter_chunks(chunk_rows=batch_size)
        return
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
    if len(x.shape) != 2:
        raise InputError("x", f"expected an (N, d) array of rows, got shape {tuple(x.shape)}")
    for start in range(0, int(x.shape[0]), batch_size):
        yield start, np.asarray(x[start : start + batch_size], dtype=np.float32)


def reconstruction_report(
    sae: SAELike,
    x: Any,
    split_of_row: np.ndarray | None = None,
    levels: Sequence[int] | None = None,
    batch_size: int = 4096,
) -> dict[str, dict[str, dict[str, float]]]:
    """``{split: {str(level): metrics}}`` for every split of ``split_of_row`` and ``all``.

    ``x``: the rows, an :class:`~medsae.encode.store.EmbeddingStore` or an ``(N, d)`` array
    in the units the SAE takes (its ``preprocess`` applies its input transform);
    ``split_of_row``: a group name per row (None: every row in ``all`` only). Works for any
    SAE with the interface above, medsae's or an exported one wrapped in it.
    """
    n_rows = x.n_rows if hasattr(x, "n_rows") else int(x.shape[0])
    if split_of_row is None:
        split_of_row = np.full(n_rows, "all", dtype=object)
    elif len(split_of_row) != n_rows:
        raise InputError("split_of_row", f"{len(split_of_row)} split names for {n_rows} rows of x")
    levels = sorted(levels or sae_levels(sae))
    split_of_row = np.asarray(split_of_row)
    splits = sorted(set(split_of_row.tolist()) | {"all"}, key=lambda s: (s == "all", s))
    d = int(sae.cfg.d_in)
    acc = {(s, lv): ReconstructionAccumulator(d=d) for s in splits for lv in levels}
    n_latents = int(sae.cfg.n_latents)
    fires = {s: np.zeros(n_latents, dtype=np.int64) for s in splits}
    l0 = {(s, lv): 0.0 for s in splits for lv in levels}
    # the paper's batched grand-mean R², on the validation split's rows in order
    paper = {lv: BatchedGrandMeanR2() for lv in levels} if PAPER_SPLIT in splits else {}
    with torch.no_grad():
        for start, block in iter_blocks(x, batch_size):
            xb = torch.from_numpy(np.array(block, dtype=np.float32, copy=True))
            target = _np(sae.preprocess(xb))
            codes_t = sae.encode(xb)
            codes = _np(codes_t)
            nz = codes != 0
            cum = np.cumsum(nz, axis=1)
            block_split = split_of_row[start : start + len(block)]
            recon = {lv: _np(sae.decode(codes_t, level=lv)) for lv in levels}
            for s in splits:
                m = np.ones(len(block), bool) if s == "all" else block_split == s
                if not m.any():
                    continue
                fires[s] += nz[m].sum(0)
                for lv in levels:
                    acc[(s, lv)].update(target[m], recon[lv][m])
                    l0[(s, lv)] += float(cum[m, lv - 1].sum())
                    if s == PAPER_SPLIT:
                        paper[lv].update(target[m], recon[lv][m])
    out: dict[str, dict[str, dict[str, float]]] = {}
    for s in splits:
        out[s] = {}
        for lv in levels:
            a = acc[(s, lv)]
            if a.n == 0:
                continue
            res = a.result()
            res.update(_firing(fires[s], a.n, lv, l0[(s, lv)]))
            if s == PAPER_SPLIT:
                res["r2_grand_mean_batched"] = paper[lv].result()
            out[s][str(lv)] = res
    return out


def sparsity_from_codes(
    codes: sp.csr_matrix, split_of_row: np.ndarray, levels: Sequence[int]
) -> dict[str, dict[str, dict[str, float]]]:
    """``l0``, dead / dense / alive fractions per split (and ``all``) and level, from stored codes."""
    csr = sp.csr_matrix(codes)
    split_of_row = np.asarray(split_of_row)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for s in [*sorted(set(split_of_row.tolist())), "all"]:
        rows = np.arange(csr.shape[0]) if s == "all" else np.flatnonzero(split_of_row == s)
        sub = csr[rows]
        fires = np.asarray((sub != 0).sum(0)).ravel()
        out[s] = {}
        for lv in sorted(levels):
            l0_sum = float((sub[:, :lv] != 0).sum())
            res = _firing(fires, len(rows), lv, l0_sum)
            res["n"] = float(len(rows))
            out[s][str(lv)] = res
    return out
