"""TopK (Gao et al. 2024) and BatchTopK (Bussmann et al. 2024) sparse autoencoders.

* TopK: ``z = TopK_k(relu(pre))`` per sample, exactly ``k`` active latents per sample; the
  inference form is the same per-sample top-k.
* BatchTopK: the ``k * B`` largest activations of the whole batch are kept (``k`` per sample
  on average). The inference form is a JumpReLU ``z = pre * [pre > theta]`` with ``theta``
  the running mean of the smallest kept activation per training batch.
"""

from __future__ import annotations

import torch

from medsae.sae import kernels
from medsae.sae.base import SparseAutoencoder
from medsae.sae.kernels import Selection


class TopKSAE(SparseAutoencoder):
    """Per-sample TopK SAE."""

    def select_train(self, pre_bD: torch.Tensor) -> list[Selection]:
        assert self.cfg.k is not None
        return [kernels.topk_select(pre_bD, self.cfg.k)]

    def infer(self, pre_bD: torch.Tensor) -> torch.Tensor:
        assert self.cfg.k is not None
        vals, idx = pre_bD.topk(self.cfg.k, dim=1, sorted=False)
        return torch.zeros_like(pre_bD).scatter_(1, idx, vals.clamp_min(0))


class BatchTopKSAE(SparseAutoencoder):
    """BatchTopK SAE with a JumpReLU inference form."""

    uses_threshold = True

    def select_train(self, pre_bD: torch.Tensor) -> list[Selection]:
        assert self.cfg.k is not None
        return [kernels.batch_topk_select(pre_bD, self.cfg.k)]

    def infer(self, pre_bD: torch.Tensor) -> torch.Tensor:
        return jumprelu(pre_bD, self.threshold)


def jumprelu(pre_bD: torch.Tensor, threshold_D: torch.Tensor) -> torch.Tensor:
    """``pre * [pre > threshold]`` (and never negative)."""
    return pre_bD * ((pre_bD > threshold_D) & (pre_bD > 0))
