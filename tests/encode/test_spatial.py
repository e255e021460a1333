"""The optional ``spatial_features`` method of the encoder protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsae.encode import get_encoder
from medsae.encode.spatial import (
    SpatialFeatures,
    check_spatial,
    require_spatial,
    supports_spatial,
)
from medsae.errors import InputError


def _images(n: int = 3, size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size), dtype=np.uint8)


@pytest.mark.parametrize("pooling", ["mean", "multiscale"])
def test_efficientnet_maps_pool_to_the_embedding(pooling: str) -> None:
    enc = get_encoder("efficientnet-lite0", input_size=64, device="cpu", pooling=pooling)
    images = _images()
    feats = enc.spatial_features(images)  # type: ignore[attr-defined]
    z = enc.encode(images)
    assert feats.exact and feats.pooling == pooling
    check_spatial(feats, enc.dim, "test")
    np.testing.assert_allclose(feats.embedding, z, atol=1e-6)
    np.testing.assert_allclose(feats.pooled(), z, atol=1e-5)
    n_parts = 1 if pooling == "mean" else 8
    assert len(feats.parts) == n_parts
    if pooling == "multiscale":  # the first stage keeps a fine grid (stride 2)
        assert feats.parts[0].shape[2:] == (32, 32)
        assert feats.parts[-1].shape[1] == 1280


def test_dinov3_maps_exact_for_mean_and_approximate_for_cls(tiny_dinov3_dir: Path) -> None:
    images = _images(2, 48)
    for pooling, exact in (("mean", True), ("cls", False)):
        enc = get_encoder(
            "dinov3", model=str(tiny_dinov3_dir), pooling=pooling, input_size=32, device="cpu"
        )
        feats = enc.spatial_features(images)  # type: ignore[attr-defined]
        z = enc.encode(images)
        assert feats.exact is exact
        assert feats.parts[0].shape == (2, 32, 4, 4)  # patch 8 on a 32 px input
        np.testing.assert_allclose(feats.embedding, z, atol=1e-5)
        if exact:
            np.testing.assert_allclose(feats.pooled(), z, atol=1e-5)
        else:
            assert "approximate" in feats.method
            assert not np.allclose(feats.pooled(), z, atol=1e-3)


def test_encoder_without_maps_is_named_with_the_pooling_that_works(
    plugin_entry_point: None,
) -> None:
    enc = get_encoder("pixelstats")
    assert not supports_spatial(enc)
    with pytest.raises(InputError) as err:
        require_spatial(enc)
    msg = str(err.value)
    assert "pixelstats" in msg and "pooling=mean" in msg and "multiscale" in msg


def test_spatial_features_refuse_parts_that_do_not_tile_the_embedding() -> None:
    feats = SpatialFeatures(
        parts=[np.zeros((1, 2, 2, 2), np.float32)],
        channels=[(0, 2)],
        scales=np.ones((1, 1)),
        embedding=np.zeros((1, 3), np.float32),
        exact=True,
        pooling="mean",
        method="test",
    )
    with pytest.raises(InputError, match="cover 2 dimensions"):
        check_spatial(feats, 3, "SAE x")
    with pytest.raises(ValueError, match="do not agree"):
        SpatialFeatures(
            parts=[np.zeros((1, 2, 2, 2), np.float32)],
            channels=[(0, 2), (2, 3)],
            scales=np.ones((1, 1)),
            embedding=np.zeros((1, 3), np.float32),
            exact=True,
            pooling="mean",
            method="test",
        )


@pytest.mark.parametrize("corner", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_efficientnet_maps_keep_the_image_orientation(corner: tuple[int, int]) -> None:
    """A bright square in one corner of the slice changes every stage map most in that corner
    (rows are image rows, columns image columns: no transpose or flip on the way)."""
    enc = get_encoder("efficientnet-lite0", input_size=128, pooling="multiscale")
    blank = np.full((1, 128, 128), 40, np.uint8)
    img = blank.copy()
    r0, c0 = (8 if corner[0] == 0 else 88), (8 if corner[1] == 0 else 88)
    img[0, r0 : r0 + 32, c0 : c0 + 32] = 250
    base, lit = enc.spatial_features(blank), enc.spatial_features(img)
    for before, after in zip(base.parts, lit.parts, strict=True):
        change = np.abs(after[0] - before[0]).sum(axis=0)
        r, c = np.unravel_index(int(change.argmax()), change.shape)
        half = change.shape[0] / 2
        assert (r >= half, c >= half) == (bool(corner[0]), bool(corner[1])), change.shape
