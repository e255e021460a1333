"""Baseline dictionaries (pca, ica, kmeans, dictionary, random): their codes (shapes,
non-negative, at most k non-zeros), their definitions, the same artifacts as an SAE run, a
named skip on data they cannot take, and an exact resume while collecting their sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medsae.sae import TrainConfig, fit, load_sae, train
from medsae.sae.baselines import BASELINES
from medsae.sae.io import trained_runs
from medsae.sae.stage import write_codes
from medsae.sae.trainer import TrainingInterrupted
from tests.sae.conftest import planted
from tests.sae.test_fit import imported_workspace

SMALL = {
    "levels": [[24]],
    "k": [[3]],
    "epochs": 3,
    "batch_size": 64,
    "median_sample": 200,
    "arch_options": {a: {"max_iter": 20} for a in BASELINES},
}


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return planted(400, 16, 12, 3, seed=2)


@pytest.mark.parametrize("arch", BASELINES)
def test_codes_are_non_negative_sparse_and_decode(arch: str, data: np.ndarray) -> None:
    grid = fit(data, TrainConfig(arch=[arch], input_transform="none", **SMALL))  # type: ignore[arg-type]
    (name,) = grid.saes
    assert name == f"{arch}_D24_K3" and grid.skipped == []
    sae = grid[name]
    codes = sae.encode(data)
    assert codes.shape == (len(data), 24)
    assert bool((codes >= 0).all())
    nnz = (codes > 0).sum(1)
    assert int(nnz.max()) <= 3 and float(nnz.float().mean()) > 2  # at most k, nearly always k
    norms = sae.W_dec.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    x_hat = sae.reconstruct(data).numpy()
    fvu = ((data - x_hat) ** 2).sum() / ((data - data.mean(0)) ** 2).sum()
    assert np.isfinite(fvu) and fvu < (1.0 if arch != "random" else 2.0)
    assert len(grid.history[name]) > 0


def test_pca_keeps_the_k_largest_principal_coefficients(data: np.ndarray) -> None:
    from sklearn.decomposition import PCA

    grid = fit(data, TrainConfig(arch=["pca"], input_transform="none", **SMALL))  # type: ignore[arg-type]
    sae = grid["pca_D24_K3"]
    pca = PCA(n_components=12).fit(data.astype(np.float64))
    coef = pca.transform(data)
    keep = np.argsort(-np.abs(coef), axis=1)[:, :3]
    sparse = np.zeros_like(coef)
    np.put_along_axis(sparse, keep, np.take_along_axis(coef, keep, 1), 1)
    expected = sparse @ pca.components_ + pca.mean_
    assert np.allclose(sae.reconstruct(data).numpy(), expected, atol=1e-3)
    codes = sae.encode(data).numpy()  # latent 2i is +u_i, 2i + 1 is -u_i
    signed = codes[:, 0::2] - codes[:, 1::2]
    assert np.allclose(np.abs(signed), np.abs(sparse), atol=1e-3)


def test_kmeans_with_k_one_is_the_nearest_centroid_direction(data: np.ndarray) -> None:
    cfg = TrainConfig(arch=["kmeans"], input_transform="none", **{**SMALL, "k": [[1]]})  # type: ignore[arg-type]
    sae = fit(data, cfg)["kmeans_D24_K1"]
    codes = sae.encode(data).numpy()
    centred = data - sae.b_dec.detach().numpy()
    sims = centred @ sae.W_dec.detach().numpy().T
    assert ((codes > 0).sum(1) <= 1).all()
    hit = codes.max(1) > 0
    assert (codes.argmax(1)[hit] == sims.argmax(1)[hit]).all()
    assert np.allclose(codes.max(1)[hit], sims.max(1)[hit], atol=1e-4)


def test_a_baseline_that_cannot_fit_is_skipped_with_its_reason() -> None:
    x = planted(40, 16, 12, 3, seed=3)  # 40 rows: 48 k-means centroids cannot be fitted
    cfg = TrainConfig(arch=["kmeans", "pca"], levels=[[48]], k=[[3]], epochs=2, batch_size=20)
    grid = fit(x, cfg)
    assert sorted(grid.saes) == []
    reasons = {s["combo"]: s["reason"] for s in grid.skipped}
    assert "48 components need at least 48 fitting rows;" in reasons["kmeans_D48_K3"]
    assert "24 components need at least 24 fitting rows and dimensions" in reasons["pca_D48_K3"]


def test_baselines_write_the_artifacts_of_an_sae_run(tmp_path: Path) -> None:
    x = planted(400, 160, 30, 3, seed=4)
    ws = imported_workspace(tmp_path, x)
    cfg = TrainConfig(arch=["matryoshka", "pca", "kmeans"], levels=[[24, 300]], k=[[3]], epochs=2, batch_size=64)  # fmt: skip
    outcome = train(ws, "imported", cfg)
    runs = trained_runs(ws, "imported")
    assert runs == ["matryoshka_D24-300_K3", "pca_D300_K3"]
    # 300 centroids on 200 training rows: skipped by name, in the grid and the manifest
    skipped = {s["combo"]: s["reason"] for s in outcome.manifest["extra"]["skipped"]}
    assert "kmeans_D300_K3" in skipped and "300 components" in skipped["kmeans_D300_K3"]
    grid = json.loads((ws.saes("imported") / "grid.json").read_text())
    assert grid["runs"] == runs and any(s["combo"] == "kmeans_D300_K3" for s in grid["skipped"])
    sae_files = {p.name for p in ws.sae("imported", "matryoshka_D24-300_K3").iterdir()}
    base_files = {p.name for p in ws.sae("imported", "pca_D300_K3").iterdir()}
    assert sae_files == base_files
    pca = load_sae(ws.sae("imported", "pca_D300_K3"))
    metrics = json.loads((ws.sae("imported", "pca_D300_K3") / "metrics.json").read_text())
    test = metrics["splits"]["test"]["300"]
    assert test["k_nominal"] == 3 and test["l0"] <= 3 and test["r2"] > 0.2
    (codes,) = write_codes(ws, "imported", "pca_D300_K3")
    assert codes.manifest["counts"]["nnz"] <= 3 * len(x)
    assert int(pca.fit_rows.shape[0]) == 0 and int(pca.fitted) == 1


def test_resume_while_collecting_the_sample_is_exact(tmp_path: Path, data: np.ndarray) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "cut").mkdir()
    ws_full = imported_workspace(tmp_path / "full", data)
    ws = imported_workspace(tmp_path / "cut", data)
    cfg = TrainConfig(
        arch=["pca", "ica"],
        levels=[[8]],
        k=[[3]],
        epochs=6,
        batch_size=32,
        checkpoint_every_steps=2,
        arch_options={"pca": {"fit_samples": 150}, "ica": {"fit_samples": 150}},
    )
    train(ws_full, "imported", cfg)
    with pytest.raises(TrainingInterrupted):
        train(ws, "imported", cfg, stop_after_steps=3)  # 96 of 150 rows collected
    train(ws, "imported", cfg)
    for run in ("pca_D8_K3", "ica_D8_K3"):
        a, b = load_sae(ws_full.sae("imported", run)), load_sae(ws.sae("imported", run))
        for key, t in a.state_dict().items():
            assert torch.equal(t, b.state_dict()[key]), (run, key)
