"""The sparse autoencoder base module shared by every architecture, with its traits.

Parameters (``D`` latents, ``d`` input dimension)::

    W_enc (D, d)   encoder, one row per latent (saved transposed, (d, D), as ``W_enc``)
    b_enc (D,)     encoder bias
    W_dec (D, d)   decoder, unit-norm rows
    b_dec (d,)     decoder bias, subtracted from the input before encoding
    threshold (D,) JumpReLU threshold of the inference form (BatchTopK families)

Encoding ``pre = (x' - b_dec) W_enc^T + b_enc`` with ``x' = preprocess(x)``; decoding
``x_hat = z W_dec + b_dec``; a Matryoshka level ``m`` decodes from ``z[:, :m]`` only.

Spaces: :meth:`~SparseAutoencoder.encode` takes raw inputs (in the units of the embeddings);
:meth:`~SparseAutoencoder.decode` returns the reconstruction of ``x'``, the *preprocessed*
input (unit-norm rows under the default ``l2`` transform, ``input_scale * x`` under an
unfolded ``scale``); :meth:`~SparseAutoencoder.reconstruct` returns it in the raw input's
units for every transform (``l2``: times ``||x||``; ``scale``: divided by ``input_scale``
unless folded into the weights; ``none``: unchanged).

Training loss (per batch, ``FVU(a, b) = ||a - b||^2 / ||a - mean(a)||^2`` over the batch)::

    loss = sum_l w_l FVU(x', x_hat_l) + aux_coefficient * AuxK

AuxK (Gao et al. 2024): with ``e = x' - x_hat`` (detached), the top ``k_aux`` pre-activations
among dead latents reconstruct ``e`` (no bias): ``AuxK = ||e - e_hat||^2 / ||e - mean(e)||^2``.

An architecture is a subclass that states its traits as class attributes (what the grid,
the run name, the codes stage, evaluation, the trainer and the exporters ask of it) and
registers with :func:`medsae.sae.registry.register`; see docs/sae.md, "Adding an
architecture".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from medsae.errors import InputError
from medsae.sae import kernels
from medsae.sae.config import SAEConfig
from medsae.sae.kernels import Selection


@dataclass
class TrainOutput:
    """One training forward: the loss to backpropagate and detached statistics.

    The built-in architectures give every statistic as a tensor on the SAE's device, so that
    a training step never waits for the device (the trainer reads them when it logs);
    Python numbers are accepted too. ``fired_cols``: the latents that fired, as indices or
    as a ``(D,)`` bool mask; ``min_kept``: the smallest kept activation (None, or inf, when
    nothing was kept).
    """

    loss: torch.Tensor
    fvu: torch.Tensor | float
    l0: torch.Tensor | float
    aux_loss: torch.Tensor | float
    fired_cols: torch.Tensor
    min_kept: torch.Tensor | float | None


def fired_latents(
    main: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], D: int
) -> torch.Tensor:
    """``(D,)`` bool: the latents some selection kept with a positive value (no host sync: a
    count of exact small integers, the same in any summation order)."""
    vals = main[0][0]
    hits = torch.zeros(D, dtype=torch.float32, device=vals.device)
    for v, _, c in main:
        hits.index_add_(0, c, (v.detach() > 0).to(torch.float32))
    return hits > 0


def batch_fvu(x_bd: torch.Tensor, x_hat_bd: torch.Tensor, total_var: torch.Tensor) -> torch.Tensor:
    """``||x - x_hat||^2 / ||x - mean_b(x)||^2`` over the batch (per-dimension means)."""
    return (x_bd - x_hat_bd).pow(2).sum() / total_var


KRule = Literal["none", "last", "per_level"]


class GridSkip(ValueError):
    """A grid combination an architecture cannot take (the reason is the message)."""


class SparseAutoencoder(nn.Module):
    """Base class: parameters, preprocessing, inference encode/decode, decoder constraints.

    Subclasses implement :meth:`infer` (dense inference codes from the pre-activation) and
    either :meth:`select_train` (the training selections, main first; the sparse loss of
    :meth:`train_loss`) or their own :meth:`train_loss` (``trained_by = "sgd"``), or
    :meth:`fit_step` (``trained_by = "fit"``: fitted batch by batch without an optimiser, e.g.
    in closed form). The class attributes below are the architecture's traits.
    """

    name: ClassVar[str] = ""
    """Registry name, equal to the config's ``arch``; the first part of run names."""
    config_class: ClassVar[type[SAEConfig]] = SAEConfig
    """The architecture's own pydantic config class (``arch: Literal[name]``)."""
    levels_rule: ClassVar[Literal["ladder", "last"]] = "last"
    """Which prefix sizes a grid ladder gives: all of them (nested levels) or only the last."""
    k_rule: ClassVar[KRule] = "none"
    """Which k a grid k ladder gives: none, its last value (``k``) or one per level (``k_levels``)."""
    inference: ClassVar[Literal["topk", "jumprelu", "relu"]] = "relu"
    """Inference form of :meth:`infer` (``codes.json`` ``mode``; what the exporters write)."""
    trained_by: ClassVar[Literal["sgd", "fit"]] = "sgd"
    """``sgd``: Adam steps on :meth:`train_loss`; ``fit``: :meth:`fit_step` per batch, no optimiser."""
    uses_threshold: ClassVar[bool] = False
    """Whether training keeps the running JumpReLU threshold (:meth:`update_threshold`)."""
    uses_auxk: ClassVar[bool] = False
    """Whether the AuxK loss revives dead latents (``train`` warns when it cannot engage)."""

    skip_reason: str | None = None
    """Set by a fitted architecture that cannot be fitted on the data (e.g. more components
    than rows): the run is left out of the grid and listed with this reason under
    ``skipped``, never a crash."""

    sync_free: bool | None = None
    """Whether training selections avoid host syncs (the fixed-size AuxK selection): None
    means on any device but the CPU, where a sync costs nothing and the variable-size
    selection is cheaper. Tests set it to run the GPU path on the CPU."""
    threshold: torch.Tensor
    samples_since_fire: torch.Tensor
    threshold_updates: torch.Tensor

    def __init__(self, cfg: SAEConfig, fast: bool = True, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.fast = fast
        D, d = cfg.n_latents, cfg.d_in
        self.W_enc = nn.Parameter(torch.empty(D, d))
        self.b_enc = nn.Parameter(torch.zeros(D))
        self.W_dec = nn.Parameter(torch.empty(D, d))
        self.b_dec = nn.Parameter(torch.zeros(d))
        self.register_buffer("threshold", torch.zeros(D))
        self.register_buffer("samples_since_fire", torch.zeros(D, dtype=torch.int64))
        self.register_buffer("threshold_updates", torch.zeros((), dtype=torch.int64))
        self.reset_parameters(seed)

    # ------------------------------------------------------------------ init
    def reset_parameters(self, seed: int) -> None:
        """Random unit-norm decoder rows; encoder = decoder transpose; zero biases."""
        gen = torch.Generator().manual_seed(int(seed))
        w = torch.randn(self.cfg.n_latents, self.cfg.d_in, generator=gen)
        w /= w.norm(dim=1, keepdim=True).clamp_min(1e-12)
        with torch.no_grad():
            self.W_dec.copy_(w)
            self.W_enc.copy_(w)
            self.b_enc.zero_()
            self.b_dec.zero_()

    def init_b_dec(self, sample_bd: torch.Tensor) -> None:
        """Set ``b_dec`` to the geometric median of a (preprocessed) sample."""
        with torch.no_grad():
            self.b_dec.copy_(geometric_median(sample_bd.to(self.b_dec)))

    # ------------------------------------------------------------ transforms
    def preprocess(self, x: Any) -> torch.Tensor:
        """The input as the SAE sees it (``x'``): a float32 tensor on the SAE's device,
        L2-normalised per row (``l2``) or multiplied by ``input_scale`` (``scale``, unless
        folded into the weights) as configured. The inverse per row: :meth:`to_input_units`."""
        x_bd = self.as_input(x)
        if self.cfg.input_transform == "l2":
            return x_bd / x_bd.norm(dim=1, keepdim=True).clamp_min(1e-12)
        if self.cfg.input_transform == "scale" and not self.cfg.scale_folded:
            return x_bd * self.cfg.input_scale
        return x_bd

    def as_input(self, x: Any) -> torch.Tensor:
        """Raw ``x`` (array or tensor) as a float32 ``(B, d_in)`` tensor on the SAE's device,
        untransformed; an :class:`InputError` for another shape."""
        if not isinstance(x, torch.Tensor):
            arr = np.asarray(x, dtype=np.float32)
            x = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
        x_bd = x.to(device=self.W_dec.device, dtype=torch.float32)
        if x_bd.ndim != 2 or x_bd.shape[1] != self.cfg.d_in:
            raise InputError(
                f"SAE {self.cfg.run or self.cfg.arch}",
                f"input of shape {tuple(x_bd.shape)} does not match d_in={self.cfg.d_in} (expected (B, {self.cfg.d_in}))",
            )
        return x_bd

    def pre_activation(self, x_pre_bd: torch.Tensor) -> torch.Tensor:
        """``(x' - b_dec) W_enc^T + b_enc`` of an already preprocessed batch."""
        return kernels.fused_pre(x_pre_bd, self.W_enc, self.b_enc, self.b_dec)

    @torch.no_grad()
    def encode(self, x: Any) -> torch.Tensor:
        """Dense ``(B, n_latents)`` codes of *raw* inputs (the embeddings' own units; the
        input transform is applied here) in the inference form."""
        return self.infer(self.pre_activation(self.preprocess(x)))

    @torch.no_grad()
    def reconstruct(self, x: Any, level: int | None = None) -> torch.Tensor:
        """Reconstruction of raw ``x`` in ``x``'s own units, for every input transform:
        ``to_input_units(decode(encode(x), level), x)``."""
        x_raw = self.as_input(x)
        return self.to_input_units(self.decode(self.encode(x_raw), level=level), x_raw)

    def to_input_units(self, x_hat_bd: torch.Tensor, x_raw: Any) -> torch.Tensor:
        """Map a reconstruction of ``preprocess(x)`` back to the units of the raw ``x``:
        times the row norms of ``x`` (``l2``), divided by ``input_scale`` (``scale`` not yet
        folded), unchanged otherwise (``none``, folded ``scale``)."""
        if self.cfg.input_transform == "l2":
            norms = self.as_input(x_raw).norm(dim=1, keepdim=True).clamp_min(1e-12)
            return x_hat_bd * norms
        if self.cfg.input_transform == "scale" and not self.cfg.scale_folded:
            return x_hat_bd / self.cfg.input_scale
        return x_hat_bd

    def infer(self, pre_bD: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, codes_bD: torch.Tensor, level: int | None = None) -> torch.Tensor:
        """Reconstruction of ``preprocess(x)`` (the *preprocessed* space: unit-norm rows under
        ``l2``) from the first ``level`` latents (all by default). In the raw input's units:
        :meth:`reconstruct`, or :meth:`to_input_units` of this."""
        codes_bD = torch.as_tensor(codes_bD).to(self.W_dec)
        m = self.cfg.n_latents if level is None else int(level)
        if not 0 < m <= self.cfg.n_latents:
            raise ValueError(f"level {m} outside 1..{self.cfg.n_latents}")
        return codes_bD[:, :m] @ self.W_dec[:m] + self.b_dec

    # --------------------------------------------------------------- training
    @property
    def _sync_free(self) -> bool:
        return self.sync_free if self.sync_free is not None else self.W_dec.device.type != "cpu"

    @property
    def dead_mask(self) -> torch.Tensor:
        """Latents that have not fired for ``dead_after_samples`` training samples."""
        return self.samples_since_fire >= self.cfg.dead_after_samples

    def select_train(self, pre_bD: torch.Tensor) -> list[Selection]:
        raise NotImplementedError

    def aux_settings(self) -> tuple[int, float]:
        """``(k_aux, coefficient)`` of the AuxK loss; ``(0, 0.0)``: none."""
        return 0, 0.0

    def _aux_selection(self, pre_bD: torch.Tensor) -> list[Selection]:
        k_aux, coefficient = self.aux_settings()
        if k_aux <= 0 or coefficient <= 0:
            return []
        if self._sync_free:
            # on a GPU: a fixed-size top-k over the pre-activation with live latents masked
            # out, entries of live latents not kept: no host sync (the same AuxK selection)
            dead = self.dead_mask
            k_all = min(k_aux, self.cfg.n_latents)
            rows, cols = kernels.topk_select(pre_bD.masked_fill(~dead, float("-inf")), k_all)
            return [(rows, cols, dead[cols])]
        dead_idx = self.dead_mask.nonzero(as_tuple=True)[0]
        if dead_idx.numel() == 0:
            return []
        kk = min(k_aux, dead_idx.numel())
        rows, cols = kernels.topk_select(pre_bD.index_select(1, dead_idx), kk)
        return [(rows, dead_idx[cols])]

    def _encode_train(
        self, x_bd: torch.Tensor
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], bool]:
        """The training selections' ``(vals, rows, cols)``, AuxK last when ``has_aux``."""
        has_aux = [False]

        def selector(pre_bD: torch.Tensor) -> list[Selection]:
            sels = self.select_train(pre_bD)
            aux = self._aux_selection(pre_bD)
            has_aux[0] = bool(aux)
            return sels + aux

        fn = kernels.sparse_encode if self.fast else kernels.reference_encode
        out = fn(x_bd, self.W_enc, self.b_enc, self.b_dec, selector)
        return out, has_aux[0]

    def _decode_sparse(
        self, vals: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, B: int
    ) -> torch.Tensor:
        fn = kernels.sparse_decode if self.fast else kernels.reference_decode
        return fn(vals, rows, cols, self.W_dec, B)

    def reconstructions(
        self, x_bd: torch.Tensor, main: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    ) -> list[torch.Tensor]:
        """Reconstruction of each level from the training selections (subclasses)."""
        vals, rows, cols = main[0]
        return [self._decode_sparse(vals, rows, cols, x_bd.shape[0]) + self.b_dec]

    def level_fvus(
        self,
        x_bd: torch.Tensor,
        main: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
        total_var: torch.Tensor,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The FVU of each level's reconstruction and the last level's residual
        ``x - x_hat`` (detached); from :meth:`reconstructions` unless a subclass has a
        faster route to the same values."""
        recons = self.reconstructions(x_bd, main)
        fvus = [batch_fvu(x_bd, r, total_var) for r in recons]
        return fvus, (x_bd - recons[-1]).detach()

    def train_loss(self, x_bd: torch.Tensor) -> TrainOutput:
        """Loss of one preprocessed batch (see module docstring)."""
        B = x_bd.shape[0]
        total_var = (x_bd - x_bd.mean(0)).pow(2).sum().clamp_min(1e-12)
        enc, has_aux = self._encode_train(x_bd)
        main = enc[:-1] if has_aux else enc
        fvus, residual = self.level_fvus(x_bd, main, total_var)
        loss = sum(
            (w * f for w, f in zip(self.cfg.weights, fvus, strict=True)),
            torch.zeros((), device=x_bd.device),
        )
        aux_value = torch.zeros((), device=x_bd.device)
        if has_aux:
            a_vals, a_rows, a_cols = enc[-1]
            e_bd = residual
            e_hat = self._decode_sparse(a_vals, a_rows, a_cols, B)
            aux = (e_bd - e_hat).pow(2).sum() / (e_bd - e_bd.mean(0)).pow(2).sum().clamp_min(1e-12)
            aux = torch.nan_to_num(aux, nan=0.0)
            if self._sync_free:  # the fixed-size selection: no term without dead latents
                aux = aux * self.dead_mask.any()
            loss = loss + self.aux_settings()[1] * aux
            aux_value = aux.detach()
        f_vals, f_rows, f_cols = main[-1]
        # A latent fired if any level's selection kept it: a per-level BatchTopK may keep a
        # latent in a small prefix that the full level's selection dropped.
        return TrainOutput(
            loss=loss,
            fvu=fvus[-1].detach(),
            l0=(f_vals.detach() > 0).sum() / B,
            aux_loss=aux_value,
            fired_cols=fired_latents(main, self.cfg.n_latents),
            min_kept=self._min_kept(x_bd, f_vals, f_rows, f_cols),
        )

    def _min_kept(
        self, x_bd: torch.Tensor, vals: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
    ) -> torch.Tensor:
        """The smallest positive kept activation as an fp32 scalar (inf when none): under
        bf16 autocast the entry is found among the bf16 values and its pre-activation
        recomputed in fp32, so the threshold statistic never averages bf16 roundings."""
        inf = torch.full((), float("inf"), device=vals.device)
        if not self.uses_threshold or vals.numel() == 0:
            return inf
        v = vals.detach()
        masked = torch.where(v > 0, v.float(), inf)
        if v.dtype == torch.float32:
            return masked.min()
        j = masked.argmin()
        with torch.no_grad(), torch.autocast(x_bd.device.type, enabled=False):
            r, c = rows[j], cols[j]
            exact = (x_bd[r] - self.b_dec) @ self.W_enc[c] + self.b_enc[c]
        return torch.where(torch.isfinite(masked[j]), exact.float().clamp_min(0.0), inf)

    @torch.no_grad()
    def after_step(self, out: TrainOutput, batch_size: int) -> None:
        """Update firing counters and the running JumpReLU threshold after an optimiser step.

        The threshold is the running mean of the smallest kept activation per batch: a plain
        mean over the first ``1 / (1 - threshold_decay)`` updates, then an exponential one.
        """
        self.samples_since_fire += batch_size
        if out.fired_cols.dtype == torch.bool:
            self.samples_since_fire.masked_fill_(out.fired_cols, 0)
        else:
            self.samples_since_fire[out.fired_cols] = 0
        if self.uses_threshold and out.min_kept is not None:
            self.update_threshold(out.min_kept)

    def update_threshold(self, min_kept: torch.Tensor | float) -> None:
        """Fold one batch's smallest kept activation into the threshold (``uses_threshold``)."""
        raise NotImplementedError

    def fit_step(self, x_bd: torch.Tensor) -> TrainOutput:
        """``trained_by = "fit"``: take one preprocessed batch into the fit (no gradient)."""
        raise NotImplementedError(f"{type(self).__name__} is trained by {self.trained_by!r}")

    def end_training(self) -> None:
        """Called once when training ends (e.g. to solve a closed-form fit); nothing by default."""

    # ------------------------------------------------------------ grid traits
    @classmethod
    def grid_fields(cls, ladder: Sequence[int], ks: Sequence[int]) -> dict[str, Any]:
        """Config fields of one (dictionary ladder, k ladder) grid combination.

        Follows ``levels_rule`` and ``k_rule``; raises :class:`GridSkip` with the reason
        when the combination does not fit the architecture.
        """
        levels = list(ladder) if cls.levels_rule == "ladder" else [ladder[-1]]
        fields: dict[str, Any] = {"n_latents": levels[-1], "levels": levels}
        if cls.k_rule == "per_level":
            if len(ks) != len(levels):
                raise GridSkip(f"{len(ks)} k values for {len(levels)} levels")
            for kk, m in zip(ks, levels, strict=True):
                if kk > m:
                    raise GridSkip(f"k={kk} > level {m}")
            fields["k_levels"] = list(ks)
        if cls.k_rule != "none":
            if ks[-1] > levels[-1]:
                raise GridSkip(f"k={ks[-1]} > dictionary size {levels[-1]}")
            fields["k"] = ks[-1]
        return fields

    @classmethod
    def name_part(cls, cfg: SAEConfig) -> str:
        """The run name's last part (after the levels): ``K40``, ``K5-10-20-40``, ..."""
        if cls.k_rule == "per_level":
            return "K" + "-".join(str(x) for x in getattr(cfg, "k_levels", None) or [])
        if cls.k_rule == "last":
            return f"K{getattr(cfg, 'k', '')}"
        return ""

    @classmethod
    def nominal_k(cls, cfg: SAEConfig) -> dict[int, int | None]:
        """The training k of each level (``k_nominal`` in the metrics; None where none)."""
        levels = [int(m) for m in cfg.levels]
        if cls.k_rule == "per_level":
            ks = getattr(cfg, "k_levels", None) or [None] * len(levels)
            return {m: (int(k) if k is not None else None) for m, k in zip(levels, ks, strict=True)}
        k = getattr(cfg, "k", None) if cls.k_rule == "last" else None
        return {m: (int(k) if k is not None and m == levels[-1] else None) for m in levels}

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove the gradient component parallel to each (unit-norm) decoder row."""
        g = self.W_dec.grad
        if g is None:
            return
        w = self.W_dec
        g.addcmul_(torch.einsum("ij,ij->i", g, w).unsqueeze(1), w, value=-1.0)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Renormalise decoder rows to unit norm."""
        self.W_dec.div_(torch.linalg.vector_norm(self.W_dec, dim=1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def fold_input_scale(self) -> None:
        """Fold the 'scale' transform into the weights so the SAE takes raw inputs.

        With ``c = input_scale``: ``W_enc <- c W_enc``, ``b_dec <- b_dec / c``,
        ``W_dec <- W_dec / c``; encoding and ``decode(encode(x))`` of raw ``x`` then equal the
        trained SAE's on ``c x`` (codes) and ``1 / c`` times its reconstruction.
        """
        if self.cfg.input_transform != "scale" or self.cfg.scale_folded:
            return
        c = self.cfg.input_scale
        self.W_enc.mul_(c)
        self.b_dec.div_(c)
        self.W_dec.div_(c)
        self.cfg = self.cfg.model_copy(update={"scale_folded": True})


def geometric_median(x_nd: torch.Tensor, iters: int = 50, eps: float = 1e-8) -> torch.Tensor:
    """Geometric median by Weiszfeld iterations, started at the mean."""
    y = x_nd.mean(0)
    for _ in range(iters):
        dist = (x_nd - y).norm(dim=1).clamp_min(eps)
        w = 1.0 / dist
        y_new = (w[:, None] * x_nd).sum(0) / w.sum()
        if (y_new - y).norm() < eps * max(1.0, float(y.norm())):
            return y_new
        y = y_new
    return y
