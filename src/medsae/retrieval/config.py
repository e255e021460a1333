"""Configs of fingerprint search, text-to-image retrieval and the ``index`` stage."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field

from medsae.config import StageConfig

Split = Literal["train", "val", "test"]
AskMode = Literal["concepts", "coverage", "aspects", "similarity"]
ASK_MODES: tuple[str, ...] = get_args(AskMode)
"""Every way of choosing features for a text query (``AskConfig.mode``)."""


def _splits(*names: Split) -> list[Split]:
    return list(names)


class SearchConfig(StageConfig):
    """Fingerprint retrieval and its evaluation."""

    k: int = Field(
        default=5, ge=1, description="Fingerprint size: the query's top-K active latents."
    )
    n: int = Field(
        default=5, ge=1, description="Results per query in the evaluation (one per subject)."
    )
    eval_queries: int = Field(
        default=500, ge=1, description="Seeded sample of query slices for the evaluation."
    )
    query_splits: list[Split] = Field(
        default_factory=lambda: _splits("test"), description="Splits queries are drawn from."
    )
    gallery_splits: list[Split] = Field(
        default_factory=lambda: _splits("train", "val"),
        description="Splits searched in the evaluation.",
    )
    sweep_k: list[int] = Field(
        default_factory=lambda: [1, 3, 5, 10, 20],
        description="Fingerprint sizes also evaluated (sparse and dense top-K).",
    )
    seed: int = Field(default=0, description="Seed of the query sample.")


class AskConfig(StageConfig):
    """Text-to-image retrieval through SAE features (concept profiles or descriptions)."""

    features: int = Field(
        default=3,
        ge=1,
        description="Features composed per query in the description modes (m; the paper uses 3).",
    )
    n: int = Field(default=10, ge=1, description="Results per query (one per subject).")
    mode: AskMode = Field(
        default="concepts",
        description="'concepts': the query read into concepts of the label vocabulary, every "
        "concept composed through the features its concept profile associates with it "
        "('coverage' where the run has no profiles); "
        "'coverage': among the descriptions that state all of the query's "
        "metadata terms (CT/MRI, plane, sex, age; 'aspects' when none does), the m closest to the "
        "query's anatomy words, plus the m closest to the whole query as a backfill (suits "
        "describers that write conjunctions, like the offline one); 'similarity': the m "
        "descriptions closest to the whole query (paper); "
        "'aspects': one feature per metadata term found in the query (CT/MRI, plane, sex, age) "
        "chosen through its description, the rest of the m features by similarity to the "
        "remaining anatomy words.",
    )
    concept_features: int = Field(
        default=8,
        ge=1,
        description="'concepts' mode: features per concept (best F1 for its labels).",
    )
    concept_min_auroc: float = Field(
        default=0.6,
        ge=0.0,
        le=1.0,
        description="'concepts' mode: a feature stands for a label only with at least this "
        "training AUROC (and a lift above 1).",
    )
    concept_fallback_auroc: float | None = Field(
        default=0.5,
        ge=0.5,
        le=1.0,
        description="'concepts' mode: a concept with no feature at concept_min_auroc takes "
        "those at this looser AUROC floor (None: it is reported as having no feature).",
    )
    concept_min_precision: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="'concepts' mode: a feature stands for a label only when at least this "
        "share of its active training slices (of the query's stratum) carry the label.",
    )
    concept_relative_f1: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="'concepts' mode: a concept's features are kept only with at least this "
        "fraction of the best one's F1 (0 keeps all).",
    )
    concept_evidence: Literal["bayes", "max", "mean"] = Field(
        default="bayes",
        description="'concepts' mode: a concept's evidence on a slice: 'bayes', its probability "
        "from the log likelihood ratios of its features that fire (from the training "
        "profiles, tempered by concept_llr_scale) and the label's base rate, against the other "
        "values of the same kind for modality, plane, sex and age; 'max', the strongest "
        "feature (precision times normalised activation); 'mean', their precision-weighted mean.",
    )
    concept_probes: bool = Field(
        default=True,
        description="'bayes' evidence: modality and plane read by the run's sparse linear "
        "probes over all the SAE's features (probes.npz, fitted on the training slices) "
        "where it has them, instead of the features their profiles associate with them.",
    )
    concept_llr_scale: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="'bayes' evidence: the factor on the summed log likelihood ratios (below 1 "
        "tempers the overconfidence of adding up correlated features).",
    )
    similarity_floor: float = Field(
        default=0.6,
        ge=0.0,
        le=1.0,
        description="Words outside the vocabulary take the meaning of the nearest vocabulary "
        "phrase by sentence embedding when the cosine is at least this; else they are "
        "reported as not understood.",
    )
    metadata_filter: bool = Field(
        default=False,
        description="Also restrict the results by the slices' own modality and plane metadata "
        "to those the query names (answers come from the features alone when off).",
    )
    min_similarity: float = Field(
        default=0.0, description="Descriptions less similar than this are never chosen."
    )
    relative_similarity: float = Field(
        default=0.75,
        ge=0.0,
        le=1.0,
        description="Features matched to one text are kept only if at least this fraction as "
        "similar as the best match (0 keeps all m).",
    )
    normalise: Literal["max", "p99", "none"] = Field(
        default="p99",
        description="Activation scale per feature before weighting ('p99': 99th percentile of active values).",
    )
    coverage_bonus: float = Field(
        default=0.4,
        ge=0.0,
        description="'coverage' mode with anatomy words: the anatomy matches are chosen among "
        "all non-contradicting descriptions by similarity to the anatomy words plus this bonus "
        "times the share of the query's metadata terms they state (0: only the candidates, "
        "the descriptions stating the most terms).",
    )
    backfill: float = Field(
        default=0.5,
        ge=0.0,
        description="'coverage' mode with anatomy words: the candidates closest to the whole "
        "query are added with this total weight relative to the anatomy matches, so that slices "
        "of the right kind are returned after the specific matches (0: none).",
    )
    combine: Literal["sum", "product"] = Field(
        default="product",
        description="How the chosen features' normalised activations a_i (weights w_i) make a "
        "slice's score: 'sum' = sum_i w_i a_i (any feature can carry a slice); 'product' = "
        "prod_i (eps + a_i)^w_i, a soft AND that favours slices on which every feature fires.",
    )
    gallery_splits: list[Split] = Field(
        default_factory=lambda: _splits("val", "test"),
        description="Splits searched when evaluating the query suite (held out from description writing).",
    )


class IndexConfig(StageConfig):
    """The ``index`` stage: fingerprint index plus both retrieval evaluations."""

    search: SearchConfig = Field(default_factory=SearchConfig)
    ask: AskConfig = Field(default_factory=AskConfig)
    text_eval: bool = Field(
        default=True, description="Evaluate the query suite when features.parquet exists."
    )
