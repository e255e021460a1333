"""ReLU + L1 sparse autoencoder: the classic baseline.

``z = relu(pre)``, ``loss = FVU(x', z W_dec + b_dec) + l1_coefficient * mean_b sum_j z_bj``
(decoder rows have unit norm, so the L1 term needs no norm weighting). Dense paths only:
the support is not small early in training.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from medsae.sae.base import SparseAutoencoder, TrainOutput, batch_fvu
from medsae.sae.config import SAEConfig
from medsae.sae.registry import register


class ReLUConfig(SAEConfig):
    """ReLU SAE (one level) with an L1 penalty on the codes."""

    arch: Literal["relu"] = Field(default="relu", description="Architecture name.")
    l1_coefficient: float = Field(default=1e-3, ge=0, description="L1 penalty on the codes.")

    @model_validator(mode="after")
    def _flat(self) -> ReLUConfig:
        self.single_level()
        return self


@register
class ReLUSAE(SparseAutoencoder):
    """ReLU SAE with an L1 sparsity penalty."""

    cfg: ReLUConfig
    name = "relu"
    config_class = ReLUConfig
    inference = "relu"

    @classmethod
    def name_part(cls, cfg: SAEConfig) -> str:
        return f"L1-{getattr(cfg, 'l1_coefficient', 0.0):g}"

    def infer(self, pre_bD: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre_bD)

    def train_loss(self, x_bd: torch.Tensor) -> TrainOutput:
        B = x_bd.shape[0]
        total_var = (x_bd - x_bd.mean(0)).pow(2).sum().clamp_min(1e-12)
        z_bD = torch.relu(self.pre_activation(x_bd))
        x_hat = z_bD @ self.W_dec + self.b_dec
        fvu = batch_fvu(x_bd, x_hat, total_var)
        l1 = z_bD.sum() / B
        loss = fvu + self.cfg.l1_coefficient * l1
        active = z_bD.detach() > 0
        return TrainOutput(
            loss=loss,
            fvu=fvu.detach(),
            l0=active.sum() / B,
            aux_loss=torch.zeros((), device=x_bd.device),
            fired_cols=active.any(0),
            min_kept=None,
        )
