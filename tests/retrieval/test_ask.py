"""Text-to-image retrieval: query parsing, feature choice, ranking, the query suite, metrics."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsae.errors import ArtifactError, InputError
from medsae.llm.embed import TextEmbedder
from medsae.llm.fake_server import hashed_embedding
from medsae.retrieval.config import AskConfig, IndexConfig, SearchConfig
from medsae.retrieval.index import TEXT_RETRIEVAL, ask, build_index, load_index
from medsae.retrieval.language import FeatureChoice, TextRetriever, llm_selector, split_query
from medsae.retrieval.queries import Query, load_queries, truth_mask, validate_truth
from medsae.retrieval.text_eval import evaluate_text_retrieval, precision_at

PHRASES = {
    "modality=CT": "CT scan",
    "modality=MR": "MRI scan",
    "plane=axial": "axial slice",
    "plane=coronal": "coronal slice",
    "plane=sagittal": "sagittal slice",
    "sex=F": "female patient",
    "age_group=>=80": "elderly patient over 80",
}


def bag_of_words() -> TextEmbedder:
    """A deterministic word-overlap embedder (no model)."""

    def fn(texts: Sequence[str]) -> np.ndarray:
        return np.asarray([hashed_embedding(t, 2048) for t in texts], dtype=np.float32)

    return TextEmbedder(fn, name="bag-of-words")


def write_features(ws, truth, descriptions: dict[int, str] | None = None) -> Path:
    """features.parquet naming each planted latent's concept (noise latents undescribed)."""
    if descriptions is None:
        descriptions = {
            j: PHRASES.get(c) or c.split("=", 1)[1].replace("_", " ")
            for j, c in enumerate(truth.concepts)
        }
    rows = [
        {
            "latent": j,
            "level": 0,
            "description": descriptions.get(j),
            "detection_balanced_accuracy": 0.9,
        }
        for j in range(truth.n_latents)
    ]
    folder = ws.features(truth.encoder, truth.run)
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(folder / "features.parquet", index=False)
    return folder


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory):
    from tests.support.synthetic import make_synthetic_workspace

    ws, truth = make_synthetic_workspace(
        tmp_path_factory.mktemp("ws"), n_subjects=24, slices_per_plane=8
    )
    write_features(ws, truth)
    return ws, truth


def test_split_query_finds_metadata_terms() -> None:
    terms, rest = split_query("axial CT thorax, female patient")
    assert [(a, p) for a, p, _ in terms] == [
        ("modality", "CT scan"),
        ("plane", "axial slice"),
        ("sex", "female patient"),
    ]
    assert rest == "thorax"
    terms, rest = split_query("axial CT male pelvis")
    assert ("sex", "male patient") in [(a, p) for a, p, _ in terms]
    assert rest == "pelvis"
    terms, rest = split_query("sagittal MRI of the lumbar spine")
    assert [p for _, p, _ in terms] == ["MRI scan", "sagittal slice"]
    assert rest == "lumbar spine"


def test_query_suite_loads_and_every_filter_is_valid() -> None:
    queries = load_queries()
    assert sum(q.source == "paper" for q in queries) == 12
    assert len(queries) >= 32
    assert len({q.id for q in queries}) == len(queries)
    aspects = {a for q in queries for a in q.aspects}
    assert aspects == {"modality", "plane", "anatomy", "demographics"}
    for q in queries:
        validate_truth(q.truth, q.id)
        assert q.text.strip()


def test_bad_query_files_are_rejected(tmp_path: Path) -> None:
    def write(entries: list[dict]) -> Path:
        p = tmp_path / "q.yaml"
        import yaml

        p.write_text(yaml.safe_dump({"queries": entries}))
        return p

    good = {
        "id": "a",
        "text": "axial CT",
        "truth": {"modality": "CT", "plane": "axial"},
        "aspects": ["modality", "plane"],
    }
    assert load_queries(write([good]))[0].truth == {"modality": "CT", "plane": "axial"}
    with pytest.raises(InputError, match="unknown structure"):
        load_queries(
            write([{**good, "truth": {"structures_any": ["spleeen"]}, "aspects": ["anatomy"]}])
        )
    with pytest.raises(InputError, match="aspects"):
        load_queries(write([{**good, "aspects": ["modality"]}]))
    with pytest.raises(InputError, match="unknown value"):
        load_queries(write([{**good, "truth": {"modality": "PET"}, "aspects": ["modality"]}]))
    with pytest.raises(InputError, match="duplicate"):
        load_queries(write([good, good]))


def test_truth_mask_and_precision_on_a_constructed_case() -> None:
    table = pd.DataFrame(
        {
            "modality": ["CT", "CT", "MR", "CT"],
            "plane": ["axial", "coronal", "axial", "axial"],
            "sex": ["F", "M", "F", None],
            "age_group": ["<40", ">=80", "60-80", None],
        }
    )
    structures = ["liver", "vertebrae_L1", "spleen"]
    presence = np.array([[1, 0, 0], [0, 1, -1], [1, 1, 0], [0, 0, 1]], dtype=np.int8)
    mask = truth_mask(
        {"modality": "CT", "structures_any": ["liver", "spleen"]}, table, presence, structures
    )
    assert mask.tolist() == [True, False, False, True]
    assert truth_mask({"groups_any": ["spine"]}, table, presence, structures).tolist() == [
        False,
        True,
        True,
        False,
    ]
    assert truth_mask(
        {"sex": "F", "age_group": ["<40", "60-80"]}, table, presence, structures
    ).tolist() == [True, False, True, False]
    assert truth_mask(
        {"structures_all": ["liver", "vertebrae_L1"]}, table, presence, structures
    ).tolist() == [False, False, True, False]
    relevant = np.array([True, False, True, True, False])
    assert precision_at([0, 1, 2], relevant, n=10, available=5) == pytest.approx(2 / 5)
    assert precision_at([0, 2, 3, 1], relevant, n=3, available=5) == pytest.approx(1.0)
    assert precision_at([], relevant, n=10, available=0) == 0.0


def test_retriever_picks_planted_features_and_ranks_matching_slices(planted) -> None:
    ws, truth = planted
    retriever = TextRetriever(
        load_index(ws, truth.encoder, truth.run),
        _features(ws, truth),
        bag_of_words(),
        AskConfig(mode="aspects"),
    )
    choices = retriever.choose("axial CT liver")
    names = [truth.concepts[c.latent] for c in choices]
    assert names == ["modality=CT", "plane=axial", "structure=liver"]
    assert sum(c.weight for c in choices) == pytest.approx(1.0)
    _, results = retriever.search("axial CT liver", n=5)
    assert len(results) == 5 and results["subject_key"].is_unique
    assert set(results["modality"]) == {"CT"} and set(results["plane"]) == {"axial"}
    # a metadata term that no description names is dropped rather than mapped to a wrong feature
    choices = retriever.choose("male patient liver")
    assert all(truth.concepts[c.latent] != "sex=F" for c in choices)
    sim = retriever.choose("coronal slice", m=2, mode="similarity")
    assert [truth.concepts[c.latent] for c in sim] == [
        "plane=coronal"
    ]  # weak second match left out
    retriever.config.relative_similarity = 0.0
    sim = retriever.choose("coronal slice", m=2, mode="similarity")
    assert truth.concepts[sim[0].latent] == "plane=coronal" and len(sim) == 2
    assert sim[0].weight > sim[1].weight


def test_retrieval_goes_through_descriptions_not_metadata(planted) -> None:
    ws, truth = planted
    swapped = {
        truth.concepts.index("modality=CT"): "MRI scan",
        truth.concepts.index("modality=MR"): "CT scan",
    }
    retriever = TextRetriever(
        load_index(ws, truth.encoder, truth.run), _features(ws, truth, swapped), bag_of_words()
    )
    _, results = retriever.search("a CT scan", n=5)
    assert set(results["modality"]) == {"MR"}  # the descriptions were wrong, so are the results


def _features(ws, truth, override: dict[int, str] | None = None) -> pd.DataFrame:
    df = pd.read_parquet(ws.features(truth.encoder, truth.run) / "features.parquet")
    for latent, text in (override or {}).items():
        df.loc[df["latent"] == latent, "description"] = text
    return df


def test_evaluate_text_retrieval_on_planted_queries(planted) -> None:
    ws, truth = planted
    from medsae.data.table import read_anatomy, slices_with_split

    table = slices_with_split(ws.slices, ws.split)
    anatomy = read_anatomy(ws.slices)
    retriever = TextRetriever(
        load_index(ws, truth.encoder, truth.run), _features(ws, truth), bag_of_words()
    )
    queries = [
        Query(
            "q1",
            "axial CT liver",
            {"modality": "CT", "plane": "axial", "structures_any": ["liver"]},
            ("modality", "plane", "anatomy"),
        ),
        Query("q2", "coronal MRI", {"modality": "MR", "plane": "coronal"}, ("modality", "plane")),
        Query("q3", "sagittal slice", {"plane": "sagittal"}, ("plane",)),
        # nothing in the gallery is relevant: listed, but no precision enters the means
        Query("q4", "oblique slice", {"plane": "oblique"}, ("plane",)),
    ]
    gallery = table["split"].isin(["val", "test"]).to_numpy()
    res = evaluate_text_retrieval(
        retriever, queries, table, anatomy.presence, anatomy.structures, gallery, n=10
    )
    by_id = {q["id"]: q for q in res["queries"]}
    assert res["unanswerable"] == ["q4"] and res["scored_queries"] == 3
    assert not by_id["q4"]["answerable"] and by_id["q4"]["precision_at_n"] == 0.0
    scored = [by_id[i] for i in ("q1", "q2", "q3")]
    for q in scored:
        assert q["answerable"]
        # perfect given the gallery
        assert q["precision_at_n"] == pytest.approx(q["max_achievable"])
    assert res["precision_at_n"] == pytest.approx(np.mean([q["precision_at_n"] for q in scored]))
    # the headline and the aspects are the report half's; the oracle reaches what is achievable
    report = [q for q in scored if q["half"] == "report"]
    assert report and len(report) < len(scored)
    assert res["text_precision_at_10"] == pytest.approx(
        np.mean([q["precision_at_n"] for q in report])
    )
    assert res["text_precision_at_10_achievable"] == pytest.approx(
        np.mean([q["max_achievable"] for q in report])
    )
    assert res["halves"]["report"]["ratio"] == pytest.approx(1.0)
    assert set(res["split"]["tune"]) | set(res["split"]["report"]) == {q.id for q in queries}
    assert res["gallery_subjects"] == len(table.loc[gallery, "subject_key"].unique())


def test_index_stage_with_features_and_ask(planted) -> None:
    ws, truth = planted
    cfg = IndexConfig(search=SearchConfig(eval_queries=20, sweep_k=[5]), ask=AskConfig())
    out = build_index(ws, config=cfg, embedder=bag_of_words())
    tr = json.loads((out.path / TEXT_RETRIEVAL).read_text())
    assert len(tr["queries"]) == len(load_queries())
    assert out.manifest["extra"]["text_precision_at_10"] == tr["text_precision_at_10"]
    assert out.manifest["inputs"]["text_embedder"] == "bag-of-words"
    # every plane is a planted, described feature (the queries worded like the descriptions)
    plain = [
        q["aspects"]["plane"]
        for q in tr["queries"]
        if "plane" in q["aspects"] and q["source"] != "wording" and q["answerable"]
    ]
    assert np.mean(plain) > 0.9
    result = ask(ws, query="sagittal MRI", n=4, embedder=bag_of_words())
    assert [truth.concepts[c.latent] for c in result.features] == ["modality=MR", "plane=sagittal"]
    assert set(result.results["plane"]) == {"sagittal"}
    filtered = ask(ws, query="axial slice", n=4, embedder=bag_of_words(), filters={"split": "test"})
    assert set(filtered.results["split"]) == {"test"}


def test_ask_errors(planted, tmp_path: Path) -> None:
    ws, _truth = planted
    with pytest.raises(InputError, match="empty query"):
        ask(ws, query="  ", embedder=bag_of_words())
    from tests.support.synthetic import make_synthetic_workspace

    bare, _ = make_synthetic_workspace(tmp_path, n_subjects=3, slices_per_plane=2)
    with pytest.raises(ArtifactError, match="medsae interpret"):
        ask(bare, query="axial CT", embedder=bag_of_words())


def test_llm_selector_with_the_fake_server(planted) -> None:
    ws, truth = planted
    from medsae.llm.client import LLMClient
    from medsae.llm.fake_server import serve

    with serve() as url, LLMClient(url, "fake") as client:
        selector = llm_selector(client, m=2)
        retriever = TextRetriever(
            load_index(ws, truth.encoder, truth.run),
            _features(ws, truth),
            bag_of_words(),
            selector=selector,
        )
        choices = retriever.choose("liver")
    assert truth.concepts[choices[0].latent] == "structure=liver"
    assert sum(c.weight for c in choices) == pytest.approx(1.0)


def test_ask_command_lists_features_and_results(planted, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import medsae.retrieval.index as index_module
    from medsae.cli import app

    ws, _truth = planted
    monkeypatch.setattr(index_module, "shared_embedder", bag_of_words)
    res = CliRunner().invoke(app, ["ask", "coronal CT", "--workspace", str(ws.root), "--n", "3"])
    assert res.exit_code == 0, res.output
    assert "CT scan" in res.output and "coronal slice" in res.output
    assert res.output.count("coronal") >= 4


def test_index_stage_skips_text_eval_without_descriptions(tmp_path: Path) -> None:
    from tests.support.synthetic import make_synthetic_workspace

    ws, truth = make_synthetic_workspace(tmp_path, n_subjects=6, slices_per_plane=3)
    write_features(ws, truth, descriptions={})
    cfg = IndexConfig(search=SearchConfig(eval_queries=5, sweep_k=[5]))
    out = build_index(ws, config=cfg, embedder=bag_of_words())
    assert not (out.path / TEXT_RETRIEVAL).exists()
    assert out.manifest["extra"]["text_retrieval"].startswith("skipped")
    assert "features" in out.manifest["inputs"]  # descriptions added later make it stale


def test_product_combination_favours_slices_where_every_feature_fires(planted) -> None:
    ws, truth = planted
    index = load_index(ws, truth.encoder, truth.run)
    features = _features(ws, truth)
    ct, axial = truth.concepts.index("modality=CT"), truth.concepts.index("plane=axial")
    choices = [
        FeatureChoice(ct, 0.5, 1.0, "CT scan", "CT"),
        FeatureChoice(axial, 0.5, 1.0, "axial slice", "axial"),
    ]
    table = index.describe_hits(
        TextRetriever(index, features, bag_of_words(), AskConfig(combine="product")).rank(
            choices, n=8
        )
    )
    # a soft AND: every top slice is both CT and axial
    assert set(table["modality"]) == {"CT"} and set(table["plane"]) == {"axial"}
    scores = table["score"].to_numpy()
    assert np.all(np.diff(scores) <= 1e-12)
    # the top score is prod_i (eps + a_i)^w_i with a_i the activation over its 99th percentile
    row = int(table["row"].iloc[0])
    expected = 1.0
    for latent in (ct, axial):
        a, b = index.indptr[latent], index.indptr[latent + 1]
        vals = index.values[a:b].astype(np.float64)
        hit = index.rows[a:b] == row
        act = min(1.0, float(vals[hit][0]) / float(np.percentile(vals, 99))) if hit.any() else 0.0
        expected *= (0.05 + act) ** 0.5
    assert scores[0] == pytest.approx(expected)


def test_coverage_mode_prefers_descriptions_stating_every_term_and_skips_contradictions(
    planted,
) -> None:
    ws, truth = planted
    ct, mr = truth.concepts.index("modality=CT"), truth.concepts.index("modality=MR")
    axial = truth.concepts.index("plane=axial")
    texts = {ct: "axial CT scan", mr: "axial MRI scan", axial: "coronal slice"}
    retriever = TextRetriever(
        load_index(ws, truth.encoder, truth.run),
        _features(ws, truth, texts),
        bag_of_words(),
        AskConfig(mode="coverage", relative_similarity=0.0),
    )
    choices = retriever.choose("axial CT scan", m=3)
    # "axial CT scan" states both terms; "axial MRI scan" and "coronal slice" contradict one
    assert choices[0].latent == ct
    assert {c.latent for c in choices}.isdisjoint({mr, axial})
    # no description names "sagittal": the best non-contradicting ones are used instead
    assert retriever.choose("sagittal slice", m=2)


def test_coverage_mode_ranks_by_anatomy_words_and_backfills_with_the_whole_query(
    planted,
) -> None:
    ws, truth = planted
    latent = {c: truth.concepts.index(c) for c in truth.concepts}
    ct, mr = latent["modality=CT"], latent["modality=MR"]
    liver, spleen = latent["structure=liver"], latent["structure=spleen"]
    texts = {
        ct: "axial CT scan",
        liver: "axial CT through the liver",
        mr: "axial MRI through the liver",
        spleen: "axial CT through the spleen",
    }
    index, features = load_index(ws, truth.encoder, truth.run), _features(ws, truth, texts)
    for backfill in (0.5, 0.25):
        cfg = AskConfig(mode="coverage", relative_similarity=0.0, backfill=backfill)
        choices = TextRetriever(index, features, bag_of_words(), cfg).choose("axial CT liver", m=2)
        # the anatomy word picks the liver description; the MRI one contradicts the query
        assert choices[0].latent == liver and choices[0].matched == "liver"
        assert mr not in {c.latent for c in choices}
        fill = [c for c in choices if c.matched == "axial CT liver"]
        assert fill and {c.latent for c in fill} <= {ct, spleen}
        anatomy_weight = sum(c.weight for c in choices if c.matched == "liver")
        assert sum(c.weight for c in fill) == pytest.approx(backfill * anatomy_weight)
        assert sum(c.weight for c in choices) == pytest.approx(1.0)
    cfg = AskConfig(mode="coverage", relative_similarity=0.0, backfill=0.0)
    choices = TextRetriever(index, features, bag_of_words(), cfg).choose("axial CT liver", m=2)
    assert all(c.matched == "liver" for c in choices)
    # without anatomy words the whole query ranks the candidates, no backfill
    choices = TextRetriever(index, features, bag_of_words(), cfg).choose("axial CT", m=1)
    assert [c.matched for c in choices] == ["axial CT"]


def test_coverage_bonus_lets_an_anatomy_match_state_fewer_terms(planted) -> None:
    ws, truth = planted
    latent = {c: truth.concepts.index(c) for c in truth.concepts}
    ct, liver, spleen = latent["modality=CT"], latent["structure=liver"], latent["structure=spleen"]
    texts = {
        ct: "axial CT scan",
        liver: "CT through the liver",
        spleen: "axial CT through the spleen",
    }
    index, features = load_index(ws, truth.encoder, truth.run), _features(ws, truth, texts)

    def anatomy_picks(bonus: float) -> list[int]:
        cfg = AskConfig(mode="coverage", relative_similarity=0.0, coverage_bonus=bonus)
        retriever = TextRetriever(index, features, bag_of_words(), cfg)
        return [c.latent for c in retriever.choose("axial CT liver", m=1) if c.matched == "liver"]

    # "CT through the liver" names no plane: allowed with a bonus, outranked without one
    assert anatomy_picks(0.4) == [liver]
    assert anatomy_picks(0.0) != [liver]
    assert anatomy_picks(5.0) != [liver]  # a large bonus puts stating every term first


def test_coverage_mode_keeps_the_terms_it_can_state_when_none_states_them_all(planted) -> None:
    ws, truth = planted
    latent = {c: truth.concepts.index(c) for c in truth.concepts}
    ct, mr = latent["modality=CT"], latent["modality=MR"]
    liver, spleen = latent["structure=liver"], latent["structure=spleen"]
    texts = {
        ct: "axial CT through the liver",
        spleen: "axial CT scan",
        mr: "MRI through the pelvis; mostly elderly patients",
        liver: "axial slices",
    }
    index = load_index(ws, truth.encoder, truth.run)

    def only(texts: dict[int, str]) -> pd.DataFrame:
        df = _features(ws, truth, texts)
        return df[df["latent"].isin(list(texts))].reset_index(drop=True)

    cfg = AskConfig(mode="coverage", relative_similarity=0.0)
    retriever = TextRetriever(index, only(texts), bag_of_words(), cfg)
    choices = retriever.choose("axial CT liver, elderly patient", m=2)
    # no description states all three terms: the two-term ones are the candidates and the
    # age term is left unstated; the elderly MRI description contradicts the modality
    assert choices[0].latent == ct and choices[0].matched == "liver"
    assert mr not in {c.latent for c in choices}
    assert {c.latent for c in choices} <= {ct, spleen}
    # one-term descriptions only: composed one feature per term (the 'aspects' way)
    one_term = {ct: "CT scan", mr: "elderly patients", liver: "axial slices", spleen: "liver"}
    retriever = TextRetriever(index, only(one_term), bag_of_words(), AskConfig(mode="coverage"))
    picked = {c.latent for c in retriever.choose("axial CT liver, elderly patient", m=4)}
    assert {ct, liver, spleen, mr} <= picked


def test_anatomy_a_description_says_is_not_in_view_does_not_match_a_query(planted) -> None:
    ws, truth = planted
    latent = {c: truth.concepts.index(c) for c in truth.concepts}
    liver, spleen = latent["structure=liver"], latent["structure=spleen"]
    texts = {
        liver: "axial CT through the abdomen: liver",
        spleen: "axial CT through the abdomen: spleen; not in view: liver",
    }
    index, features = load_index(ws, truth.encoder, truth.run), _features(ws, truth, texts)
    cfg = AskConfig(mode="similarity")
    retriever = TextRetriever(index, features, bag_of_words(), cfg)
    assert [c.latent for c in retriever.choose("axial CT liver", m=1)] == [liver]
    assert [c.latent for c in retriever.choose("axial CT spleen", m=1)] == [spleen]
    # the spleen description is embedded without its absent clause
    row = retriever.features.index[retriever.features["latent"] == spleen][0]
    shown = bag_of_words().embed(["axial CT through the abdomen: spleen"])[0]
    np.testing.assert_allclose(retriever.desc_emb[int(row)], shown, rtol=1e-6)
