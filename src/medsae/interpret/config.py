"""Configuration of the ``interpret`` stage (its endpoint is :class:`medsae.llm.config.LLMConfig`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from medsae.config import StageConfig
from medsae.device import device_field
from medsae.llm.config import LLMConfig

__all__ = ["InterpretConfig", "LLMConfig"]


class InterpretConfig(StageConfig):
    """Which features are described, how, and how the descriptions are scored.

    Feature statistics use the training split; detection and ranking scores use the held-out
    splits (``score_splits``), so a description is never scored on the slices it came from;
    with ``select = "top_n"`` features are chosen on ``selection_split``, never a scoring split.
    """

    describer: Literal["offline", "llm"] = Field(
        default="offline",
        description="offline: from label statistics, no model; llm: an OpenAI-compatible VLM/LLM.",
    )
    scorer: Literal["embedding", "labels", "llm"] = Field(
        default="embedding",
        description="Scorer of the headline detection numbers: embedding (offline text embedder), "
        "labels (ground-truth labels named by the description) or llm (the endpoint judges slices).",
    )
    select: Literal["all", "top_n"] = Field(
        default="all", description="Describe every alive feature, or the top N."
    )
    top_n: int = Field(
        default=250, ge=1, description="Number of features described when select = top_n."
    )
    rank_by: Literal["concept", "frequency"] = Field(
        default="concept",
        description="Order for top_n: concept = best label AUROC x sqrt(frequency); frequency = "
        "activation frequency; both measured on selection_split only.",
    )
    selection_split: Literal["train", "val"] = Field(
        default="train",
        description="Split on which top_n features are chosen; never one of score_splits "
        "(val: score on test only).",
    )
    min_active: int = Field(
        default=3, ge=1, description="Training activations a feature needs to be alive."
    )
    geometry_concepts: bool = Field(
        default=True,
        description="Add slice-position (edge: outer 15% of the axis) and body-coverage (sliver "
        "< 15%, partial, full >= 30% of the image) labels to the describer and offline scorers.",
    )
    n_top: int = Field(
        default=20, ge=1, description="Top-activating training slices kept (one per subject)."
    )
    n_display: int = Field(
        default=5, ge=1, description="Most diverse of the top slices, shown to the describer."
    )
    n_quantiles: int = Field(
        default=10, ge=2, description="Activation quantile bins sampled per feature."
    )
    n_enrichment: int = Field(
        default=8, ge=1, description="Strongest label enrichments kept per feature."
    )
    n_positive: int = Field(
        default=20, ge=1, description="Held-out activating slices per detection test."
    )
    n_negative_random: int = Field(
        default=10, ge=0, description="Random held-out non-activating slices."
    )
    n_negative_hard: int = Field(
        default=10, ge=0, description="Nearest-neighbour (code space) non-activating slices."
    )
    calibration_draws: int = Field(
        default=5,
        ge=1,
        description="Offline scorers: detection samples drawn from the training split (seeds "
        "seed+1...) and pooled to choose the decision threshold.",
    )
    contrast_draws: int = Field(
        default=5,
        ge=0,
        description="Offline describer: near-miss samples drawn from the training split per "
        "feature (activating slices across quantiles, the most similar non-activating slices "
        "of other stacks, random ones); the rule's labels are chosen by the mean of their "
        "balanced accuracy on all training slices and on these samples (0: all slices only).",
    )
    fit_slices: int = Field(
        default=100_000,
        ge=1,
        description="Most slices of one split that a per-feature scan reads: the offline "
        "describer fits each rule on the feature's activating training slices and a seeded "
        "sample of at most this many non-activating ones (activating ones are sampled to this "
        "many only when a feature fires on more); detection samples draw their hard and random "
        "negatives from a seeded sample of at most this many slices of the split. Splits no "
        "larger are used whole (results as without the cap).",
    )
    hard_negatives: Literal["any", "other-series"] = Field(
        default="other-series",
        description="Where hard negatives come from: 'any' held-out slice, or 'other-series': "
        "only stacks (subject and plane) that hold no positive, so that a hard negative is not "
        "the neighbouring slice of a positive (a near-duplicate just under the threshold).",
    )
    min_positive: int = Field(
        default=3, ge=1, description="Held-out activations needed to score a feature."
    )
    ranking_slices: int = Field(
        default=5, ge=1, description="Held-out slices shown in the ranking protocol."
    )
    ranking_distractors: int = Field(
        default=4, ge=1, description="Other features' descriptions among the choices."
    )
    detection_batch: int = Field(
        default=10, ge=1, description="Slices per request for the llm scorer."
    )
    score_splits: list[Literal["train", "val", "test"]] = Field(
        default=["val", "test"], description="Splits the scores are computed on."
    )
    seed: int = Field(default=0, description="Seed of every sample drawn for scoring.")
    localisation: bool = Field(
        default=True,
        description="Score where each feature fires (pointing game, energy in the mask, beside "
        "a centred Gaussian-blob baseline) on score_splits, from the encoder's feature maps and "
        "the workspace's pixel label maps; 'not computed' (with the reason) without either.",
    )
    localisation_slices: int = Field(
        default=8, ge=1, description="Held-out slices per feature for the localisation scores."
    )
    device: str = device_field()
    llm: LLMConfig = Field(
        default_factory=LLMConfig, description="The endpoint for describer/scorer llm."
    )

    @model_validator(mode="after")
    def _selection_apart_from_scores(self) -> InterpretConfig:
        if self.select == "top_n" and self.selection_split in self.score_splits:
            raise ValueError(
                f"selection_split {self.selection_split!r} is one of score_splits "
                f"{self.score_splits}: features would be chosen on the slices that score them; "
                "select on train, or on val with score_splits = ['test']"
            )
        return self
