"""Fixtures of the feature-map tests: SAEs with random weights, a planted-square workspace."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from medsae.data.io import LABEL_MAPS_FILE, label_id
from medsae.data.table import IMAGES_FILE, SLICES_FILE
from medsae.encode.spatial import SpatialFeatures
from medsae.sae.base import SparseAutoencoder
from medsae.sae.checkpoint import save_sae
from medsae.sae.codes_io import save_codes
from medsae.sae.registry import build_sae, sae_config
from medsae.workspace import Workspace


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSAE_PROGRESS", "0")


def random_sae(
    d_in: int,
    n_latents: int = 16,
    transform: str = "l2",
    arch: str = "relu",
    seed: int = 0,
    **cfg: Any,
) -> SparseAutoencoder:
    """An SAE with random unit-scale encoder rows and non-zero biases (so the bias terms matter)."""
    if arch != "relu":
        cfg.setdefault("k", min(4, n_latents))
    sae = build_sae(
        sae_config(
            arch=arch, d_in=d_in, n_latents=n_latents, input_transform=transform, run="test-run",
            **cfg,
        )
    )  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(n_latents, d_in, generator=gen) / d_in**0.5)
        sae.b_enc.copy_(0.1 * torch.randn(n_latents, generator=gen))
        sae.b_dec.copy_(0.01 * torch.randn(d_in, generator=gen))
    return sae.eval()


class SquareEncoder:
    """A synthetic encoder over an ``grid x grid`` cell grid with two channels per cell:
    the cell's mean brightness / 255 and a constant 1; the embedding is their mean.

    A latent reading channel 0 fires exactly where the image is bright.
    """

    name = "square"
    dim = 2

    def __init__(self, size: int = 32, grid: int = 8) -> None:
        self.input_size = size
        self.grid = grid

    def spatial_features(self, images_uint8: np.ndarray) -> SpatialFeatures:
        b, s = images_uint8.shape[0], images_uint8.shape[1]
        cell = s // self.grid
        x = images_uint8.astype(np.float32).reshape(b, self.grid, cell, self.grid, cell)
        bright = x.mean(axis=(2, 4)) / 255.0
        fmap = np.stack([bright, np.ones_like(bright)], axis=1)  # (B, 2, g, g)
        return SpatialFeatures(
            parts=[fmap],
            channels=[(0, 2)],
            scales=np.ones((b, 1)),
            embedding=fmap.mean(axis=(2, 3)),
            exact=True,
            pooling="mean",
            method="cell brightness, mean pooling (exact)",
        )

    def encode(self, images_uint8: np.ndarray) -> np.ndarray:
        return self.spatial_features(images_uint8).embedding

    def metadata(self) -> dict[str, Any]:
        return {"registry_name": "square", "options": {}}


@dataclass
class PlantedWorkspace:
    ws: Workspace
    encoder: SquareEncoder
    run: str
    squares: list[tuple[int, int] | None]  # top-left corner of the square per slice
    latent: int
    rows: np.ndarray


def make_planted(root: Path, n: int = 24, size: int = 32, seed: int = 0) -> PlantedWorkspace:
    """Slices with a bright 8 x 8 square (labelled liver) off the centre in 2/3 of them, an SAE
    whose latent 1 reads the brightness channel, and its codes."""
    rng = np.random.default_rng(seed)
    ws = Workspace(root).ensure()
    ws.slices.mkdir(parents=True)
    images = rng.integers(0, 40, (n, size, size), dtype=np.uint8)
    labels = np.zeros((n, size, size), dtype=np.uint8)
    corners: list[tuple[int, int] | None] = []
    centre_cells = {(12, 12), (12, 16), (16, 12), (16, 16), (8, 8), (8, 16), (16, 8)}
    for i in range(n):
        if i % 3 == 2:
            corners.append(None)
            continue
        while True:  # off the centre: the Gaussian blob's peak is not inside
            r, c = (int(v) for v in rng.integers(1, (size - 8) // 4 + 1, 2) * 4)
            if (r, c) not in centre_cells and not (r <= 15 <= r + 7 and c <= 15 <= c + 7):
                break
        images[i, r : r + 8, c : c + 8] = 250
        labels[i, r : r + 8, c : c + 8] = label_id("liver")
        labels[i, 0:4, :] = label_id("spleen")  # another structure, above every square
        corners.append((r, c))
    np.save(ws.slices / IMAGES_FILE, images)
    np.save(ws.slices / LABEL_MAPS_FILE, labels)
    pd.DataFrame({"slice_id": [f"S:{i}" for i in range(n)]}).to_parquet(ws.slices / SLICES_FILE)
    enc = SquareEncoder(size=size, grid=8)
    sae = random_sae(2, n_latents=4, transform="none", seed=seed, encoder="square")
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_dec.copy_(
            torch.tensor([19.5 / 255, 1.0])
        )  # the typical (dark) slice, as training sets it
        sae.W_enc[1, 0] = 20.0  # latent 1: brightness above the typical slice's
        sae.b_enc[1] = -0.6  # silent on dark noise (+-0.1), fires on a square (+1.2)
        sae.W_enc[2, 1] = 1.0  # latent 2: constant, no target
    run = "test-run"
    save_sae(ws.sae("square", run), sae)
    codes = sae.encode(enc.encode(images)).numpy()
    import scipy.sparse as sp

    save_codes(ws.codes("square", run), sp.csr_matrix(codes), {"encoder": "square", "run": run})
    return PlantedWorkspace(ws, enc, run, corners, 1, np.arange(n))


@pytest.fixture(scope="session")
def tiny_dinov3() -> Any:
    """A DINOv3 encoder with CLS pooling over a tiny random network (hidden size 32, patch 8)."""
    from medsae.encode.dinov3 import DINOv3Encoder
    from tests.encode.conftest import tiny_dinov3_net

    return DINOv3Encoder(
        pooling="cls", input_size=32, device="cpu", _net=tiny_dinov3_net(), _fingerprint="t"
    )
