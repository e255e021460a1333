"""Names of what the maps package writes into other stages' artifacts (the one place for them)."""

from __future__ import annotations

SCORE_COLUMNS = (
    "pointing",
    "energy_in_mask",
    "pointing_baseline",
    "energy_in_mask_baseline",
    "localisation_slices",
    "localisation_target",
)
"""The localisation columns :func:`medsae.maps.localisation_scores` computes per feature (the
interpret stage stores them in its features table)."""
