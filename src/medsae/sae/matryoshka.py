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
from typing import Any, Literal

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
        partial = self._level_partials(x_bd, main)
        # running sums over the levels as plain additions (cumsum has no deterministic CUDA
        # kernel); the same additions in the same order, so the same values on the CPU
        sums = itertools.accumulate(partial.unbind(0))
        return [s + self.b_dec for s in sums]

    def level_fvus(
        self,
        x_bd: torch.Tensor,
        main: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
        total_var: torch.Tensor,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        if not self.fast:  # the reference: autograd through every reconstruction
            return super().level_fvus(x_bd, main, total_var)
        fvu, residual = nested_fvu(self._level_partials(x_bd, main), x_bd, self.b_dec, total_var)
        return list(fvu.unbind(0)), residual

    def _level_partials(
        self, x_bd: torch.Tensor, main: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    ) -> torch.Tensor:
        """``(L, B, d)``: each level's own latents decoded (no bias)."""
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
        return partial.view(L, B, -1)


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


class _NestedFVU(torch.autograd.Function):
    """Per-level FVU of nested reconstructions from their partial decodes (see
    :func:`nested_fvu`)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        partial_LBd: torch.Tensor,
        x_bd: torch.Tensor,
        b_dec_d: torch.Tensor,
        total_var: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r_bd = x_bd - b_dec_d
        sq = []
        for p_bd in partial_LBd.unbind(0):
            r_bd.sub_(p_bd)
            flat = r_bd.reshape(-1)
            sq.append(torch.dot(flat, flat))
        ctx.save_for_backward(partial_LBd, r_bd, total_var)
        ctx.mark_non_differentiable(r_bd)
        return torch.stack(sq) / total_var, r_bd

    @staticmethod
    def backward(
        ctx: Any, g_fvu: torch.Tensor, _g_r: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        partial_LBd, r_last, total_var = ctx.saved_tensors
        L = partial_LBd.shape[0]
        coef = (-2.0 * g_fvu / total_var).to(r_last.dtype)  # d fvu_l / d partial_j, j <= l
        # the gradient is consumed by the decode's backward within this backward pass
        g_LBd = kernels.scratch(tuple(partial_LBd.shape), partial_LBd, "nested_fvu_grad")
        if g_LBd is None:
            g_LBd = torch.empty_like(partial_LBd)
        r_bd = r_last.clone()
        torch.mul(r_bd, coef[L - 1], out=g_LBd[L - 1])
        for lv in range(L - 2, -1, -1):
            r_bd.add_(partial_LBd[lv + 1])  # the residual of level lv
            torch.addcmul(g_LBd[lv + 1], r_bd, coef[lv], out=g_LBd[lv])
        g_x = g_bdec = None
        if ctx.needs_input_grad[1]:
            g_x = -g_LBd[0]
        if ctx.needs_input_grad[2]:
            g_bdec = g_LBd[0].sum(0)
        return g_LBd, g_x, g_bdec, None


def nested_fvu(
    partial_LBd: torch.Tensor, x_bd: torch.Tensor, b_dec_d: torch.Tensor, total_var: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fvu_L, residual_bd)``: the FVU of each nested reconstruction
    ``x_hat_l = b_dec + sum_{j <= l} partial_j`` and the last level's residual
    ``x - x_hat_L`` (no gradient).

    The same values as :func:`~medsae.sae.base.batch_fvu` of each running sum, without
    building the ``L`` reconstructions: one residual updated in place, one dot product per
    level, and in the backward the gradient of every partial as a running sum of the
    residuals (``d/d partial_j = -2 / T sum_{l >= j} g_l r_l``), so about ``4 L`` passes
    over a ``(B, d)`` array instead of about ``15 L`` through autograd.
    """
    with torch.autocast(x_bd.device.type, enabled=False):  # sums of squares in fp32
        fvu, r_bd = _NestedFVU.apply(partial_LBd.float(), x_bd.float(), b_dec_d, total_var)
    return fvu, r_bd
