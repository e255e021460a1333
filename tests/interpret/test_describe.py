"""Descriptions: the offline describer on planted features, the LLM describer over HTTP."""

from __future__ import annotations

import numpy as np
import pytest

from medsae.data.table import open_images, read_anatomy, slices_with_split
from medsae.interpret.describe import NOT, LLMDescriber, OfflineDescriber, compose_phrase
from medsae.interpret.features import feature_statistics
from medsae.labels.table import LabelTable, build_label_table
from medsae.labels.words import ABSENT_LEAD, absent_words, label_phrase, slice_text, split_absent
from medsae.llm.client import LLMClient
from medsae.llm.fake_server import FakeLLMServer, Faults
from medsae.sae.codes_io import load_codes
from tests.support.synthetic import make_synthetic_workspace


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    ws, truth = make_synthetic_workspace(tmp_path_factory.mktemp("ws"))
    table = slices_with_split(ws.slices, ws.split)
    labels = build_label_table(table, read_anatomy(ws.slices))
    codes = load_codes(ws.codes(truth.encoder, truth.run))
    train = np.flatnonzero(table["split"].to_numpy() == "train")
    stats = feature_statistics(codes, table, labels, train)
    return ws, table, labels, codes, train, truth, {s.latent: s for s in stats}


def test_compose_phrase() -> None:
    text = compose_phrase(
        ["plane=axial", "modality=CT", "structure=liver", "structure=spleen", "age_group=>=80"]
    )
    assert (
        text == "axial CT through the abdomen: liver and spleen; mostly elderly patients (over 80)"
    )
    assert compose_phrase(["sex=F"]) == "slices of mostly female patients"
    assert compose_phrase(["modality=MR"]) == "MRI slices"
    assert compose_phrase([]).startswith("no clear pattern")
    assert label_phrase("structure=kidney_left") == "left kidney"


def test_offline_describer_names_planted_concepts(data) -> None:
    _, _, labels, codes, train, truth, stats = data
    describer = OfflineDescriber(labels, codes, train)
    for j, concept in enumerate(truth.concepts):
        d = describer.describe(stats[j])
        li = labels.index(concept)
        # the rule names the concept or a label with exactly the same training slices
        same = [
            n
            for n in d.rule
            if np.array_equal(labels.values[train, labels.index(n)], labels.values[train, li])
        ]
        assert same, (concept, d.rule, d.text)
        assert any(label_phrase(n).lower() in d.text.lower() for n in same), (concept, d.text)
        assert d.describer == "offline" and d.error is None


def test_offline_describer_is_deterministic_and_quiet_on_noise(data) -> None:
    _, _, labels, codes, train, truth, stats = data
    a = OfflineDescriber(labels, codes, train)
    b = OfflineDescriber(labels, codes, train)
    noise = [j for j in stats if j >= len(truth.concepts)]
    texts = [a.describe(stats[j]).text for j in noise]
    assert texts == [b.describe(stats[j]).text for j in noise]
    generic = sum(t.startswith("no clear pattern") for t in texts)
    assert generic >= 0.6 * len(noise)


def test_llm_describer_end_to_end(data) -> None:
    ws, table, labels, _, train, truth, stats = data
    images = open_images(ws.slices)
    with FakeLLMServer() as srv:
        client = LLMClient(srv.base_url, "fake-vlm", backoff_s=0.01, concurrency=2)
        describer = LLMDescriber(client, table, labels, images, n_train=len(train), image_size=64)
        chosen = [stats[truth.concepts.index(c)] for c in ("modality=MR", "plane=coronal", "sex=F")]
        out = describer.describe_many(chosen)
        assert srv.stats.images_seen == sum(len(s.display_rows) for s in chosen)
    assert [d.latent for d in out] == [s.latent for s in chosen]
    assert all(d.describer == "llm:fake-vlm" and d.error is None for d in out)
    assert "mri" in out[0].text and "coronal" in out[1].text and "female" in out[2].text
    messages = describer.prompt(chosen[0])
    user = messages[-1]["content"]
    assert (
        "Slice 1:" in user
        and "over-represented" in user
        and f"{len(train)} training slices" in user
    )


def test_llm_describer_records_failures_and_goes_on(data) -> None:
    _, table, labels, _, _, truth, stats = data
    j_bad = truth.concepts.index("plane=sagittal")
    j_ok = truth.concepts.index("plane=axial")
    with FakeLLMServer(Faults(status=500, when_contains=f"Feature {j_bad}:")) as srv:
        client = LLMClient(srv.base_url, "fake", backoff_s=0.001, max_retries=1)
        describer = LLMDescriber(client, table, labels, None, send_images=False)
        bad, ok = describer.describe_many([stats[j_bad], stats[j_ok]])
        assert srv.stats.images_seen == 0
    assert bad.text is None and "HTTP 500" in (bad.error or "")
    assert ok.text and "axial" in ok.text


def test_scanner_labels_are_named_in_descriptions_slice_text_and_by_the_label_scorer() -> None:
    import pandas as pd

    from medsae.interpret.scorers import LabelScorer

    table = pd.DataFrame(
        {
            "modality": ["CT", "CT", "MR"],
            "plane": ["axial"] * 3,
            "manufacturer": ["Philips", "Siemens", None],
        }
    )
    labels = build_label_table(table, None, geometry=False)
    assert {"manufacturer=Philips", "manufacturer=Siemens"} <= set(labels.names)
    philips = labels.index("manufacturer=Philips")
    assert labels.values[:, philips].tolist() == [True, False, False]
    assert labels.defined[:, philips].tolist() == [True, True, False]  # unknown for the MRI
    text = compose_phrase(["plane=axial", "modality=CT", "manufacturer=Philips", "sex=F"])
    assert text == "axial CT; Philips scanners; mostly female patients"
    assert compose_phrase(["manufacturer=GE"]) == "slices from GE scanners"
    assert "Philips scanner" in slice_text(table.iloc[0], ["liver"])
    assert "manufacturer=Philips" in LabelScorer(labels).named_labels(text)


def test_contrast_samples_choose_the_label_that_separates_near_misses() -> None:
    import scipy.sparse as sp

    n = 200
    rows = np.arange(n)
    active = rows < 40
    a = rows < 50  # every activating slice, and ten near misses
    c = (rows < 40) | ((rows >= 50) & (rows < 130))  # every activating slice, no near miss
    labels = LabelTable(
        ["structure=a", "structure=c"], np.stack([a, c], 1), np.ones((n, 2), dtype=bool)
    )
    codes = sp.csr_matrix(active.astype(np.float32)[:, None])
    plain = OfflineDescriber(labels, codes, rows, max_terms=1)
    assert plain.rule(0) == ["structure=a"]  # best on all slices: BA 0.97 vs 0.75

    def near_misses(latent: int) -> tuple[np.ndarray, np.ndarray]:
        return rows[:40], rows[40:50]

    contrastive = OfflineDescriber(labels, codes, rows, max_terms=1, contrast=near_misses)
    # mean of all-slice and near-miss balanced accuracy: a (0.97 + 0.5) / 2 < c (0.75 + 1) / 2
    assert contrastive.rule(0) == ["structure=c"]
    both = OfflineDescriber(labels, codes, rows, max_terms=2, contrast=near_misses)
    assert both.rule(0) == ["structure=a", "structure=c"]  # together: exactly the feature


def _count_world(p: tuple[float, ...] = (0.5, 0.5, 0.5, 0.5), n: int = 400):
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    values = rng.random((n, 4)) < np.asarray(p)  # a, b, c, an unrelated d
    names = ["structure=a", "structure=b", "structure=c", "structure=d"]
    labels = LabelTable(names, values, np.ones_like(values))
    return labels, values, np.arange(n), sp


def test_count_rule_names_the_anatomy_a_feature_needs_absent() -> None:
    labels, v, rows, sp = _count_world()
    active = v[:, 0] & ~v[:, 1]  # a shown, b not in view
    codes = sp.csr_matrix(active.astype(np.float32)[:, None])
    rule, m = OfflineDescriber(labels, codes, rows).count_rule(0)
    assert (rule, m) == (["structure=a", "not structure=b"], 2)
    # without negation the rule can only name what is shown
    plain, _ = OfflineDescriber(labels, codes, rows, negate=False).count_rule(0)
    assert plain and not any(x.startswith(NOT) for x in plain)


def test_count_rule_holds_on_all_but_one_of_its_literals() -> None:
    # greedy: a alone, then a and b, then c joins with "two of the three"
    labels, v, rows, sp = _count_world((0.8, 0.5, 0.5, 0.5))
    active = v[:, :3].sum(axis=1) >= 2  # any two of a, b, c
    codes = sp.csr_matrix(active.astype(np.float32)[:, None])
    assert OfflineDescriber(labels, codes, rows, slack=1).count_rule(0) == (
        ["structure=a", "structure=b", "structure=c"],
        2,
    )
    # the default: a conjunction, which cannot express "two of three"
    rule, m = OfflineDescriber(labels, codes, rows).count_rule(0)
    assert m == len(rule) and rule != ["structure=a", "structure=b", "structure=c"]


def test_absent_clause_is_split_off_and_scored_as_absence() -> None:
    from medsae.interpret.scorers import ABSENT_WEIGHT, EmbeddingScorer, LabelScorer

    text = (
        "axial CT through the abdomen: liver; "
        + ABSENT_LEAD
        + " "
        + ", ".join(absent_words(["structure=heart", "group=lungs"]))
    )
    assert text.endswith("not in view: lungs, heart")
    assert split_absent(text) == ("axial CT through the abdomen: liver", "lungs, heart")
    assert split_absent("axial CT") == ("axial CT", "")
    names = ["plane=axial", "modality=CT", "structure=liver", "structure=heart", "group=lungs"]
    liver_only = [True, True, True, False, False]
    with_lungs = [True, True, True, False, True]
    values = np.array([liver_only, with_lungs, with_lungs])
    values[2, 3] = True  # lungs and heart
    labels = LabelTable(names, values, np.ones_like(values))
    scorer = LabelScorer(labels)
    assert "group=lungs" not in scorer.named_labels(text)  # named as absent, not as shown
    assert scorer.absent_labels(text) == ["structure=heart", "group=lungs"]
    s, _ = scorer.detect(text, np.arange(3))
    np.testing.assert_allclose(s, [1.0, 4 / 5, 3 / 5])  # share of the five literals held
    emb, _ = EmbeddingScorer(labels).detect(text, np.arange(3))
    np.testing.assert_allclose(emb[0] - emb[1], ABSENT_WEIGHT, rtol=1e-6)
    np.testing.assert_allclose(emb[1] - emb[2], ABSENT_WEIGHT, rtol=1e-6)
