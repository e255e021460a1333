"""The browser page driven by headless Chromium against a live server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, chromium_page, serving

ARTIFACTS = Path(__file__).resolve().parents[1] / "_artifacts" / "browser"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian chromium not installed at /usr/bin/chromium"
    ),
]


@pytest.fixture(scope="module")
def base_url(full_workspace) -> Iterator[str]:
    from medsae.frontend.search import WorkspaceSearch
    from medsae.frontend.view import WorkspaceView
    from medsae.serve import create_app

    ws, _ = full_workspace
    view = WorkspaceView(ws.root)
    app = create_app(view, backend=WorkspaceSearch(view, use_interpret=False))
    with serving(app) as url:
        yield url


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory):
    with chromium_page(tmp_path_factory.mktemp("chromium-profile")) as pg:
        yield pg


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _images_loaded(page, selector: str) -> int:
    page.wait_for_function(
        f"() => {{ const i = document.querySelectorAll('{selector}'); return i.length > 0 && [...i].every(x => x.complete && x.naturalWidth > 0); }}",
        timeout=15000,
    )
    return int(page.eval_on_selector_all(selector, "els => els.length"))


def test_features_page_lists_and_sorts(page, base_url):
    page.goto(f"{base_url}/#/features")
    page.wait_for_selector("#features tbody tr")
    assert page.locator("#features tbody tr").count() == 50
    page.click("th[data-sort=latent]")
    page.wait_for_function(
        "() => document.querySelector('#features tbody tr td a').textContent === '#127'"
    )
    page.fill("input[name=q]", "liver")
    page.click("#filters button")
    page.wait_for_function("() => document.querySelectorAll('#features tbody tr').length === 1")
    _shot(page, "features")
    assert not page.errors


def test_feature_page_shows_a_rule_that_holds_on_all_but_one_literal(
    page, base_url, full_workspace
):
    _, truth = full_workspace
    page.goto(f"{base_url}/#/feature/{len(truth.concepts)}")  # the fixture's scanner feature
    page.wait_for_selector("#top-slices img")
    text = page.inner_text("main")
    assert "Rule (any 2 of 3):" in text and "not group=lungs" in text
    assert not page.errors


def test_feature_page_shows_top_slices(page, base_url):
    page.goto(f"{base_url}/#/feature/1")
    # the page of the previous test stays until this one has rendered: wait for it
    page.wait_for_function(
        "() => (document.querySelector('h1') || {}).textContent?.startsWith('Feature #1 ')"
    )
    # the slice images; the map overlays stay unloaded until the overlay is switched on
    n = _images_loaded(page, "#top-slices img:not(.map-overlay)")
    assert n >= 3
    assert page.locator("#top-slices img.map-overlay").count() == n
    assert "modality=MR" in page.inner_text("main")
    assert "Rule: modality=MR" in page.inner_text("main")  # features.parquet `rule`
    assert page.locator(".hist div").count() == 20
    _shot(page, "feature")
    page.click("#top-slices a.tile >> nth=0")
    page.wait_for_selector("#similar .tile img")
    assert "Fingerprint" in page.inner_text("main")
    _images_loaded(page, "#similar img")
    _shot(page, "slice")
    assert not page.errors


def test_text_search_returns_images(page, base_url):
    page.goto(f"{base_url}/#/search")
    page.fill("#q", "sagittal plane")
    page.click("#text-form button")
    n = _images_loaded(page, "#search-results img")
    assert n > 0
    _shot(page, "search")
    assert not page.errors
