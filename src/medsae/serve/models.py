"""Response models of the browser's JSON API (they make up its OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorOut(BaseModel):
    detail: str = Field(description="What went wrong, naming the input.")


class InfoOut(BaseModel):
    workspace: str
    encoder: str | None
    run: str | None
    n_slices: int
    n_latents: int
    levels: list[int]
    has_features: bool = Field(description="A features artifact (descriptions, scores) exists.")
    text_search: str = Field(
        description="'interpret' (medsae.retrieval.language) or 'keyword' (fallback)."
    )
    image_search: bool
    counts: dict[str, dict[str, int]] = Field(description="Slices per modality, plane and split.")
    concepts: list[str] = Field(description="Concepts assigned to features (for filtering).")
    upload_limit_bytes: int
    organ_map: bool = Field(
        False, description="The run is a token SAE scored by organ rediscovery (organ_ap)."
    )


class FeatureOut(BaseModel):
    latent: int
    level: int | None = Field(
        None, description="Smallest Matryoshka prefix that contains the latent."
    )
    frequency: float = Field(description="Fraction of slices where the latent is active.")
    mean_activation: float = Field(description="Mean of the non-zero activations.")
    max_activation: float
    description: str | None = None
    describer: str | None = None
    rule: list[str] | None = Field(
        None,
        description="Literals of the offline describer's rule (features.parquet `rule`; "
        "'not ' marks anatomy the rule needs absent).",
    )
    rule_min: int | None = Field(
        None, description="The rule holds on slices with at least this many of its literals."
    )
    detection_balanced_accuracy: float | None = None
    detection_auroc: float | None = None
    concept: str | None = None
    concept_auroc: float | None = None
    seed_others: int | None = Field(
        None, description="Other seeds of the SAE's configuration (none: trained once)."
    )
    seed_found: int | None = Field(
        None,
        description="Other seeds holding a latent whose decoder row has |cosine| >= 0.7 with "
        "this feature's (found again).",
    )
    seed_cosine: float | None = Field(
        None, description="Mean over the other seeds of the best |cosine| with this feature."
    )
    organ_structure: str | None = Field(
        None, description="Token SAE: the structure whose tokens the latent fires on best."
    )
    organ_ap: float | None = Field(
        None,
        description="Token SAE: average precision of the latent's token activations "
        "against that structure's token mask (held-out test slices).",
    )
    organ_pointing: float | None = Field(
        None, description="Token SAE: pointing game of its native token map on that structure."
    )


class FeatureListOut(BaseModel):
    total: int = Field(description="Features matching the filters (before offset/limit).")
    offset: int
    limit: int
    items: list[FeatureOut]


class SliceRef(BaseModel):
    slice_id: str
    image_url: str | None = Field(
        default=None, description="The slice's PNG; null when the workspace has no images."
    )
    modality: str | None = None
    plane: str | None = None
    subject_key: str | None = None
    split: str | None = None
    activation: float | None = None
    score: float | None = None


class Quantile(BaseModel):
    quantile: float
    activation: float
    slice: SliceRef


class Histogram(BaseModel):
    edges: list[float] = Field(description="Bin edges of the non-zero activations (bins + 1).")
    counts: list[int]
    zeros: int = Field(description="Slices where the latent is zero.")


class Enrichment(BaseModel):
    label: str
    count_active: int
    rate_active: float = Field(description="P(label | feature active).")
    rate_all: float = Field(description="P(label) over all slices where the label is defined.")
    lift: float = Field(description="rate_active / rate_all.")


class ProfileRow(BaseModel):
    label: str
    auroc: float | None = Field(description="AUROC of the activation for the label (training).")
    lift: float = Field(description="P(label | active) / P(label) on training slices.")
    p_active: float = Field(description="P(label | feature active), training slices.")
    p_base: float = Field(description="P(label) over training slices where it is defined.")
    n_active_with_label: int
    n_label: int
    concept_map: bool = Field(description="The label is the feature's concept-map concept.")


class FeatureDetailOut(BaseModel):
    feature: FeatureOut
    top: list[SliceRef]
    histogram: Histogram
    quantiles: list[Quantile]
    enrichment: list[Enrichment]
    profile: list[ProfileRow] = Field(
        default_factory=list,
        description="The concept profile: every label with its training AUROC and lift.",
    )


class FingerprintItem(BaseModel):
    latent: int
    activation: float
    description: str | None = None


class SliceDetailOut(BaseModel):
    slice: SliceRef
    metadata: dict[str, Any]
    fingerprint: list[FingerprintItem]


class SearchOut(BaseModel):
    query: str | None = None
    method: str = Field(description="How the results were found.")
    items: list[SliceRef]
    features: list[dict[str, Any]] = Field(
        default_factory=list, description="Features the search went through."
    )
    upload_kind: str | None = Field(None, description="Detected type of an uploaded file.")
    reading: dict[str, Any] | None = Field(
        None,
        description="How a text query was read: concepts of the label vocabulary (aspect, "
        "labels, negated, how recognised), words not understood, and a one-line summary.",
    )
