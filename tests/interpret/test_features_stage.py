"""The interpret stage end to end on the synthetic workspace: offline and LLM paths."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medsae.interpret import InterpretConfig, interpret
from medsae.interpret.io import (
    DESCRIPTIONS,
    FEATURE_COLUMNS,
    FEATURES,
    LOCALISATION_COLUMNS,
    SCORES,
)
from medsae.llm.fake_server import FakeLLMServer, Faults
from tests.support.synthetic import make_synthetic_workspace

COLUMNS = [
    "latent",
    "level",
    "frequency",
    "mean_activation",
    "max_activation",
    "top_slice_ids",
    "description",
    "describer",
    "rule",
    "rule_min",
    "detection_balanced_accuracy",
    "detection_f1",
    "detection_auroc",
    "ranking_rank",
    "concept",
    "concept_auroc",
    *LOCALISATION_COLUMNS,
]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory):
    return make_synthetic_workspace(tmp_path_factory.mktemp("ws"))


@pytest.fixture(scope="module")
def offline(synthetic):
    ws, truth = synthetic
    outcome = interpret(ws, truth.encoder, truth.run)
    return (
        outcome,
        pd.read_parquet(outcome.path / FEATURES),
        json.loads((outcome.path / SCORES).read_text()),
    )


def test_offline_outputs(synthetic, offline) -> None:
    ws, truth = synthetic
    outcome, features, scores = offline
    assert outcome.path == ws.features(truth.encoder, truth.run)
    assert list(features.columns) == COLUMNS == FEATURE_COLUMNS
    assert len(features) == truth.n_latents  # every latent of the synthetic codes is alive
    assert features["describer"].eq("offline").all()
    assert scores["describer"] == "offline" and scores["scorer"] == "embedding"
    assert scores["splits"] == {"statistics": "train", "selection": None, "scores": ["val", "test"]}
    assert (
        scores["detection_balanced_accuracy"] == scores["detection"]["balanced_accuracy"]["median"]
    )
    assert scores["counts"]["described"] == truth.n_latents and scores["failures"] == []
    # the synthetic workspace has no pixel label maps: localisation says so and how to fix it
    assert scores["localisation"]["status"] == "not computed"
    assert "--label-maps" in scores["localisation"]["reason"]
    assert features["pointing"].isna().all() and features["localisation_slices"].eq(0).all()
    kinds = scores["detection"]["by_kind"]
    assert set(kinds) == {"tpr_strong", "tpr_weak", "tnr_hard", "tnr_random"}
    assert all(0.0 <= k["median"] <= 1.0 and k["n"] > 0 for k in kinds.values())
    records = [json.loads(x) for x in (outcome.path / DESCRIPTIONS).read_text().splitlines()]
    assert [r["latent"] for r in records] == features["latent"].tolist()
    assert [list(x) for x in features["rule"]] == [r["rule"] for r in records]
    assert any(len(x) for x in features["rule"])
    assert features["rule_min"].tolist() == [r["rule_min"] for r in records]
    for rule, m in zip(features["rule"], features["rule_min"], strict=True):
        assert m == len(rule)  # the default rule is a conjunction
    assert all(len(r["display_slice_ids"]) <= 5 and r["enrichment"] is not None for r in records)
    table = pd.read_parquet(ws.slices / "slices.parquet")
    split = pd.read_parquet(ws.split / "split.parquet").set_index("subject_key")["split"]
    train_ids = set(table.loc[table["subject_key"].map(split) == "train", "slice_id"])
    assert all(set(ids) <= train_ids for ids in features["top_slice_ids"])


def test_planted_features_detected_and_noise_near_chance(synthetic, offline) -> None:
    _, truth = synthetic
    _, features, scores = offline
    planted = features[features["latent"] < len(truth.concepts)]
    noise = features[features["latent"] >= len(truth.concepts)]
    assert planted["detection_balanced_accuracy"].median() >= 0.9
    assert planted["detection_auroc"].median() >= 0.9
    assert (planted["ranking_rank"] <= 2).mean() >= 0.7  # chance is 0.4
    assert 0.35 <= noise["detection_balanced_accuracy"].median() <= 0.65
    assert 0.35 <= noise["detection_auroc"].median() <= 0.65
    assert planted["concept_auroc"].min() == 1.0
    assert scores["ranking"]["chance_top2"] == pytest.approx(0.4)


def test_rerun_is_skipped_and_top_n_selection(synthetic, offline) -> None:
    ws, truth = synthetic
    assert interpret(ws, truth.encoder, truth.run).skipped
    cfg = InterpretConfig(select="top_n", top_n=10, rank_by="frequency", scorer="labels")
    outcome = interpret(ws, truth.encoder, truth.run, cfg)
    assert outcome.status == "rebuilt"
    features = pd.read_parquet(outcome.path / FEATURES)
    freq = offline[1].set_index("latent")["frequency"]
    expected = sorted(freq.sort_values(ascending=False, kind="stable").index[:10])
    assert len(features) == 10 and np.isclose(features["frequency"].min(), freq.loc[expected].min())
    scores = json.loads((outcome.path / SCORES).read_text())
    assert scores["scorer"] == "labels"
    assert scores["splits"] == {
        "statistics": "train",
        "selection": "train",
        "scores": ["val", "test"],
    }


def test_llm_path_end_to_end_with_cache_and_failures(synthetic) -> None:
    ws, truth = synthetic
    broken = truth.concepts.index(
        "modality=CT"
    )  # concept AUROC 1 and the highest frequency: selected
    with FakeLLMServer(Faults(status=500, when_contains=f"Feature {broken}:")) as srv:
        cfg = InterpretConfig(
            describer="llm",
            scorer="llm",
            select="top_n",
            top_n=12,
            rank_by="concept",
            ranking_distractors=2,
            llm={
                "base_url": srv.base_url,
                "model": "fake-vlm",
                "send_images": False,
                "backoff_s": 0.001,
                "max_retries": 1,
                "concurrency": 3,
            },
        )
        outcome = interpret(ws, truth.encoder, truth.run, cfg)
        sent = srv.stats.requests
        assert sent > 0 and srv.stats.images_seen == 0 and srv.stats.max_in_flight <= 3
        features = pd.read_parquet(outcome.path / FEATURES)
        scores = json.loads((outcome.path / SCORES).read_text())
        # a rerun answers every request from the workspace cache; only the failure is retried
        again = interpret(ws, truth.encoder, truth.run, cfg, force=True)
        assert srv.stats.requests == sent + 2
        again_scores = json.loads((again.path / SCORES).read_text())
    assert (ws.root / "cache" / "llm").is_dir()
    assert features["describer"].eq("llm:fake-vlm").all() and len(features) == 12
    failed = features[features["description"].isna()]
    assert failed["latent"].tolist() == [broken]
    assert [f["latent"] for f in scores["failures"]] == [broken]
    assert "HTTP 500" in scores["failures"][0]["error"]
    assert scores["counts"]["failed"] == 1 and scores["counts"]["described"] == 11
    assert scores["usage"]["requests"] == sent and scores["usage"]["total_tokens"] > 0
    assert again_scores["usage"]["requests"] == 2 and again_scores["usage"]["cache_hits"] > 0
    assert again_scores["detection"] == scores["detection"]
    assert scores["detection"]["balanced_accuracy"]["n"] >= 5
    ok = features.dropna(subset=["description"])
    assert ok["detection_auroc"].median() > 0.6
    assert ok["ranking_rank"].between(1, 3).all()  # few distinct fake descriptions: 2 distractors
    assert scores["ranking"]["n"] == 11 and scores["ranking"]["chance_top2"] == pytest.approx(2 / 3)


def test_api_key_never_reaches_the_manifest() -> None:
    cfg = InterpretConfig(llm={"api_key": "very-secret", "base_url": "http://x/v1", "model": "m"})
    dumped = json.dumps(cfg.model_dump(mode="json"))
    assert "very-secret" not in dumped and "http://x/v1" in dumped
    assert cfg.llm.api_key is not None and cfg.llm.api_key.get_secret_value() == "very-secret"
    with pytest.raises(ValueError):
        InterpretConfig(describer="magic")  # type: ignore[arg-type]


def test_thresholds_from_pooled_training_draws_and_near_miss_draws(
    synthetic, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    import shutil

    import medsae.interpret.scoring as scoring
    from medsae.workspace import Workspace

    ws, truth = synthetic
    root = tmp_path / "ws"
    shutil.copytree(ws.root, root)
    copy = Workspace(root)
    split = pd.read_parquet(copy.split / "split.parquet").set_index("subject_key")["split"]
    table = pd.read_parquet(copy.slices / "slices.parquet")
    train = set(np.flatnonzero(table["subject_key"].map(split).to_numpy() == "train"))
    seeds: list[int] = []
    real = scoring.detection_sample

    def counting(space, latent, rows, **kw):  # type: ignore[no-untyped-def]
        if set(np.asarray(rows).tolist()) <= train:
            seeds.append(kw["seed"])
        return real(space, latent, rows, **kw)

    monkeypatch.setattr(scoring, "detection_sample", counting)
    cfg = InterpretConfig(calibration_draws=3, contrast_draws=2, seed=7)
    outcome = interpret(copy, truth.encoder, truth.run, cfg, force=True)
    n = len(pd.read_parquet(outcome.path / FEATURES).dropna(subset=["description"]))
    # per described feature: 2 near-miss draws for the describer, 3 pooled calibration draws
    assert sorted(set(seeds)) == [8, 9, 10, 107, 108]
    assert seeds.count(107) == seeds.count(108) == seeds.count(8) == n


def test_top_n_chooses_on_the_training_split_only(
    synthetic, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """--top-n reads only training rows to choose, so held-out activations cannot change
    which features are described (they only change the scores)."""
    import shutil

    import medsae.interpret.inputs as inputs_module
    import medsae.interpret.selection as selection
    from medsae.workspace import Workspace

    ws, truth = synthetic
    copy = Workspace(shutil.copytree(ws.root, tmp_path / "ws"))
    table = pd.read_parquet(copy.slices / "slices.parquet")
    split = pd.read_parquet(copy.split / "split.parquet").set_index("subject_key")["split"]
    is_train = table["subject_key"].map(split).to_numpy() == "train"
    seen: list[np.ndarray] = []
    real_values = selection.selection_values

    def spy(codes, labels, rows, latents, config):  # type: ignore[no-untyped-def]
        seen.append(np.asarray(rows).copy())
        return real_values(codes, labels, rows, latents, config)

    monkeypatch.setattr(selection, "selection_values", spy)
    cfg = InterpretConfig(select="top_n", top_n=10, rank_by="concept", scorer="labels")
    first = interpret(copy, truth.encoder, truth.run, cfg, force=True)
    chosen = pd.read_parquet(first.path / FEATURES)["latent"].tolist()
    assert len(seen) == 1 and len(chosen) == 10
    assert sorted(seen[0].tolist()) == np.flatnonzero(is_train).tolist()

    real_load = inputs_module.load_codes
    held = np.flatnonzero(~is_train)

    def scrambled(path):  # type: ignore[no-untyped-def]
        order = np.arange(len(is_train))
        order[held] = np.random.default_rng(0).permutation(held)
        return real_load(path)[order]

    monkeypatch.setattr(inputs_module, "load_codes", scrambled)
    again = interpret(copy, truth.encoder, truth.run, cfg, force=True)
    assert pd.read_parquet(again.path / FEATURES)["latent"].tolist() == chosen
    scores = json.loads((again.path / SCORES).read_text())
    assert scores["splits"]["selection"] == "train"


def test_selection_split_must_not_be_scored() -> None:
    with pytest.raises(ValueError, match="selection_split 'val' is one of score_splits"):
        InterpretConfig(select="top_n", selection_split="val")
    cfg = InterpretConfig(select="top_n", selection_split="val", score_splits=["test"])
    assert cfg.selection_split == "val"
    assert InterpretConfig(selection_split="val").select == "all"  # nothing chosen: allowed


def test_registries_name_the_known_components() -> None:
    from typing import cast

    from medsae.interpret.registry import (
        DESCRIBERS,
        SCORERS,
        Components,
        build_describer,
        build_scorer,
    )

    assert set(DESCRIBERS) == {"offline", "llm"} and set(SCORERS) == {"embedding", "labels", "llm"}
    parts = cast(Components, None)
    with pytest.raises(ValueError, match=r"unknown describer 'magic'; known: \['llm', 'offline'\]"):
        build_describer("magic", parts)
    with pytest.raises(
        ValueError, match=r"unknown scorer 'x'; known: \['embedding', 'labels', 'llm'\]"
    ):
        build_scorer("x", parts)
