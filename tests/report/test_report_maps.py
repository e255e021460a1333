"""Feature maps and localisation scores in the report's feature cards."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medsae.data.io import LABEL_MAPS_FILE, label_id
from medsae.data.table import IMAGES_FILE
from medsae.encode.spatial import SpatialFeatures
from medsae.interpret.io import FEATURES, SCORES
from medsae.maps import MapMaker
from medsae.report import ReportConfig, build_report
from medsae.sae.checkpoint import save_sae
from medsae.workspace import Workspace
from tests.maps.conftest import random_sae
from tests.maps.test_serve_maps import DIM, N_LATENTS, CellEncoder
from tests.support.fixtures import write_fixture_artifacts
from tests.support.synthetic import SyntheticTruth, make_synthetic_workspace

MAP_SRC = re.compile(r'src="(img/map-(\d+)-(\d+)\.png)"')


class ApproximateCellEncoder(CellEncoder):
    """The same maps, declared approximate (as a CLS-pooled encoder's are)."""

    def spatial_features(self, images_uint8: np.ndarray) -> SpatialFeatures:
        feats = super().spatial_features(images_uint8)
        return dataclasses.replace(feats, exact=False, method="cell projections (approximate)")


class PlainEncoder:
    """An encoder without spatial feature maps."""

    name = "plain"
    dim = DIM

    def encode(self, images_uint8: np.ndarray) -> np.ndarray:
        return np.zeros((len(images_uint8), DIM), np.float32)

    def metadata(self) -> dict[str, Any]:
        return {"registry_name": "plain", "options": {}}


@pytest.fixture(scope="module")
def spatial_workspace(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Workspace, SyntheticTruth]:
    """A finished workspace with an SAE checkpoint, pixel label maps, localisation columns
    in features.parquet (every feature scored on the liver) and a scores.json summary."""
    root = Path(tmp_path_factory.mktemp("report-maps-ws"))
    ws, truth = make_synthetic_workspace(
        root, n_subjects=6, slices_per_plane=3, dim=DIM, n_latents=N_LATENTS
    )
    write_fixture_artifacts(ws, truth)
    save_sae(ws.sae(truth.encoder, truth.run), random_sae(DIM, N_LATENTS, encoder=truth.encoder))
    images = np.load(ws.slices / IMAGES_FILE)
    labels = np.where(images > 60, label_id("liver"), 0).astype(np.uint8)
    np.save(ws.slices / LABEL_MAPS_FILE, labels)
    folder = ws.features(truth.encoder, truth.run)
    table = pd.read_parquet(folder / FEATURES)
    table["localisation_slices"] = 8
    table["localisation_target"] = "liver"
    table[["pointing", "energy_in_mask"]] = [0.875, 0.4321]
    table[["pointing_baseline", "energy_in_mask_baseline"]] = [0.25, 0.1234]
    table.to_parquet(folder / FEATURES, index=False)
    scores = json.loads((folder / SCORES).read_text())
    scores["localisation"] = {
        "status": "computed",
        "pointing_game": 0.875,
        "energy_in_mask": 0.4321,
        "pointing_game_baseline": 0.25,
        "energy_in_mask_baseline": 0.1234,
        "n_features_scored": len(table),
    }
    (folder / SCORES).write_text(json.dumps(scores))
    return ws, truth


def _copy(ws: Workspace, tmp_path: Path) -> Path:
    dst = tmp_path / "ws"
    shutil.copytree(ws.root, dst)
    return dst


def _cards(html: str) -> list[str]:
    return html.split('<div class="card">')[1:]


def _config(**kw: Any) -> ReportConfig:
    return ReportConfig(
        n_features=3, top_slices=4, fingerprint_examples=1, text_search="keyword", **kw
    )


def test_cards_show_exact_map_overlays_and_localisation(spatial_workspace, tmp_path):
    ws, truth = spatial_workspace
    root = _copy(ws, tmp_path)
    maker = MapMaker(root, truth.encoder, truth.run, spatial_encoder=CellEncoder())
    out = build_report(root, _config(map_slices=2), map_maker=maker).path
    html = (out / "index.html").read_text()
    assert "<script" not in html
    cards = _cards(html)
    assert len(cards) == 3
    for card in cards:
        maps = MAP_SRC.findall(card)
        assert len(maps) == 2, card  # the first two top slices of every card
        latent = int(re.search(r"Feature #(\d+)", card).group(1))  # type: ignore[union-attr]
        plain = re.findall(r'src="img/slice-(\d+)\.png"', card)
        assert [int(r) for _, _, r in maps] == [int(r) for r in plain[:2]]
        for src, j, row in maps:
            assert int(j) == latent
            overlay = np.asarray(Image.open(out / src).convert("RGB")).astype(int)
            grey = np.asarray(Image.open(out / f"img/slice-{row}.png").convert("RGB")).astype(int)
            assert overlay.shape == grey.shape == (128, 128, 3)
            assert np.abs(grey[..., 0] - grey[..., 2]).max() == 0  # the slice is grey
            assert np.abs(overlay[..., 0] - overlay[..., 2]).max() > 40  # the map is coloured
        assert "Feature maps (exact) on the top slices" in card
        assert "APPROXIMATE" not in card
        assert "localisation (target liver, 8 held-out slices): pointing" in card
        assert "0.88" in card and "(blob 0.25)" in card and "0.43" in card
    # the legend above the cards: colour bar, exactness, localisation summary with baseline
    assert "exact: cell projections, mean pooling (exact)" in html
    assert "pointing game <b>0.88</b> against 0.25 for a centred Gaussian blob" in html
    assert "Feature maps not available" not in html


def test_approximate_maps_are_labelled_on_every_overlay(spatial_workspace, tmp_path):
    ws, truth = spatial_workspace
    root = _copy(ws, tmp_path)
    maker = MapMaker(root, truth.encoder, truth.run, spatial_encoder=ApproximateCellEncoder())
    html = (build_report(root, _config(), map_maker=maker).path / "index.html").read_text()
    n_maps = len(MAP_SRC.findall(html))
    # three maps per card (the default), fewer where a feature has fewer top slices
    assert n_maps == sum(
        min(3, len(re.findall(r'src="img/slice-\d+\.png"', c))) for c in _cards(html)
    )
    assert n_maps >= 7
    assert html.count("<figcaption>APPROXIMATE · act") == n_maps
    assert html.count("Feature maps (approximate) on the top slices") == 3
    assert "approximate (not an exact split): cell projections (approximate)" in html


def test_no_maps_without_a_spatial_encoder_and_the_card_says_why(spatial_workspace, tmp_path):
    ws, truth = spatial_workspace
    root = _copy(ws, tmp_path)
    maker = MapMaker(root, truth.encoder, truth.run, spatial_encoder=PlainEncoder())
    html = (build_report(root, _config(), map_maker=maker).path / "index.html").read_text()
    assert not MAP_SRC.search(html)
    for card in _cards(html):
        assert "Feature maps not available: encoder plain: plain does not offer spatial" in card
        assert "pooling mean or multiscale" in card  # names the pooling that would work
    # the synthetic store does not record how its encoder was built: no map, with the reason
    html = (
        build_report(root, _config(), force=True).path / "index.html"  # default MapMaker
    ).read_text()
    assert not MAP_SRC.search(html)
    assert html.count("Feature maps not available:") == 3
    assert "cannot rebuild it" in html


def test_no_label_maps_no_checkpoint_says_not_computed_and_why(full_workspace, tmp_path):
    ws, _ = full_workspace
    root = _copy(ws, tmp_path)
    html = (build_report(root, _config()).path / "index.html").read_text()
    assert not MAP_SRC.search(html)
    cards = _cards(html)
    assert cards
    for card in cards:
        assert "Feature maps not available:" in card and "not an SAE checkpoint" in card
        assert "localisation: not computed (no pixel label maps" in card
        assert "medsae prepare --label-maps" in card
    assert "Localisation scores not computed: no pixel label maps" in html


def test_localisation_reasons_per_feature(spatial_workspace, tmp_path):
    ws, truth = spatial_workspace
    root = _copy(ws, tmp_path)
    folder = Workspace(root).features(truth.encoder, truth.run)
    table = pd.read_parquet(folder / FEATURES)
    table["pointing"] = np.nan
    table["energy_in_mask"] = np.nan
    table.loc[table["latent"] % 2 == 1, "localisation_target"] = ""
    table["localisation_slices"] = 0
    table.to_parquet(folder / FEATURES, index=False)
    html = (build_report(root, _config(map_slices=0)).path / "index.html").read_text()
    assert not MAP_SRC.search(html)
    assert "Feature maps not available: switched off (map_slices = 0)" in html
    cards = _cards(html)
    assert len(cards) == 3
    for card in cards:
        latent = int(re.search(r"Feature #(\d+)", card).group(1))  # type: ignore[union-attr]
        why = (
            "its concept and description name no structure"
            if latent % 2
            else "no held-out slice where it fires with liver in view"
        )
        assert f"localisation: not computed ({why})." in card


def test_overlay_png_is_a_valid_image(spatial_workspace, tmp_path):
    ws, truth = spatial_workspace
    root = _copy(ws, tmp_path)
    maker = MapMaker(root, truth.encoder, truth.run, spatial_encoder=CellEncoder())
    out = build_report(root, _config(map_slices=1, thumb_size=64), map_maker=maker).path
    srcs = [s for s, _, _ in MAP_SRC.findall((out / "index.html").read_text())]
    assert len(srcs) == 3
    for src in srcs:
        img = Image.open(io.BytesIO((out / src).read_bytes()))
        assert img.format == "PNG" and img.size == (64, 64)


def test_batched_maps_equal_single_slice_maps(spatial_workspace, tmp_path):
    from medsae.frontend.view import WorkspaceView
    from medsae.report.maps import CardMaps

    ws, truth = spatial_workspace
    maker = MapMaker(ws, truth.encoder, truth.run, spatial_encoder=CellEncoder())
    view = WorkspaceView(ws.root)
    maps = CardMaps(view, tmp_path, n_slices=2, maker=maker)
    tops = {j: view.top_rows(j, 4) for j in (0, 1, 5)}
    maps.prepare(tops, batch_size=3)
    assert len(maps._made) == sum(min(2, len(r)) for r in tops.values())
    for (j, row), made in maps._made.items():
        one = maker.slice_map(row, j)
        np.testing.assert_allclose(made.values, one.values, rtol=1e-5, atol=1e-7)
        assert made.activation == pytest.approx(one.activation, rel=1e-5, abs=1e-7)
        assert made.exact == one.exact


def test_a_card_map_of_a_latent_that_does_not_fire_says_so(spatial_workspace, tmp_path):
    ws, truth = spatial_workspace
    root = _copy(ws, tmp_path)
    maker = MapMaker(root, truth.encoder, truth.run, spatial_encoder=ApproximateCellEncoder())
    html = (build_report(root, _config(), map_maker=maker).path / "index.html").read_text()
    captions = re.findall(r"<figcaption>APPROXIMATE · act ([^<]*)</figcaption>", html)
    assert captions
    for text in captions:
        value = float(text.split(" ")[0])
        assert text.endswith("· does not fire") == (not value > 0)
