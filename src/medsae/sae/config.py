"""Configuration of the SAE stages: what every SAE holds (:class:`SAEConfig`, subclassed by
each architecture in its own module), a training grid (:class:`TrainConfig`) and the
sparse-codes stage (:class:`CodesConfig`).

Every field is documented; :class:`TrainConfig` expands into one architecture config per
valid (architecture, dictionary ladder, k ladder) combination with
:func:`medsae.sae.grid.expand_grid`.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from medsae.config import StageConfig
from medsae.device import device_field
from medsae.precision import PRECISION_HELP, Precision

InputTransform = Literal["none", "l2", "scale"]


class SAEConfig(StageConfig):
    """What every architecture's configuration holds: sizes, input transform, names.

    Each architecture subclasses it in its own module with ``arch`` a one-name ``Literal``
    and its own fields (``TopKConfig``, ``MatryoshkaConfig``, ...); the registry
    (:mod:`medsae.sae.registry`) validates a run's configuration as the discriminated union
    of the registered classes on ``arch`` (:func:`medsae.sae.registry.sae_config`). Saved as
    ``cfg.json`` in the run folder.
    """

    arch: str = Field(description="Architecture name in the registry (medsae.sae.registry).")
    d_in: int = Field(gt=0, description="Input (embedding) dimension.")
    n_latents: int = Field(gt=0, description="Dictionary size: the number of latents.")
    levels: list[int] = Field(
        default_factory=list,
        description="Nested prefix sizes, increasing, the last equal to n_latents "
        "(just [n_latents] for the flat architectures).",
    )
    input_transform: InputTransform = Field(
        default="l2",
        description="'none'; 'l2': per-sample L2 normalisation (the paper); 'scale': one factor making "
        "the mean squared norm 1, folded into the weights at export.",
    )
    input_scale: float = Field(
        default=1.0,
        gt=0,
        description="'scale' transform: the factor applied to raw inputs during training.",
    )
    scale_folded: bool = Field(
        default=False,
        description="True once input_scale is folded into the weights (exported checkpoints).",
    )
    dead_after_samples: int = Field(
        default=1_000_000,
        gt=0,
        description="A latent is dead after this many training samples without firing.",
    )
    encoder: str = Field(
        default="", description="Encoder whose embeddings this SAE was trained on."
    )
    run: str = Field(
        default="", description="Run name (deterministic from the config, see run_name)."
    )

    def __new__(cls, *args: Any, **data: Any) -> SAEConfig:
        """``SAEConfig(arch="topk", ...)`` builds the registered architecture's config class
        (the same as :func:`medsae.sae.registry.sae_config`)."""
        if cls is SAEConfig and "arch" in data:
            from medsae.sae.registry import get

            sub = get(str(data["arch"])).config_class
            if sub is not SAEConfig:
                return sub(**data)
        return super().__new__(cls)

    @model_validator(mode="after")
    def _check_levels(self) -> SAEConfig:
        if not self.levels:
            self.levels = [self.n_latents]
        levels = self.levels
        if any(b <= a for a, b in itertools.pairwise(levels)) or levels[0] <= 0:
            raise ValueError(f"levels must be positive and strictly increasing, got {levels}")
        if levels[-1] != self.n_latents:
            raise ValueError(
                f"the last level ({levels[-1]}) must equal n_latents ({self.n_latents})"
            )
        return self

    @property
    def weights(self) -> list[float]:
        """Loss weight of each level (1 each unless the architecture configures them)."""
        return [1.0] * len(self.levels)

    def single_level(self) -> None:
        """Raise unless the configuration has one level (the flat architectures' check)."""
        if len(self.levels) != 1:
            raise ValueError(f"arch {self.arch!r} has one level, got levels {self.levels}")


class TrainConfig(StageConfig):
    """The ``train`` stage: a grid of SAEs trained together in one pass over the data.

    The grid is every (arch, dictionary ladder, k ladder) combination. Matryoshka-per-level
    uses the whole k ladder (one k per level); the others use the ladder's last k on the
    ladder's full dictionary (TopK/BatchTopK: one level, the last one). Invalid combinations
    (k larger than a level, ladders of different lengths) are skipped and listed.
    """

    arch: list[str] = Field(
        default_factory=lambda: ["matryoshka"],
        description="Architectures to train (names in the registry, medsae.sae.registry).",
    )
    levels: list[list[int]] = Field(
        default_factory=lambda: [[128, 512, 2048, 8192]],
        description="Dictionary-size ladders (Matryoshka prefix sizes; the last is the dictionary size).",
    )
    k: list[list[int]] = Field(
        default_factory=lambda: [[5, 10, 20, 40]],
        description="k ladders (one k per level, or a single k).",
    )
    level_weights: list[float] | None = Field(
        default=None, description="Matryoshka loss weights per level (default 1 each: summed)."
    )
    arch_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Options of one architecture's config, by architecture name (e.g. "
        "{'relu': {'l1_coefficient': 0.01}}); they override the shared fields of this table, "
        "and 'levels' / 'k' replace the grid's ladders for that architecture.",
    )
    l1_coefficient: float = Field(default=1e-3, ge=0, description="relu baseline: L1 coefficient.")
    input_transform: InputTransform = Field(
        default="l2", description="Input transform (see SAEConfig)."
    )
    epochs: int = Field(default=100, gt=0, description="Passes over the training split.")
    max_samples: int | None = Field(
        default=None,
        gt=0,
        description="Sample budget: stop after this many training samples (if < epochs).",
    )
    batch_size: int = Field(default=2048, gt=0, description="Samples per optimisation step.")
    lr: float | None = Field(
        default=None,
        gt=0,
        description="Adam learning rate (default 2e-4 / sqrt(n_latents / 16384), per SAE).",
    )
    warmup_fraction: float = Field(
        default=0.02, ge=0, lt=1, description="Linear warm-up, as a fraction of steps."
    )
    lr_schedule: Literal["cosine", "wsd", "constant"] = Field(
        default="cosine",
        description="After the warm-up: cosine decay, 'wsd' (constant, then a linear decay over "
        "the last decay_fraction of the steps) or constant.",
    )
    decay_fraction: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="Decay phase of the 'wsd' schedule, as a fraction of steps.",
    )
    lr_min_ratio: float = Field(
        default=0.0, ge=0, le=1, description="Floor of the decay, relative to lr."
    )
    adam_betas: tuple[float, float] = Field(default=(0.9, 0.999), description="Adam betas.")
    k_aux: int | None = Field(
        default=None, ge=0, description="AuxK k (default d_in // 2; 0 disables AuxK)."
    )
    aux_coefficient: float = Field(default=1 / 32, ge=0, description="AuxK loss coefficient.")
    dead_after_samples: int = Field(
        default=1_000_000,
        gt=0,
        description="Samples without firing after which a latent counts as dead.",
    )
    threshold_decay: float = Field(
        default=0.99, ge=0, lt=1, description="JumpReLU threshold running-mean decay."
    )
    threshold_start_fraction: float = Field(
        default=0.5,
        ge=0,
        lt=1,
        description="The JumpReLU threshold estimate restarts at this fraction of training, so that "
        "early (larger) activations do not bias it.",
    )
    seed: int = Field(default=0, description="Seed of initialisation and shuffling.")
    seeds: list[int] | None = Field(
        default=None,
        description="Train each configuration once per seed: the first seed's run keeps the "
        "configuration's name, the others are named <run>_s<seed> and differ in their "
        "initialisation (the data order is the grid's, shared). Default: one run per "
        "configuration.",
    )
    seeds_for: list[str] | None = Field(
        default=None,
        description="Architectures or run names (without the seed suffix) that train with "
        "every seed of `seeds`; the others train once. Default: every configuration.",
    )
    device: str = device_field()
    precision: Precision = Field(
        default="auto",
        description=PRECISION_HELP + " Default 'auto': bf16 on CUDA, fp32 on the CPU.",
    )
    deterministic: bool = Field(
        default=False,
        description="Use deterministic kernels only (torch.use_deterministic_algorithms; on "
        "CUDA the dense reference kernels instead of the sparse ones, which add with atomics): "
        "two runs give the same weights, more slowly. CPU runs are deterministic either way.",
    )
    threads: int | None = Field(
        default=None, gt=0, description="CPU threads for torch (default: all cores)."
    )
    chunk_rows: int = Field(
        default=65536, gt=0, description="Rows read from the embedding store at once."
    )
    checkpoint_every_steps: int | None = Field(
        default=None, gt=0, description="Write a resumable checkpoint every this many steps."
    )
    checkpoint_every_seconds: float = Field(
        default=300.0, gt=0, description="... or every this many seconds."
    )
    log_every_steps: int = Field(
        default=50, gt=0, description="Training history row every this many steps."
    )
    val_every_epochs: int = Field(
        default=1, gt=0, description="Validation metrics every this many epochs."
    )
    median_sample: int = Field(
        default=4096,
        gt=0,
        description="Training samples used for the geometric median initialising b_dec.",
    )
    fast: bool = Field(
        default=True, description="Use the sparse fast paths (False: the eager reference)."
    )

    @field_validator("arch")
    @classmethod
    def _known_arches(cls, v: list[str]) -> list[str]:
        from medsae.sae.registry import names

        known = names()
        unknown = [a for a in v if a not in known]
        if unknown:
            raise ValueError(f"unknown SAE architecture(s) {unknown}; known: {known}")
        if not v:
            raise ValueError("at least one architecture is needed")
        return v

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or len(set(v)) != len(v) or min(v) < 0):
            raise ValueError(f"seeds must be distinct non-negative integers, got {v}")
        return v

    @field_validator("levels", "k")
    @classmethod
    def _non_empty(cls, v: list[list[int]]) -> list[list[int]]:
        if not v or any(not ladder for ladder in v):
            raise ValueError("ladders must be non-empty lists of positive integers")
        if any(x <= 0 for ladder in v for x in ladder):
            raise ValueError("ladder values must be positive")
        return v

    def lr_for(self, n_latents: int) -> float:
        """Learning rate of an SAE: ``lr`` or ``2e-4 / sqrt(n_latents / 16384)`` (Gao et al.)."""
        return self.lr if self.lr is not None else 2e-4 / math.sqrt(n_latents / 16384)


class CodesConfig(StageConfig):
    """The ``codes`` stage: sparse codes of every slice (all splits) for a trained SAE."""

    batch_size: int = Field(default=4096, gt=0, description="Rows encoded at once.")
    device: str = device_field()
    precision: Precision = Field(
        default="fp32", description=PRECISION_HELP + " Default 'fp32': exact codes."
    )
    chunk_rows: int = Field(
        default=65536, gt=0, description="Rows read from the embedding store at once."
    )
