"""The interpret stage end to end on the synthetic workspace: offline and LLM paths."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medsae.interpret import InterpretConfig, interpret
from medsae.interpret.stage import default_runs
from medsae.llm.fake_server import FakeLLMServer, Faults
from medsae.testing import make_synthetic_workspace

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
        pd.read_parquet(outcome.path / "features.parquet"),
        json.loads((outcome.path / "scores.json").read_text()),
    )


def test_offline_outputs(synthetic, offline) -> None:
    ws, truth = synthetic
    outcome, features, scores = offline
    assert outcome.path == ws.features(truth.encoder, truth.run)
    assert list(features.columns) == COLUMNS
    assert len(features) == truth.n_latents  # every latent of the synthetic codes is alive
    assert features["describer"].eq("offline").all()
    assert scores["describer"] == "offline" and scores["scorer"] == "embedding"
    assert scores["splits"] == {"statistics": "train", "scores": ["val", "test"]}
    assert (
        scores["detection_balanced_accuracy"] == scores["detection"]["balanced_accuracy"]["median"]
    )
    assert scores["counts"]["described"] == truth.n_latents and scores["failures"] == []
    kinds = scores["detection"]["by_kind"]
    assert set(kinds) == {"tpr_strong", "tpr_weak", "tnr_hard", "tnr_random"}
    assert all(0.0 <= k["median"] <= 1.0 and k["n"] > 0 for k in kinds.values())
    records = [
        json.loads(x) for x in (outcome.path / "descriptions.jsonl").read_text().splitlines()
    ]
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
    features = pd.read_parquet(outcome.path / "features.parquet")
    freq = offline[1].set_index("latent")["frequency"]
    expected = sorted(freq.sort_values(ascending=False, kind="stable").index[:10])
    assert len(features) == 10 and np.isclose(features["frequency"].min(), freq.loc[expected].min())
    assert json.loads((outcome.path / "scores.json").read_text())["scorer"] == "labels"
    assert default_runs(ws) == [(truth.encoder, truth.run)]


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
        features = pd.read_parquet(outcome.path / "features.parquet")
        scores = json.loads((outcome.path / "scores.json").read_text())
        # a rerun answers every request from the workspace cache; only the failure is retried
        again = interpret(ws, truth.encoder, truth.run, cfg, force=True)
        assert srv.stats.requests == sent + 2
        again_scores = json.loads((again.path / "scores.json").read_text())
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


def test_default_runs_prefer_the_ranking(tmp_path) -> None:
    from medsae.workspace import Workspace

    ws = Workspace(tmp_path)
    assert default_runs(ws) == []
    (tmp_path / "ranking").mkdir()
    (tmp_path / "ranking" / "ranking.json").write_text(
        json.dumps({"best": {"encoder": "e", "run": "r"}})
    )
    assert default_runs(ws) == [("e", "r")]


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
    n = len(pd.read_parquet(outcome.path / "features.parquet").dropna(subset=["description"]))
    # per described feature: 2 near-miss draws for the describer, 3 pooled calibration draws
    assert sorted(set(seeds)) == [8, 9, 10, 107, 108]
    assert seeds.count(107) == seeds.count(108) == seeds.count(8) == n
