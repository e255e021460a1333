import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.metrics import f1_score, roc_auc_score

from medsae.evaluate.concepts import auroc_matrix, concept_map, f1_matrix
from medsae.labels.table import LabelTable


def test_auroc_and_f1_exact_against_sklearn() -> None:
    rng = np.random.default_rng(0)
    n, n_lat = 300, 6
    codes = np.where(rng.random((n, n_lat)) < 0.2, rng.integers(1, 4, (n, n_lat)), 0).astype(
        np.float32
    )
    pos = rng.random((n, 3)) < 0.4
    valid = rng.random((n, 3)) < 0.8
    labels = LabelTable.from_masks(pos, valid, ["a", "b", "c"], ["x", "x", "x"])
    auc = auroc_matrix(sp.csr_matrix(codes), labels)
    f1 = f1_matrix(sp.csr_matrix(codes), labels)
    for j in range(n_lat):
        for c in range(3):
            m = valid[:, c]
            assert auc[j, c] == pytest.approx(roc_auc_score(pos[m, c], codes[m, j]))
            assert f1[j, c] == pytest.approx(f1_score(pos[m, c], codes[m, j] > 0, zero_division=0))


def test_concept_map_finds_the_detected_label() -> None:
    rng = np.random.default_rng(1)
    n = 400
    pos = rng.random((n, 3)) < 0.3
    codes = np.zeros((n, 3), np.float32)
    codes[:, 0] = pos[:, 2] * rng.uniform(0.5, 1, n)  # latent 0 detects label 'c'
    codes[:, 1] = (rng.random(n) < 0.2) * 1.0  # noise
    labels = LabelTable.from_masks(pos, np.ones_like(pos), ["a", "b", "c"], ["k1", "k2", "k3"])
    frame = concept_map(sp.csr_matrix(codes), labels, min_fires=5)
    assert frame.loc[0, "concept"] == "c" and frame.loc[0, "concept_kind"] == "k3"
    assert frame.loc[0, "auroc"] == pytest.approx(1.0) and frame.loc[0, "f1"] == pytest.approx(1.0)
    assert frame.loc[1, "auroc"] < 0.65
    assert pd.isna(frame.loc[2, "concept"])  # never fires


def test_synthetic_concepts(evaluated) -> None:  # type: ignore[no-untyped-def]
    _, truth, out = evaluated
    frame = pd.read_parquet(out / "concepts.parquet").set_index("latent")
    assert {"concept", "concept_kind", "auroc", "f1", "frequency"} <= set(frame.columns)
    for j, concept in enumerate(truth.concepts):
        if concept.split("=")[0] in {"modality", "plane", "sex"}:
            assert frame.loc[j, "concept"] == concept
        if pd.notna(frame.loc[j, "concept"]):
            assert frame.loc[j, "auroc"] > 0.99  # planted latents detect their concept perfectly
    noise = frame.loc[len(truth.concepts) :]
    assert noise["auroc"].max() < 0.8
