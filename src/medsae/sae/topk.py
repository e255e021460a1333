"""TopK (Gao et al. 2024) and BatchTopK (Bussmann et al. 2024) sparse autoencoders.

* TopK: ``z = TopK_k(relu(pre))`` per sample, exactly ``k`` active latents per sample; the
  inference form is the same per-sample top-k.
* BatchTopK: the ``k * B`` largest activations of the whole batch are kept (``k`` per sample
  on average). The inference form is a JumpReLU ``z = pre * [pre > theta]`` with ``theta``
  the running mean of the smallest kept activation per training batch.

Also the parts the whole TopK family shares (the Matryoshka variants build on them): ``k``
and AuxK options (:class:`TopKFamilyConfig`, :class:`TopKFamily`), and the running JumpReLU
threshold of the BatchTopK families (:class:`ThresholdConfig`, :class:`ThresholdFamily`).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator

from medsae.sae import kernels
from medsae.sae.base import KRule, SparseAutoencoder
from medsae.sae.config import SAEConfig
from medsae.sae.kernels import Selection
from medsae.sae.registry import register


class TopKFamilyConfig(SAEConfig):
    """Fields of every TopK-family architecture: ``k`` and the AuxK loss."""

    k: int = Field(
        gt=0, description="Active latents per sample (TopK) or mean per sample (BatchTopK)."
    )
    k_aux: int | None = Field(
        default=None,
        ge=0,
        description="AuxK: latents used to model the residual (default d_in // 2); 0 disables.",
    )
    aux_coefficient: float = Field(default=1 / 32, ge=0, description="AuxK loss coefficient.")

    @model_validator(mode="after")
    def _check_k(self) -> TopKFamilyConfig:
        if self.k > self.n_latents:
            raise ValueError(f"k={self.k} is larger than the dictionary ({self.n_latents} latents)")
        return self

    @property
    def aux_k(self) -> int:
        """k of the AuxK loss: ``k_aux`` or ``d_in // 2``, never more than the dictionary."""
        kk = self.d_in // 2 if self.k_aux is None else self.k_aux
        return min(kk, self.n_latents)


class ThresholdConfig(TopKFamilyConfig):
    """Fields of the BatchTopK families: the decay of the running JumpReLU threshold."""

    threshold_decay: float = Field(
        default=0.99,
        ge=0,
        lt=1,
        description="Decay of the running mean of the smallest kept activation per batch, "
        "exported as the JumpReLU threshold.",
    )


class TopKConfig(TopKFamilyConfig):
    """Per-sample TopK SAE (one level)."""

    arch: Literal["topk"] = Field(default="topk", description="Architecture name.")

    @model_validator(mode="after")
    def _flat(self) -> TopKConfig:
        self.single_level()
        return self


class BatchTopKConfig(ThresholdConfig):
    """BatchTopK SAE (one level) with a JumpReLU inference form."""

    arch: Literal["batchtopk"] = Field(default="batchtopk", description="Architecture name.")

    @model_validator(mode="after")
    def _flat(self) -> BatchTopKConfig:
        self.single_level()
        return self


class TopKFamily(SparseAutoencoder):
    """Shared by the TopK family: ``k`` from the grid's k ladder, AuxK on dead latents."""

    cfg: TopKFamilyConfig
    k_rule: ClassVar[KRule] = "last"
    uses_auxk = True

    def aux_settings(self) -> tuple[int, float]:
        return (self.cfg.aux_k if self.cfg.aux_coefficient > 0 else 0), self.cfg.aux_coefficient


class ThresholdFamily(TopKFamily):
    """BatchTopK families: JumpReLU inference with the running training threshold.

    The threshold is the running mean of the smallest kept activation per batch: a plain
    mean over the first ``1 / (1 - threshold_decay)`` updates, then an exponential one.
    """

    cfg: ThresholdConfig
    inference = "jumprelu"
    uses_threshold = True

    def infer(self, pre_bD: torch.Tensor) -> torch.Tensor:
        return jumprelu(pre_bD, self.threshold)

    @torch.no_grad()
    def update_threshold(self, min_kept: torch.Tensor | float) -> None:
        # on the device, in float64, stored as fp32: no host sync; an infinite min_kept (no
        # entry kept) leaves the threshold and the update count as they were
        wide = torch.float64 if self.threshold.device.type != "mps" else torch.float32
        n = self.threshold_updates.to(wide)
        decay = torch.clamp(n / (n + 1), max=self.cfg.threshold_decay)  # a plain mean first
        old = self.threshold[0].to(wide)
        kept = torch.as_tensor(min_kept, device=self.threshold.device).to(wide)
        seen = torch.isfinite(kept)
        kept = torch.where(seen, kept, old)
        self.threshold.copy_((decay * old + (1 - decay) * kept).expand_as(self.threshold))
        self.threshold_updates += seen.to(self.threshold_updates.dtype)


@register
class TopKSAE(TopKFamily):
    """Per-sample TopK SAE."""

    name = "topk"
    config_class = TopKConfig
    inference = "topk"

    def select_train(self, pre_bD: torch.Tensor) -> list[Selection]:
        return [kernels.topk_select(pre_bD, self.cfg.k)]

    def infer(self, pre_bD: torch.Tensor) -> torch.Tensor:
        vals, idx = pre_bD.topk(self.cfg.k, dim=1, sorted=False)
        return torch.zeros_like(pre_bD).scatter_(1, idx, vals.clamp_min(0))


@register
class BatchTopKSAE(ThresholdFamily):
    """BatchTopK SAE with a JumpReLU inference form."""

    name = "batchtopk"
    config_class = BatchTopKConfig

    def select_train(self, pre_bD: torch.Tensor) -> list[Selection]:
        return [kernels.batch_topk_select(pre_bD, self.cfg.k)]


def jumprelu(pre_bD: torch.Tensor, threshold_D: torch.Tensor) -> torch.Tensor:
    """``pre * [pre > threshold]`` (and never negative)."""
    return pre_bD * ((pre_bD > threshold_D) & (pre_bD > 0))
