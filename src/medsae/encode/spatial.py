"""Spatial features: the per-position feature maps an embedding was pooled from.

An encoder may offer the optional method ``spatial_features(images_uint8) ->
SpatialFeatures`` (built-in: EfficientNet-Lite0 with either pooling, DINOv3 with either
pooling; an entry-point or external encoder may provide it too). The maps let
:mod:`medsae.maps` split an SAE latent's pre-activation into per-position contributions.

The embedding is made of ``n`` parts; part ``s`` covers the embedding dimensions
``channels[s] = [lo_s, hi_s)`` and comes from a feature map ``f^s`` of shape
``(C_s, H_s, W_s)`` (``C_s = hi_s - lo_s``) over the model input, split into a regular
``H_s x W_s`` grid. When ``exact`` is True the embedding is, per image ``b``::

    z_b[lo_s:hi_s] = scales[b, s] * (1 / P_s) * sum_p f^s_{b,p}      (P_s = H_s W_s)

(mean pooling: one part, scale 1; EfficientNet multiscale: eight parts, scale
``1 / (||mean_p f^s_p|| sqrt(8))``). When ``exact`` is False (DINOv3 CLS pooling) the
maps are tokens that the embedding is *not* an average of, and every map made from them
is an approximation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from medsae.errors import InputError


@dataclass(frozen=True)
class SpatialFeatures:
    """Feature maps of a batch and how the embedding pools them (see the module docstring).

    Attributes
    ----------
    parts:
        One float32 array ``(B, C_s, H_s, W_s)`` per part of the embedding.
    channels:
        ``(lo, hi)`` embedding dimensions of each part.
    scales:
        float64 ``(B, n_parts)``: the factor applied to each part's spatial mean.
    embedding:
        float32 ``(B, dim)``: the embedding exactly as :meth:`encode` returns it.
    exact:
        True when ``embedding`` equals the scaled spatial means of the parts.
    pooling:
        The encoder's pooling (``mean``, ``multiscale``, ``cls``...).
    method:
        One line saying what the maps are.
    """

    parts: list[np.ndarray]
    channels: list[tuple[int, int]]
    scales: np.ndarray
    embedding: np.ndarray
    exact: bool
    pooling: str
    method: str

    def __post_init__(self) -> None:
        if len(self.parts) != len(self.channels) or self.scales.shape[1:] != (len(self.parts),):
            raise ValueError(
                f"{len(self.parts)} parts, {len(self.channels)} channel ranges and scales of "
                f"shape {self.scales.shape} do not agree"
            )
        for part, (lo, hi) in zip(self.parts, self.channels, strict=True):
            if part.ndim != 4 or part.shape[1] != hi - lo:
                raise ValueError(f"part of shape {part.shape} does not cover dimensions {lo}:{hi}")

    @property
    def batch_size(self) -> int:
        return int(self.embedding.shape[0])

    def pooled(self) -> np.ndarray:
        """``scales * spatial mean`` of each part, concatenated: float64 ``(B, dim)``.

        Equals :attr:`embedding` (up to float rounding) when :attr:`exact` is True.
        """
        cols = [
            part.astype(np.float64).mean(axis=(2, 3)) * self.scales[:, s : s + 1]
            for s, part in enumerate(self.parts)
        ]
        return np.concatenate(cols, axis=1)

    def select(self, index: int) -> SpatialFeatures:
        """The features of one image of the batch (a batch of one)."""
        sl = slice(index, index + 1)
        return SpatialFeatures(
            parts=[p[sl] for p in self.parts],
            channels=list(self.channels),
            scales=self.scales[sl],
            embedding=self.embedding[sl],
            exact=self.exact,
            pooling=self.pooling,
            method=self.method,
        )


@runtime_checkable
class SpatialEncoder(Protocol):
    """An encoder that offers its feature maps (the optional part of the encoder protocol)."""

    name: str
    dim: int
    input_size: int

    def spatial_features(self, images_uint8: np.ndarray) -> SpatialFeatures:
        """Feature maps and pooled embedding of uint8 images ``(B, S, S)`` or ``(B, S, S, 3)``."""
        ...


# Registry name -> the poolings whose maps are exact (said in the error for other encoders).
EXACT_POOLINGS: dict[str, tuple[str, ...]] = {
    "efficientnet-lite0": ("mean", "multiscale"),
    "dinov3": ("mean",),
    "random": ("mean",),
}


def supports_spatial(encoder: Any) -> bool:
    """Whether ``encoder`` offers :meth:`SpatialEncoder.spatial_features`."""
    return callable(getattr(encoder, "spatial_features", None))


def require_spatial(encoder: Any) -> SpatialEncoder:
    """``encoder`` itself when it offers feature maps; else an :class:`InputError` naming it.

    The message names the encoder and the pooling (or encoder) whose maps would work.
    """
    if supports_spatial(encoder):
        return encoder  # type: ignore[no-any-return]
    name = str(getattr(encoder, "name", type(encoder).__name__))
    meta: dict[str, Any] = {}
    try:
        meta = dict(encoder.metadata())
    except Exception:  # an encoder's metadata is informative only here
        meta = {}
    registry = str(meta.get("registry_name") or name)
    raise InputError(
        f"encoder {name}",
        f"{registry} does not offer spatial feature maps, so no per-position map can be made; "
        "encode with an encoder that does: efficientnet-lite0 (pooling mean or multiscale: "
        "exact maps) or dinov3 with --option pooling=mean (exact; pooling=cls gives "
        "approximate maps), or give the encoder a spatial_features method "
        "(medsae.encode.spatial.SpatialEncoder)",
    )


def check_spatial(features: SpatialFeatures, dim: int, what: str) -> None:
    """Raise :class:`InputError` (naming ``what``) unless ``features`` fit an embedding of ``dim``."""
    covered = sorted(features.channels)
    at = 0
    for lo, hi in covered:
        if lo != at or hi <= lo:
            raise InputError(what, f"feature-map parts {covered} do not tile dimensions 0..{dim}")
        at = hi
    if at != dim or features.embedding.shape[1] != dim:
        raise InputError(
            what,
            f"feature maps cover {at} dimensions and the embedding has "
            f"{features.embedding.shape[1]}; the SAE expects {dim}",
        )
