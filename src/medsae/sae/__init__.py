"""medsae.sae: sparse autoencoders (TopK, BatchTopK, Matryoshka, ReLU) on embeddings.

Public API (imported lazily so that ``medsae --help`` does not import torch)::

    fit(data, config, val=None)              train a grid on an array, tensor or batches
    load_sae(run_folder)                     a trained SAE (see docs/ARTIFACTS.md "saes")
    train(workspace, encoder, config)        the ``train`` stage (a grid of runs)
    write_codes(workspace, encoder, run)     the ``codes`` stage
    TrainConfig, CodesConfig                 stage configs
    SAEConfig                                base of every architecture's config
    sae_config(arch=..., ...)                one SAE's config (the architecture's class)
    register, REGISTRY, build_sae            architecture registry (docs/sae.md)
"""

from __future__ import annotations

from medsae._lazy import lazy_exports

_EXPORTS = {
    "fit": "medsae.sae.fitting",
    "TrainedGrid": "medsae.sae.fitting",
    "load_sae": "medsae.sae.checkpoint",
    "save_sae": "medsae.sae.checkpoint",
    "train": "medsae.sae.stage",
    "write_codes": "medsae.sae.stage",
    "TrainConfig": "medsae.sae.config",
    "SAEConfig": "medsae.sae.config",
    "CodesConfig": "medsae.sae.config",
    "expand_grid": "medsae.sae.grid",
    "run_name": "medsae.sae.grid",
    "REGISTRY": "medsae.sae.registry",
    "build_sae": "medsae.sae.registry",
    "register": "medsae.sae.registry",
    "sae_config": "medsae.sae.registry",
    "SparseAutoencoder": "medsae.sae.base",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
