"""Organ rediscovery: the formulas against hand-computed cases, a planted token feature."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from medsae.data.io import label_id
from medsae.encode.config import EncodeConfig
from medsae.encode.token_stage import encode_tokens
from medsae.encode.tokens import TokenStore
from medsae.evaluate.config import EvaluateConfig
from medsae.evaluate.organ_scores import (
    average_precision,
    best_latents,
    coverage,
    purity_at_k,
    token_labels,
)
from medsae.evaluate.organs import ORGAN_LATENTS, ORGAN_STRUCTURES, organ_rediscovery
from medsae.sae.checkpoint import load_sae
from medsae.sae.token_data import load_token_codes, save_token_codes
from tests.maps.conftest import make_planted


def test_average_precision_by_hand() -> None:
    # ranking + + - + -: precisions at the positives 1, 1, 3/4 -> AP = (1 + 1 + 0.75) / 3
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    y = np.array([1, 1, 0, 1, 0], dtype=bool)
    assert average_precision(scores, y)[0, 0] == pytest.approx(2.75 / 3)
    # ties enter together: scores 2 2 1 1 with labels + - + -: at threshold 2 precision
    # 1/2 with recall 1/2, at threshold 1 precision 2/4 with recall 1 -> AP = 0.5
    tied = average_precision(np.array([2.0, 2.0, 1.0, 1.0]), np.array([1, 0, 1, 0], bool))
    assert tied[0, 0] == pytest.approx(0.5)
    # a sparse code: one positive fires (precision 1), the other is among the zeros (2/6)
    sparse = np.array([0.0, 0.9, 0.0, 0.0, 0.0, 0.0])
    ys = np.array([1, 1, 0, 0, 0, 0], dtype=bool)
    assert average_precision(sparse, ys)[0, 0] == pytest.approx((1 + 2 / 6) / 2)
    # a mask with no positive scores 0; several latents x structures at once
    both = average_precision(np.c_[scores, -scores], np.c_[y, np.zeros(5, bool)])
    assert both.shape == (2, 2) and both[0, 1] == 0.0
    assert both[1, 0] == pytest.approx((1 / 2 + 2 / 4 + 3 / 5) / 3)  # reversed ranking


def test_average_precision_matches_scikit_learn_with_ties() -> None:
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    for trial in range(60):
        n = int(rng.integers(2, 50))
        scores = rng.integers(0, 4, n) * rng.integers(0, 2, n) + 0.0  # sparse, many ties
        if trial % 3 == 0:
            scores = rng.normal(size=n)
        y = rng.integers(0, 2, n).astype(bool)
        if y.any():
            got = average_precision(scores, y)[0, 0]
            assert got == pytest.approx(average_precision_score(y, scores), abs=1e-12)


def test_purity_coverage_and_best_latent_by_hand() -> None:
    scores = np.arange(20, dtype=float)[::-1]  # token 0 scores highest
    y = np.zeros(20, dtype=bool)
    y[[0, 1, 2, 3, 5, 17]] = True
    assert purity_at_k(scores, y, k=4) == 1.0
    assert purity_at_k(scores, y, k=16) == pytest.approx(5 / 16)
    assert coverage(np.array([0.1, 0.3, 0.29, 0.9]), tau=0.3) == pytest.approx(0.5)
    ap = np.array([[0.2, 0.9], [0.7, 0.1], [0.7, 0.3]])  # latents x structures
    assert best_latents(ap).tolist() == [1, 0]  # first latent on a tie


def test_token_is_positive_when_half_its_pixels_hold_the_structure() -> None:
    maps = np.zeros((1, 8, 8), dtype=np.uint8)  # 2 x 2 grid of 4 x 4 pixel tokens
    maps[0, 0:2, 0:4] = 3  # 8 of 16 pixels of token (0, 0): exactly half
    maps[0, 0:4, 4:7] = 3  # 12 of 16 of token (0, 1)
    maps[0, 4:5, 0:4] = 3  # 4 of 16 of token (1, 0): not enough
    pos = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1]])
    labels = token_labels(maps, pos, 2)
    assert labels[:, 3].tolist() == [True, True, False, False]
    assert labels[:, 0].tolist() == [True, False, True, True]


def planted_tokens(root: Path, n: int = 60) -> tuple[SimpleNamespace, pd.DataFrame]:
    """The planted-square workspace (a channel high exactly on the liver's pixels) with its
    token store and the token codes of an SAE whose latent 1 reads that channel."""
    p = make_planted(root, n=n)
    (p.ws.slices / "manifest.json").write_text(json.dumps({"stage": "prepare", "key": "k"}))
    out = encode_tokens(p.ws, EncodeConfig(encoder="square", token_grid=8), p.encoder)
    store = TokenStore(out.path)
    table = pd.DataFrame(
        {
            "slice_id": [f"S:{i}" for i in range(n)],
            "split": (["train", "train", "val", "test", "train"] * n)[:n],
        }
    )
    sae = load_sae(p.ws.sae("square", p.run))
    meta = {"encoder": "square-tokens", "run": p.run}
    save_token_codes(p.ws.codes("square-tokens", p.run), sae, store, table, meta)
    inputs = SimpleNamespace(
        ws=p.ws,
        encoder="square-tokens",
        run=p.run,
        table=table,
        store=store.pooled,
        rows_of=lambda *s: np.flatnonzero(table["split"].isin(list(s)).to_numpy()),
    )
    return inputs, table


def test_planted_token_feature_rediscovers_its_structure_and_only_it(tmp_path: Path) -> None:
    inputs, _ = planted_tokens(tmp_path / "ws")
    out = tmp_path / "eval"
    out.mkdir()
    summary = organ_rediscovery(inputs, EvaluateConfig(organ_fit_tokens=1000), out)
    assert summary["status"] == "computed" and summary["n_structures"] == 2
    per = pd.read_parquet(out / ORGAN_STRUCTURES).set_index(["method", "structure"])
    liver = per.loc[("token_sae", "liver")]
    assert liver["best_latent"] == 1 and liver["ap"] == pytest.approx(1.0)
    assert liver["purity_at_16"] == 1.0 and liver["pointing"] == 1.0
    # the permutation null: the same latent against masks of other slices
    assert per.loc[("chance", "liver"), "ap"] < 0.3
    assert summary["chance"]["map"] < summary["token_sae"]["map"]
    # latent 1 against the other structure scores at the chance level: its AP is about
    # the spleen's share of the tokens (the spleen band lies above every square)
    latents = pd.read_parquet(out / ORGAN_LATENTS).set_index("latent")
    assert latents.loc[1, "organ_structure"] == "liver"
    assert latents.loc[1, "organ_ap"] == pytest.approx(1.0)
    codes, rows = load_token_codes(inputs.ws.codes("square-tokens", inputs.run))
    store = TokenStore(inputs.store.folder)
    spleen = token_labels(
        np.asarray(np.load(inputs.ws.slices / "label_maps.npy")), store.positions[rows], 8
    )[:, label_id("spleen")]
    ap_spleen = average_precision(codes[:, 1].toarray().ravel(), spleen)[0, 0]
    assert ap_spleen == pytest.approx(spleen.mean(), abs=0.05)
    assert summary["attribution"] is None and "attribution" in summary["reasons"]


def test_pooled_codes_are_the_max_and_mean_of_the_token_codes(tmp_path: Path) -> None:
    from medsae.sae.codes_io import load_codes, load_codes_meta

    inputs, table = planted_tokens(tmp_path / "ws", n=15)
    folder = inputs.ws.codes("square-tokens", inputs.run)
    store = TokenStore(inputs.store.folder)
    sae = load_sae(inputs.ws.sae("square", inputs.run))
    every = sae.encode(store.read(np.arange(store.n_tokens))).numpy()
    owner = store.positions[:, 0]
    mx, mean = load_codes(folder).toarray(), load_codes(folder / "mean").toarray()
    for row in range(store.n_slices):
        np.testing.assert_allclose(mx[row], every[owner == row].max(axis=0), rtol=1e-6)
        np.testing.assert_allclose(mean[row], every[owner == row].mean(axis=0), rtol=1e-5)
    assert load_codes_meta(folder)["pooling"] == "max"
    codes, rows = load_token_codes(folder)
    held = np.flatnonzero(table["split"].isin(["val", "test"]).to_numpy())
    assert rows.tolist() == store.token_rows(held).tolist()
    np.testing.assert_allclose(codes.toarray(), every[rows], rtol=1e-6)


def test_no_label_maps_is_not_computed_with_the_command(tmp_path: Path) -> None:
    inputs, _ = planted_tokens(tmp_path / "ws", n=15)
    (inputs.ws.slices / "label_maps.npy").unlink()
    out = tmp_path / "eval"
    out.mkdir()
    summary = organ_rediscovery(inputs, EvaluateConfig(), out)
    assert summary["status"] == "not computed"
    assert "medsae prepare --label-maps" in summary["reason"]
