"""A token SAE in the browser and the report, driven by headless Chromium: the native token
map overlay, the features list sorted by organ AP and the rediscovered-structures table."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

from medsae.data.io import LABEL_MAPS_FILE, label_id
from medsae.data.table import IMAGES_FILE
from medsae.workspace import Workspace
from tests.browser import CHROMIUM, chromium_page, serving

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian chromium not installed at /usr/bin/chromium"
    ),
]
RUN = "topk_D16_K2"


@pytest.fixture(scope="module")
def token_ws(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, int]:
    """A synthetic workspace whose slices hold a bright 8 x 8 square (the liver) in a dark
    field, a token store of cell statistics, and a token SAE trained, coded and evaluated on
    it by the stages; returns the workspace and the liver's best feature."""
    from medsae.encode.config import EncodeConfig
    from medsae.encode.token_stage import encode_tokens
    from medsae.evaluate.io import ORGAN_STRUCTURES
    from medsae.evaluate.stage import evaluate
    from medsae.sae import train, write_codes
    from tests.sae.conftest import RESUME_CFG
    from tests.sae.test_token_train import CellEncoder
    from tests.support.synthetic import make_synthetic_workspace

    ws, _ = make_synthetic_workspace(
        tmp_path_factory.mktemp("token-ws"), n_subjects=9, slices_per_plane=4
    )
    rng = np.random.default_rng(0)
    n = len(np.load(ws.slices / IMAGES_FILE, mmap_mode="r"))
    images = rng.integers(0, 30, (n, 32, 32), dtype=np.uint8)
    labels = np.zeros((n, 32, 32), dtype=np.uint8)
    for i in range(n):
        r, c = (int(v) * 8 for v in rng.integers(0, 4, 2))
        images[i, r : r + 8, c : c + 8] = 240
        labels[i, r : r + 8, c : c + 8] = label_id("liver")
        labels[i, 24:32, :] = np.where(labels[i, 24:32, :] == 0, label_id("spleen"), 0)
    np.save(ws.slices / IMAGES_FILE, images)
    np.save(ws.slices / LABEL_MAPS_FILE, labels)
    encode_tokens(ws, EncodeConfig(encoder="cells", token_grid=4), CellEncoder())
    cfg = RESUME_CFG.model_copy(update={"arch": ["topk"], "levels": [[16]], "k": [[2]]})
    train(ws, "cells-tokens", cfg.model_copy(update={"epochs": 6}))
    write_codes(ws, "cells-tokens", RUN)
    evaluate(ws, "cells-tokens", RUN)
    per = pd.read_parquet(ws.eval("cells-tokens", RUN) / ORGAN_STRUCTURES)
    liver = per[(per["method"] == "token_sae") & (per["structure"] == "liver")].iloc[0]
    return ws, int(liver["best_latent"])


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium_page(tmp_path_factory.mktemp("chromium-profile")) as pg:
        yield pg


def test_browser_shows_organ_ap_sorts_by_it_and_overlays_native_token_maps(
    token_ws: tuple[Workspace, int], page: Any
) -> None:
    from medsae.frontend.search import WorkspaceSearch
    from medsae.frontend.view import WorkspaceView
    from medsae.serve import create_app

    ws, latent = token_ws
    view = WorkspaceView(ws.root, encoder="cells-tokens", run=RUN)
    app = create_app(view, backend=WorkspaceSearch(view, use_interpret=False))
    with serving(app) as url:
        page.goto(f"{url}/#/features")
        page.wait_for_selector("#features th[data-sort=organ_ap]")
        page.click("#features th[data-sort=organ_ap]")
        page.wait_for_function(
            "() => document.querySelector('#features th.sorted')?.dataset.sort === 'organ_ap'"
        )
        shown = [
            float(t) for t in page.eval_on_selector_all(
                "#features tbody td.organ-ap",
                "els => els.map(e => e.firstChild.textContent.trim()).filter(t => t !== '–')",
            )
        ]  # fmt: skip
        assert len(shown) >= 2 and shown == sorted(shown, reverse=True)
        page.goto(f"{url}/#/feature/{latent}")
        page.wait_for_selector("#organ-line")
        line = page.inner_text("#organ-line")
        assert "liver" in line and "token AP" in line and "pointing game" in line
        page.check("#map-toggle")
        page.wait_for_function(
            "() => { const i = document.querySelectorAll('#top-slices img.map-overlay');"
            " return i.length > 0 && [...i].every(x => x.complete && x.naturalWidth === 32); }",
            timeout=15000,
        )
        page.wait_for_function(
            "() => document.getElementById('map-label').textContent.includes('native token map')"
        )
        assert page.errors == []


def test_report_has_the_rediscovered_structures_and_token_map_cards(
    token_ws: tuple[Workspace, int], page: Any
) -> None:
    from medsae.report import build_report

    ws, latent = token_ws
    build_report(ws, {"encoder": "cells-tokens", "run": RUN, "text_search": "keyword"})
    page.goto((ws.report / "index.html").as_uri())
    page.wait_for_selector("#structures-rediscovered table")
    rows = page.eval_on_selector_all(
        "#structures-rediscovered tbody tr", "rs => rs.map(r => r.innerText)"
    )
    assert any(r.startswith("liver") and f"#{latent}" in r for r in rows)
    methods = page.inner_text("#organ-methods")
    for label in ("token SAE", "attribution", "PCA", "k-means", "chance"):
        assert label in methods
    card = page.locator(f".token-card[data-latent='{latent}'] img.token-map")
    assert card.count() == 1
    page.wait_for_function(
        "() => [...document.querySelectorAll('img.token-map')].every(i => i.complete && i.naturalWidth > 0)"
    )
    assert page.errors == []
