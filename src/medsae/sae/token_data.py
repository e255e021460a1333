"""SAEs on tokens: training rows, pooled codes and per-token codes of a token store.

Training on a token store (``WS/embeddings/<name>-tokens/``, :mod:`medsae.encode.tokens`)
uses the same trainer, architectures, grid and resume as on slices; the rows are the tokens
of the split's slices. The trainer's stream draws every epoch a fresh permutation of *all*
training tokens, so a batch mixes tokens of many slices: a batch of ``B`` tokens out of
``N`` holds a given token of a slice with probability ``B / N``, and all ``c`` tokens of one
slice only with probability about ``(B / N)^c`` (below 1e-100 on the demo).

The ``codes`` stage of a token SAE writes, in ``WS/codes/<enc>-tokens/<run>/``:

* ``codes.npz``: per-slice **max**-pooled codes (``pooling: max`` in ``codes.json``), what
  every slice-level stage reads, so evaluate, rank, interpret, index, report and the
  browser work on a token SAE unchanged;
* ``mean/codes.npz``: per-slice **mean**-pooled codes (the mean over the slice's stored
  tokens, zeros included);
* ``tokens/codes.npz``: per-token codes of the held-out (validation and test) slices,
  sparse, with ``tokens/token_rows.npy`` their token rows in the store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from medsae.encode.tokens import TokenStore, is_token_store
from medsae.sae.codes_io import load_codes, save_codes
from medsae.sae.data import split_rows
from medsae.sae.io import TOKEN_ROWS

MEAN_DIR = "mean"
TOKEN_CODES_DIR = "tokens"
HELD_OUT = ("val", "test")
EVAL_TOKENS = 20_000
"""Most tokens per split scored by the train stage's metrics (a seeded sample)."""


def open_tokens(folder: Path, table: pd.DataFrame, slices_file: Path | str) -> TokenStore | None:
    """The token store in ``folder`` (checked against the slice table), or None."""
    if not is_token_store(folder):
        return None
    store = TokenStore(folder)
    store.check_slices(len(table), slices_file)
    return store


def split_tokens(
    store: TokenStore, table: pd.DataFrame, split: str, cap: int | None = None, seed: int = 0
) -> np.ndarray:
    """Token rows of a split's slices; at most ``cap`` of them (a seeded sample, sorted)."""
    rows = store.token_rows(split_rows(table, split))
    if cap is not None and len(rows) > cap:
        rows = np.sort(np.random.default_rng([seed, len(rows)]).choice(rows, cap, replace=False))
    return rows


def _csr(x: np.ndarray) -> sp.csr_matrix:
    return sp.csr_matrix(x.astype(np.float32, copy=False))


@torch.no_grad()
def token_codes(
    sae: Any, store: TokenStore, held_out: np.ndarray, slices_per_batch: int = 128
) -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """Max- and mean-pooled codes of every slice, and the per-token codes of ``held_out``
    slices: ``(max, mean, token_codes, token_rows)``."""
    n = store.n_slices
    held = np.zeros(n, dtype=bool)
    held[np.asarray(held_out, dtype=np.int64)] = True
    maxes, means, tok_parts, tok_rows = [], [], [], []
    for a in range(0, n, slices_per_batch):
        b = min(a + slices_per_batch, n)
        lo, hi = int(store.slice_ptr[a]), int(store.slice_ptr[b])
        rows = np.arange(lo, hi)
        codes = sae.encode(store.read(rows)).float().cpu().numpy()
        starts = store.slice_ptr[a:b] - lo
        counts = np.diff(store.slice_ptr[a : b + 1])
        maxes.append(_csr(np.maximum.reduceat(codes, starts, axis=0)))
        means.append(_csr(np.add.reduceat(codes, starts, axis=0) / counts[:, None]))
        owner = np.repeat(np.arange(a, b), counts)
        keep = held[owner]
        if keep.any():
            tok_parts.append(_csr(codes[keep]))
            tok_rows.append(rows[keep])
    width = int(sae.cfg.n_latents)
    tokens = sp.vstack(tok_parts).tocsr() if tok_parts else sp.csr_matrix((0, width))
    token_rows = np.concatenate(tok_rows) if tok_rows else np.zeros(0, dtype=np.int64)
    return sp.vstack(maxes).tocsr(), sp.vstack(means).tocsr(), tokens, token_rows


def save_token_codes(
    folder: Path, sae: Any, store: TokenStore, table: pd.DataFrame, meta: dict[str, Any]
) -> sp.csr_matrix:
    """Write the three code files of a token SAE into ``folder``; returns the max codes."""
    held = np.sort(np.concatenate([split_rows(table, s) for s in HELD_OUT]))
    mx, mean, tokens, token_rows = token_codes(sae, store, held)
    save_codes(folder, mx, {**meta, "pooling": "max", "token_store": True})
    save_codes(folder / MEAN_DIR, mean, {**meta, "pooling": "mean", "token_store": True})
    save_codes(
        folder / TOKEN_CODES_DIR, tokens, {**meta, "pooling": "none", "splits": list(HELD_OUT)}
    )
    np.save(folder / TOKEN_CODES_DIR / TOKEN_ROWS, token_rows)
    return mx


def load_token_codes(folder: Path) -> tuple[sp.csr_matrix, np.ndarray]:
    """The per-token codes of the held-out slices and their token rows."""
    codes = load_codes(Path(folder) / TOKEN_CODES_DIR)
    return codes, np.load(Path(folder) / TOKEN_CODES_DIR / TOKEN_ROWS)
