"""Registry: architecture name -> (module class, config class)."""

from __future__ import annotations

from medsae.sae.base import SparseAutoencoder
from medsae.sae.config import SAEConfig
from medsae.sae.matryoshka import MatryoshkaBatchTopKSAE, MatryoshkaPerLevelSAE
from medsae.sae.relu import ReLUSAE
from medsae.sae.topk import BatchTopKSAE, TopKSAE

REGISTRY: dict[str, tuple[type[SparseAutoencoder], type[SAEConfig]]] = {
    "topk": (TopKSAE, SAEConfig),
    "batchtopk": (BatchTopKSAE, SAEConfig),
    "matryoshka": (MatryoshkaBatchTopKSAE, SAEConfig),
    "matryoshka-perlevel": (MatryoshkaPerLevelSAE, SAEConfig),
    "relu": (ReLUSAE, SAEConfig),
}


def build_sae(cfg: SAEConfig, fast: bool = True, seed: int = 0) -> SparseAutoencoder:
    """Instantiate the module registered for ``cfg.arch``."""
    if cfg.arch not in REGISTRY:
        raise ValueError(f"unknown SAE architecture {cfg.arch!r}; known: {sorted(REGISTRY)}")
    cls, _ = REGISTRY[cfg.arch]
    return cls(cfg, fast=fast, seed=seed)
