"""Spatial feature maps: where in a slice an SAE feature fires, and how well that is localised.

Public API::

    from medsae.maps import latent_maps, to_pixels, localisation_scores, MapMaker

    feats = encoder.spatial_features(images_uint8)          # medsae.encode.spatial
    lm = latent_maps(sae, feats, [j])                        # exact grids for mean pooling
    px = to_pixels(lm.grid[0, 0], size=images_uint8.shape[1])
    res = localisation_scores(ws, encoder, run, feature_table, heldout_rows)
    maker = MapMaker(ws)                                     # per-slice maps for the browser
    png = overlay_png(maker.slice_map(row, j).values)

Formulas: :mod:`medsae.maps.attribution` (attribution), :mod:`medsae.maps.localisation`
(pointing game, energy inside the mask, the Gaussian-blob baseline), docs/maps.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medsae._lazy import lazy_exports

if TYPE_CHECKING:
    from medsae.maps.attribution import LatentMaps, area_transfer, latent_maps, to_pixels
    from medsae.maps.localisation import (
        SCORE_COLUMNS,
        LocalisationResult,
        localisation_scores,
        score_map,
        target_structures,
    )
    from medsae.maps.render import colour_bar_css, composite_png, overlay_png
    from medsae.maps.service import MapMaker, SliceMap

# names resolve on first use: importing medsae.maps (or medsae.maps.render) imports no torch
_EXPORTS = {
    **dict.fromkeys(("LatentMaps", "area_transfer", "latent_maps", "to_pixels"), "attribution"),
    **dict.fromkeys(
        (
            "SCORE_COLUMNS",
            "LocalisationResult",
            "localisation_scores",
            "score_map",
            "target_structures",
        ),
        "localisation",
    ),
    **dict.fromkeys(("colour_bar_css", "composite_png", "overlay_png"), "render"),
    **dict.fromkeys(("MapMaker", "SliceMap"), "service"),
}
__getattr__, __dir__ = lazy_exports(
    __name__, {name: f"{__name__}.{mod}" for name, mod in _EXPORTS.items()}
)

__all__ = [
    "SCORE_COLUMNS",
    "LatentMaps",
    "LocalisationResult",
    "MapMaker",
    "SliceMap",
    "area_transfer",
    "colour_bar_css",
    "composite_png",
    "latent_maps",
    "localisation_scores",
    "overlay_png",
    "score_map",
    "target_structures",
    "to_pixels",
]
