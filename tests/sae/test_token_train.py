"""SAEs on tokens: the train and codes stages on a token store, batches across slices."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medsae.encode.config import EncodeConfig
from medsae.encode.spatial import SpatialFeatures
from medsae.encode.token_stage import encode_tokens
from medsae.encode.tokens import TokenStore
from medsae.evaluate.stage import evaluate
from medsae.sae import train, write_codes
from medsae.sae.codes_io import load_codes, load_codes_meta
from medsae.sae.config import TrainConfig
from medsae.sae.data import TrainStream
from medsae.sae.token_data import load_token_codes, split_tokens
from medsae.workspace import Workspace
from tests.sae.conftest import RESUME_CFG
from tests.support.synthetic import make_synthetic_workspace


class CellEncoder:
    """Four channels per 8 x 8 pixel cell: mean, square of the mean, spread, a constant."""

    name = "cells"
    dim = 4
    input_size = 32

    def spatial_features(self, images_uint8: np.ndarray) -> SpatialFeatures:
        b = images_uint8.shape[0]
        x = images_uint8.astype(np.float32).reshape(b, 4, 8, 4, 8) / 255.0
        m, sd = x.mean(axis=(2, 4)), x.std(axis=(2, 4))
        fmap = np.stack([m, m**2, sd, np.ones_like(m)], axis=1)
        return SpatialFeatures(
            parts=[fmap],
            channels=[(0, 4)],
            scales=np.ones((b, 1)),
            embedding=fmap.mean(axis=(2, 3)),
            exact=True,
            pooling="mean",
            method="cell statistics",
        )

    def metadata(self) -> dict[str, Any]:
        return {"registry_name": "cells", "options": {}}


@pytest.fixture()
def token_ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Workspace, TokenStore]:
    monkeypatch.setenv("MEDSAE_PROGRESS", "0")
    ws, _ = make_synthetic_workspace(tmp_path / "ws", n_subjects=9, slices_per_plane=4)
    out = encode_tokens(ws, EncodeConfig(encoder="cells", token_grid=4), CellEncoder())
    return ws, TokenStore(out.path)


def test_train_and_codes_on_a_token_store(token_ws: tuple[Workspace, TokenStore]) -> None:
    ws, store = token_ws
    cfg = RESUME_CFG.model_copy(update={"arch": ["topk"], "levels": [[16]], "k": [[2]]})
    outcome = train(ws, "cells-tokens", cfg)
    run = "topk_D16_K2"
    metrics = json.loads((ws.sae("cells-tokens", run) / "metrics.json").read_text())
    from medsae.data.table import slices_with_split

    table = slices_with_split(ws.slices, ws.split)
    n_train = len(split_tokens(store, table, "train"))
    assert metrics["training"]["rows"] == "tokens"
    assert (
        metrics["splits"]["train"]["16"]["n"] == n_train == 16 * (table["split"] == "train").sum()
    )
    assert outcome.manifest["counts"]["train_rows"] == n_train
    write_codes(ws, "cells-tokens", run)
    folder = ws.codes("cells-tokens", run)
    assert load_codes(folder).shape == (store.n_slices, 16)
    assert load_codes_meta(folder / "mean")["pooling"] == "mean"
    codes, rows = load_token_codes(folder)
    assert len(rows) == codes.shape[0] == 16 * table["split"].isin(["val", "test"]).sum()
    # the slice-level evaluation runs unchanged on the pooled codes, organ part included
    done = evaluate(ws, "cells-tokens", run)
    summary = json.loads((done.path / "summary.json").read_text())
    assert summary["r2"] is not None
    assert summary["organ_map"]["status"] == "not computed"  # no label maps here
    assert "--label-maps" in summary["organ_map"]["reason"]


def test_token_batches_mix_many_slices(token_ws: tuple[Workspace, TokenStore]) -> None:
    ws, store = token_ws
    from medsae.data.table import slices_with_split

    table = slices_with_split(ws.slices, ws.split)
    rows = split_tokens(store, table, "train")
    stream = TrainStream(store.tokens, rows, batch_size=64, seed=0, chunk_rows=256)
    for _, batch_rows in zip(range(3), np.split(stream.permutation(0)[:192], 3), strict=True):
        owners = store.positions[batch_rows, 0]
        assert len(np.unique(owners)) >= 20  # 64 tokens from at least 20 slices
        assert np.bincount(owners).max() < 16  # never all 16 tokens of one slice


def test_train_refuses_a_token_store_of_another_slice_table(
    token_ws: tuple[Workspace, TokenStore],
) -> None:
    from medsae.errors import ArtifactError

    ws, store = token_ws
    ptr = store.slice_ptr
    # a store of one slice fewer: its pooled rows no longer match the slice table
    meta = json.loads((store.folder / "store.json").read_text())
    meta["n_rows"] -= 1
    meta["shards"][-1]["stop"] -= 1
    (store.folder / "store.json").write_text(json.dumps(meta))
    np.save(store.folder / "tokens" / "slice_ptr.npy", ptr[:-1])
    with pytest.raises(ArtifactError, match=r"embedding rows|slices"):
        train(ws, "cells-tokens", TrainConfig(arch=["topk"], levels=[[16]], k=[[2]], epochs=1))
