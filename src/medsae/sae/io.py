"""File names of the train and codes stages' artifacts (the one place for them).

``WS/saes/<encoder>/<run>/`` holds a checkpoint (``cfg.json`` + ``sae.safetensors``), its
``metrics.json`` and ``history.csv``; ``WS/saes/<encoder>/grid.json`` describes the grid;
``WS/codes/<encoder>/<run>/`` holds ``codes.npz``, ``codes.json`` and ``latent_stats.npz``.
"""

from __future__ import annotations

from medsae.workspace import Workspace

CFG = "cfg.json"
"""The SAE's configuration (architecture, sizes, encoder, input transform)."""
WEIGHTS = "sae.safetensors"
"""The SAE's tensors in the inference form."""
METRICS = "metrics.json"
"""Per-split, per-level reconstruction and sparsity figures of a trained run."""
HISTORY = "history.csv"
"""Training history (one row per logged step)."""
GRID = "grid.json"
"""The trained grid: runs, shared settings, runs whose AuxK never engages."""
TRAIN_STATE = "train_state.pt"
"""Resumable optimiser and sampler state (removed when training finishes)."""
EXPORT_SAELENS_WEIGHTS = "sae_weights.safetensors"
"""The tensors of an export for SAELens (``medsae export --to saelens``); its ``cfg.json`` is
:data:`CFG`, as is a sparsify export's, whose tensors are :data:`WEIGHTS`."""
EXPORT_MODEL_CARD = "README.md"
"""The model card of an export (Hugging Face model-card convention)."""
CODES = "codes.npz"
"""Sparse codes of every slice (CSR arrays)."""
CODES_META = "codes.json"
"""Metadata of the codes (encoder, run, latents, levels, non-zeros)."""
CODES_STATS = "latent_stats.npz"
"""Per-latent statistics of the codes over every row (non-zeros, sum and maximum)."""


def trained_runs(ws: Workspace, encoder: str) -> list[str]:
    """Finished SAE runs of an encoder in a workspace (run folders holding :data:`CFG`)."""
    base = ws.saes(encoder)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / CFG).is_file())


TOKEN_ROWS = "token_rows.npy"
"""The token rows (in the token store) of a token SAE's per-token codes."""
