"""Fuzz the upload route: 224 seeded malformed files, each answered by a named 4xx (or a
200 where a flipped bit left the file valid), the server alive and its memory bounded."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from medsae.frontend.view import WorkspaceView
from medsae.serve import create_app
from tests.fuzz_inputs import malformed
from tests.rss import peak_rss_growth
from tests.serve.test_api import FakeImageSearch

N_INPUTS = 224


@pytest.fixture(scope="module")
def client(full_workspace) -> TestClient:
    ws, _ = full_workspace
    view = WorkspaceView(ws.root)
    app = create_app(view, backend=FakeImageSearch(view, use_interpret=False))
    return TestClient(app, raise_server_exceptions=False)


def test_malformed_uploads_get_named_answers(client: TestClient) -> None:
    answers: dict[int, int] = {}
    bad = []
    with peak_rss_growth() as growth:
        for i, (kind, data) in enumerate(malformed(seed=23, n=N_INPUTS)):
            name = f"fuzz-{i}-{kind}.bin"
            r = client.post("/api/search/image", files={"file": (name, data)})
            answers[r.status_code] = answers.get(r.status_code, 0) + 1
            named = r.status_code == 200 or (
                r.status_code in (400, 413, 415)
                and r.headers["content-type"] == "application/json"
                and name in r.json()["detail"]
            )
            if not named:
                bad.append((name, r.status_code, r.text[:300]))
    assert not bad, bad
    assert sum(answers.values()) == N_INPUTS and answers.get(413, 0) >= N_INPUTS // 16
    assert client.get("/api/info").status_code == 200  # alive
    assert growth.bytes < 300 * 1024 * 1024, f"resident memory grew {growth.bytes >> 20} MB"
