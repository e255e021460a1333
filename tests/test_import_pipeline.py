"""Imported embeddings run through every later stage, to the report and the browser."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from medsae.config import PipelineConfig, build_config
from medsae.encode.import_stage import import_embeddings
from medsae.frontend.view import WorkspaceView
from medsae.pipeline import run_pipeline
from medsae.serve import create_app
from tests.encode.test_import import make_files

SMALL = {
    "train": {
        "arch": ["matryoshka"],
        "levels": [[16, 64]],
        "k": [[4, 8]],
        "epochs": 8,
        "batch_size": 32,
    },
    "evaluate": {
        "l2_grid": [1e-2],
        "max_iter": 30,
        "recovery_ns": [1, 2, 5, 10],
        "recovery_methods": ["mean_diff"],
        "headline_method": "mean_diff",
        "mono_top_n": 3,
        "min_examples": 3,
    },
    "index": {"text_eval": False},
    "interpret": {"describer": "offline", "scorer": "labels"},
    "report": {"n_features": 4, "text_search": "keyword"},
}


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSAE_PROGRESS", "0")


def test_imported_embeddings_reach_the_report_and_the_browser(tmp_path: Path) -> None:
    files = make_files(tmp_path / "in", n_subjects=30, per=6)
    root = tmp_path / "ws"
    import_embeddings(root, files["emb"], files["meta"])
    config = build_config(PipelineConfig, {"workspace": str(root), **SMALL}, "test")
    stages = ["train", "codes", "evaluate", "rank", "interpret", "index", "report"]
    result = run_pipeline(config, stages=stages)
    assert set(result.outcomes) == set(stages)
    view = WorkspaceView(root)
    assert view.encoder == "imported" and view.images is None
    probes = pd.read_parquet(root / "eval" / "imported" / view.run / "probes.parquet")
    diagnosis = probes[(probes["task"] == "diagnosis") & (probes["split"] == "test")]
    assert diagnosis["kind"].eq("label").all() and diagnosis["roc_auc"].min() > 0.9
    features = pd.read_parquet(root / "features" / "imported" / view.run / "features.parquet")
    assert features["description"].str.contains("diagnosis").any()
    html = (root / "report" / "index.html").read_text()
    assert 'class="noimg"' in html and '<img src="img/slice-' not in html

    client = TestClient(create_app(view))
    info = client.get("/api/info").json()
    assert info["image_search"] is False and info["n_slices"] == 180
    detail = client.get("/api/slices/img0007").json()
    assert detail["slice"]["image_url"] is None and detail["metadata"]["diagnosis"]
    feature = client.get(f"/api/features/{int(features['latent'].iloc[0])}").json()
    assert all(s["image_url"] is None for s in feature["top"])
    assert client.get("/api/search", params={"q": "diagnosis pneumonia"}).status_code == 200


def test_imported_images_are_served(tmp_path: Path) -> None:
    files = make_files(tmp_path / "in", n_subjects=15, per=4)
    root = tmp_path / "ws"
    import_embeddings(root, files["emb"], files["meta"], files["images"])
    config = build_config(PipelineConfig, {"workspace": str(root), **SMALL}, "test")
    run_pipeline(config, stages=["train", "codes"])
    client = TestClient(create_app(WorkspaceView(root)))
    ref = client.get("/api/slices/img0003").json()["slice"]
    assert ref["image_url"]
    png = client.get(ref["image_url"])
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
