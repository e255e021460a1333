"""Scores of one pixel map against one mask: the pointing game and the energy inside it.

Formulas and conventions: :mod:`medsae.maps.localisation` (the pointing game of Zhang et
al. 2016 with their tolerance scaled to the slice, a flat map missing; the energy share of
the map's positive part; the centred Gaussian-blob baseline).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POINTING_TOLERANCE = 15 / 224
"""Pointing-game tolerance as a fraction of the slice side: Zhang et al.'s 15 pixels at 224."""


@dataclass(frozen=True)
class SliceScore:
    """The localisation measures of one map on one slice (and its Gaussian-blob baseline)."""

    pointing: float
    energy: float
    pointing_baseline: float
    energy_baseline: float
    energy_image: float = float("nan")


def gaussian_blob(size: int, sigma_rc: tuple[float, float]) -> np.ndarray:
    """A centred Gaussian ``(size, size)`` with row / column standard deviations ``sigma_rc``."""
    centre = (size - 1) / 2
    r = (np.arange(size) - centre) / max(sigma_rc[0], 1e-6)
    c = (np.arange(size) - centre) / max(sigma_rc[1], 1e-6)
    return np.asarray(np.exp(-0.5 * r[:, None] ** 2) * np.exp(-0.5 * c[None, :] ** 2))


def spread(weights: np.ndarray) -> tuple[float, float]:
    """Standard deviations of the row and column coordinates under non-negative ``weights``
    (at least 0.5 pixel; the whole image's spread when the weights are all zero)."""
    h, w = weights.shape
    total = float(weights.sum())
    if not total > 0:
        return (h / np.sqrt(12), w / np.sqrt(12))
    rows = weights.sum(axis=1) / total
    cols = weights.sum(axis=0) / total
    r, c = np.arange(h), np.arange(w)
    var_r = float(rows @ (r - rows @ r) ** 2)
    var_c = float(cols @ (c - cols @ c) ** 2)
    return (max(np.sqrt(var_r), 0.5), max(np.sqrt(var_c), 0.5))


def energy_share(weights: np.ndarray, mask: np.ndarray) -> float:
    """``sum(weights[mask]) / sum(weights)`` of non-negative weights (NaN when they sum to 0)."""
    total = float(weights.sum())
    return float(weights[mask].sum()) / total if total > 0 else float("nan")


def pointing_hit(pixel_map: np.ndarray, mask: np.ndarray, tolerance: float = 0.0) -> float:
    """1.0 when the map's peak lies within ``tolerance`` pixels of ``mask``, else 0.0.

    The peak is the first maximum in row-major order; a flat map has none and misses.
    """
    values = np.asarray(pixel_map, dtype=np.float64)
    if not values.size or not float(values.max()) > float(values.min()):
        return 0.0
    peak = np.unravel_index(int(np.argmax(values)), values.shape)
    if mask[peak]:
        return 1.0
    if tolerance <= 0 or not mask.any():
        return 0.0
    rows, cols = np.nonzero(mask)
    dist = np.sqrt((rows - peak[0]) ** 2 + (cols - peak[1]) ** 2).min()
    return float(dist <= tolerance)


def score_map(
    pixel_map: np.ndarray,
    mask: np.ndarray,
    tolerance: float = 0.0,
    image_map: np.ndarray | None = None,
) -> SliceScore:
    """Pointing game and energy inside ``mask`` of one pixel map, and of its Gaussian blob.

    ``tolerance``: pointing-game tolerance in pixels. ``image_map``: the map without the
    decoder-bias term (its energy share is ``energy_image``; NaN when not given).
    """
    if pixel_map.shape != mask.shape:
        raise ValueError(f"map {pixel_map.shape} and mask {mask.shape} differ in shape")
    positive = np.clip(np.asarray(pixel_map, dtype=np.float64), 0.0, None)
    blob = gaussian_blob(pixel_map.shape[0], spread(positive))
    image = (
        float("nan")
        if image_map is None
        else energy_share(np.clip(np.asarray(image_map, dtype=np.float64), 0.0, None), mask)
    )
    return SliceScore(
        pointing=pointing_hit(pixel_map, mask, tolerance),
        energy=energy_share(positive, mask),
        pointing_baseline=pointing_hit(blob, mask, tolerance),
        energy_baseline=energy_share(blob, mask),
        energy_image=image,
    )
