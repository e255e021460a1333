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
        B = x_bd.shape[0]
        out = []
        acc = self.b_dec.expand(B, -1)
        lo = 0
        for m in self.cfg.levels:
            keep = (cols >= lo) & (cols < m)
            acc = acc + self._decode_sparse(vals[keep], rows[keep], cols[keep], B)
            out.append(acc)
            lo = m
        return out

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
        return [self._decode_sparse(v, r, c, B) + self.b_dec for v, r, c in main]

    def infer(self, pre_bD: torch.Tensor) -> torch.Tensor:
        return jumprelu(pre_bD, self.threshold)
