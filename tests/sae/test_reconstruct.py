"""``sae.reconstruct(x)`` answers in the raw input's units for every input transform, while
``decode`` answers in the preprocessed space."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsae.sae import SAEConfig, build_sae
from medsae.sae.base import SparseAutoencoder


def exact_sae(transform: str, input_scale: float = 1.0) -> SparseAutoencoder:
    """A TopK SAE (d = 4, 8 latents, k = 4) whose latents are +e_j and -e_j: it reconstructs
    every preprocessed input exactly."""
    cfg = SAEConfig(
        arch="topk", d_in=4, n_latents=8, k=4, input_transform=transform, input_scale=input_scale
    )
    sae = build_sae(cfg)
    w = torch.cat([torch.eye(4), -torch.eye(4)])
    with torch.no_grad():
        sae.W_enc.copy_(w)
        sae.W_dec.copy_(w)
    return sae.eval()


X = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32) * 7.0


@pytest.mark.parametrize(
    ("transform", "scale", "fold"),
    [("none", 1.0, False), ("l2", 1.0, False), ("scale", 0.25, False), ("scale", 0.25, True)],
)
def test_reconstruct_is_in_the_input_units(transform: str, scale: float, fold: bool) -> None:
    sae = exact_sae(transform, scale)
    if fold:
        sae.fold_input_scale()
    x_hat = sae.reconstruct(X)
    np.testing.assert_allclose(x_hat.numpy(), X, rtol=1e-5, atol=1e-5)
    # decode answers in the preprocessed space: unit rows under l2, scaled under unfolded scale
    decoded = sae.decode(sae.encode(X)).detach().numpy()
    np.testing.assert_allclose(decoded, sae.preprocess(X).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        sae.to_input_units(torch.from_numpy(decoded), X).numpy(), X, rtol=1e-5, atol=1e-5
    )


def test_reconstruct_of_a_level_truncates_the_codes() -> None:
    sae = exact_sae("l2")  # the first 4 latents are +e_j: level 4 keeps the positive parts
    np.testing.assert_allclose(
        sae.reconstruct(X, level=4).numpy(), np.maximum(X, 0), rtol=1e-5, atol=1e-5
    )
