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

import itertools
from typing import Literal

import torch
from pydantic import Field, model_validator

from medsae.sae import kernels
from medsae.sae.config import SAEConfig
from medsae.sae.kernels import Selection
from medsae.sae.registry import register
from medsae.sae.topk import ThresholdConfig, ThresholdFamily


class _NestedConfig(ThresholdConfig):
    """Fields of both Matryoshka variants: the loss weight of each level."""

    level_weights: list[float] | None = Field(
        default=None,
        description="Matryoshka loss weight of each level's reconstruction (default: 1 each, i.e. summed).",
    )

    @model_validator(mode="after")
    def _check_weights(self) -> _NestedConfig:
        if self.level_weights is not None and len(self.level_weights) != len(self.levels):
            raise ValueError(
                f"level_weights {self.level_weights} must have one weight per level {self.levels}"
            )
        return self

    @property
    def weights(self) -> list[float]:
        """Loss weight of each level (1 each unless configured)."""
        if self.level_weights is not None:
            return list(self.level_weights)
        return [1.0] * len(self.levels)


class MatryoshkaConfig(_NestedConfig):
    """Matryoshka BatchTopK: one BatchTopK with ``k`` over the whole dictionary."""

    arch: Literal["matryoshka"] = Field(default="matryoshka", description="Architecture name.")


class MatryoshkaPerLevelConfig(_NestedConfig):
    """Matryoshka with a separate BatchTopK per level (``k_levels``); ``k`` is the last level's."""

    arch: Literal["matryoshka-perlevel"] = Field(
        default="matryoshka-perlevel", description="Architecture name."
    )
    k_levels: list[int] = Field(
        description="A separate BatchTopK k for each level (same length as levels)."
    )

    @model_validator(mode="after")
    def _check_k_levels(self) -> MatryoshkaPerLevelConfig:
        if len(self.k_levels) != len(self.levels):
            raise ValueError(
                f"matryoshka-perlevel needs one k per level: levels {self.levels}, k_levels {self.k_levels}"
            )
        for kk, m in zip(self.k_levels, self.levels, strict=True):
            if kk <= 0 or kk > m:
                raise ValueError(f"k={kk} is invalid for level {m} (need 0 < k <= level)")
        return self


@register
class MatryoshkaBatchTopKSAE(ThresholdFamily):
    """One BatchTopK over the full dictionary; prefix reconstructions are truncations."""

    name = "matryoshka"
    config_class = MatryoshkaConfig
    levels_rule = "ladder"
    level_bounds: torch.Tensor

    def __init__(self, cfg: SAEConfig, fast: bool = True, seed: int = 0) -> None:
        super().__init__(cfg, fast, seed)
        # the inner level sizes, built once; they move with the module (not saved)
        self.register_buffer(
            "level_bounds", torch.tensor(cfg.levels[:-1], dtype=torch.int64), persistent=False
        )

    def select_train(self, pre_bD: torch.Tensor) -> list[Selection]:
        return [kernels.batch_topk_select(pre_bD, self.cfg.k)]

    def reconstructions(
        self, x_bd: torch.Tensor, main: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    ) -> list[torch.Tensor]:
        vals, rows, cols = main[0]
        B, L = x_bd.shape[0], len(self.cfg.levels)
        # one decode for all levels: the entries of level l go to "row" l * B + row, so the
        # partial sums of every level come out of a single sparse product
        level = torch.bucketize(cols, self.level_bounds, right=True)
        bag = level * B + rows
        if self._sync_free:  # on a GPU: one stable sort, no host sync
            order = torch.argsort(bag, stable=True)
        else:
            # the selection is sorted by row, so grouping its entries by level (order kept)
            # sorts them by (level, row): the stable sort of ``bag`` without a sort
            order = torch.cat([(level == lv).nonzero().squeeze(1) for lv in range(L)])
        partial = self._decode_sparse(vals[order], bag[order], cols[order], L * B)
        # running sums over the levels as plain additions (cumsum has no deterministic CUDA
        # kernel); the same additions in the same order, so the same values on the CPU
        sums = itertools.accumulate(partial.view(L, B, -1).unbind(0))
        return [s + self.b_dec for s in sums]


@register
class MatryoshkaPerLevelSAE(ThresholdFamily):
    """A separate BatchTopK (own k) per level, as in the paper's code."""

    cfg: MatryoshkaPerLevelConfig
    name = "matryoshka-perlevel"
    config_class = MatryoshkaPerLevelConfig
    levels_rule = "ladder"
    k_rule = "per_level"

    def select_train(self, pre_bD: torch.Tensor) -> list[Selection]:
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
