"""Configuration of the ``evaluate`` and ``rank`` stages (pydantic, saved in the manifests)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from medsae.config import StageConfig
from medsae.device import device_field
from medsae.precision import PRECISION_HELP, Precision

Part = Literal["reconstruction", "probes", "recovery", "monosemanticity", "concepts"]
PARTS: tuple[Part, ...] = ("reconstruction", "probes", "recovery", "monosemanticity", "concepts")
Split = Literal["train", "val", "test"]
Method = Literal["l1", "mean_diff"]
Mode = Literal["per_class", "shared"]


def _methods() -> list[Method]:
    return ["l1"]


def _modes() -> list[Mode]:
    return ["per_class", "shared"]


def _val_test() -> list[Split]:
    return ["val", "test"]


class EvaluateConfig(StageConfig):
    """How one SAE run is evaluated (``WS/eval/<encoder>/<run>/``)."""

    parts: list[Part] = Field(
        default_factory=lambda: list(PARTS),
        description="Parts to run; the others are recorded as skipped in skipped_tasks.json. "
        "'recovery' needs 'probes' (the dense ROC-AUC is its denominator) and runs them if asked.",
    )
    seed: int = Field(
        default=0, description="Seed of every random choice (training sample, baselines)."
    )
    batch_size: int = Field(
        default=4096, ge=1, description="Rows per batch when streaming embeddings through the SAE."
    )
    device: str = device_field()
    precision: Precision = Field(
        default="fp32",
        description=PRECISION_HELP + " Used by the reconstruction part; default 'fp32'.",
    )
    headline_split: Split = Field(
        default="test",
        description="Split whose figures go into summary.json (r2, l0, alive, recovery, AUROC): "
        "reported, never used to choose a configuration.",
    )
    selection_split: Literal["val"] = Field(
        default="val",
        description="Split of every figure `medsae rank` chooses by (summary.json 'selection': "
        "recovery, the Table 1 term, monosemanticity on this split only); test figures are "
        "reported, never used to choose.",
    )
    # Probes
    max_train: int = Field(
        default=10_000,
        ge=10,
        description="Training slices for every probe (seeded sample of the train split; paper: 10,000).",
    )
    max_eval: int | None = Field(
        default=50_000,
        ge=10,
        description="Cap on the validation and test slices scored (seeded sample); None = all.",
    )
    min_examples: int = Field(
        default=10,
        ge=1,
        description="A class is kept only when it has at least this many slices in the training "
        "sample and in the validation split (the test split never decides); a short class is "
        "dropped from its task, a task left with fewer than two classes is skipped, each with "
        "the reason.",
    )
    l2_select: Literal["fixed", "val"] = Field(
        default="fixed",
        description="L2 strength of the probes and the recovery refits: 'fixed' = C = probe_c for "
        "every classifier (the paper's fixed C = 1), so validation only scores; 'val' = the "
        "strength of l2_grid / recovery_l2_grid with the best validation ROC-AUC per classifier "
        "(validation then also tunes the probes whose figures rank the runs).",
    )
    probe_c: float = Field(
        default=1.0,
        gt=0,
        description="Inverse L2 strength when l2_select = 'fixed': lambda = 1 / (C n), n the "
        "classifier's training slices (scikit-learn's C with class_weight='balanced').",
    )
    l2_grid: list[float] = Field(
        default_factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1],
        description="L2 strengths (lambda, on the class-balanced mean log-loss) tried for every probe "
        "when l2_select = 'val'; each one-vs-rest classifier keeps the one with the best "
        "validation ROC-AUC.",
    )
    max_iter: int = Field(
        default=100, ge=1, description="L-BFGS iterations of a probe fit (all tasks jointly)."
    )
    dense_normalize: Literal["none", "l2"] = Field(
        default="l2",
        description="Read-time transform of dense embeddings before standardisation (paper: l2).",
    )
    structure_tasks: bool = Field(
        default=True, description="Probe the presence of every structure."
    )
    group_tasks: bool = Field(
        default=True, description="Probe the presence of every anatomical group."
    )
    # Recovery
    recovery_ns: list[int] = Field(
        default_factory=lambda: [1, 2, 3, 5, 10, 20, 30, 50, 75, 100],
        description="Numbers of sparse features kept per one-vs-rest classifier (the paper's grid).",
    )
    recovery_methods: list[Method] = Field(
        default_factory=_methods,
        description="Per-class feature selection rules: 'l1' = order of entry on an L1-regularised "
        "logistic path; 'mean_diff' = top |mean(pos) - mean(neg)| of the raw codes (SAEBench "
        "sparse probing).",
    )
    recovery_modes: list[Mode] = Field(
        default_factory=_modes,
        description="'per_class': each one-vs-rest classifier keeps its own N latents (rules of "
        "recovery_methods); 'shared': one ranking per task by the mean |coefficient| of the full "
        "sparse probe across classes, every class keeps the same N (the paper's rule).",
    )
    recovery_dense_floor: float = Field(
        default=0.55,
        ge=0.0,
        le=1.0,
        description="Tasks whose dense validation ROC-AUC is below this are left out of every "
        "recovery mean (the paper: 0.55), so a near-chance task cannot score a ratio near 1.",
    )
    table1_mode: Mode = Field(
        default="shared",
        description="Recovery curves behind the Table 1 term mean_n_features ('shared' = the "
        "paper's ranking; 'per_class' = headline_method per class).",
    )
    table1_dense_min: float = Field(
        default=0.6,
        ge=0.0,
        le=1.0,
        description="mean_n_features averages over tasks whose dense ROC-AUC exceeds this (paper: 0.6).",
    )
    table1_unmet: Literal["paper", "grid"] = Field(
        default="paper",
        description="A threshold a task never reaches counts: 'paper' = the largest N any task "
        "needed for it + 1 (max(recovery_ns) if none reached it); 'grid' = max(recovery_ns) + 1.",
    )
    headline_method: Method = Field(
        default="l1",
        description="Per-class selection rule of recovery_at_10_per_class (the headline "
        "recovery_at_10 is the shared mode).",
    )
    recovery_l2_grid: list[float] = Field(
        default_factory=lambda: [1e-3, 1e-2],
        description="L2 strengths tried for each N-feature refit when l2_select = 'val' "
        "(chosen on validation).",
    )
    recovery_max_iter: int = Field(
        default=50, ge=1, description="L-BFGS iterations of each N-feature refit."
    )
    l1_path_length: int = Field(
        default=12, ge=2, description="Number of lambdas on the L1 path (geometric)."
    )
    l1_path_ratio: float = Field(
        default=1e-3, gt=0, lt=1, description="Smallest lambda / largest lambda on the L1 path."
    )
    l1_iter: int = Field(
        default=10, ge=1, description="Proximal-gradient iterations per lambda of the L1 path."
    )
    # Monosemanticity
    mono_splits: list[Split] = Field(
        default_factory=_val_test,
        description="Splits whose slices are searched for top activations: held-out slices "
        "(the paper used val only; val + test gives more subjects on small datasets).",
    )
    mono_top_n: int = Field(
        default=10,
        ge=2,
        description="Top-activating slices per feature, one per subject (paper: 10).",
    )
    mono_baseline_draws: int = Field(
        default=200, ge=1, description="Random sets drawn for the coherence baseline."
    )
    mono_top_features: int = Field(
        default=10,
        ge=1,
        description="Config score = mean score of this many best-scoring features (paper: 10).",
    )
    # Concepts
    concept_splits: list[Split] = Field(
        default_factory=_val_test,
        description="Held-out splits on which concepts are matched.",
    )
    concept_min_fires: int = Field(
        default=5, ge=1, description="A latent needs this many firing slices to get a concept."
    )
    # Organ rediscovery (SAEs on a token store only)
    organ_max_slices: int = Field(
        default=256,
        ge=1,
        description="Organ rediscovery: validation slices (choosing each structure's best "
        "latent) and test slices (scoring it), each a seeded sample of at most this many.",
    )
    organ_min_tokens: int = Field(
        default=5,
        ge=1,
        description="Organ rediscovery: a structure is scored when it has at least this many "
        "positive tokens in both sets.",
    )
    organ_fit_tokens: int = Field(
        default=20_000,
        ge=10,
        description="Organ rediscovery: training tokens the PCA and k-means baselines are fitted on.",
    )
    organ_attribution_run: str | None = Field(
        default=None,
        description="Organ rediscovery: the image-level SAE whose attribution maps are compared "
        "(default: the token SAE's run name when the source encoder has it, else its first run).",
    )

    @field_validator("recovery_ns")
    @classmethod
    def _sorted_ns(cls, v: list[int]) -> list[int]:
        if not v or any(n < 1 for n in v):
            raise ValueError("recovery_ns must be positive integers")
        return sorted(set(v))

    @field_validator("l2_grid", "recovery_l2_grid")
    @classmethod
    def _positive_grid(cls, v: list[float]) -> list[float]:
        if not v or any(x <= 0 for x in v):
            raise ValueError("l2_grid must hold positive numbers")
        return sorted(set(v))


class RankConfig(StageConfig):
    """How configurations are ranked (``WS/ranking/``), the paper's Table 1."""

    performance_term: Literal["mean_n_features", "recovery_at_10"] = Field(
        default="mean_n_features",
        description="Performance term of the combined rank, read on the selection split: "
        "'mean_n_features' = the paper's mean number of features to reach 50..100% of dense "
        "(lower is better); 'recovery_at_10' = mean ROC-AUC(10) / dense ROC-AUC.",
    )

    rank_within_encoder: bool = Field(
        default=True,
        description="Rank configurations within each encoder (the paper ranks each model's grid); "
        "the overall rank always compares every row.",
    )
    figure_dpi: int = Field(default=120, ge=50, description="Resolution of the PNG figures.")
