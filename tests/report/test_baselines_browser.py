"""Baselines and seeds in front of a reader, in headless Chromium: the report's side-by-side
table (a column per baseline, the SAE's mean ± sd over seeds, the sentences where a baseline
matches or beats it, the headline's spread) and the browser's features list and feature page
(the stability across seeds: found again in 1 of 1 other seed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medsae.interpret.io import FEATURES
from medsae.interpret.stability import seed_stability
from medsae.pipeline import write_summary
from medsae.sae.checkpoint import save_sae
from medsae.sae.registry import build_sae, sae_config
from medsae.workspace import Workspace
from tests.browser import CHROMIUM, chromium_page, serving
from tests.support.fixtures import write_fixture_artifacts
from tests.support.synthetic import make_synthetic_workspace

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian chromium not installed at /usr/bin/chromium"
    ),
]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, str, str]:
    """The fixture workspace plus a second seed of its run (a permuted copy of the decoder)
    and a pca baseline, with the stability columns and the summary written."""
    root = Path(tmp_path_factory.mktemp("seeded-ws"))
    ws, truth = make_synthetic_workspace(root, n_subjects=12, slices_per_plane=8)
    write_fixture_artifacts(ws, truth, runs=1)
    enc, run = truth.encoder, truth.run
    rng = np.random.default_rng(0)
    w = rng.normal(size=(truth.n_latents, truth.dim))
    figures = {run: 0.90, f"{run}_s1": 0.84, "pca_D128_K4": 0.95}
    for i, name in enumerate(figures):
        arch = "pca" if name.startswith("pca") else "topk"
        sae = build_sae(sae_config(arch=arch, d_in=truth.dim, n_latents=truth.n_latents, k=4))
        with torch.no_grad():
            sae.W_dec.copy_(torch.as_tensor(w[rng.permutation(len(w))] if i else w))
        save_sae(ws.sae(enc, name), sae)
        if name != run:
            ws.eval(enc, name).mkdir(parents=True, exist_ok=True)
            summary = {"r2": figures[name], "l0": 12.0, "recovery_at_10": 0.5 + 0.1 * i}
            (ws.eval(enc, name) / "summary.json").write_text(json.dumps(summary))
    path = ws.features(enc, run) / FEATURES
    table = pd.read_parquet(path)
    columns, _ = seed_stability(ws, enc, run, table["latent"].to_numpy())
    for key, values in columns.items():
        table[key] = list(values) if key == "seed_matches" else values
    table.to_parquet(path, index=False)
    summary = write_summary(ws)
    assert (
        summary["n_seeds"] == 2 and summary["r2_sd"] > 0 and "pca_D128_K4" in summary["baselines"]
    )
    return ws, enc, run


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    with chromium_page(tmp_path_factory.mktemp("chromium-profile")) as pg:
        yield pg


def test_report_shows_baseline_columns_and_the_seed_spread(seeded, page) -> None:  # type: ignore[no-untyped-def]
    from medsae.report import build_report

    ws, _, run = seeded
    build_report(ws, {"n_features": 4}, force=True)
    page.goto((ws.report / "index.html").as_uri())
    section = page.inner_text("section#baselines")
    header = page.eval_on_selector_all(
        "section#baselines table th", "els => els.map(e => e.textContent)"
    )
    assert "pca_D128_K4" in header
    assert any(f"SAE {run} (mean ± sd, 2 seeds)" == h for h in header)
    assert "0.870 ± 0.042" in section  # r2: mean and sd of 0.90 and 0.84
    assert "pca_D128_K4 beats the SAE on R² (test): 0.950 against 0.870 ± 0.042" in section
    assert "± " in page.inner_text("section#summary")
    assert "mean ± sd over 2 seeds" in page.inner_text("section#summary")
    assert "found again in 1 of 1 other seed, cosine 1.00" in page.inner_text("section#features")
    assert not page.errors


def test_browser_lists_sorts_and_shows_the_stability_across_seeds(seeded, page) -> None:  # type: ignore[no-untyped-def]
    from medsae.frontend.search import WorkspaceSearch
    from medsae.frontend.view import WorkspaceView
    from medsae.serve import create_app

    ws, _, run = seeded
    view = WorkspaceView(ws.root)
    app = create_app(view, backend=WorkspaceSearch(view, use_interpret=False))
    with serving(app) as url:
        page.goto(f"{url}/#/features")
        page.wait_for_selector("#features tbody tr")
        page.click("th[data-sort=seed_cosine]")
        page.wait_for_function(
            "() => document.querySelector('#features tbody tr td.seed').textContent === '1/1 · 1.00'"
        )
        page.fill("input[name=min_seed_cosine]", "0.99")
        page.click("#filters button")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#features tbody td.seed')].every(td => td.textContent === '1/1 · 1.00')"
        )
        latent = page.inner_text("#features tbody tr td a").lstrip("#")
        page.goto(f"{url}/#/summary")
        page.wait_for_selector("#side-by-side tbody tr")
        header = page.eval_on_selector_all("#side-by-side th", "els => els.map(e => e.textContent)")
        assert header[1] == f"SAE {run} (mean ± sd, 2 seeds)" and "pca_D128_K4" in header
        table = page.inner_text("#side-by-side")
        assert "0.870 ± 0.042" in table and "0.950" in table
        assert "pca_D128_K4 beats the SAE on R² (test)" in page.inner_text("#findings")
        page.goto(f"{url}/#/feature/{latent}")
        page.wait_for_selector(".seed-stability")
        assert page.inner_text(".seed-stability") == (
            "Stability: found again in 1 of 1 other seed, cosine 1.00."
        )
    assert not page.errors
