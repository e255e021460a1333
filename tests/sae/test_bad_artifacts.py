"""Artifacts that do not fit together or are damaged on disk: a clear error naming the files,
and nothing already written is touched."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from medsae.data.table import SLICES_FILE
from medsae.encode.store import STORE_FILE, EmbeddingStore, write_store
from medsae.errors import ArtifactError
from medsae.evaluate import EvaluateConfig, evaluate
from medsae.sae import CodesConfig, TrainConfig, train, write_codes
from medsae.sae.codes_io import CODES_FILE, load_codes
from medsae.workspace import Workspace
from tests.support.synthetic import make_synthetic_workspace

TINY = TrainConfig(arch=["topk"], levels=[[16]], k=[[2]], epochs=1, batch_size=8, device="cpu")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A workspace with a trained SAE and its codes (copied by each test)."""
    root = tmp_path_factory.mktemp("ws") / "ws"
    ws, truth = make_synthetic_workspace(root, n_subjects=6, slices_per_plane=4, dim=16)
    run = train(ws, truth.encoder, TINY).manifest["extra"]["runs"][0]
    write_codes(ws, truth.encoder, run)
    return root, truth.encoder, run


@pytest.fixture
def ws(finished: tuple[Path, str, str], tmp_path: Path) -> tuple[Workspace, str, str]:
    root, encoder, run = finished
    shutil.copytree(root, tmp_path / "ws")
    return Workspace(tmp_path / "ws"), encoder, run


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_store_with_other_rows_than_the_slice_table_is_refused(
    ws: tuple[Workspace, str, str],
) -> None:
    w, encoder, run = ws
    folder = w.embeddings(encoder)
    store = EmbeddingStore(folder)
    n = store.n_rows
    x = store.read()
    for shard in store.shards:
        (folder / shard.file).unlink()
    write_store(folder, store.encoder, [("shard-00000.npy", x[:-3])])  # three rows short
    before = _snapshot(w.root)
    stages = {
        "train": lambda: train(w, encoder, TINY, force=True),
        "codes": lambda: write_codes(w, encoder, run, CodesConfig(), force=True),
        "evaluate": lambda: evaluate(w, encoder, run, EvaluateConfig(), force=True),
    }
    for name, call in stages.items():
        with pytest.raises(ArtifactError) as err:
            call()
        message = str(err.value)
        for part in (folder / STORE_FILE, w.slices / SLICES_FILE, f"{n - 3} embedding rows"):
            assert str(part) in message, (name, message)
        assert f"has {n} slices" in message, (name, message)
    after = _snapshot(w.root)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing rewritten


def test_a_truncated_codes_file_names_itself_and_the_fix(ws: tuple[Workspace, str, str]) -> None:
    w, encoder, run = ws
    path = w.codes(encoder, run) / CODES_FILE
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    for call in (
        lambda: load_codes(w.codes(encoder, run)),
        lambda: evaluate(w, encoder, run, EvaluateConfig()),
    ):
        with pytest.raises(ArtifactError) as err:
            call()
        assert str(path) in str(err.value) and "medsae codes --force" in str(err.value)
    write_codes(w, encoder, run, CodesConfig(), force=True)  # the advice works
    assert path.read_bytes() == good


def test_a_truncated_embedding_shard_names_itself(ws: tuple[Workspace, str, str]) -> None:
    w, encoder, _ = ws
    store = EmbeddingStore(w.embeddings(encoder))
    path = store.folder / store.shards[0].file
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ArtifactError) as err:
        store.read()
    assert str(path) in str(err.value) and "medsae encode --force" in str(err.value)
