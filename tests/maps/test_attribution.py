"""Per-position attribution: exact for mean pooling, labelled approximate otherwise."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from medsae.encode import get_encoder
from medsae.errors import InputError
from medsae.maps import area_transfer, latent_maps, to_pixels
from tests.maps.conftest import SquareEncoder, random_sae


def _images(n: int = 3, size: int = 64, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size), dtype=np.uint8)


@pytest.mark.parametrize("transform", ["l2", "none", "scale"])
@pytest.mark.parametrize("pooling", ["mean", "multiscale"])
def test_grid_plus_bias_equals_the_pre_activation(pooling: str, transform: str) -> None:
    enc = get_encoder("efficientnet-lite0", input_size=64, device="cpu", pooling=pooling)
    extra: dict[str, Any] = {"input_scale": 0.37} if transform == "scale" else {}
    sae = random_sae(enc.dim, n_latents=32, transform=transform, **extra)
    feats = enc.spatial_features(_images())  # type: ignore[attr-defined]
    latents = [0, 5, 31]
    lm = latent_maps(sae, feats, latents)
    with torch.no_grad():
        pre = sae.pre_activation(sae.preprocess(enc.encode(_images()))).double().numpy()
    np.testing.assert_allclose(lm.pre_activation, pre[:, latents], atol=1e-5)
    total = lm.grid.sum(axis=(2, 3)) + lm.bias[None, :]
    np.testing.assert_allclose(total, pre[:, latents], atol=1e-5)
    assert lm.exact and lm.label == "exact"
    assert np.abs(lm.residual).max() < 1e-5
    assert lm.grid.shape[2:] == ((2, 2) if pooling == "mean" else (32, 32))
    # the map is not flat: positions differ in what they contribute
    assert lm.grid.std(axis=(2, 3)).min() > 0
    # the image part leaves out - W_enc[j] . b_dec, spread evenly over the cells
    assert lm.dec_bias is not None
    np.testing.assert_allclose(
        lm.image_grid.sum(axis=(2, 3)) + lm.dec_bias[None, :] + lm.bias[None, :],
        pre[:, latents],
        atol=1e-5,
    )
    np.testing.assert_array_equal(lm.fires, lm.activation > 0)


def test_single_part_grid_is_the_per_position_formula() -> None:
    """g_p = W_enc[j] . (a f_p - b_dec) / P with a = 1 / ||z|| (l2)."""
    enc = SquareEncoder(size=32, grid=4)
    images = _images(2, 32)
    feats = enc.spatial_features(images)
    sae = random_sae(2, n_latents=3, transform="l2")
    lm = latent_maps(sae, feats, [2])
    w = sae.W_enc.detach().double().numpy()[2]
    b_dec = sae.b_dec.detach().double().numpy()
    f = feats.parts[0].astype(np.float64)  # (B, 2, 4, 4)
    a = 1 / np.linalg.norm(feats.embedding.astype(np.float64), axis=1)
    expected = (np.einsum("c,bchw->bhw", w, f * a[:, None, None, None]) - w @ b_dec) / 16
    np.testing.assert_allclose(lm.grid[:, 0], expected, atol=1e-6)


def test_cls_pooling_gives_a_map_labelled_approximate(tiny_dinov3: object) -> None:
    enc = tiny_dinov3
    feats = enc.spatial_features(_images(2, 32))  # type: ignore[attr-defined]
    sae = random_sae(32, n_latents=8, transform="l2")
    lm = latent_maps(sae, feats, [1, 2])
    assert not lm.exact and lm.label == "approximate" and "approximate" in lm.method
    assert np.abs(lm.residual).max() > 1e-4  # the CLS token is not the patch mean


def test_latent_out_of_range_names_the_sae() -> None:
    enc = SquareEncoder()
    sae = random_sae(2, n_latents=4)
    feats = enc.spatial_features(_images(1, 32))
    for bad in (4, -1):
        with pytest.raises(InputError, match=r"outside 0\.\.3.*SAE test-run"):
            latent_maps(sae, feats, [bad])


def test_maps_of_the_wrong_dimension_are_refused() -> None:
    feats = SquareEncoder().spatial_features(_images(1, 32))
    with pytest.raises(InputError, match="SAE expects 5"):
        latent_maps(random_sae(5), feats, [0])


def test_area_transfer_keeps_sums_for_uneven_grids() -> None:
    rng = np.random.default_rng(0)
    for n_from, n_to in ((4, 64), (7, 16), (13, 100), (5, 3)):
        a = area_transfer(n_from, n_to)
        np.testing.assert_allclose(a.sum(axis=0), 1.0)
        m = rng.normal(size=(n_from, n_from))
        assert np.isclose((a @ m @ a.T).sum(), m.sum())


def test_pixel_density_of_a_constant_grid_is_constant_and_sums_alike() -> None:
    px = to_pixels(np.full((2, 4, 4), 3.0), 32)
    assert px.shape == (2, 32, 32)
    np.testing.assert_allclose(px, 3.0 * 16 / 32**2, rtol=1e-6)
    np.testing.assert_allclose(px.sum(axis=(1, 2)), 48.0, rtol=1e-5)
