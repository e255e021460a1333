"""Scores of one pixel map against one mask: the maps package's name for
:mod:`medsae.metrics.pointing`, where the formulas live (the evaluation's organ
rediscovery uses them too)."""

from __future__ import annotations

from medsae.metrics.pointing import (
    POINTING_TOLERANCE,
    SliceScore,
    energy_share,
    gaussian_blob,
    pointing_hit,
    score_map,
    spread,
)

__all__ = [
    "POINTING_TOLERANCE",
    "SliceScore",
    "energy_share",
    "gaussian_blob",
    "pointing_hit",
    "score_map",
    "spread",
]
