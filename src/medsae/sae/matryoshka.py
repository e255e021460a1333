"""Matryoshka BatchTopK sparse autoencoders (nested dictionary prefixes).

The dictionary is split into nested prefixes ``levels = [m_1 < ... < m_L = D]``. Level ``l``
reconstructs from the first ``m_l`` latents only, and the loss sums (or weights) the levels::

    loss = sum_l w_l FVU(x', z[:, :m_l] W_dec[:m_l] + b_dec) (+ AuxK)

* ``matryoshka`` (Bussmann et al. 2025): one BatchTopK over the whole dictionary; the level
  reconstructions are truncations of the same codes. Inference: JumpReLU.
* ``matryoshka-perlevel`` (the paper's variant, for comparison): level ``l`` runs its own
  BatchTopK with ``k_l`` on the first ``m_l`` pre-activations. Inference: JumpReLU with the
  threshold of the full level, so ``decode(encode(x), level=m)`` truncates those codes.
"""

from __future__ import annotations

import torch

from medsae.sae import kernels
from medsae.sae.base import SparseAutoencoder
from medsae.sae.kernels import Selection
from medsae.sae.topk import jumprelu


class MatryoshkaBatchTopKSAE(SparseAutoencoder):
    """One BatchTopK over the full dictionary; prefix reconstructions are truncations."""

    uses_threshold = True

    def select_train(self, pre_bD: torch.Tensor) -> list[Selection]:
        assert self.cfg.k is not None
        return [kernels.batch_topk_select(pre_bD, self.cfg.k)]

    def reconstructions(
        self, x_bd: torch.Tensor, main: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    ) -> list[torch.Tensor]:
        vals, rows, cols = main[0]
        B, L = x_bd.shape[0], len(self.cfg.levels)
        bounds = torch.tensor(self.cfg.levels[:-1], dtype=cols.dtype, device=cols.device)
        # one decode for all levels: the entries of level l go to "row" l * B + row, so the
        # partial sums of every level come out of a single sparse product
        bag = torch.bucketize(cols, bounds, right=True) * B + rows
        order = torch.argsort(bag, stable=True)
        partial = self._decode_sparse(vals[order], bag[order], cols[order], L * B)
        recons = partial.view(L, B, -1).cumsum(0) + self.b_dec
        return list(recons.unbind(0))

    def infer(self, pre_bD: torch.Tensor) -> torch.Tensor:
        return jumprelu(pre_bD, self.threshold)


class MatryoshkaPerLevelSAE(SparseAutoencoder):
    """A separate BatchTopK (own k) per level, as in the paper's code."""

    uses_threshold = True

    def select_train(self, pre_bD: torch.Tensor) -> list[Selection]:
        assert self.cfg.k_levels is not None
        return [
            kernels.batch_topk_select(pre_bD[:, :m], kk)
            for m, kk in zip(self.cfg.levels, self.cfg.k_levels, strict=True)
        ]

    def reconstructions(
        self, x_bd: torch.Tensor, main: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    ) -> list[torch.Tensor]:
        B = x_bd.shape[0]
        # one decode for all levels (level l's entries go to "row" l * B + row)
        vals = torch.cat([v for v, _, _ in main])
        bag = torch.cat([r + i * B for i, (_, r, _) in enumerate(main)])
        cols = torch.cat([c for _, _, c in main])
        partial = self._decode_sparse(vals, bag, cols, len(main) * B)
        return list((partial.view(len(main), B, -1) + self.b_dec).unbind(0))

    def infer(self, pre_bD: torch.Tensor) -> torch.Tensor:
        return jumprelu(pre_bD, self.threshold)
