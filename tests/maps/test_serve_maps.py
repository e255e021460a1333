"""The map route of the browser and its overlay, driven by headless Chromium."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from medsae.encode.spatial import SpatialFeatures
from medsae.maps import MapMaker
from medsae.sae.checkpoint import save_sae
from medsae.workspace import Workspace
from tests.browser import chromium_page, serving
from tests.maps.conftest import random_sae
from tests.support.synthetic import make_synthetic_workspace

ARTIFACTS = Path(__file__).resolve().parents[1] / "_artifacts" / "browser"
DIM, N_LATENTS = 16, 32


class CellEncoder:
    """A synthetic encoder with feature maps: per 4 x 4 pixel cell, ``DIM`` fixed projections
    of the cell's brightness and position; the embedding is their mean (exact maps)."""

    name = "synthetic"
    dim = DIM
    input_size = 32

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.w = rng.normal(size=(DIM, 3)).astype(np.float32)

    def spatial_features(self, images_uint8: np.ndarray) -> SpatialFeatures:
        b, s = images_uint8.shape[:2]
        g = s // 4
        bright = images_uint8.astype(np.float32).reshape(b, g, 4, g, 4).mean(axis=(2, 4)) / 255
        rows = np.broadcast_to(np.linspace(0, 1, g, dtype=np.float32)[None, :, None], bright.shape)
        cols = np.broadcast_to(np.linspace(0, 1, g, dtype=np.float32)[None, None, :], bright.shape)
        fmap = np.einsum("dk,kbhw->bdhw", self.w, np.stack([bright, rows * bright, cols]))
        fmap = np.ascontiguousarray(fmap, dtype=np.float32)
        return SpatialFeatures(
            parts=[fmap],
            channels=[(0, DIM)],
            scales=np.ones((b, 1)),
            embedding=fmap.mean(axis=(2, 3)),
            exact=True,
            pooling="mean",
            method="cell projections, mean pooling (exact)",
        )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Any]:
    root = Path(tmp_path_factory.mktemp("maps-ws"))
    ws, truth = make_synthetic_workspace(
        root, n_subjects=6, slices_per_plane=3, dim=DIM, n_latents=N_LATENTS
    )
    save_sae(ws.sae(truth.encoder, truth.run), random_sae(DIM, N_LATENTS, encoder=truth.encoder))
    from medsae.frontend.search import WorkspaceSearch
    from medsae.frontend.view import WorkspaceView
    from medsae.serve import create_app

    view = WorkspaceView(ws.root)
    app = create_app(view, backend=WorkspaceSearch(view, use_interpret=False))
    app.state.map_maker = MapMaker(ws, truth.encoder, truth.run, spatial_encoder=CellEncoder())
    return ws, app


def _first_slice(ws: Workspace) -> str:
    import pandas as pd

    return str(pd.read_parquet(ws.slices / "slices.parquet")["slice_id"].iloc[0])


def test_map_route_returns_a_png_overlay_with_its_label(served: tuple[Workspace, Any]) -> None:
    ws, app = served
    client = TestClient(app)
    sid = _first_slice(ws)
    r = client.get(f"/api/slices/{sid}/map", params={"latent": 3})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["X-Map-Label"] == "exact" and r.headers["X-Map-Exact"] == "true"
    img = Image.open(io.BytesIO(r.content))
    assert img.mode == "RGBA" and img.size == (32, 32)
    alpha = np.asarray(img)[..., 3]
    assert alpha.max() == 255 and alpha.min() < 255  # strongest pixel opaque, others less
    other = client.get(f"/api/slices/{sid}/map", params={"latent": 4})
    assert other.content != r.content
    # below its threshold a latent does not fire: the map says so
    maker = app.state.map_maker
    for latent in range(maker.n_latents()):
        smap = maker.slice_map(0, latent)
        res = client.get(f"/api/slices/{sid}/map", params={"latent": latent})
        assert res.headers["X-Map-Fires"] == ("true" if smap.activation > 0 else "false")
        assert smap.fires == (smap.activation > 0)


def test_map_route_errors_name_the_problem(served: tuple[Workspace, Any]) -> None:
    ws, app = served
    client = TestClient(app)
    sid = _first_slice(ws)
    r = client.get(f"/api/slices/{sid}/map", params={"latent": N_LATENTS})
    assert r.status_code == 422 and f"outside 0..{N_LATENTS - 1}" in r.json()["detail"]
    assert client.get("/api/slices/nope/map", params={"latent": 0}).status_code == 404
    assert client.get(f"/api/slices/{sid}/map").status_code == 422  # latent is required


@pytest.fixture(scope="module")
def base_url(served: tuple[Workspace, Any]) -> Iterator[str]:
    _, app = served
    with serving(app) as url:
        yield url


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium_page(tmp_path_factory.mktemp("chromium-profile")) as pg:
        yield pg


OVERLAYS_SHOWN = """sel => { const imgs = [...document.querySelectorAll(sel)];
  return imgs.length > 0 && imgs.every(i => i.style.display === 'block' && i.complete && i.naturalWidth > 0); }"""
OVERLAYS_HIDDEN = """sel => { const imgs = [...document.querySelectorAll(sel)];
  return imgs.length > 0 && imgs.every(i => i.style.display === 'none'); }"""


@pytest.mark.browser
def test_feature_page_overlay_appears_and_follows_the_toggle(page: Any, base_url: str) -> None:
    page.goto(f"{base_url}/#/feature/1")
    page.wait_for_selector("#top-slices a.tile img.map-overlay", state="attached")
    sel = "#top-slices img.map-overlay"
    assert page.evaluate(OVERLAYS_HIDDEN, sel)
    assert page.evaluate(f"() => [...document.querySelectorAll('{sel}')].every(i => !i.src)")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#top-slices img:not(.map-overlay)')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    first_tile = page.locator("#top-slices a.tile img:not(.map-overlay)").first
    box = first_tile.bounding_box()
    assert box is not None
    plain = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=box))).convert("RGB"), int)
    assert np.abs(plain[..., 0] - plain[..., 2]).max() <= 2  # a grey slice, no colour yet
    page.check("#map-toggle")
    page.wait_for_function(OVERLAYS_SHOWN, arg=sel)
    page.wait_for_function(
        "() => document.getElementById('map-label').textContent.includes('exact map')"
    )
    page.wait_for_function("() => /^\\+\\d/.test(document.getElementById('map-vmax').textContent)")
    # what is on screen changes: the overlay colours the slice where the feature contributes
    shown = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=box))).convert("RGB"), int)
    assert np.abs(shown[..., 0] - shown[..., 2]).max() > 40
    assert np.abs(shown - plain).mean() > 5
    page.fill("#map-opacity", "0.3")
    page.dispatch_event("#map-opacity", "input")
    assert page.evaluate(f"() => document.querySelector('{sel}').style.opacity") == "0.3"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "feature-map-overlay.png"), full_page=True)
    page.uncheck("#map-toggle")
    page.wait_for_function(OVERLAYS_HIDDEN, arg=sel)
    hidden = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=box))).convert("RGB"), int)
    assert np.abs(hidden - plain).max() <= 2  # switched off: the plain slice again
    assert page.errors == []  # type: ignore[attr-defined]


@pytest.mark.browser
def test_slice_page_overlay_switches_latent(page: Any, base_url: str, served: Any) -> None:
    ws, _ = served
    sid = _first_slice(ws)
    page.goto(f"{base_url}/#/slice/{sid}")
    page.wait_for_selector(".big img.map-overlay", state="attached")
    page.check("#map-toggle")
    page.wait_for_function(OVERLAYS_SHOWN, arg=".big img.map-overlay")
    first = page.evaluate("() => document.querySelector('.big img.map-overlay').src")
    options = page.evaluate(
        "() => [...document.querySelectorAll('#map-latent option')].map(o => o.value)"
    )
    assert len(options) > 1  # the slice's fingerprint offers several features to map
    page.select_option("#map-latent", options[1])
    page.wait_for_function(
        "src => document.querySelector('.big img.map-overlay').src !== src", arg=first
    )
    page.wait_for_function(OVERLAYS_SHOWN, arg=".big img.map-overlay")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "slice-map-overlay.png"), full_page=True)
    page.uncheck("#map-toggle")
    page.wait_for_function(OVERLAYS_HIDDEN, arg=".big img.map-overlay")
    assert page.errors == []  # type: ignore[attr-defined]


def test_map_route_refuses_a_huge_latent_by_name(served: tuple[Workspace, Any]) -> None:
    """A latent beyond any integer type is a 422 naming it, not an overflow 500."""
    ws, app = served
    sid = _first_slice(ws)
    r = TestClient(app).get(f"/api/slices/{sid}/map", params={"latent": "99999999999999999999"})
    assert r.status_code == 422 and "99999999999999999999" in r.json()["detail"]
