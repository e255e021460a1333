"""Per-position attribution of SAE latents: the maps package's name for
:mod:`medsae.sae.attribution`, where the formulas live (below the evaluation, which scores
attribution maps against organ masks)."""

from __future__ import annotations

from medsae.sae.attribution import (
    LatentMaps,
    area_transfer,
    check_latents,
    input_factor,
    latent_maps,
    sae_name,
    to_pixels,
)

__all__ = [
    "LatentMaps",
    "area_transfer",
    "check_latents",
    "input_factor",
    "latent_maps",
    "sae_name",
    "to_pixels",
]
