"""Intensity: CT windows (one table, chosen by study type), multi-window RGB, MRI scaling.

A window is ``(centre, width)`` in Hounsfield units: intensities in
``[centre - width / 2, centre + width / 2]`` map linearly to 0..255, values outside are
clipped. ``CT_WINDOWS`` is the one place for the presets; they follow the paper's protocol
(wide windows that keep lung, soft tissue and bone visible in one image).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from medsae.data.geometry import slowest_axis

# (centre, width) in HU by normalised study type (lower case, no "ct " prefix).
CT_WINDOWS: Mapping[str, tuple[float, float]] = {
    "thorax-abdomen-pelvis": (-100.0, 1400.0),
    "neck-thorax-abdomen-pelvis": (-100.0, 1400.0),
    "thorax-abdomen": (-100.0, 1400.0),
    "abdomen-pelvis": (50.0, 1000.0),
    "abdomen": (50.0, 1000.0),
    "thorax": (-200.0, 1400.0),
    "chest": (-200.0, 1400.0),
    "thorax-neck": (-200.0, 1400.0),
    "neck": (50.0, 1000.0),
    "pelvis": (80.0, 1400.0),
    "whole body": (-50.0, 1400.0),
    "polytrauma": (-50.0, 1400.0),
    "head": (40.0, 400.0),
    "polytrauma head": (40.0, 400.0),
    "angiography thorax-abdomen-pelvis": (120.0, 1000.0),
    "angiography abdomen-pelvis": (120.0, 1000.0),
    "angiography head": (100.0, 900.0),
    "angiography neck": (100.0, 900.0),
    "angiography thorax": (100.0, 1000.0),
    "heart": (120.0, 1000.0),
    "spine": (200.0, 2000.0),
    "hip right": (200.0, 2000.0),
    "hip left": (200.0, 2000.0),
    "upper leg left": (200.0, 2000.0),
    "lower limb left": (200.0, 2000.0),
    "upper limb both": (200.0, 2000.0),
    "extremities": (200.0, 2000.0),
}

# Channels of the multi-window RGB image: (name, (centre, width)).
MULTI_WINDOWS: tuple[tuple[str, tuple[float, float]], ...] = (
    ("lung", (-600.0, 1500.0)),
    ("soft_tissue", (40.0, 400.0)),
    ("bone", (400.0, 1800.0)),
)


def normalise_study_type(study_type: str | None) -> str | None:
    """Lower case, single spaces, without a leading modality word ('ct thorax' -> 'thorax')."""
    if study_type is None:
        return None
    text = " ".join(str(study_type).strip().lower().split())
    text = re.sub(r"^(ct|mr|mri)\s+", "", text)
    return text or None


def ct_window(
    study_type: str | None, default: tuple[float, float]
) -> tuple[tuple[float, float], bool]:
    """The (centre, width) window for a study type and whether it came from the table.

    Unknown or missing study types get ``default`` (the caller counts them).
    """
    key = normalise_study_type(study_type)
    if key is not None and key in CT_WINDOWS:
        return CT_WINDOWS[key], True
    return (float(default[0]), float(default[1])), False


def window_bounds(center: float, width: float) -> tuple[float, float]:
    """(low, high) intensities of a window: centre -/+ width / 2."""
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    return center - width / 2.0, center + width / 2.0


def to_uint8(volume: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``[low, high]`` linearly to 0..255 (clipped, rounded): ``255 (v - low) / (high - low)``."""
    if not high > low:
        high = low + 1.0
    scale = np.float32(255.0 / (high - low))
    # Same memory layout as the input (a reoriented view keeps its order), so both arrays
    # are walked in memory order; chunks of about 1 MB along the slowest axis stay in cache.
    out = np.empty_like(volume, dtype=np.uint8)
    if out.size == 0:
        return out
    slow = slowest_axis(volume)
    n = volume.shape[slow]
    chunk = max(1, int(2**18 // max(1, volume.size // max(1, n))))
    for s in range(0, n, chunk):
        sl = (slice(None),) * slow + (slice(s, s + chunk),)
        part = np.subtract(volume[sl], np.float32(low), dtype=np.float32)
        part *= scale
        np.clip(part, 0.0, 255.0, out=part)
        np.rint(part, out=part)
        out[sl] = part
    return out


def mri_bounds(volume: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """MRI scaling range: the given percentiles of the foreground (voxels > 0).

    A volume without positive voxels gets (0, 1).
    """
    step = max(1, volume.size // 4_000_000)  # a regular subsample keeps this fast on large volumes
    flat = volume.reshape(-1, order="A")[::step]
    fg = flat[flat > 0]
    if fg.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(fg.astype(np.float32), [percentiles[0], percentiles[1]])
    if not hi > lo:
        hi = lo + 1.0
    return float(lo), float(hi)
