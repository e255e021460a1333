"""Localisation scores: pointing game and energy inside the mask, against a Gaussian blob."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsae.data.io import LABEL_MAPS_FILE
from medsae.errors import InputError
from medsae.maps import localisation_scores, score_map, target_structures
from medsae.maps.localisation import gaussian_blob, spread
from tests.maps.conftest import make_planted


def test_planted_square_feature_points_at_its_square(tmp_path: Path) -> None:
    p = make_planted(tmp_path / "ws")
    table = pd.DataFrame(
        {
            "latent": [p.latent, 2],
            "concept": ["structure=liver", "modality=CT"],
            "description": ["the liver", "CT slices"],
        }
    )
    res = localisation_scores(
        p.ws, "square", p.run, table, p.rows, max_slices=50, spatial_encoder=p.encoder
    )
    assert res.computed and res.summary["status"] == "computed"
    row = res.features.set_index("latent").loc[p.latent]
    n_squares = sum(c is not None for c in p.squares)
    assert row["localisation_slices"] == n_squares  # fires on every square, never elsewhere
    assert row["pointing"] == 1.0
    assert row["energy_in_mask"] > 0.6
    assert row["pointing_baseline"] == 0.0  # the squares are off the centre
    assert row["energy_in_mask_baseline"] < row["energy_in_mask"] - 0.3
    assert row["localisation_target"] == "liver"
    other = res.features.set_index("latent").loc[2]
    assert other["localisation_slices"] == 0 and np.isnan(other["pointing"])
    assert res.summary["pointing_game"] == 1.0
    assert res.summary["n_features_scored"] == 1 and res.summary["exact"] is True
    merged = res.merge_into(table)
    assert list(merged["latent"]) == [p.latent, 2]
    assert merged.loc[0, "pointing"] == 1.0


def test_a_feature_pointing_elsewhere_scores_zero(tmp_path: Path) -> None:
    p = make_planted(tmp_path / "ws")
    table = pd.DataFrame({"latent": [p.latent], "concept": ["structure=spleen"]})
    res = localisation_scores(p.ws, "square", p.run, table, p.rows, spatial_encoder=p.encoder)
    row = res.features.iloc[0]
    assert row["localisation_slices"] > 0
    assert row["pointing"] == 0.0 and row["energy_in_mask"] < 0.1


def test_without_label_maps_the_score_is_not_computed_and_names_the_flag(
    tmp_path: Path,
) -> None:
    p = make_planted(tmp_path / "ws")
    (p.ws.slices / LABEL_MAPS_FILE).unlink()
    res = localisation_scores(p.ws, "square", p.run, [p.latent], p.rows, spatial_encoder=p.encoder)
    assert not res.computed
    assert res.summary["status"] == "not computed"
    assert "--label-maps" in (res.reason or "")
    assert res.features["pointing"].isna().all()


def test_latent_out_of_range_is_refused(tmp_path: Path) -> None:
    p = make_planted(tmp_path / "ws")
    with pytest.raises(InputError, match=r"latent: 9 is outside 0\.\.3"):
        localisation_scores(p.ws, "square", p.run, [9], p.rows, spatial_encoder=p.encoder)


def test_score_map_and_the_gaussian_baseline() -> None:
    size = 16
    mask = np.zeros((size, size), bool)
    mask[6:10, 6:10] = True  # a centred structure: the blob's peak is inside
    peak_in = np.zeros((size, size))
    peak_in[7, 8] = 1.0
    s = score_map(peak_in, mask)
    assert s.pointing == 1.0 and s.energy == 1.0 and s.pointing_baseline == 1.0
    peak_out = np.zeros((size, size))
    peak_out[0, 0], peak_out[1, 0] = 1.0, -5.0  # negative values carry no energy
    s = score_map(peak_out, mask)
    assert s.pointing == 0.0 and s.energy == 0.0
    blob = gaussian_blob(size, (2.0, 2.0))
    assert np.unravel_index(np.argmax(blob), blob.shape) == (7, 7)
    np.testing.assert_allclose(spread(blob), (2.0, 2.0), rtol=0.02)


def test_target_structures_from_concept_rule_or_description() -> None:
    assert target_structures("structure=liver") == ["liver"]
    assert target_structures("group=lungs") == ["lungs"]
    assert target_structures("modality=CT", ["plane=axial", "structure=kidney_left"]) == [
        "kidney_left"
    ]
    assert target_structures(None, ["not structure=liver", "group=pelvis"]) == ["pelvis"]
    found = target_structures(None, [], "axial slices through the left kidney; not in view: liver")
    assert found == ["kidney_left"]
    assert target_structures("plane=axial", [], "sagittal slices") == []


def test_pointing_game_tolerance_and_flat_maps() -> None:
    from medsae.maps.localisation import POINTING_TOLERANCE, pointing_hit

    size = 128
    mask = np.zeros((size, size), bool)
    mask[60:70, 60:70] = True
    near = np.zeros((size, size))
    near[60, 52] = 1.0  # 8 pixels left of the mask
    assert pointing_hit(near, mask) == 0.0  # no tolerance: a miss
    tol = POINTING_TOLERANCE * size  # Zhang et al.: 15 px at 224 -> 8.57 px at 128
    assert tol == pytest.approx(15 / 224 * 128)
    assert pointing_hit(near, mask, tol) == 1.0
    far = np.zeros((size, size))
    far[60, 50] = 1.0  # 10 pixels away
    assert pointing_hit(far, mask, tol) == 0.0
    # a flat map points nowhere: a miss, even when its first pixel is inside the mask
    corner = np.zeros((size, size), bool)
    corner[:5, :5] = True
    assert pointing_hit(np.full((size, size), 0.3), corner, tol) == 0.0
    assert score_map(np.zeros((size, size)), corner).pointing == 0.0


def test_energy_leaves_out_the_decoder_bias_spread() -> None:
    size = 16
    mask = np.zeros((size, size), bool)
    mask[:4, :4] = True
    image = np.zeros((size, size))
    image[1, 1] = 1.0  # all of the image's contribution inside the mask
    shifted = image + 0.05  # a positive bias term spread evenly over every pixel
    s = score_map(shifted, mask, image_map=image)
    assert s.energy < 0.5 and s.energy_image == 1.0 and s.pointing == 1.0
    assert np.isnan(score_map(shifted, mask).energy_image)


def test_summary_is_the_mean_with_the_tolerance_recorded(tmp_path: Path) -> None:
    p = make_planted(tmp_path / "ws")
    table = pd.DataFrame({"latent": [p.latent, 1], "concept": ["structure=liver"] * 2})
    res = localisation_scores(p.ws, "square", p.run, table, p.rows, spatial_encoder=p.encoder)
    scored = res.features[res.features["localisation_slices"] > 0]
    assert res.summary["pointing_game"] == pytest.approx(scored["pointing"].mean(), abs=1e-4)
    assert res.summary["pointing_game_median"] == pytest.approx(
        scored["pointing"].median(), abs=1e-4
    )
    assert res.summary["pointing_tolerance_px"] > 0
    assert 0 <= res.summary["energy_in_mask_image"] <= 1
