"""`medsae ask`, the browser's text search and the index stage's evaluation use one mode."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from medsae.retrieval.config import ASK_MODES, AskConfig
from medsae.retrieval.io import TEXT_RETRIEVAL
from medsae.retrieval.language import TextRetriever
from tests.retrieval.test_ask import bag_of_words, write_features


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory):
    from medsae.retrieval.index import build_index
    from tests.support.synthetic import make_synthetic_workspace

    ws, truth = make_synthetic_workspace(
        tmp_path_factory.mktemp("ws"), n_subjects=12, slices_per_plane=4
    )
    write_features(ws, truth)
    build_index(ws, embedder=bag_of_words())
    return ws, truth


@pytest.fixture()
def modes_used(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The mode of every feature choice made while the test runs (with a word embedder)."""
    used: list[str] = []
    choose = TextRetriever.choose

    def recording(self: TextRetriever, query: str, m=None, mode=None):  # type: ignore[no-untyped-def]
        used.append(mode or self.config.mode)
        return choose(self, query, m, mode)

    monkeypatch.setattr(TextRetriever, "choose", recording)
    monkeypatch.setattr("medsae.retrieval.index.shared_embedder", bag_of_words)
    monkeypatch.setattr("medsae.llm.embed.shared_embedder", bag_of_words)
    return used


def test_cli_browser_and_evaluation_use_the_library_default(indexed, modes_used) -> None:
    from medsae.cli import app
    from medsae.frontend.view import WorkspaceView
    from medsae.serve import create_app

    ws, _truth = indexed
    evaluated = json.loads((ws.index("synthetic", "synthetic-run") / TEXT_RETRIEVAL).read_text())
    default = AskConfig().mode
    assert default == "concepts"
    # this workspace has descriptions but no concept profiles: every front end falls back alike
    assert evaluated["mode"] == "coverage"

    res = CliRunner().invoke(app, ["ask", "-w", str(ws.root), "axial slice liver", "--n", "3"])
    assert res.exit_code == 0, res.output
    assert modes_used == [default]

    client = TestClient(create_app(WorkspaceView(ws.root), load_text_model=False))
    answer = client.get("/api/search", params={"q": "axial slice liver", "k": 3}).json()
    assert answer["method"] == "interpret.ask" and answer["items"]
    assert modes_used == [default, default]


def test_browser_uses_the_mode_the_index_was_built_with(indexed, modes_used, tmp_path) -> None:
    """A configured mode is the browser's and the command line's too, as the evaluation's."""
    import shutil

    from medsae.cli import app
    from medsae.frontend.search import WorkspaceSearch
    from medsae.frontend.view import WorkspaceView
    from medsae.retrieval.config import IndexConfig
    from medsae.retrieval.index import build_index
    from medsae.workspace import Workspace

    ws0, _truth = indexed
    ws = Workspace(shutil.copytree(ws0.root, tmp_path / "ws"))
    cfg = IndexConfig()
    cfg.ask.mode = "similarity"
    build_index(ws, config=cfg, embedder=bag_of_words())
    assert set(modes_used) == {"similarity"}  # the evaluation's choices
    modes_used.clear()
    service = WorkspaceSearch(WorkspaceView(ws.root))
    assert service.ask_config.mode == "similarity" and service.k == cfg.search.k
    service.text("axial slice", 3)
    res = CliRunner().invoke(app, ["ask", "-w", str(ws.root), "axial slice"])
    assert res.exit_code == 0, res.output
    assert modes_used == ["similarity", "similarity"]


def test_ask_help_lists_every_mode_and_refuses_others(indexed) -> None:
    from medsae.cli import app

    ws, _truth = indexed
    runner = CliRunner()
    help_text = " ".join(
        runner.invoke(app, ["ask", "--help"], env={"COLUMNS": "400"}).output.split()
    )
    for mode in ASK_MODES:
        assert mode in help_text
    assert f"{AskConfig().mode} unless configured" in help_text
    bad = runner.invoke(app, ["ask", "-w", str(ws.root), "liver", "--mode", "everything"])
    assert bad.exit_code != 0 and "everything" in bad.output
