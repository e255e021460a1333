import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from medsae.evaluate.monosemantic import (
    config_score,
    level_of,
    mean_pairwise_jaccard,
    monosemanticity,
    random_baseline,
    specificity,
    top_one_per_subject,
)


def test_jaccard_and_specificity_formulas() -> None:
    same = np.array([[1, 1, 0, 0]] * 4)
    assert mean_pairwise_jaccard(same) == 1.0
    p = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
    # pairs: (0,1) 1/3, (0,2) 0, (1,2) 0
    assert mean_pairwise_jaccard(p) == pytest.approx(1 / 9)
    assert mean_pairwise_jaccard(np.zeros((3, 5))) == 1.0  # empty vs empty counts 1
    one = np.array([[1, 0, 0, 0]] * 3)
    assert specificity(one) == pytest.approx(1.0)
    uniform = np.eye(4)
    assert specificity(uniform) == pytest.approx(0.0)
    two = np.array([[1, 1, 0, 0]])
    assert specificity(two, 4) == pytest.approx(1 - np.log(2) / np.log(4))
    assert specificity(np.zeros((2, 4))) == 0.0


def test_top_slices_one_per_subject() -> None:
    rows = np.arange(6)
    values = np.array([0.9, 0.8, 0.7, 0.6, 0.0, 0.95])
    subjects = np.array([0, 0, 1, 1, 2, 2])
    top = top_one_per_subject(rows, values, subjects, top_n=3)
    # subject 2's best is row 5 (0.95); subject 0's row 0; subject 1's row 2; row 4 does not fire
    assert top.tolist() == [5, 0, 2]


def test_planted_feature_scores_monosemantic_random_does_not() -> None:
    rng = np.random.default_rng(0)
    n_subj, per = 40, 10
    subjects = np.repeat(np.arange(n_subj), per)
    n, s = n_subj * per, 20
    presence = (rng.random((n, s)) < 0.3).astype(np.int8)
    planted = presence[:, 3] == 1
    presence[planted] = 0
    presence[planted, 3] = 1  # slices with structure 3 show it alone
    codes = np.zeros((n, 2), np.float32)
    codes[planted, 0] = rng.uniform(0.5, 1.0, planted.sum())
    codes[:, 1] = (rng.random(n) < 0.5) * rng.uniform(0.1, 1.0, n)
    frame, base = monosemanticity(
        sp.csr_matrix(codes), presence, subjects, top_n=10, draws=100, seed=0
    )
    assert 0 < base["baseline"] < 1
    planted_row, random_row = frame.iloc[0], frame.iloc[1]
    assert planted_row["coherence_raw"] == pytest.approx(1.0)
    assert planted_row["specificity"] == pytest.approx(1.0)
    assert planted_row["score"] == pytest.approx(1.0 - base["baseline"])
    assert random_row["score"] < 0.1 * planted_row["score"]
    assert len(set(subjects[planted_row["top_rows"]])) == 10


def test_feature_on_too_few_subjects_is_not_scored() -> None:
    subjects = np.repeat(np.arange(12), 3)
    presence = np.ones((36, 4), np.int8)
    codes = np.zeros((36, 1), np.float32)
    codes[:9, 0] = 1.0  # three subjects only
    frame, _ = monosemanticity(sp.csr_matrix(codes), presence, subjects, top_n=10, draws=10)
    assert not frame.loc[0, "scored"] and np.isnan(frame.loc[0, "score"])
    assert np.isnan(config_score(frame["score"]))


def test_baseline_and_config_score() -> None:
    presence = np.ones((30, 3), np.int8)
    subjects = np.repeat(np.arange(10), 3)
    assert random_baseline(presence, subjects, 10, 5)[0] == pytest.approx(1.0)
    assert np.isnan(random_baseline(presence, subjects, 11, 5)[0])
    assert config_score(pd.Series([0.1, np.nan, 0.5, 0.3]), 2) == pytest.approx(0.4)
    assert level_of(np.array([0, 127, 128, 600]), [128, 512, 2048]).tolist() == [0, 0, 1, 2]


def test_synthetic_planted_latents_beat_noise(evaluated) -> None:  # type: ignore[no-untyped-def]
    _, truth, out = evaluated
    frame = pd.read_parquet(out / "monosemanticity.parquet")
    n_planted = len(truth.concepts)
    noise = frame[frame["latent"] >= n_planted]
    femur = frame[frame["latent"] == truth.concepts.index("structure=femur_left")].iloc[0]
    assert femur["scored"] and femur["score"] > noise["score"].max()
    structures = frame[
        frame["latent"].isin(
            [j for j, c in enumerate(truth.concepts) if c.startswith("structure=")]
        )
    ]
    assert structures["score"].mean() > 3 * noise["score"].mean()
