"""Per-position attribution of SAE latents: where in the image a feature fires.

For an embedding pooled from feature maps (see :mod:`medsae.encode.spatial`), with parts
``s`` covering dimensions ``[lo_s, hi_s)``, ``P_s`` positions each and part scales
``c_s`` (1 for mean pooling)::

    z[lo_s:hi_s] = c_s / P_s * sum_p f^s_p

and the SAE's input transform ``x' = a z`` (``a = 1 / ||z||`` for ``l2``, the training factor
for an unfolded ``scale``, else 1; ``a`` is the fixed scalar of this image), the
pre-activation of latent ``j`` is affine in the maps and splits exactly::

    pre_j = W_enc[j] . (x' - b_dec) + b_enc[j]
          = sum_s sum_p a c_s / P_s W_enc[j, lo_s:hi_s] . f^s_p  -  W_enc[j] . b_dec  +  b_enc[j]

Every part's contribution map is carried onto one common grid (the finest part grid,
``H x W``) by an area-overlap transfer that keeps each cell's sum, and the ``- W_enc[j] .
b_dec`` term is spread evenly over the ``H W`` cells. The grid ``g_j`` then satisfies
``sum(g_j) + b_enc[j] = pre_j`` (exact up to float rounding; tested to 1e-5). With one
part of ``P`` positions and no resampling this is the per-position form
``g_p = W_enc[j] . (a f_p - b_dec) / P``.

When the encoder's maps are not what the embedding averages (DINOv3 CLS pooling) the same
formula is applied to the patch tokens with ``a`` from the actual embedding: the map is
*approximate*, and ``residual = pre_j - (sum(g_j) + b_enc[j])`` says by how much it misses.

Pixel maps (:func:`to_pixels`) resample the grid's density (contribution per pixel) to the
stored image size with bilinear interpolation; the model input covers the whole image, so
grid cell ``(r, c)`` lies over pixels ``[r S / H, (r + 1) S / H)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from medsae.encode.spatial import SpatialFeatures, check_spatial
from medsae.errors import InputError


@dataclass(frozen=True)
class LatentMaps:
    """Attribution grids of some latents on a batch of images.

    Attributes
    ----------
    grid:
        float64 ``(B, L, H, W)``: contribution of each grid cell to each latent's
        pre-activation (``sum(grid[b, l]) + bias[l]`` is the pre-activation when exact).
    latents:
        int64 ``(L,)`` latent ids.
    bias:
        float64 ``(L,)``: ``b_enc[j]``.
    pre_activation:
        float64 ``(B, L)``: the SAE's pre-activation on the embedding.
    activation:
        float64 ``(B, L)``: the SAE's inference code (what ``sae.encode`` gives).
    exact:
        Whether the grid sums to the pre-activation by construction.
    method:
        What the maps were made from (``approximate`` is said when not exact).
    dec_bias:
        float64 ``(L,)``: ``- W_enc[j] . b_dec``, the part of the pre-activation that is not
        the image's; spread evenly over the grid's cells (see :attr:`image_grid`).
    """

    grid: np.ndarray
    latents: np.ndarray
    bias: np.ndarray
    pre_activation: np.ndarray
    activation: np.ndarray
    exact: bool
    method: str
    dec_bias: np.ndarray | None = None

    @property
    def image_grid(self) -> np.ndarray:
        """The grid without the ``- W_enc[j] . b_dec`` term spread over its cells: the
        contributions of the image's feature maps alone, ``(B, L, H, W)``."""
        if self.dec_bias is None:
            return self.grid
        h, w = self.grid.shape[2:]
        return np.asarray(self.grid - self.dec_bias[None, :, None, None] / (h * w))

    @property
    def fires(self) -> np.ndarray:
        """Whether each latent fires on each image (its code is above 0), ``(B, L)``."""
        return np.asarray(self.activation > 0)

    @property
    def residual(self) -> np.ndarray:
        """``pre_activation - (sum of the grid + bias)``, ``(B, L)``: 0 when exact."""
        total = self.grid.sum(axis=(2, 3)) + self.bias[None, :]
        return np.asarray(self.pre_activation - total)

    @property
    def label(self) -> str:
        """``exact`` or ``approximate``: what every display of the map says."""
        return "exact" if self.exact else "approximate"


@lru_cache(maxsize=64)
def area_transfer(n_from: int, n_to: int) -> np.ndarray:
    """``(n_to, n_from)`` matrix of overlap fractions of 1D cells; each column sums to 1.

    Source cell ``i`` spans ``[i / n_from, (i + 1) / n_from)`` of the unit interval, target
    cell ``k`` spans ``[k / n_to, (k + 1) / n_to)``; entry ``(k, i)`` is the share of source
    cell ``i`` inside target cell ``k``. ``A M A^T`` moves a 2D map of cell sums between
    grids and keeps its total.
    """
    if n_from < 1 or n_to < 1:
        raise ValueError(f"grid sizes must be positive, got {n_from} -> {n_to}")
    src = np.arange(n_from + 1) / n_from
    dst = np.arange(n_to + 1) / n_to
    lo = np.maximum(src[None, :-1], dst[:-1, None])
    hi = np.minimum(src[None, 1:], dst[1:, None])
    out = np.clip(hi - lo, 0.0, None) * n_from
    out.setflags(write=False)
    return out


def check_latents(latents: Sequence[int] | np.ndarray, n_latents: int, what: str) -> np.ndarray:
    """int64 latent ids; an :class:`InputError` naming ``what`` for one outside ``0..n_latents-1``."""
    ids = np.asarray(latents, dtype=np.int64).reshape(-1)
    bad = ids[(ids < 0) | (ids >= n_latents)]
    if bad.size:
        raise InputError(
            "latent",
            f"{int(bad[0])} is outside 0..{n_latents - 1}: {what} has {n_latents} latents",
        )
    return ids


def input_factor(sae: Any, embedding: np.ndarray) -> np.ndarray:
    """The scalar ``a`` of the SAE input transform ``x' = a z`` per row, float64 ``(B,)``.

    ``l2``: ``1 / max(||z||, 1e-12)`` (as ``SparseAutoencoder.preprocess``); ``scale`` not yet
    folded into the weights: ``input_scale``; otherwise 1.
    """
    cfg = sae.cfg
    z = embedding.astype(np.float32)
    if cfg.input_transform == "l2":
        norms = np.linalg.norm(z, axis=1).astype(np.float64)
        return np.asarray(1.0 / np.maximum(norms, 1e-12))
    if cfg.input_transform == "scale" and not cfg.scale_folded:
        return np.full(len(z), float(cfg.input_scale))
    return np.ones(len(z))


def sae_name(sae: Any) -> str:
    """How errors name an SAE: its run name, else its architecture."""
    return f"SAE {sae.cfg.run or sae.cfg.arch}"


def latent_maps(
    sae: Any, features: SpatialFeatures, latents: Sequence[int] | np.ndarray
) -> LatentMaps:
    """Attribution grids of ``latents`` on every image of ``features`` (module docstring).

    Raises :class:`InputError` for a latent outside the SAE's range or feature maps that do
    not match the SAE's input dimension.
    """
    ids = check_latents(latents, int(sae.cfg.n_latents), sae_name(sae))
    check_spatial(features, int(sae.cfg.d_in), sae_name(sae))
    index = torch.from_numpy(ids).to(sae.W_enc.device)
    with torch.no_grad():
        w_enc = sae.W_enc.detach()[index].double().cpu().numpy()  # (L, d)
        b_enc = sae.b_enc.detach()[index].double().cpu().numpy()
        b_dec = sae.b_dec.detach().double().cpu().numpy()
        pre_full = sae.pre_activation(sae.preprocess(features.embedding))
        act = sae.infer(pre_full)
    pre = pre_full.double().cpu().numpy()[:, ids]
    code = act.double().cpu().numpy()[:, ids]
    a = input_factor(sae, features.embedding)  # (B,)
    out_h = max(p.shape[2] for p in features.parts)
    out_w = max(p.shape[3] for p in features.parts)
    B = features.batch_size
    grid = np.zeros((B, len(ids), out_h, out_w))
    for s, (part, (lo, hi)) in enumerate(zip(features.parts, features.channels, strict=True)):
        _, C, h, w = part.shape
        flat = part.reshape(B, C, h * w)
        contrib = np.einsum("lc,bcp->blp", w_enc[:, lo:hi].astype(np.float32), flat).astype(
            np.float64
        )
        contrib *= (a * features.scales[:, s] / (h * w))[:, None, None]
        m = contrib.reshape(B, len(ids), h, w)
        if (h, w) != (out_h, out_w):
            m = area_transfer(h, out_h) @ m @ area_transfer(w, out_w).T
        grid += m
    grid -= (w_enc @ b_dec)[None, :, None, None] / (out_h * out_w)
    return LatentMaps(
        grid=grid,
        latents=ids,
        bias=b_enc,
        pre_activation=pre,
        activation=code,
        exact=bool(features.exact),
        method=features.method,
        dec_bias=-(w_enc @ b_dec),
    )


def to_pixels(grid: np.ndarray, size: int) -> np.ndarray:
    """Density maps at ``size x size`` pixels from grids ``(..., H, W)``: float32 ``(..., size, size)``.

    Each cell's contribution is divided by its area in pixels (``size^2 / (H W)``) and the
    density is resampled bilinearly (cell centres at ``(r + 1/2) size / H``); the pixel sum
    then approximates the grid sum (equal for a constant map).
    """
    arr = np.asarray(grid, dtype=np.float32)
    lead = arr.shape[:-2]
    h, w = arr.shape[-2:]
    density = torch.from_numpy(np.ascontiguousarray(arr.reshape(-1, 1, h, w)))
    density = density * float(h * w) / float(size * size)
    if (h, w) != (size, size):
        density = torch.nn.functional.interpolate(
            density, size=(size, size), mode="bilinear", align_corners=False
        )
    return np.asarray(density.numpy().reshape(*lead, size, size))
