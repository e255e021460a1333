"""Native token maps: a token SAE's own activation on each token of a slice.

A latent of an SAE trained on a token store (:mod:`medsae.encode.tokens`) has no attribution
to compute: its code on token ``(r, c)`` *is* where it fires. The map shows that code on
every grid cell (nearest upsampling to the stored image size: cell ``(r, c)`` covers pixels
``[r S / G, (r + 1) S / G)``); positions a capped store did not keep show 0. The slice's
activation is the maximum over its tokens (the max-pooled code every slice-level stage
reads).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medsae.encode.tokens import TokenStore
from medsae.maps.service import SliceMap


def token_grid_codes(store: TokenStore, sae: Any, row: int, latent: int) -> np.ndarray:
    """float32 ``(G, G)``: the latent's code on each stored token of slice ``row``."""
    rows = store.token_rows(np.array([int(row)]))
    with torch.no_grad():
        codes = sae.encode(store.read(rows))[:, int(latent)].float().cpu().numpy()
    grid = np.zeros((store.grid, store.grid), dtype=np.float32)
    pos = np.asarray(store.positions[rows], dtype=np.int64)
    grid[pos[:, 1], pos[:, 2]] = codes
    return grid


def native_token_map(store: TokenStore, sae: Any, row: int, latent: int, size: int) -> SliceMap:
    """The :class:`SliceMap` of a token SAE's latent on one slice (module docstring)."""
    grid = token_grid_codes(store, sae, row, latent)
    edges = np.round(np.arange(store.grid + 1) * size / store.grid).astype(np.int64)
    index = np.searchsorted(edges, np.arange(size), side="right") - 1
    values = grid[index][:, index]
    top = float(grid.max())
    return SliceMap(
        row=int(row),
        latent=int(latent),
        values=np.ascontiguousarray(values, dtype=np.float32),
        activation=top,
        pre_activation=top,
        residual=0.0,
        exact=True,
        method=f"native token map: the token SAE's code on each of {store.grid} x "
        f"{store.grid} tokens",
    )
