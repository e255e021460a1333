"""The index stage, fingerprint evaluation and search_similar on synthetic workspaces."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medsae.errors import ArtifactError, InputError
from medsae.evaluate.io import RANKING, resolve_run
from medsae.retrieval.config import IndexConfig, SearchConfig
from medsae.retrieval.fingerprint import FingerprintIndex
from medsae.retrieval.index import (
    FINGERPRINT_EVAL,
    TEXT_RETRIEVAL,
    build_index,
    search_similar,
)
from medsae.workspace import Workspace
from tests.support.synthetic import make_synthetic_workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ws")
    return make_synthetic_workspace(root, n_subjects=18, slices_per_plane=8)


def test_index_stage_writes_index_and_evaluation(workspace) -> None:
    ws, truth = workspace
    cfg = IndexConfig(search=SearchConfig(eval_queries=40, sweep_k=[1, 5]))
    out = build_index(ws, config=cfg)
    assert out.status == "built"
    folder = ws.index(truth.encoder, truth.run)
    assert folder == out.path
    fe = json.loads((folder / FINGERPRINT_EVAL).read_text())
    assert set(fe["methods"]) == {"sparse", "dense_topk", "dense_full"}
    for metrics in fe["methods"].values():
        for key in (
            "modality_agreement",
            "plane_agreement",
            "sex_agreement",
            "age_group_agreement",
            "structure_jaccard",
            "dense_cosine",
        ):
            assert 0.0 <= metrics[key] <= 1.0 + 1e-6
        assert metrics["pairs"] == 40 * 5
    sparse = fe["methods"]["sparse"]
    assert fe["fingerprint_agreement"] == pytest.approx(
        (sparse["modality_agreement"] + sparse["plane_agreement"]) / 2
    )
    assert out.manifest["extra"]["fingerprint_agreement"] == fe["fingerprint_agreement"]
    assert set(fe["sweep_k"]) == {"1", "5"}
    assert not (folder / TEXT_RETRIEVAL).exists()  # no features.parquet yet
    index = FingerprintIndex.load(folder)
    assert index.n_rows == 18 * 3 * 8 and index.n_latents == truth.n_latents
    again = build_index(ws, config=cfg)
    assert again.skipped


def test_planted_fingerprints_agree_with_the_query(tmp_path: Path) -> None:
    # only planted latents: a slice's fingerprint names its concepts
    ws, truth = make_synthetic_workspace(tmp_path, n_subjects=18, slices_per_plane=8, n_latents=19)
    assert len(truth.concepts) == truth.n_latents
    k = truth.n_latents
    cfg = IndexConfig(search=SearchConfig(k=k, n=1, eval_queries=100, sweep_k=[k]))
    build_index(ws, config=cfg)
    fe = json.loads((ws.index(truth.encoder, truth.run) / FINGERPRINT_EVAL).read_text())
    sparse = fe["methods"]["sparse"]
    assert sparse["plane_agreement"] >= 0.95
    assert sparse["modality_agreement"] >= 0.95
    assert sparse["structure_jaccard"] >= 0.8
    assert fe["fingerprint_agreement"] >= 0.95


def test_search_similar_by_slice_id(workspace) -> None:
    ws, _truth = workspace
    query = "CT:s0000:axial:0003"
    res = search_similar(ws, slice_id=query, k=5, n=6)
    assert len(res) == 6
    assert res["subject_key"].is_unique
    assert "CT:s0000" not in set(res["subject_key"])
    assert np.all(np.diff(res["score"].to_numpy()) <= 1e-12)
    only = search_similar(ws, slice_id=query, n=20, filters={"modality": "MR", "plane": "axial"})
    assert len(only) > 0
    assert set(only["modality"]) == {"MR"} and set(only["plane"]) == {"axial"}
    with pytest.raises(InputError, match="not in the slice table"):
        search_similar(ws, slice_id="CT:nobody:axial:0000")
    with pytest.raises(InputError, match="exactly one"):
        search_similar(ws)
    with pytest.raises(InputError, match="exactly one"):
        search_similar(ws, slice_id=query, embedding=np.zeros(3))


def test_resolve_run_prefers_the_ranking(workspace, tmp_path: Path) -> None:
    ws, truth = workspace
    assert resolve_run(ws) == (truth.encoder, truth.run)
    ws.ranking.mkdir(parents=True, exist_ok=True)
    ranking = ws.ranking / RANKING
    # a second run with codes: the ranking decides between the two
    other = ws.codes(truth.encoder, "r7")
    shutil.copytree(ws.codes(truth.encoder, truth.run), other)
    try:
        with pytest.raises(ArtifactError, match="several SAE runs"):
            resolve_run(ws)
        ranking.write_text(json.dumps({"best": {"encoder": truth.encoder, "run": "r7"}}))
        assert resolve_run(ws) == (truth.encoder, "r7")
        assert resolve_run(ws, truth.encoder, "r7") == (truth.encoder, "r7")
        # a run or encoder that does not exist is refused naming the nearest ones
        with pytest.raises(InputError, match=r"nearest: r7.*medsae runs --workspace"):
            resolve_run(ws, truth.encoder, "r8")
        with pytest.raises(InputError, match=f"nearest: {truth.encoder}"):
            resolve_run(ws, truth.encoder + "x", "r7")
        # a ranking that names a run no longer in the workspace is not followed
        ranking.write_text(json.dumps({"best": {"encoder": "enc-b", "run": "gone"}}))
        shutil.rmtree(other)
        assert resolve_run(ws) == (truth.encoder, truth.run)
    finally:
        ranking.unlink()
        shutil.rmtree(other, ignore_errors=True)
    with pytest.raises(ArtifactError, match="no sparse codes"):
        resolve_run(Workspace(tmp_path))


def test_search_command_prints_a_table(workspace) -> None:
    from typer.testing import CliRunner

    from medsae.cli import app

    ws, _truth = workspace
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "search",
            "--workspace",
            str(ws.root),
            "--slice-id",
            "CT:s0001:axial:0002",
            "--n",
            "3",
            "--filter",
            "plane=axial",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "similar to CT:s0001:axial:0002" in res.output
    assert res.output.count("axial") >= 4
    bad = runner.invoke(
        app, ["search", "--workspace", str(ws.root), "--slice-id", "x", "--filter", "plane"]
    )
    assert bad.exit_code != 0
