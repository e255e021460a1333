"""The token store: layout, pooled rows, the sampling rule, resume, bad input, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medsae.cli import app
from medsae.data.table import open_images
from medsae.encode import EmbeddingStore, EncodeConfig, encode, get_encoder
from medsae.encode import token_stage as token_stage_mod
from medsae.encode.spatial import SpatialFeatures
from medsae.encode.tokens import (
    TokenStore,
    kept_positions,
    resample_part,
    token_grid,
    token_store_name,
)
from medsae.errors import ArtifactError, InputError
from medsae.workspace import Workspace


def _config(folder: Path, **kw: object) -> EncodeConfig:
    options = {"model": str(folder), "input_size": 32, "pooling": "mean"}
    return EncodeConfig(
        encoder="dinov3",
        options=options,
        device="cpu",
        batch_size=4,
        shard_rows=5,
        tokens=True,
        token_grid=4,
        token_dtype="float32",
        **kw,
    )


def test_encode_tokens_writes_memory_mapped_shards_whose_mean_is_the_embedding(
    ws: Workspace, tiny_dinov3_dir: Path
) -> None:
    encode(ws, _config(tiny_dinov3_dir))
    store = TokenStore(ws.embeddings(token_store_name("dinov3")))
    images = np.asarray(open_images(ws.slices))
    n = len(images)
    assert (store.n_slices, store.grid, store.n_tokens) == (n, 4, 16 * n)
    assert [s.stop - s.start for s in store.tokens.shards] == [80, 80, 80, 48]  # 5 slices each
    assert store.positions[17].tolist() == [1, 0, 1]  # slice 1, grid row 0, column 1
    assert store.token_rows(np.array([2])).tolist() == list(range(32, 48))
    # mean pooling is exact: the mean of a slice's 16 tokens is its embedding
    emb = EmbeddingStore(ws.embeddings("dinov3")).read()
    np.testing.assert_allclose(store.pooled.read(), emb, rtol=1e-4, atol=1e-5)
    # and a token is the encoder's own patch token at that position
    enc = get_encoder(
        "dinov3", model=str(tiny_dinov3_dir), input_size=32, pooling="mean", device="cpu"
    )
    feats = enc.spatial_features(images[:1])
    np.testing.assert_allclose(store.read(np.array([5]))[0], feats.parts[0][0, :, 1, 1], atol=1e-5)
    assert store.mb_per_1000_slices() > 0
    assert encode(ws, _config(tiny_dinov3_dir)).status == "skipped"


def test_token_cap_keeps_the_documented_seeded_sample(ws: Workspace, tiny_dinov3_dir: Path) -> None:
    encode(ws, _config(tiny_dinov3_dir, token_cap=5, token_seed=3))
    store = TokenStore(ws.embeddings(token_store_name("dinov3")))
    assert store.n_tokens == 5 * store.n_slices
    for row in (0, 7):
        pos = store.positions[store.token_rows(np.array([row]))]
        want = np.random.default_rng([3, row]).choice(16, size=5, replace=False)
        assert (pos[:, 1] * 4 + pos[:, 2]).tolist() == sorted(want.tolist())
        assert (pos[:, 0] == row).all()
    assert kept_positions(0, 4, None, 0).tolist() == list(range(16))
    assert store.info["sampling"].startswith("5 of 16 positions")


def test_resampling_keeps_the_mean_and_parts_scale_into_the_token() -> None:
    rng = np.random.default_rng(0)
    fine, coarse = rng.normal(size=(2, 3, 16, 16)), rng.normal(size=(2, 2, 4, 4))
    np.testing.assert_allclose(
        resample_part(fine, 8).mean(axis=(2, 3)), fine.mean(axis=(2, 3)), atol=1e-6
    )
    up = resample_part(coarse, 8)
    np.testing.assert_allclose(
        up[:, :, 0:2, 0:2], np.repeat(coarse[:, :, :1, :1], 2, 2).repeat(2, 3)
    )
    scales = np.array([[2.0, 0.5], [1.0, 3.0]])
    feats = SpatialFeatures(
        parts=[fine.astype(np.float32), coarse.astype(np.float32)],
        channels=[(0, 3), (3, 5)],
        scales=scales,
        embedding=np.zeros((2, 5), np.float32),
        exact=True,
        pooling="multiscale",
        method="test",
    )
    tok = token_grid(feats, 8, None)
    assert tok.shape == (2, 64, 5)
    np.testing.assert_allclose(
        tok.mean(axis=1)[:, 3:], coarse.mean(axis=(2, 3)) * scales[:, 1:], atol=1e-5
    )
    assert token_grid(feats, 8, [1]).shape == (2, 64, 2)
    with pytest.raises(InputError, match="part 4 does not exist"):
        token_grid(feats, 8, [4])


def test_interrupted_token_build_keeps_finished_shards(
    ws: Workspace, tiny_dinov3_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encode(ws, _config(tiny_dinov3_dir).model_copy(update={"tokens": False}))
    real = token_stage_mod.write_token_shard
    written: list[int] = []

    def write_then_die(folder: Path, shard: object, *args: object, **kw: object) -> None:
        real(folder, shard, *args, **kw)  # type: ignore[arg-type]
        written.append(1)
        if len(written) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(token_stage_mod, "write_token_shard", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        encode(ws, _config(tiny_dinov3_dir))
    monkeypatch.setattr(token_stage_mod, "write_token_shard", real)
    calls: list[int] = []
    enc_cls = type(get_encoder("dinov3", model=str(tiny_dinov3_dir), input_size=32, device="cpu"))
    spatial = enc_cls.spatial_features

    def counting(self: object, images: np.ndarray) -> object:
        calls.append(len(images))
        return spatial(self, images)  # type: ignore[arg-type]

    monkeypatch.setattr(enc_cls, "spatial_features", counting)
    encode(ws, _config(tiny_dinov3_dir))
    n = TokenStore(ws.embeddings(token_store_name("dinov3"))).n_slices
    assert sum(calls) == n - 10  # the two finished shards (5 slices each) were kept


def test_bad_token_input_is_named(
    ws: Workspace, tiny_dinov3_dir: Path, plugin_entry_point: None
) -> None:
    with pytest.raises(InputError, match=r"encoder pixelstats.*efficientnet-lite0 \(pooling"):
        encode(ws, EncodeConfig(encoder="pixelstats", tokens=True))
    encode(ws, _config(tiny_dinov3_dir))
    store = TokenStore(ws.embeddings(token_store_name("dinov3")))
    with pytest.raises(ArtifactError, match=r"tokens of 18 slices but .* has 20"):
        store.check_slices(20, ws.slices / "slices.parquet")
    with pytest.raises(InputError, match=r"expects a 8 x 8 token grid .* 4 x 4 grid"):
        store.check_grid(8, "organ rediscovery")
    np.save(store.folder / "tokens" / "slice_ptr.npy", store.slice_ptr[:-1])
    with pytest.raises(ArtifactError, match=r"slice_ptr\.npy covers 17 slices"):
        TokenStore(store.folder)


def test_cli_encode_tokens(ws: Workspace, tiny_dinov3_dir: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "encode", "-w", str(ws.root), "-e", "dinov3", "--tokens", "--token-grid", "2",
            "--option", f"model={tiny_dinov3_dir}", "--option", "input_size=32",
            "--option", "pooling=mean",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    store = TokenStore(ws.embeddings("dinov3-tokens"))
    assert store.grid == 2 and store.n_tokens == 4 * store.n_slices
