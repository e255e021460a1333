"""Configuration of the SAE stages: one SAE (:class:`SAEConfig`), a training grid
(:class:`TrainConfig`) and the sparse-codes stage (:class:`CodesConfig`).

Every field is documented; :class:`TrainConfig` expands into one :class:`SAEConfig` per valid
(architecture, dictionary ladder, k ladder) combination with :func:`expand_grid`.
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from medsae.config import StageConfig
from medsae.device import device_field

Arch = Literal["topk", "batchtopk", "matryoshka", "matryoshka-perlevel", "relu"]
InputTransform = Literal["none", "l2", "scale"]
ARCHES: tuple[str, ...] = ("topk", "batchtopk", "matryoshka", "matryoshka-perlevel", "relu")


class SAEConfig(StageConfig):
    """One sparse autoencoder: architecture, sizes and the options it was trained with.

    Saved as ``cfg.json`` in the run folder; :func:`medsae.sae.load_sae` rebuilds the module
    from it.
    """

    arch: Arch = Field(description="Architecture name in the registry (medsae.sae.registry).")
    d_in: int = Field(gt=0, description="Input (embedding) dimension.")
    n_latents: int = Field(gt=0, description="Dictionary size: the number of latents.")
    levels: list[int] = Field(
        default_factory=list,
        description="Matryoshka prefix sizes, increasing, the last equal to n_latents "
        "(just [n_latents] for the flat architectures).",
    )
    k: int | None = Field(
        default=None,
        gt=0,
        description="Active latents per sample (TopK) or mean per sample (BatchTopK).",
    )
    k_levels: list[int] | None = Field(
        default=None,
        description="matryoshka-perlevel only: a separate BatchTopK k for each level (same length as levels).",
    )
    level_weights: list[float] | None = Field(
        default=None,
        description="Matryoshka loss weight of each level's reconstruction (default: 1 each, i.e. summed).",
    )
    l1_coefficient: float = Field(
        default=1e-3, ge=0, description="relu only: L1 penalty on the codes."
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
    k_aux: int | None = Field(
        default=None,
        ge=0,
        description="AuxK: latents used to model the residual (default d_in // 2); 0 disables.",
    )
    aux_coefficient: float = Field(default=1 / 32, ge=0, description="AuxK loss coefficient.")
    dead_after_samples: int = Field(
        default=1_000_000,
        gt=0,
        description="A latent is dead after this many training samples without firing.",
    )
    threshold_decay: float = Field(
        default=0.99,
        ge=0,
        lt=1,
        description="BatchTopK families: decay of the running mean of the smallest kept activation per batch, "
        "exported as the JumpReLU threshold.",
    )
    encoder: str = Field(
        default="", description="Encoder whose embeddings this SAE was trained on."
    )
    run: str = Field(
        default="", description="Run name (deterministic from the config, see run_name)."
    )

    @model_validator(mode="after")
    def _check(self) -> SAEConfig:
        if not self.levels:
            self.levels = [self.n_latents]
        levels = self.levels
        if any(b <= a for a, b in itertools.pairwise(levels)) or levels[0] <= 0:
            raise ValueError(f"levels must be positive and strictly increasing, got {levels}")
        if levels[-1] != self.n_latents:
            raise ValueError(
                f"the last level ({levels[-1]}) must equal n_latents ({self.n_latents})"
            )
        if self.arch in ("topk", "batchtopk", "relu") and len(levels) != 1:
            raise ValueError(f"arch {self.arch!r} has one level, got levels {levels}")
        if self.arch != "relu":
            if self.k is None:
                raise ValueError(f"arch {self.arch!r} needs k")
            if self.k > self.n_latents:
                raise ValueError(
                    f"k={self.k} is larger than the dictionary ({self.n_latents} latents)"
                )
        if self.arch == "matryoshka-perlevel":
            if self.k_levels is None or len(self.k_levels) != len(levels):
                raise ValueError(
                    f"matryoshka-perlevel needs one k per level: levels {levels}, k_levels {self.k_levels}"
                )
            for kk, m in zip(self.k_levels, levels, strict=True):
                if kk <= 0 or kk > m:
                    raise ValueError(f"k={kk} is invalid for level {m} (need 0 < k <= level)")
        if self.level_weights is not None and len(self.level_weights) != len(levels):
            raise ValueError(
                f"level_weights {self.level_weights} must have one weight per level {levels}"
            )
        return self

    @property
    def weights(self) -> list[float]:
        """Loss weight of each level (1 each unless configured)."""
        return (
            list(self.level_weights) if self.level_weights is not None else [1.0] * len(self.levels)
        )

    @property
    def aux_k(self) -> int:
        """k of the AuxK loss: ``k_aux`` or ``d_in // 2``, never more than the dictionary."""
        kk = self.d_in // 2 if self.k_aux is None else self.k_aux
        return min(kk, self.n_latents)


def run_name(cfg: SAEConfig) -> str:
    """The run name, deterministic from the config.

    ``matryoshka-perlevel_D128-512-2048-8192_K5-10-20-40``, ``matryoshka_D128-512_K40``,
    ``topk_D8192_K40``, ``relu_D8192_L1-0.001``.
    """
    d = "D" + "-".join(str(m) for m in cfg.levels)
    if cfg.arch == "relu":
        return f"relu_{d}_L1-{cfg.l1_coefficient:g}"
    ks = cfg.k_levels if cfg.arch == "matryoshka-perlevel" and cfg.k_levels else [cfg.k]
    return f"{cfg.arch}_{d}_K" + "-".join(str(x) for x in ks)


class TrainConfig(StageConfig):
    """The ``train`` stage: a grid of SAEs trained together in one pass over the data.

    The grid is every (arch, dictionary ladder, k ladder) combination. Matryoshka-per-level
    uses the whole k ladder (one k per level); the others use the ladder's last k on the
    ladder's full dictionary (TopK/BatchTopK: one level, the last one). Invalid combinations
    (k larger than a level, ladders of different lengths) are skipped and listed.
    """

    arch: list[Arch] = Field(
        default_factory=lambda: ["matryoshka"],  # type: ignore[arg-type]
        description="Architectures to train.",
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
    device: str = device_field()
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


def expand_grid(
    cfg: TrainConfig, d_in: int, encoder: str = ""
) -> tuple[list[SAEConfig], list[dict[str, str]]]:
    """The SAEs of a grid and the skipped combinations (each ``{"combo", "reason"}``).

    Duplicate run names (e.g. two k ladders ending with the same k for a flat architecture)
    are trained once.
    """
    runs: list[SAEConfig] = []
    skipped: list[dict[str, str]] = []
    seen: set[str] = set()
    for arch in cfg.arch:
        for levels in cfg.levels:
            for ks in cfg.k:
                combo = f"{arch} levels={levels} k={ks}"
                lv = [levels[-1]] if arch in ("topk", "batchtopk", "relu") else list(levels)
                kwargs: dict[str, object] = {}
                if arch == "matryoshka-perlevel":
                    if len(ks) != len(lv):
                        skipped.append(
                            {"combo": combo, "reason": f"{len(ks)} k values for {len(lv)} levels"}
                        )
                        continue
                    bad = [(kk, m) for kk, m in zip(ks, lv, strict=True) if kk > m]
                    if bad:
                        skipped.append(
                            {"combo": combo, "reason": f"k={bad[0][0]} > level {bad[0][1]}"}
                        )
                        continue
                    kwargs["k_levels"] = list(ks)
                if arch != "relu" and ks[-1] > lv[-1]:
                    skipped.append(
                        {"combo": combo, "reason": f"k={ks[-1]} > dictionary size {lv[-1]}"}
                    )
                    continue
                if arch.startswith("matryoshka") and cfg.level_weights is not None:
                    if len(cfg.level_weights) != len(lv):
                        skipped.append(
                            {
                                "combo": combo,
                                "reason": "level_weights length differs from the ladder",
                            }
                        )
                        continue
                    kwargs["level_weights"] = list(cfg.level_weights)
                try:
                    sae = SAEConfig(
                        arch=arch,
                        d_in=d_in,
                        n_latents=lv[-1],
                        levels=lv,
                        k=None if arch == "relu" else ks[-1],
                        l1_coefficient=cfg.l1_coefficient,
                        input_transform=cfg.input_transform,
                        k_aux=cfg.k_aux,
                        aux_coefficient=cfg.aux_coefficient,
                        dead_after_samples=cfg.dead_after_samples,
                        threshold_decay=cfg.threshold_decay,
                        encoder=encoder,
                        **kwargs,  # type: ignore[arg-type]
                    )
                except ValueError as e:
                    skipped.append({"combo": combo, "reason": str(e).splitlines()[-1]})
                    continue
                name = run_name(sae)
                if name in seen:
                    continue
                seen.add(name)
                sae.run = name
                runs.append(sae)
    return runs, skipped


class CodesConfig(StageConfig):
    """The ``codes`` stage: sparse codes of every slice (all splits) for a trained SAE."""

    batch_size: int = Field(default=4096, gt=0, description="Rows encoded at once.")
    device: str = device_field()
    chunk_rows: int = Field(
        default=65536, gt=0, description="Rows read from the embedding store at once."
    )
