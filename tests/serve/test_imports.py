"""Serving imports no model code: torch, matplotlib and scikit-learn stay out of the process
until a search with a model (an image, or text through the sentence embedder) or a feature
map asks for them (start-up time of ``medsae serve``)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

HEAVY = ("torch", "transformers", "matplotlib", "sklearn")

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import medsae.cli, medsae.serve
    from fastapi.testclient import TestClient
    from medsae.frontend.search import WorkspaceSearch
    from medsae.serve import create_app
    from medsae.frontend.view import WorkspaceView

    loaded = {"import": [m for m in HEAVY if m in sys.modules]}
    view = WorkspaceView(sys.argv[1])
    search = WorkspaceSearch(view, use_interpret=False)  # text: the keyword match, no model
    client = TestClient(create_app(view, backend=search))
    latent = client.get("/api/features", params={"limit": 1}).json()["items"][0]["latent"]
    slice_id = str(view.table["slice_id"].iloc[0])
    for path in ("/", "/api/info", f"/api/features/{latent}", f"/api/slices/{slice_id}",
                 f"/api/slices/{slice_id}/image.png", f"/api/slices/{slice_id}/similar",
                 "/api/search?q=liver"):
        assert client.get(path).status_code == 200, path
    loaded["requests"] = [m for m in HEAVY if m in sys.modules]
    print(json.dumps(loaded))
    """
)


def test_serving_imports_no_torch(full_workspace):
    ws, _ = full_workspace
    code = f"HEAVY = {HEAVY!r}\n{SCRIPT}"
    out = subprocess.run(
        [sys.executable, "-c", code, str(ws.root)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == {"import": [], "requests": []}
