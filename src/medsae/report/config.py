"""Configuration of the ``report`` stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from medsae.config import StageConfig
from medsae.device import device_field


class ReportConfig(StageConfig):
    """How the HTML report is built."""

    encoder: str | None = Field(
        default=None, description="Encoder to show (default: the best run's)."
    )
    run: str | None = Field(
        default=None, description="SAE run to show (default: the best run of the ranking)."
    )
    n_features: int = Field(default=24, ge=0, le=500, description="Feature cards to show.")
    top_slices: int = Field(
        default=8, ge=1, le=32, description="Top-activating slices per feature card."
    )
    thumb_size: int = Field(
        default=128, ge=32, le=512, description="Pixel size of the slice images in the report."
    )
    map_slices: int = Field(
        default=3,
        ge=0,
        le=32,
        description="Top slices per feature card shown with the feature's map overlay (0: none).",
    )
    fingerprint_examples: int = Field(
        default=4, ge=0, le=20, description="Query slices in the fingerprint examples."
    )
    k: int = Field(default=8, ge=1, le=50, description="Results shown per retrieval example.")
    text_search: Literal["interpret", "keyword"] = Field(
        default="interpret",
        description="Text examples through the feature descriptions and the sentence embedder "
        "(medsae.retrieval.service) or the keyword match (no model).",
    )
    title: str = Field(default="medsae report", description="Title of the page.")
    device: str = device_field()
