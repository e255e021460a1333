"""FingerprintIndex: exactness against brute force, one result per subject, filters, I/O."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from medsae.errors import ArtifactError, InputError
from medsae.retrieval.fingerprint import (
    FingerprintIndex,
    Hits,
    fingerprint_of,
    top_subjects,
)
from medsae.retrieval.fingerprint_reference import brute_force_search, check_exact


def _random_codes(seed: int, n_rows: int, n_latents: int, density: float) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = rng.random((n_rows, n_latents)) < density
    values = np.where(dense, rng.lognormal(0, 0.5, size=dense.shape), 0).astype(np.float32)
    # quantised values create exact ties between candidates
    if seed % 2:
        values = np.round(values * 2) / 2
    return sp.csr_matrix(values)


def _dense_cosine_reference(
    codes: sp.csr_matrix, latents: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    sub = codes[:, latents].toarray().astype(np.float64)
    if len(latents) == 1:  # one latent: closeness of activation, 1 / (1 + |q - c|)
        return np.where(sub[:, 0] > 0, 1 / (1 + np.abs(sub[:, 0] - weights[0])), np.nan)
    norms = np.linalg.norm(sub, axis=1) * np.linalg.norm(weights)
    out = np.full(codes.shape[0], np.nan)
    ok = norms > 0
    out[ok] = sub[ok] @ weights / norms[ok]
    return out


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_rows=st.integers(1, 60),
    n_latents=st.integers(1, 25),
    density=st.floats(0.02, 0.6),
    k=st.integers(1, 8),
    n=st.integers(1, 12),
    rows_per_subject=st.integers(1, 7),
)
def test_index_equals_brute_force(
    seed: int, n_rows: int, n_latents: int, density: float, k: int, n: int, rows_per_subject: int
) -> None:
    codes = _random_codes(seed, n_rows, n_latents, density)
    subjects = np.arange(n_rows) // rows_per_subject
    index = FingerprintIndex.build(codes, subjects=subjects)
    row = seed % n_rows
    latents, weights = fingerprint_of(codes[row].toarray().ravel(), k)
    own = int(index.subject_ids[row])
    fast = index.search_fingerprint(latents, weights, n, exclude_subject=own)
    ref = brute_force_search(codes, index.subject_ids, latents, weights, n + 1, exclude_subject=own)
    assert check_exact(fast, ref, n)
    # the scores are the documented cosine restricted to the query's K latents (or closeness)
    expected = _dense_cosine_reference(codes, latents, weights)
    np.testing.assert_allclose(fast.scores, expected[fast.rows], rtol=1e-9)
    # one result per subject, never the query's own subject, best first
    assert len(set(fast.subjects.tolist())) == len(fast)
    assert own not in fast.subjects
    assert np.all(np.diff(fast.scores) <= 1e-12)


def test_top_subjects_matches_full_sort_with_many_candidates() -> None:
    rng = np.random.default_rng(3)
    rows = np.arange(20_000)
    scores = np.round(rng.random(20_000), 3)  # many ties
    subjects = rng.integers(0, 50, size=20_000)
    fast = top_subjects(rows, scores, subjects, 10)
    order = np.lexsort((rows, -scores))
    seen: list[int] = []
    best_rows: list[int] = []
    for i in order:
        if subjects[i] not in seen:
            seen.append(int(subjects[i]))
            best_rows.append(int(rows[i]))
        if len(seen) == 10:
            break
    assert fast.rows.tolist() == best_rows
    assert fast.subjects.tolist() == seen


def test_fingerprint_of_takes_top_active_with_stable_ties() -> None:
    values = np.array([0.0, 2.0, 1.0, 2.0, -3.0, 0.5])
    latents, weights = fingerprint_of(values, 3)
    assert latents.tolist() == [1, 3, 2]
    assert weights.tolist() == [2.0, 2.0, 1.0]
    latents, _ = fingerprint_of(values, 10)
    assert latents.tolist() == [1, 3, 2, 5]  # only active (positive) latents
    assert fingerprint_of(np.zeros(4), 5)[0].size == 0
    with pytest.raises(InputError, match="k"):
        fingerprint_of(values, 0)


def _table() -> tuple[sp.csr_matrix, pd.DataFrame]:
    # 3 subjects x 2 slices; latent 0 = "axial", latent 1 = "CT", latent 2 = noise
    values = np.array(
        [
            [1.0, 1.0, 0.0],  # a0 query
            [1.0, 0.9, 0.0],  # a1 same subject
            [1.0, 1.0, 0.1],  # b0
            [0.2, 1.0, 0.0],  # b1
            [0.0, 1.0, 0.0],  # c0
            [1.0, 0.0, 0.0],  # c1
        ],
        dtype=np.float32,
    )
    table = pd.DataFrame(
        {
            "slice_id": [f"{s}{i}" for s in "abc" for i in range(2)],
            "subject_key": [f"CT:{s}" for s in "abc" for _ in range(2)],
            "modality": ["CT", "CT", "CT", "CT", "MR", "MR"],
            "plane": ["axial", "axial", "axial", "coronal", "axial", "sagittal"],
            "split": ["test", "test", "train", "train", "val", "val"],
        }
    )
    return sp.csr_matrix(values), table


def test_search_one_per_subject_excludes_own_and_filters(tmp_path) -> None:
    codes, table = _table()
    index = FingerprintIndex.build(codes, table)
    res = index.search("a0", k=2, n=10)
    assert res["subject_key"].tolist() == ["CT:b", "CT:c"]  # own subject a excluded, one row each
    assert res["slice_id"].tolist() == ["b0", "c0"]  # c0 ties c1 at 1/sqrt(2): lower row wins
    assert res["score"].iloc[0] == pytest.approx(1.0)
    assert res["rank"].tolist() == [1, 2]
    only_mr = index.search("a0", k=2, n=10, filters={"modality": "MR", "plane": ["sagittal"]})
    assert only_mr["slice_id"].tolist() == ["c1"]
    # a new image's codes: nothing excluded
    res_new = index.search(codes[0].toarray().ravel(), k=2, n=2, exclude_own_subject=False)
    assert set(res_new["subject_key"]) == {"CT:a", "CT:b"}

    index.save(tmp_path)
    loaded = FingerprintIndex.load(tmp_path)
    again = loaded.search("a0", k=2, n=10, filters={"split": ["train", "val"]})
    assert again["slice_id"].tolist() == ["b0", "c0"]
    assert loaded.memory_bytes() == index.memory_bytes()


def test_bad_inputs_name_the_problem(tmp_path) -> None:
    codes, table = _table()
    index = FingerprintIndex.build(codes, table)
    with pytest.raises(InputError, match="nope"):
        index.search("nope")
    with pytest.raises(InputError, match="unknown column"):
        index.search("a0", filters={"colour": "red"})
    with pytest.raises(InputError, match="latents"):
        index.search(np.zeros(7))
    with pytest.raises(InputError, match="n"):
        index.search("a0", n=0)
    with pytest.raises(InputError, match="rows"):
        FingerprintIndex.build(codes, table.iloc[:3])
    with pytest.raises(InputError, match="non-negative"):
        FingerprintIndex.build(sp.csr_matrix(-np.eye(3, dtype=np.float32)))
    with pytest.raises(ArtifactError, match="medsae index"):
        FingerprintIndex.load(tmp_path)


def test_check_exact_rejects_a_wrong_answer() -> None:
    ref = Hits(np.array([5, 2, 9]), np.array([0.9, 0.8, 0.1]), np.array([1, 2, 3]))
    good = Hits(ref.rows[:2], ref.scores[:2], ref.subjects[:2])
    assert check_exact(good, ref, 2)
    swapped = Hits(np.array([2, 5]), np.array([0.9, 0.8]), np.array([2, 1]))
    assert not check_exact(swapped, ref, 2)
    short = Hits(ref.rows[:1], ref.scores[:1], ref.subjects[:1])
    assert not check_exact(short, ref, 2)


def test_one_latent_fingerprint_ranks_by_activation_closeness() -> None:
    from medsae.retrieval.fingerprint_reference import brute_force_search

    # latent 0 fires on every candidate with different strengths; the query has 2.0
    values = np.array([[2.0, 0.0], [0.5, 0.0], [1.9, 0.0], [3.0, 0.0], [2.4, 0.0], [0.0, 1.0]])
    codes = sp.csr_matrix(values.astype(np.float32))  # codes are stored as float32
    index = FingerprintIndex.build(codes, always_active_fraction=1.0)
    hits = index.search_fingerprint(np.array([0]), np.array([2.0]), n=5, exclude_subject=0)
    # 1 / (1 + |2 - c|): 1.9 -> 0.909, 2.4 -> 0.714, 3.0 -> 0.5, 0.5 -> 0.4; row 5 never fires
    assert hits.rows.tolist() == [2, 4, 3, 1]
    np.testing.assert_allclose(
        hits.scores, 1 / (1 + np.abs(2.0 - values[[2, 4, 3, 1], 0])), rtol=1e-6
    )
    assert len(set(np.round(hits.scores, 9))) == 4  # not all 1.0
    ref = brute_force_search(codes, index.subject_ids, np.array([0]), np.array([2.0]), 5, None, 0)
    assert check_exact(hits, ref, 4)


def test_latents_firing_on_nearly_every_slice_are_left_out() -> None:
    rng = np.random.default_rng(0)
    values = np.zeros((200, 4))
    values[:, 0] = 5.0 + rng.random(200)  # fires everywhere, always the largest
    values[:199, 1] = 1.0  # fires on 99.5% of rows
    values[::2, 2] = 2.0
    values[1::2, 3] = 2.0
    index = FingerprintIndex.build(sp.csr_matrix(values))
    assert index.excluded.tolist() == [0, 1]
    latents, _ = fingerprint_of(values[0], 1, index.excluded)
    assert latents.tolist() == [2]
    out = index.search(0, k=1, n=3)
    assert (out["row"] % 2 == 0).all()  # same latent 2 as the query, never latent 0


def test_dense_top1_uses_closeness_not_sign() -> None:
    from medsae.retrieval.fingerprint_eval import restricted_cosine

    gallery = np.array([[1.0, 0.0], [3.0, 9.0], [0.9, 5.0]])
    q = np.array([1.0, 0.1])
    got = restricted_cosine(gallery, q, np.array([0]))
    np.testing.assert_allclose(got, [1.0, 1 / 3, 1 / 1.1])
    both = restricted_cosine(gallery, q, np.array([0, 1]))
    assert both[0] == pytest.approx(1 / np.linalg.norm(q))
