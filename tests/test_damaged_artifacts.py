"""One rule for reading artifacts: a missing file is "not computed", a damaged one is an
error naming the file and how to rebuild it, in the library, the command line and the
browser (JSON, never plain text); a stage whose output is damaged is not up to date."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from medsae.artifacts import DamagedArtifact, MissingArtifact, read_json_optional
from medsae.workspace import StageResult, Workspace, run_stage, stage_status

RUN = ("synthetic", "synthetic-run")
GARBAGE = b"\xff\xfe\x00garbage\x80\x81" * 40  # binary: not UTF-8, not JSON, not Parquet


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.fixtures import write_fixture_artifacts
    from tests.support.synthetic import make_synthetic_workspace

    ws, truth = make_synthetic_workspace(
        tmp_path_factory.mktemp("damaged") / "ws", n_subjects=6, slices_per_plane=4
    )
    write_fixture_artifacts(ws, truth)
    return ws.root


@pytest.fixture()
def ws(pristine: Path, tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    shutil.copytree(pristine, root)
    return Workspace(root)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garble(path: Path) -> None:
    path.write_bytes(GARBAGE)


def _view(ws: Workspace):
    from medsae.frontend.view import WorkspaceView

    return WorkspaceView(ws.root)


# file, how it is damaged, how the library reads it, the stage that rebuilds it
CASES: dict[str, tuple[Callable[[Workspace], Path], Callable[[Path], None], Callable, str]] = {
    "features.parquet": (
        lambda ws: ws.features(*RUN) / "features.parquet",
        _garble,
        lambda ws: _view(ws).features_file,
        "interpret",
    ),
    "scores.json": (
        lambda ws: ws.features(*RUN) / "scores.json",
        _garble,
        lambda ws: _view(ws).scores,
        "interpret",
    ),
    "fingerprint_eval.json": (
        lambda ws: ws.index(*RUN) / "fingerprint_eval.json",
        _garble,
        lambda ws: _view(ws).fingerprint_eval,
        "index",
    ),
    "text_retrieval.json": (
        lambda ws: ws.index(*RUN) / "text_retrieval.json",
        _garble,
        lambda ws: _view(ws).text_retrieval,
        "index",
    ),
    "images.npy": (
        lambda ws: ws.slices / "images.npy",
        _truncate,
        lambda ws: _view(ws).images,
        "prepare",
    ),
    "split.parquet": (
        lambda ws: ws.split / "split.parquet",
        _garble,
        lambda ws: _view(ws).table,
        "split",
    ),
    "codes.json": (
        lambda ws: ws.codes(*RUN) / "codes.json",
        _garble,
        lambda ws: _view(ws).codes_meta,
        "codes",
    ),
    "fingerprint_index.npz": (
        lambda ws: ws.index(*RUN) / "fingerprint_index.npz",
        _garble,
        lambda ws: _search(ws).index(),
        "index",
    ),
    "store.json": (
        lambda ws: ws.embeddings("synthetic") / "store.json",
        _garble,
        lambda ws: _store(ws),
        "encode",
    ),
    "slices.parquet": (
        lambda ws: ws.slices / "slices.parquet",
        _garble,
        lambda ws: _view(ws).table,
        "prepare",
    ),
    "manifest.json": (
        lambda ws: ws.slices / "manifest.json",
        _garble,
        lambda ws: _view(ws).query_format,
        "prepare",
    ),
    "ranking.json": (
        lambda ws: ws.ranking / "ranking.json",
        _garble,
        lambda ws: _view(ws).ranking,
        "rank",
    ),
}


def _search(ws: Workspace):
    from medsae.frontend.search import WorkspaceSearch

    return WorkspaceSearch(_view(ws), use_interpret=False)


def _store(ws: Workspace):
    from medsae.encode.store import EmbeddingStore

    return EmbeddingStore(ws.embeddings("synthetic"))


@pytest.mark.parametrize("name", list(CASES))
def test_damaged_artifact_is_named_with_its_rebuild_command(ws: Workspace, name: str) -> None:
    where, damage, read, stage = CASES[name]
    path = where(ws)
    assert path.is_file()
    damage(path)
    with pytest.raises(DamagedArtifact) as err:
        read(ws)
    message = str(err.value)
    assert str(path) in message and f"medsae {stage} --force" in message, message
    assert "not computed" not in message


@pytest.mark.parametrize("name", ["features.parquet", "fingerprint_eval.json", "scores.json"])
def test_a_missing_artifact_is_not_computed(ws: Workspace, name: str) -> None:
    where, _damage, read, _stage = CASES[name]
    where(ws).unlink()
    assert read(ws) in (None, {})  # not computed: the report and browser say so


def test_missing_and_damaged_differ_for_a_required_file(tmp_path: Path) -> None:
    from medsae.data.table import read_slices

    with pytest.raises(
        MissingArtifact, match=r"slices.parquet: slice table not found; run `medsae prepare`"
    ):
        read_slices(tmp_path / "slices")
    (tmp_path / "slices").mkdir()
    (tmp_path / "slices" / "slices.parquet").write_bytes(GARBAGE)
    with pytest.raises(DamagedArtifact, match=r"medsae prepare --force"):
        read_slices(tmp_path / "slices")
    assert read_json_optional(tmp_path / "nothing.json") is None


@pytest.mark.parametrize(
    ("name", "route"),
    [
        ("features.parquet", "/api/search?q=liver"),
        ("images.npy", "/api/slices/{sid}/image.png"),
        ("split.parquet", "/api/slices/{sid}"),
        ("fingerprint_index.npz", "/api/slices/{sid}/similar"),
        ("codes.json", "/api/info"),
    ],
)
def test_browser_answers_json_naming_the_damaged_file(ws: Workspace, name: str, route: str) -> None:
    from medsae.serve import create_app

    sid = str(pd.read_parquet(ws.slices / "slices.parquet")["slice_id"].iloc[0])
    where, damage, _read, stage = CASES[name]
    damage(where(ws))
    client = TestClient(create_app(ws.root, load_text_model=False), raise_server_exceptions=False)
    r = client.get(route.format(sid=sid))
    assert r.status_code in (500, 503), r.text
    assert r.headers["content-type"] == "application/json"
    assert name in r.json()["detail"] and f"medsae {stage} --force" in r.json()["detail"]


def test_any_unexpected_error_in_the_browser_is_json(ws: Workspace, monkeypatch) -> None:
    from medsae.serve import create_app

    app = create_app(ws.root, load_text_model=False)
    monkeypatch.setattr("medsae.frontend.view.WorkspaceView.slice_png", lambda *a: 1 / 0)
    sid = str(pd.read_parquet(ws.slices / "slices.parquet")["slice_id"].iloc[0])
    r = TestClient(app, raise_server_exceptions=False).get(f"/api/slices/{sid}/image.png")
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    assert "ZeroDivisionError" in r.json()["detail"]


def test_command_line_names_the_damaged_file(ws: Workspace) -> None:
    path = ws.index(*RUN) / "fingerprint_index.npz"
    _garble(path)
    sid = str(pd.read_parquet(ws.slices / "slices.parquet")["slice_id"].iloc[0])
    res = subprocess.run(
        [sys.executable, "-m", "medsae", "search", "-w", str(ws.root), "--slice-id", sid],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "400"},
        timeout=300,
    )
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 2, out
    assert "fingerprint_index.npz" in out and "medsae index --force" in out
    assert "Traceback" not in out


def test_a_stage_whose_output_is_damaged_is_not_up_to_date(tmp_path: Path) -> None:
    out = tmp_path / "ws" / "features" / "enc" / "run"
    built = []

    def build(partial: Path) -> StageResult:
        pd.DataFrame({"latent": [0, 1]}).to_parquet(partial / "features.parquet")
        np.save(partial / "values.npy", np.arange(1000, dtype=np.float32))
        built.append(1)
        return StageResult()

    assert run_stage(out, "interpret", {}, {}, build, quiet=True).status == "built"
    assert run_stage(out, "interpret", {}, {}, build, quiet=True).status == "skipped"
    _truncate(out / "values.npy")
    status, reason = stage_status(out, "interpret", {}, {})
    assert status == "stale" and "values.npy" in reason and "truncated" in reason
    assert run_stage(out, "interpret", {}, {}, build, quiet=True).status == "rebuilt"
    _garble(out / "features.parquet")
    assert run_stage(out, "interpret", {}, {}, build, quiet=True).status == "rebuilt"
    _garble(out / "manifest.json")  # undecodable bytes
    assert run_stage(out, "interpret", {}, {}, build, quiet=True).status == "rebuilt"
    assert len(built) == 4
    assert np.load(out / "values.npy").shape == (1000,)
