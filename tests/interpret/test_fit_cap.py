"""The ``fit_slices`` cap: per-feature scans read a bounded, seeded sample of a split."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from medsae.data.table import read_anatomy, slices_with_split
from medsae.interpret.config import InterpretConfig
from medsae.interpret.describe import OfflineDescriber
from medsae.interpret.scoring import CodeSpace, capped_rows, detection_sample
from medsae.labels.table import build_label_table
from medsae.sae.codes_io import load_codes
from tests.support.synthetic import make_synthetic_workspace

CAP = 100


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    ws, truth = make_synthetic_workspace(tmp_path_factory.mktemp("ws"))
    table = slices_with_split(ws.slices, ws.split)
    labels = build_label_table(table, read_anatomy(ws.slices))
    codes = load_codes(ws.codes(truth.encoder, truth.run)).tocsr()
    train = np.flatnonzero(table["split"].to_numpy() == "train")
    assert len(train) > 3 * CAP  # the cap bites
    # an extra latent firing on five training slices only
    rare = np.sort(np.random.default_rng(7).choice(train, size=5, replace=False))
    extra = sp.csr_matrix(
        (np.ones(len(rare)), (rare, np.zeros(len(rare), dtype=int))), shape=(codes.shape[0], 1)
    )
    codes = sp.hstack([codes, extra], format="csr")
    return labels, codes, train, truth, rare


def spy(describer: OfflineDescriber) -> list[np.ndarray]:
    """Record the rows whose literals the describer computes after construction."""
    calls: list[np.ndarray] = []
    inner = describer._literal_rows

    def literal_rows(rows: np.ndarray) -> np.ndarray:
        calls.append(np.asarray(rows).copy())
        return inner(rows)

    describer._literal_rows = literal_rows  # type: ignore[method-assign]
    return calls


def test_default_cap_leaves_small_workspaces_whole() -> None:
    assert InterpretConfig().fit_slices >= 100_000
    rows = np.arange(50)
    assert capped_rows(rows, 50) is rows


def test_capped_rows_is_a_seeded_subset() -> None:
    rows = np.arange(10, 1010)
    a, b = capped_rows(rows, CAP, seed=3), capped_rows(rows, CAP, seed=3)
    assert len(a) == CAP and np.array_equal(a, b) and np.all(np.diff(a) > 0)
    assert np.isin(a, rows).all()
    assert not np.array_equal(a, capped_rows(rows, CAP, seed=4))


def test_rule_fitting_reads_the_background_sample_and_every_active_row(data) -> None:
    labels, codes, train, _, rare = data
    describer = OfflineDescriber(labels, codes, train, fit_slices=CAP, seed=0)
    assert describer._literals.shape[0] == CAP  # the background: CAP training slices
    calls = spy(describer)
    n_latents = codes.shape[1]
    train_codes = sp.csc_matrix(codes[train])
    for latent in range(n_latents):
        calls.clear()
        describer.count_rule(latent)
        active = train[np.unique(train_codes[:, latent].indices)]
        if len(active) in (0, len(train)):
            continue
        # one read of the activating rows (all of them up to the cap), nothing else per feature
        assert len(calls) == 1
        assert len(calls[0]) == min(len(active), CAP)
        assert np.isin(calls[0], active).all()
    # the rare feature keeps all five of its slices
    calls.clear()
    describer.count_rule(n_latents - 1)
    assert np.array_equal(np.sort(calls[0]), rare)


def test_capped_rules_are_seeded_and_still_find_planted_concepts(data) -> None:
    labels, codes, train, truth, _ = data
    a = OfflineDescriber(labels, codes, train, fit_slices=CAP, seed=0)
    b = OfflineDescriber(labels, codes, train, fit_slices=CAP, seed=0)
    latents = range(codes.shape[1])
    rules = [a.count_rule(j) for j in latents]
    assert rules == [b.count_rule(j) for j in latents]
    other = OfflineDescriber(labels, codes, train, fit_slices=CAP, seed=1)
    assert not np.array_equal(a._background, other._background)
    for j, concept in enumerate(truth.concepts):
        li = labels.index(concept)
        shown = labels.values[train, li]
        same = [
            n for n in rules[j][0] if np.array_equal(labels.values[train, labels.index(n)], shown)
        ]
        assert same, (concept, rules[j])


def test_uncapped_split_gives_the_same_rules(data) -> None:
    labels, codes, train, _, _ = data
    plain = OfflineDescriber(labels, codes, train)
    roomy = OfflineDescriber(labels, codes, train, fit_slices=len(train))
    assert [plain.count_rule(j) for j in range(codes.shape[1])] == [
        roomy.count_rule(j) for j in range(codes.shape[1])
    ]


def test_detection_negatives_come_from_the_background(data) -> None:
    _, codes, train, _, rare = data
    space = CodeSpace(codes)
    background = capped_rows(train, CAP, seed=0)
    latent = codes.shape[1] - 1
    kw: dict[str, Any] = {"n_positive": 20, "n_hard": 10, "n_random": 10, "seed": 2}
    sample = detection_sample(space, latent, train, background=background, **kw)
    assert np.array_equal(np.sort(sample.rows[sample.positive]), rare)  # every positive kept
    negatives = sample.rows[~sample.positive]
    assert len(negatives) == 20 and np.isin(negatives, background).all()
    again = detection_sample(space, latent, train, background=background, **kw)
    assert np.array_equal(sample.rows, again.rows)
    whole = detection_sample(space, latent, train, **kw)
    same = detection_sample(space, latent, train, background=train, **kw)
    assert np.array_equal(whole.rows, same.rows)
