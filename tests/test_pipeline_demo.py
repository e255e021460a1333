"""The demo pipeline end to end on a tiny phantom: every real stage, tiny sizes."""

from __future__ import annotations

import json

import pytest

from medsae.evaluate.io import resolve_run
from medsae.pipeline import SUMMARY_KEYS, StageUnavailable, run_demo

TINY = {
    "phantom": {"ct_subjects": 8, "mri_subjects": 4, "size_xy": 32, "n_slices": 24},
    "prepare": {"step": 4, "size": 64},
    "encode": {"options": {"input_size": 64}, "batch_size": 64},
    "train": {"levels": [[16, 64]], "k": [[2, 4]], "epochs": 3, "batch_size": 64},
    "evaluate": {
        "l2_grid": [1e-2],
        "max_iter": 30,
        "recovery_ns": [1, 10],
        "recovery_methods": ["mean_diff"],
    },
    "index": {"search": {"eval_queries": 20, "sweep_k": [5]}},
    "report": {"n_features": 4, "top_slices": 3, "fingerprint_examples": 1},
}


@pytest.mark.slow
def test_demo_end_to_end_on_a_tiny_phantom(tmp_path):
    root = tmp_path / "demo"
    try:
        run = run_demo(root, **TINY)
    except StageUnavailable as e:
        pytest.skip(f"a stage is not available yet: {e}")
    summary = json.loads((root / "summary.json").read_text())
    assert set(SUMMARY_KEYS) <= set(summary)
    assert summary["best_config"] and summary["r2"] is not None and summary["l0"] > 0
    assert (root / "report" / "index.html").is_file()
    assert {
        "prepare",
        "encode",
        "train",
        "evaluate",
        "rank",
        "interpret",
        "index",
        "report",
    } <= set(run.outcomes)
    # a rerun skips every finished stage
    again = run_demo(root, **TINY)
    assert all(o.skipped for outcomes in again.outcomes.values() for o in outcomes)

    # the browser on the result: real text search, real image search (encoder + SAE rebuilt)
    import io

    import numpy as np
    from fastapi.testclient import TestClient
    from PIL import Image

    from medsae.sae.codes_io import load_codes
    from medsae.serve import create_app
    from medsae.workspace import Workspace

    client = TestClient(create_app(root))
    assert client.get("/api/info").json()["text_search"] == "interpret"
    res = client.get("/api/search", params={"q": "axial CT slice", "k": 5}).json()
    assert res["method"] == "interpret.ask" and res["items"]
    images = np.load(root / "slices" / "images.npy", mmap_mode="r")
    # a slice that activates some feature (a tiny SAE leaves some slices with no active
    # latent: their fingerprint is empty and matches nothing)
    ws = Workspace(root)
    codes = load_codes(ws.codes(*resolve_run(ws))).tocsr()
    row = int(np.flatnonzero(np.diff(codes.indptr) > 0)[0])
    buf = io.BytesIO()
    Image.fromarray(np.asarray(images[row])).save(buf, "PNG")
    up = client.post("/api/search/image", files={"file": ("q.png", buf.getvalue(), "image/png")})
    assert up.status_code == 200, up.text
    assert up.json()["method"] == "fingerprint" and up.json()["items"]
