"""The command line, the library, the report's examples and the browser give one answer
(the same slices, in the same order, and the same reading) for the same text query."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from medsae.retrieval.io import TEXT_RETRIEVAL
from tests.retrieval.test_ask import bag_of_words, write_features

QUERY = "axial CT of both kidneys, without the femur"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from medsae.data.table import read_anatomy, slices_with_split
    from medsae.interpret.profiles import concept_profiles, write_profiles
    from medsae.labels.table import build_label_table
    from medsae.retrieval.index import build_index
    from medsae.sae.codes_io import load_codes
    from tests.support.synthetic import make_synthetic_workspace

    ws, truth = make_synthetic_workspace(
        tmp_path_factory.mktemp("ws"), n_subjects=15, slices_per_plane=6
    )
    folder = write_features(ws, truth)
    table = slices_with_split(ws.slices, ws.split)
    labels = build_label_table(table, read_anatomy(ws.slices), geometry=False)
    train = np.flatnonzero(table["split"].to_numpy() == "train")
    codes = load_codes(ws.codes(truth.encoder, truth.run))
    profiles = concept_profiles(codes, labels, train, range(len(truth.concepts)))
    write_profiles(folder, profiles)
    build_index(ws, embedder=bag_of_words())
    return ws


@pytest.fixture()
def words_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("medsae.retrieval.index.shared_embedder", bag_of_words)
    monkeypatch.setattr("medsae.llm.embed.shared_embedder", bag_of_words)


def test_cli_library_report_and_browser_agree(workspace, words_only, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from medsae.cli import app
    from medsae.frontend.view import WorkspaceView
    from medsae.report import ReportConfig, build_report
    from medsae.retrieval.index import ask
    from medsae.serve import create_app

    ws = workspace
    k = ReportConfig().k
    library = ask(ws, query=QUERY, n=k)
    assert library.reading is not None and library.features
    assert "not" in library.reading.summary() and len(library.results) > 0
    expected = library.results["slice_id"].tolist()

    res = CliRunner().invoke(
        app, ["ask", "-w", str(ws.root), QUERY, "--n", str(k)], env={"COLUMNS": "250"}
    )
    assert res.exit_code == 0, res.output
    assert f"read as: {library.reading.summary()}" in " ".join(res.output.split())
    printed = re.findall(r"(?:CT|MR):s\d{4}:\w+:\d{4}", res.output)
    assert printed == expected

    client = TestClient(create_app(WorkspaceView(ws.root), load_text_model=False))
    answer = client.get("/api/search", params={"q": QUERY, "k": k}).json()
    assert [i["slice_id"] for i in answer["items"]] == expected
    assert answer["reading"]["summary"] == library.reading.summary()

    # the report's examples are the suite's first queries: make this query the first one
    path = ws.index("synthetic", "synthetic-run") / TEXT_RETRIEVAL
    evaluated = json.loads(path.read_text())
    evaluated["queries"].insert(0, {"text": QUERY, "precision_at_n": 0.0, "answerable": True})
    path.write_text(json.dumps(evaluated))
    build_report(ws, force=True)
    page = html.unescape((ws.root / "report" / "index.html").read_text())
    grid = page.split(f"“{QUERY}”", 1)[1].split('<div class="grid">', 1)[0]
    assert re.findall(r'<figure class="tile" title="([^"]+)"', grid) == expected
    assert library.reading.summary() in grid
