"""Concept search: the synonym table, the query parser, description polarity, concept
profiles and composition (every aspect must hold)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from medsae.labels.vocabulary import age_groups_of_number, vocabulary
from medsae.labels.words import split_absent
from medsae.llm.embed import TextEmbedder
from medsae.retrieval.understand import QueryReader


def _labels(reading) -> list[tuple[str, tuple[str, ...], bool]]:  # type: ignore[no-untyped-def]
    return [(c.aspect, c.labels, c.negated) for c in reading.concepts]


# ------------------------------------------------------------------ the synonym table
def test_paired_organs_and_plurals_mean_both_sides() -> None:
    v = vocabulary()
    both = ("structure=kidney_left", "structure=kidney_right")
    assert v["kidneys"].labels == v["kidney"].labels == v["both kidneys"].labels == both
    assert v["left kidney"].labels == ("structure=kidney_left",)
    assert set(v["hip joints"].labels) >= {"structure=hip_left", "structure=hip_right"}
    assert v["femurs"].labels == v["thigh bone"].labels


def test_regions_are_groups_of_structures() -> None:
    v = vocabulary()
    assert v["spine"].labels == v["vertebral column"].labels == v["backbone"].labels
    assert v["pelvis"].labels == ("group=pelvis",)
    upper = set(v["upper abdomen"].labels)
    assert {"structure=liver", "structure=spleen", "structure=stomach"} <= upper
    assert "structure=urinary_bladder" not in upper
    assert all(x.startswith("structure=vertebrae_L") for x in v["lumbar spine"].labels)
    assert v["chest"].labels == v["thorax"].labels and v["belly"].labels == v["abdomen"].labels


def test_modality_plane_sex_and_age_words() -> None:
    v = vocabulary()
    for word in ("mri", "mr", "magnetic resonance"):
        assert v[word].labels == ("modality=MR",)
    for word in ("ct", "computed tomography", "cat scan"):
        assert v[word].labels == ("modality=CT",)
    assert v["transverse"].labels == v["axial"].labels == ("plane=axial",)
    assert v["frontal"].labels == ("plane=coronal",)
    assert v["lateral"].labels == ("plane=sagittal",)
    assert v["woman"].labels == ("sex=F",) and v["men"].labels == ("sex=M",)
    assert v["elderly"].aspect == "demographics"
    assert age_groups_of_number("over", 70) == ("age_group=60-80", "age_group=>=80")
    assert age_groups_of_number("under", 40) == ("age_group=<40",)


def test_every_phrase_speaks_of_one_aspect_and_known_labels() -> None:
    from medsae.data.structures import ALL_STRUCTURES, GROUPS

    known = {f"structure={s}" for s in ALL_STRUCTURES} | {f"group={g}" for g in GROUPS}
    for phrase, term in vocabulary().items():
        assert phrase == phrase.lower() and term.labels, phrase
        for label in term.labels:
            if term.aspect == "anatomy":
                assert label in known, (phrase, label)


# ------------------------------------------------------------------ the parser
def test_reads_modality_plane_anatomy_and_negation() -> None:
    reading = QueryReader().read("coronal MRI of both kidneys without the liver")
    assert _labels(reading) == [
        ("plane", ("plane=coronal",), False),
        ("modality", ("modality=MR",), False),
        ("anatomy", ("structure=kidney_left", "structure=kidney_right"), False),
        ("anatomy", ("structure=liver",), True),
    ]
    assert reading.not_understood == ()
    assert "not liver" in reading.summary()


def test_negation_ends_at_a_comma_and_with() -> None:
    reading = QueryReader().read("no bladder, axial CT pelvis with the sacrum")
    negated = {c.labels: c.negated for c in reading.concepts}
    assert negated[("structure=urinary_bladder",)] is True
    assert negated[("plane=axial",)] is False and negated[("structure=sacrum",)] is False


def test_typos_abbreviations_ages_and_either_values() -> None:
    r = QueryReader()
    typo = r.read("sagital ct lumbr spine")
    assert [c.how for c in typo.concepts] == ["spelling", "table", "spelling"]
    assert typo.concepts[2].labels == vocabulary()["lumbar spine"].labels
    assert _labels(r.read("ax CT abd"))[0] == ("plane", ("plane=axial",), False)
    age = r.read("chest CT of a 45 year old man")
    assert ("demographics", ("age_group=40-60",), False) in _labels(age)
    either = r.read("CT or MRI of the liver or spleen")
    assert either.concepts[0].labels == ("modality=CT", "modality=MR")
    assert either.concepts[1].labels == ("structure=liver", "structure=spleen")


def _fake_embedder(pairs: dict[str, str]) -> TextEmbedder:
    """Texts embed as their mapped phrase (so "stomach area" is "abdomen")."""
    vocab = sorted(vocabulary())

    def fn(texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(vocab) + 1), dtype=np.float32)
        for i, t in enumerate(texts):
            target = pairs.get(t, t)
            out[i, vocab.index(target) if target in vocab else len(vocab)] = 1.0
        return out

    return TextEmbedder(fn, name="fake")


def test_words_outside_the_table_use_embeddings_above_the_floor_only() -> None:
    embedder = _fake_embedder({"gutsack": "abdomen"})
    reading = QueryReader(embedder, similarity_floor=0.6).read("axial CT gutsack")
    assert reading.concepts[-1].how == "similar words"
    assert reading.concepts[-1].labels == ("group=abdomen",)
    below = QueryReader(embedder, similarity_floor=1.01).read("axial CT gutsack")
    assert below.not_understood == ("gutsack",)
    assert [c.aspect for c in below.concepts] == ["plane", "modality"]


def test_a_query_of_only_unknown_words_is_not_understood() -> None:
    reading = QueryReader(_fake_embedder({})).read("zebra crossing at moonlight")
    assert reading.concepts == ()
    assert reading.not_understood == ("zebra crossing", "moonlight")
    assert "not understood" in reading.summary()


# ------------------------------------------------------------------ description polarity
@pytest.mark.parametrize(
    ("text", "shown", "absent"),
    [
        ("axial CT through the abdomen: liver; not in view: lungs, heart", "liver", "lungs"),
        ("coronal MRI without kidneys, liver visible", "liver", "kidneys"),
        ("axial CT of the pelvis; urinary bladder absent", "pelvis", "urinary bladder"),
        ("CT abdomen with liver, kidneys not visible", "liver", "kidneys"),
        ("sagittal MRI of the spine, no lungs", "spine", "lungs"),
    ],
)
def test_descriptions_are_read_with_polarity(text: str, shown: str, absent: str) -> None:
    s, a = split_absent(text)
    assert shown in s and absent in a and absent not in s


# ------------------------------------------------------------------ profiles and composition
@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from medsae.data.table import read_anatomy, slices_with_split
    from medsae.interpret.profiles import concept_profiles
    from medsae.labels.table import build_label_table
    from medsae.retrieval.fingerprint import FingerprintIndex
    from medsae.sae.codes_io import load_codes
    from tests.support.synthetic import make_synthetic_workspace

    ws, truth = make_synthetic_workspace(
        tmp_path_factory.mktemp("ws"), n_subjects=18, slices_per_plane=10
    )
    table = slices_with_split(ws.slices, ws.split)
    anatomy = read_anatomy(ws.slices)
    codes = load_codes(ws.codes(truth.encoder, truth.run))
    labels = build_label_table(table, anatomy, geometry=False)
    train = np.flatnonzero(table["split"].to_numpy() == "train")
    latents = list(range(truth.n_latents))
    concept_of = dict(enumerate(truth.concepts))
    profiles = concept_profiles(codes, labels, train, latents, concept_of)
    features = pd.DataFrame({"latent": latents, "description": [f"feature {j}" for j in latents]})
    index = FingerprintIndex.build(codes, table)
    return ws, truth, table, anatomy, profiles, features, index


def test_profiles_find_the_planted_concepts(profiled) -> None:  # type: ignore[no-untyped-def]
    _ws, truth, _t, _a, profiles, _f, _i = profiled
    j = truth.concepts.index("structure=liver")
    row = profiles[(profiles["latent"] == j) & (profiles["label"] == "structure=liver")].iloc[0]
    assert row["auroc"] > 0.99 and row["lift"] > 1 and row["p_active"] == pytest.approx(1.0)
    assert bool(row["concept_map"])
    noise = profiles[profiles["latent"] == truth.n_latents - 1]
    assert noise["auroc"].max() < 0.8 and not noise["concept_map"].any()


def _retriever(profiled, **config):  # type: ignore[no-untyped-def]
    from medsae.retrieval.config import AskConfig
    from medsae.retrieval.language import TextRetriever

    _ws, _truth, _t, _a, profiles, features, index = profiled
    return TextRetriever(
        index, features, _fake_embedder({}), AskConfig(**config), profiles=profiles
    )


def test_every_aspect_must_hold(profiled) -> None:  # type: ignore[no-untyped-def]
    _ws, _truth, table, anatomy, _p, _f, _i = profiled
    retriever = _retriever(profiled)
    found = retriever.answer("axial computed tomography of the liver", n=5)
    assert retriever.effective_mode() == "concepts" and len(found.hits) == 5
    liver = np.asarray(anatomy.presence)[:, list(anatomy.structures).index("liver")] == 1
    for r in found.hits.rows:
        assert table.at[int(r), "modality"] == "CT" and table.at[int(r), "plane"] == "axial"
        assert liver[int(r)]
    assert {c.concept for c in found.features} == {"axial", "computed tomography", "liver"}


def test_a_negated_concept_excludes(profiled) -> None:  # type: ignore[no-untyped-def]
    _ws, _truth, table, anatomy, _p, _f, _i = profiled
    retriever = _retriever(profiled)
    col = {s: i for i, s in enumerate(anatomy.structures)}
    presence = np.asarray(anatomy.presence)
    liver = presence[:, col["liver"]] == 1
    # per subject one axial slice with the liver and the one below it, without
    axial_ct = (table["plane"] == "axial").to_numpy() & (table["modality"] == "CT").to_numpy()
    near = np.isin(table["index"].to_numpy(), [4, 5])
    mask = axial_ct & near
    assert liver[mask].any() and (~liver[mask]).any()
    with_liver = retriever.answer("axial CT liver", n=12, mask=mask).hits.rows
    without = retriever.answer("axial CT without the liver", n=12, mask=mask).hits.rows
    assert len(without) == len(with_liver) == int(mask.sum()) // 2
    assert liver[with_liver].all() and not liver[without].any()


def test_a_feature_described_as_absent_never_stands_for_it(profiled) -> None:  # type: ignore[no-untyped-def]
    from medsae.retrieval.compose import ConceptFeatures

    _ws, truth, _t, _a, profiles, features, _i = profiled
    j = truth.concepts.index("structure=liver")
    concept = QueryReader().read("liver").concepts[0]
    assert j in [f.latent for f in ConceptFeatures(profiles, features).of(concept)]
    said_absent = features.copy()
    said_absent.loc[said_absent["latent"] == j, "description"] = "axial CT; not in view: liver"
    assert j not in [f.latent for f in ConceptFeatures(profiles, said_absent).of(concept)]


def test_metadata_only_when_asked(profiled) -> None:  # type: ignore[no-untyped-def]
    _ws, _truth, table, _a, _p, _f, _i = profiled
    plain = _retriever(profiled).answer("sagittal MRI", n=50)
    filtered = _retriever(profiled, metadata_filter=True).answer("sagittal MRI", n=50)
    kept = table.iloc[filtered.hits.rows]
    assert (kept["plane"] == "sagittal").all() and (kept["modality"] == "MR").all()
    assert len(filtered.hits) <= len(plain.hits)


def test_without_profiles_the_descriptions_answer(profiled) -> None:  # type: ignore[no-untyped-def]
    from medsae.retrieval.config import AskConfig
    from medsae.retrieval.language import TextRetriever

    _ws, _truth, _t, _a, _p, features, index = profiled
    retriever = TextRetriever(index, features, _fake_embedder({}), AskConfig())
    assert retriever.effective_mode() == "coverage"
    assert retriever.answer("axial CT liver", n=3).reading.concepts


def test_likelihood_ratios_and_priors_come_from_the_profile_counts() -> None:
    from medsae.retrieval.compose import _grouped

    # stratum of 100 slices, 20 with the label; the feature fires on 10, 8 with the label
    row = {"latent": 3, "label": "structure=liver", "stratum": "", "lift": 4.0, "auroc": 0.9}
    row |= {"p_active": 0.8, "p_base": 0.2, "n_active_with_label": 8, "n_label": 20}
    (got,) = _grouped(pd.DataFrame([row]), 0.6, 0.0)[("", "structure=liver")]
    latent, precision, _auroc, _f1, llr, prior = got
    assert (latent, precision) == (3, 0.8)
    assert llr == pytest.approx(np.log(8.5 / 21) - np.log(2.5 / 81))
    assert prior == pytest.approx(np.log(20.5 / 80.5))


def _tiny_index():  # type: ignore[no-untyped-def]
    import scipy.sparse as sp

    from medsae.retrieval.fingerprint import FingerprintIndex

    codes = sp.csr_matrix(np.array([[1.0, 0, 0], [0, 1.0, 0], [1.0, 1.0, 0], [0, 0, 1.0]]))
    table = pd.DataFrame({"slice_id": list("abcd"), "subject_key": list("abcd")})
    return FingerprintIndex.build(codes, table)


def test_bayes_evidence_is_the_posterior_and_competes_within_a_kind() -> None:
    from medsae.retrieval.compose import ConceptFeature, ConceptRanker

    ranker = ConceptRanker(_tiny_index(), "bayes", llr_scale=0.5)
    own = [ConceptFeature(0, 0.9, "plane=axial", 0.9, llr=2.0, prior=-1.0)]
    touched, p = ranker.evidence(own)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    assert touched.tolist() == [True, False, True, False]
    np.testing.assert_allclose(p, sig(np.array([0.0, -1.0, 0.0, -1.0])), rtol=1e-6)
    # a competing value: feature 1 speaks for sagittal, feature 2 for coronal
    rivals = [
        ConceptFeature(
            1, 0.9, "plane=sagittal", 0.9, llr=4.0, prior=-1.0, against="plane=sagittal"
        ),
        ConceptFeature(2, 0.9, "plane=coronal", 0.9, llr=2.0, prior=-2.0, against="plane=coronal"),
    ]
    _, q = ranker.evidence(own + rivals)
    logits = np.array([[0.0, -1.0, 0.0, -1.0], [-1.0, 1.0, 1.0, -1.0], [-2.0, -2.0, -2.0, -1.0]])
    want = np.exp(logits[0]) / np.exp(logits).sum(0)
    np.testing.assert_allclose(q, want, rtol=1e-6)
    assert q[1] < p[1] and q[0] > p[0]  # sagittal evidence on row 1 lowers axial there


def test_exclusive_kinds_bring_their_competitors(profiled) -> None:  # type: ignore[no-untyped-def]
    from medsae.retrieval.compose import ConceptFeatures

    _ws, _truth, _t, _a, profiles, features, _i = profiled
    concepts = ConceptFeatures(profiles, features)
    plane = QueryReader().read("sagittal").concepts[0]
    found = concepts.with_competitors(plane)
    against = {f.against for f in found}
    assert "" in against and {"plane=axial", "plane=coronal"} <= against
    assert all(f.label == f.against for f in found if f.against)
    liver = QueryReader().read("liver").concepts[0]
    assert concepts.with_competitors(liver) == concepts.of(liver)  # not an exclusive kind
    no_plane = QueryReader().read("not sagittal").concepts[0]
    assert no_plane.negated and concepts.with_competitors(no_plane) == concepts.of(no_plane)


def test_cached_evidence_gives_the_same_answers_and_stays_bounded(profiled, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from medsae.retrieval import compose

    retriever = _retriever(profiled)
    queries = ["axial CT liver", "sagittal MRI", "coronal CT without the liver", "axial CT liver"]
    warm = [retriever.answer(q, n=8).hits.rows.tolist() for q in queries]
    cold = []
    for q in queries:
        retriever.clear_caches()
        cold.append(retriever.answer(q, n=8).hits.rows.tolist())
    assert warm == cold and warm[0] == warm[3]
    ranker = retriever._ranker
    touched, score = next(iter(ranker._evidence.values()))
    assert not touched.flags.writeable and not score.flags.writeable
    monkeypatch.setattr(compose, "EVIDENCE_CACHE_BYTES", 1)
    for q in queries:
        retriever.answer(q, n=8)
    assert len(ranker._evidence) <= 2


def test_probes_read_modality_and_plane_and_round_trip(profiled, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from medsae.errors import ArtifactError
    from medsae.interpret.probes import fit_probes, read_probes, write_probes
    from medsae.labels.table import build_label_table
    from medsae.sae.codes_io import load_codes

    ws, truth, table, anatomy, _p, _f, _i = profiled
    codes = load_codes(ws.codes(truth.encoder, truth.run))
    labels = build_label_table(table, anatomy, geometry=False)
    split = table["split"].to_numpy()
    probes = fit_probes(codes, labels, np.flatnonzero(split == "train"))
    assert set(probes) == {"modality", "plane"}
    held = np.flatnonzero(split != "train")
    for kind, probe in probes.items():
        guess = np.asarray(probe.labels)[probe.logits(codes[held]).argmax(1)]
        truth_labels = kind + "=" + table[kind].astype(str).to_numpy()[held]
        assert (guess == truth_labels).mean() > 0.95, kind
        assert probe.features(probe.labels[0])  # a few latents speak for each value
    assert probes["modality"].coef.shape[0] == 2  # the binary kind as two softmax rows
    write_probes(tmp_path, probes)
    back = read_probes(tmp_path)
    assert back is not None and back["plane"].labels == probes["plane"].labels
    np.testing.assert_array_equal(back["plane"].coef, probes["plane"].coef)
    assert read_probes(tmp_path / "none") is None
    (tmp_path / "probes.npz").write_bytes(b"not an npz")
    with pytest.raises(ArtifactError, match=r"probes\.npz"):
        read_probes(tmp_path)


def test_a_probed_concept_uses_the_probe_probability(profiled) -> None:  # type: ignore[no-untyped-def]
    from medsae.interpret.probes import fit_probes
    from medsae.labels.table import build_label_table
    from medsae.retrieval.config import AskConfig
    from medsae.retrieval.language import TextRetriever
    from medsae.sae.codes_io import load_codes

    ws, truth, table, anatomy, profiles, features, index = profiled
    codes = load_codes(ws.codes(truth.encoder, truth.run))
    labels = build_label_table(table, anatomy, geometry=False)
    probes = fit_probes(codes, labels, np.flatnonzero(table["split"].to_numpy() == "train"))
    retriever = TextRetriever(
        index, features, _fake_embedder({}), AskConfig(), profiles=profiles, probes=probes
    )
    found = retriever.answer("sagittal CT of the liver", n=6)
    kinds = {
        c.concept: {f.probe for f in found.features if f.concept == c.concept}
        for c in found.features
    }
    assert kinds == {"sagittal": {"plane"}, "ct": {"modality"}, "liver": {""}}, kinds
    liver = np.asarray(anatomy.presence)[:, list(anatomy.structures).index("liver")] == 1
    for r in found.hits.rows:
        assert table.at[int(r), "plane"] == "sagittal" and table.at[int(r), "modality"] == "CT"
        assert liver[int(r)]
    p = retriever._ranker.probabilities("plane")
    logits = probes["plane"].logits(codes)
    want = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(p, want / want.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)
    off = TextRetriever(
        index,
        features,
        _fake_embedder({}),
        AskConfig(concept_probes=False),
        profiles=profiles,
        probes=probes,
    )
    assert not any(f.probe for f in off.answer("sagittal CT of the liver", n=6).features)


def test_a_probe_without_features_leaves_the_concept_to_the_profiles(profiled) -> None:  # type: ignore[no-untyped-def]
    from medsae.interpret.probes import Probe
    from medsae.retrieval.config import AskConfig
    from medsae.retrieval.language import TextRetriever

    _ws, truth, table, _a, profiles, features, index = profiled
    n = truth.n_latents
    empty = Probe(
        "plane",
        ["plane=axial", "plane=coronal", "plane=sagittal"],
        np.zeros((3, n), np.float32),
        np.zeros(3),
    )
    retriever = TextRetriever(
        index, features, _fake_embedder({}), AskConfig(), profiles=profiles, probes={"plane": empty}
    )
    found = retriever.answer("sagittal MRI", n=5)
    assert len(found.hits) == 5 and not any(f.probe for f in found.features)
    assert (table.iloc[found.hits.rows]["plane"] == "sagittal").all()
    # one value read as the absence of the others' features is listed by what speaks against it
    w = np.zeros((2, n), np.float32)
    w[1, 3], w[0, 3] = 1.0, -1.0
    binary = Probe("modality", ["modality=CT", "modality=MR"], w, np.zeros(2))
    assert binary.features("modality=MR") == [(3, 1.0)]
    assert binary.features("modality=CT") == [(3, -1.0)]
