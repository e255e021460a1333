"""The embedding store: shards, metadata, read-time normalisation, float16."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsae.encode.store import (
    EmbeddingStore,
    Shard,
    norms_summary,
    save_shard,
    shard_header,
    write_store,
    write_store_meta,
)
from medsae.errors import ArtifactError


def test_round_trip_rows_and_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(23, 5)).astype(np.float32)
    store = write_store(
        tmp_path, "enc", [("shard-00000.npy", x[:10]), ("shard-00001.npy", x[10:])], {"k": 1}
    )
    again = EmbeddingStore(tmp_path)
    assert (again.n_rows, again.dim, again.encoder, again.meta["k"]) == (23, 5, "enc", 1)
    np.testing.assert_array_equal(store.read(), x)
    rows = np.array([22, 3, 10, 9, 3])
    np.testing.assert_array_equal(store.read(rows), x[rows])
    chunks = list(store.iter_chunks(chunk_rows=4))
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), x)
    assert [s for s, _ in chunks][:4] == [0, 4, 8, 10]


def test_l2_normalisation_is_applied_on_read_only(tmp_path: Path) -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    store = write_store(tmp_path, "enc", [("shard-00000.npy", x)])
    np.testing.assert_allclose(store.read(normalize="l2"), [[0.6, 0.8], [0.0, 0.0]])
    np.testing.assert_array_equal(np.load(tmp_path / "shard-00000.npy"), x)


def test_float16_store_reads_back_as_float32(tmp_path: Path) -> None:
    x = np.random.default_rng(1).normal(size=(7, 3)).astype(np.float32)
    store = write_store(tmp_path, "enc", [("shard-00000.npy", x.astype(np.float16))])
    assert store.meta["dtype"] == "float16"
    out = store.read()
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, x, rtol=1e-3, atol=1e-3)
    assert not np.array_equal(out, x)  # really stored at half precision


def test_meta_for_shards_on_disk_and_norms(tmp_path: Path) -> None:
    save_shard(tmp_path, "shard-00000.npy", np.full((2, 4), 1.0, np.float32))
    save_shard(tmp_path, "shard-00001.npy", np.full((1, 4), 2.0, np.float32))
    assert shard_header(tmp_path / "shard-00001.npy") == ((1, 4), np.dtype("float32"))
    assert shard_header(tmp_path / "missing.npy") is None
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind
    store = write_store_meta(
        tmp_path,
        "enc",
        [Shard("shard-00000.npy", 0, 2), Shard("shard-00001.npy", 2, 3)],
        4,
        "float32",
    )
    summary = norms_summary(store)
    assert summary["min"] == pytest.approx(2.0) and summary["max"] == pytest.approx(4.0)
    assert summary["mean"] == pytest.approx((2 + 2 + 4) / 3)
    with pytest.raises(ValueError, match=r"starts at row 1"):
        write_store_meta(tmp_path, "enc", [Shard("shard-00000.npy", 1, 2)], 4, "float32")


def test_inconsistent_store_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"embedding store not found"):
        EmbeddingStore(tmp_path)
    store = write_store(tmp_path, "enc", [("shard-00000.npy", np.zeros((3, 2), np.float32))])
    np.save(tmp_path / "shard-00000.npy", np.zeros((3, 5), np.float32))
    with pytest.raises(ArtifactError, match=r"expected"):
        store.read()
