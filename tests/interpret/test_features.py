"""Per-feature statistics on the synthetic workspace (planted features)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medsae.data.table import read_anatomy, slices_with_split
from medsae.interpret.features import build_label_table, feature_statistics, latent_levels
from medsae.sae.codes_io import load_codes
from tests.support.synthetic import make_synthetic_workspace


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    ws, truth = make_synthetic_workspace(tmp_path_factory.mktemp("ws"))
    table = slices_with_split(ws.slices, ws.split)
    labels = build_label_table(table, read_anatomy(ws.slices))
    codes = load_codes(ws.codes(truth.encoder, truth.run))
    train = np.flatnonzero(table["split"].to_numpy() == "train")
    return table, labels, codes, train, truth


def test_label_table(data) -> None:
    table, labels, *_ = data
    assert labels.values.shape == labels.defined.shape == (len(table), len(labels.names))
    ct = labels.index("modality=CT")
    assert np.array_equal(labels.values[:, ct], (table["modality"] == "CT").to_numpy())
    # lung_left is an MRI structure: undefined on CT slices
    lung = labels.index("structure=lung_left")
    assert not labels.defined[(table["modality"] == "CT").to_numpy(), lung].any()
    group = labels.index("group=abdomen")
    liver = labels.index("structure=liver")
    assert np.all(labels.values[labels.values[:, liver], group])
    assert not labels.values[~labels.defined].any()


def test_statistics_of_planted_features(data) -> None:
    table, labels, codes, train, truth = data
    stats = feature_statistics(codes, table, labels, train, n_top=20, n_display=5, seed=0)
    by_latent = {s.latent: s for s in stats}
    subjects = table["subject_key"].to_numpy()
    for j, concept in enumerate(truth.concepts):
        s = by_latent[j]
        col = codes[train, j].toarray().ravel()
        assert s.frequency == pytest.approx((col != 0).mean())
        assert s.max_activation == pytest.approx(col.max())
        assert s.mean_activation == pytest.approx(col[col != 0].mean())
        assert len(set(subjects[s.top_rows])) == len(s.top_rows)  # one per subject
        assert set(s.top_rows) <= set(train)
        assert set(s.display_rows) <= set(s.top_rows) and len(s.display_rows) == min(
            5, len(s.top_rows)
        )
        assert s.display_rows[0] == s.top_rows[0]
        top_values = codes[s.top_rows, j].toarray().ravel()
        assert np.all(np.diff(top_values) <= 0)
        assert all(codes[r, j] != 0 for r in s.quantile_rows)
        # the planted concept is fully enriched: P(concept | active) = 1
        enr = {e["label"]: e for e in s.enrichment}
        if concept in enr:
            assert enr[concept]["p_active"] == 1.0
            assert enr[concept]["lift"] == pytest.approx(1.0 / enr[concept]["p_base"], rel=1e-2)
        assert s.concept is not None
        li = labels.index(s.concept)
        assert np.array_equal(labels.values[train, li], col != 0)  # an exact match on train


def test_enrichment_counts_and_order(data) -> None:
    table, labels, codes, train, truth = data
    j = truth.concepts.index("plane=coronal")
    (s,) = feature_statistics(codes, table, labels, train, latents=[j], n_enrichment=3)
    assert s.enrichment[0]["label"] == "plane=coronal"
    gains = [e["p_active"] - e["p_base"] for e in s.enrichment]
    assert gains == sorted(gains, reverse=True) and len(gains) <= 3
    assert s.enrichment[0]["n_active_with_label"] == s.n_active


def test_min_active_and_levels(data) -> None:
    table, labels, codes, train, _ = data
    stats = feature_statistics(codes, table, labels, train, min_active=10**6)
    assert stats == []
    assert latent_levels(8, [2, 4]).tolist() == [2, 2, 4, 4, 8, 8, 8, 8]
    assert latent_levels(4, None).tolist() == [4, 4, 4, 4]
    stats = feature_statistics(
        codes, table, labels, train, latents=[0, 1], levels=[1, codes.shape[1]]
    )
    assert [s.level for s in stats] == [1, codes.shape[1]]


def test_deterministic(data) -> None:
    table, labels, codes, train, _ = data
    a = feature_statistics(codes, table, labels, train, latents=range(30), seed=1)
    b = feature_statistics(codes, table, labels, train, latents=range(30), seed=1)
    assert [x.summary() for x in a] == [x.summary() for x in b]
    assert isinstance(pd.DataFrame([x.summary() for x in a]), pd.DataFrame)


def test_profile_index_rows_equal_profile_of() -> None:
    import numpy as np
    import pandas as pd

    from medsae.interpret.profiles import ProfileIndex, profile_of

    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame(
        {
            "latent": rng.integers(0, 9, n),
            "stratum": rng.choice(["", "CT", "MR|axial"], n),
            "label": [f"l{i % 17}" for i in range(n)],
            "auroc": np.where(rng.random(n) < 0.1, np.nan, rng.choice([0.5, 0.7, 0.9], n)),
            "lift": rng.choice([1.0, 2.0, 3.0], n),
            "p_active": rng.random(n),
            "p_base": rng.random(n),
            "n_active_with_label": rng.integers(0, 50, n),
            "n_label": rng.integers(50, 99, n),
            "concept_map": rng.random(n) < 0.5,
        }
    )
    index = ProfileIndex(frame)
    for latent in range(11):  # 9 and 10 have no rows
        assert index.rows(latent) == profile_of(frame, latent)
    assert ProfileIndex(None).rows(3) == [] == profile_of(None, 3)
