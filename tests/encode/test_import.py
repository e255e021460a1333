"""`medsae import-embeddings`: files of embeddings (+ metadata, images) become a workspace that
every later stage accepts; bad input is a named error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medsae.cli import app
from medsae.data.table import read_label_columns, read_split, slices_with_split
from medsae.encode.import_stage import import_embeddings
from medsae.encode.imported import (
    DimensionMismatchError,
    DuplicateIdsError,
    IdRowMismatchError,
    ImportConfig,
    NonFiniteRowsError,
)
from medsae.encode.store import EmbeddingStore
from medsae.errors import InputError
from medsae.workspace import Workspace
from tests.support.synthetic import make_synthetic_workspace


def make_files(
    folder: Path, n_subjects: int = 40, per: int = 6, d: int = 16, seed: int = 0
) -> dict[str, Path]:
    """An (N, d) array with planted label directions, its metadata and images."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = n_subjects * per
    subject = np.repeat([f"p{i:03d}" for i in range(n_subjects)], per)
    diagnosis = np.repeat(rng.choice(["healthy", "pneumonia", "effusion"], n_subjects), per)
    sex = np.repeat(rng.choice(["M", "F"], n_subjects), per)
    split = np.repeat(
        np.array(["train", "train", "train", "val", "test"])[np.arange(n_subjects) % 5], per
    )
    active = np.stack(
        [diagnosis == "healthy", diagnosis == "pneumonia", diagnosis == "effusion", sex == "M"], 1
    )
    x = active @ rng.normal(size=(4, d)) + 0.1 * rng.normal(size=(n, d))
    ids = [f"img{i:04d}" for i in range(n)]
    paths = {
        "emb": folder / "emb.npy",
        "meta": folder / "meta.parquet",
        "images": folder / "img.npy",
    }
    np.save(paths["emb"], x.astype(np.float32))
    meta = pd.DataFrame(
        {"id": ids, "subject": subject, "diagnosis": diagnosis, "sex": sex, "split": split}
    )
    meta["score"] = rng.random(n)  # continuous: kept in the table, not a label
    meta.to_parquet(paths["meta"])
    np.save(paths["images"], (rng.random((n, 24, 24)) * 255).astype(np.uint8))
    return paths


def test_npy_with_metadata_writes_slices_split_and_store(tmp_path: Path) -> None:
    files = make_files(tmp_path / "in", n_subjects=10, per=3)
    ws = Workspace(tmp_path / "ws")
    outcomes = import_embeddings(ws, files["emb"], files["meta"])
    assert [o.status for o in outcomes] == ["built"] * 3
    table = slices_with_split(ws.slices, ws.split)
    meta = pd.read_parquet(files["meta"])
    assert table["slice_id"].tolist() == meta["id"].tolist()
    assert table["subject_key"].tolist() == meta["subject"].tolist()
    assert table["split"].tolist() == meta["split"].tolist()
    assert table["sex"].tolist() == meta["sex"].tolist()
    assert read_label_columns(ws.slices) == ["diagnosis"]  # sex is a documented column
    store = EmbeddingStore(ws.embeddings("imported"))
    np.testing.assert_array_equal(store.read(), np.load(files["emb"]))
    # the same files again: every artifact is up to date
    assert [o.status for o in import_embeddings(ws, files["emb"], files["meta"])] == ["skipped"] * 3


def test_parquet_embeddings_are_matched_to_metadata_by_id(tmp_path: Path) -> None:
    files = make_files(tmp_path / "in", n_subjects=5, per=2)
    x = np.load(files["emb"])
    meta = pd.read_parquet(files["meta"])
    order = np.random.default_rng(1).permutation(len(x))
    as_lists = pd.DataFrame({"id": meta["id"][order].to_numpy(), "vec": list(x[order])})
    as_lists.to_parquet(tmp_path / "lists.parquet")
    wide = pd.DataFrame(x[order], columns=[f"f{j}" for j in range(x.shape[1])])
    wide.insert(0, "id", meta["id"][order].to_numpy())
    wide.to_parquet(tmp_path / "wide.parquet")
    for name, source in (("lists", "lists.parquet"), ("wide", "wide.parquet")):
        ws = Workspace(tmp_path / name)
        import_embeddings(ws, tmp_path / source, files["meta"])
        table = slices_with_split(ws.slices, ws.split)
        store = EmbeddingStore(ws.embeddings("imported"))
        np.testing.assert_array_equal(store.read(), x[order])
        assert table["diagnosis"].tolist() == meta["diagnosis"][order].tolist()


def test_drawn_split_keeps_subjects_together(tmp_path: Path) -> None:
    files = make_files(tmp_path / "in", n_subjects=20, per=4)
    meta = pd.read_parquet(files["meta"]).drop(columns=["split", "id"])
    meta.to_csv(tmp_path / "meta.csv", index=False)  # row-aligned: no id column
    ws = Workspace(tmp_path / "ws")
    import_embeddings(ws, files["emb"], tmp_path / "meta.csv", config=ImportConfig(seed=3))
    table = slices_with_split(ws.slices, ws.split)
    assert table.groupby("subject_key")["split"].nunique().max() == 1
    assert read_split(ws.split)["split"].value_counts().to_dict() == {
        "train": 14,
        "val": 3,
        "test": 3,
    }
    assert table["slice_id"].tolist() == [str(i) for i in range(80)]


def test_bad_input_is_a_named_error(tmp_path: Path) -> None:
    files = make_files(tmp_path / "in", n_subjects=4, per=2)
    meta = pd.read_parquet(files["meta"])
    ws = Workspace(tmp_path / "ws")
    dup = meta.copy()
    dup.loc[1, "id"] = dup.loc[0, "id"]
    dup.to_parquet(tmp_path / "dup.parquet")
    with pytest.raises(DuplicateIdsError, match="img0000"):
        import_embeddings(ws, files["emb"], tmp_path / "dup.parquet")
    meta.iloc[:-1].drop(columns=["id"]).to_parquet(tmp_path / "short.parquet")
    with pytest.raises(IdRowMismatchError, match="7 metadata rows for 8"):
        import_embeddings(ws, files["emb"], tmp_path / "short.parquet")
    meta.iloc[:-1].to_parquet(tmp_path / "short_ids.parquet")
    with pytest.raises(IdRowMismatchError, match="7 ids for 8"):
        import_embeddings(ws, files["emb"], tmp_path / "short_ids.parquet")
    x = np.load(files["emb"])
    x[5, 3] = np.nan
    x[6, 0] = np.inf
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(NonFiniteRowsError, match=r"2 row\(s\).*img0005.*img0006"):
        import_embeddings(ws, tmp_path / "nan.npy", files["meta"])
    np.save(tmp_path / "few_images.npy", np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(IdRowMismatchError, match="3 images for 8"):
        import_embeddings(ws, files["emb"], files["meta"], tmp_path / "few_images.npy")
    assert not ws.slices.exists()  # nothing written by a refused import
    import_embeddings(ws, files["emb"], files["meta"])
    np.save(tmp_path / "wider.npy", np.ones((8, 5), np.float32))
    with pytest.raises(DimensionMismatchError, match="16-d"):
        import_embeddings(ws, tmp_path / "wider.npy", files["meta"])
    assert EmbeddingStore(ws.embeddings("imported")).dim == 16  # the old store is kept
    other = import_embeddings(
        ws, tmp_path / "wider.npy", files["meta"], config=ImportConfig(encoder="second")
    )
    assert [o.status for o in other[:2]] == ["skipped", "skipped"]  # same ids: same slices
    assert EmbeddingStore(ws.embeddings("second")).dim == 5
    result = CliRunner().invoke(
        app, ["import-embeddings", str(tmp_path / "nan.npy"), "-w", str(ws.root)]
    )
    assert result.exit_code != 0 and isinstance(result.exception, NonFiniteRowsError)


def test_import_into_prepared_slices_follows_the_slice_table(tmp_path: Path) -> None:
    ws, _ = make_synthetic_workspace(tmp_path / "ws", n_subjects=2, slices_per_plane=2, dim=8)
    ids = pd.read_parquet(ws.slices / "slices.parquet")["slice_id"].to_numpy()
    order = np.random.default_rng(0).permutation(len(ids))
    x = np.random.default_rng(1).normal(size=(len(ids), 6)).astype(np.float32)
    pd.DataFrame({"id": ids[order], "v": list(x[order])}).to_parquet(tmp_path / "e.parquet")
    import_embeddings(ws, tmp_path / "e.parquet", config=ImportConfig(encoder="mine"))
    np.testing.assert_array_equal(EmbeddingStore(ws.embeddings("mine")).read(), x)
    assert json.loads((ws.slices / "manifest.json").read_text())["stage"] == "prepare"
    pd.DataFrame({"id": ids[:-1], "v": list(x[:-1])}).to_parquet(tmp_path / "short.parquet")
    with pytest.raises(IdRowMismatchError, match=r"missing e\.g\."):
        import_embeddings(ws, tmp_path / "short.parquet", config=ImportConfig(encoder="mine2"))
    with pytest.raises(InputError, match="without --metadata"):
        import_embeddings(ws, tmp_path / "e.parquet", tmp_path / "e.parquet")
