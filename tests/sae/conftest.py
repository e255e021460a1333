"""Shared helpers of the SAE tests: tiny stores and planted sparse data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from medsae.encode.store import EmbeddingStore, write_store
from medsae.sae.config import TrainConfig

os.environ.setdefault("MEDSAE_PROGRESS", "0")


def planted(
    n: int, d: int, n_feat: int, active: int, seed: int = 0, noise: float = 0.01
) -> np.ndarray:
    """Rows = sum of ``active`` random unit features with positive weights + noise."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n_feat, d))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    x = np.zeros((n, d))
    for i in range(n):
        idx = rng.choice(n_feat, size=active, replace=False)
        x[i] = rng.uniform(0.5, 1.5, size=active) @ feats[idx]
    return (x + noise * rng.normal(size=x.shape)).astype(np.float32)


def make_store(folder: Path, x: np.ndarray, encoder: str = "toy") -> EmbeddingStore:
    half = len(x) // 2
    return write_store(
        folder, encoder, [("shard-00000.npy", x[:half]), ("shard-00001.npy", x[half:])]
    )


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


RESUME_CFG = TrainConfig(
    arch=["topk", "matryoshka"],
    levels=[[16, 64]],
    k=[[2, 4]],
    epochs=2,
    batch_size=64,
    chunk_rows=192,
    checkpoint_every_steps=5,
    dead_after_samples=200,
    log_every_steps=3,
)
"""A small grid with checkpoints every 5 steps and AuxK engaged: the resume tests'."""
