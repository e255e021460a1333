import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from medsae.errors import ArtifactError
from medsae.evaluate import evaluate
from medsae.sae.codes_io import load_codes, save_codes
from tests.support.synthetic import make_synthetic_workspace

from .conftest import small_config

FILES = (
    "reconstruction.json",
    "probes.parquet",
    "recovery.parquet",
    "monosemanticity.parquet",
    "concepts.parquet",
    "skipped_tasks.json",
    "summary.json",
    "manifest.json",
)


def test_outputs_and_summary(evaluated) -> None:  # type: ignore[no-untyped-def]
    ws, truth, out = evaluated
    for name in FILES:
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    for key in ("r2", "l0", "alive_fraction", "recovery_at_10", "monosemanticity", "dense_auroc"):
        assert key in summary
    assert summary["r2"] is None  # no checkpoint in the synthetic workspace: never invented
    recon = json.loads((out / "reconstruction.json").read_text())
    assert recon["source"] == "codes"
    codes = load_codes(ws.codes(truth.encoder, truth.run))
    assert summary["l0"] == pytest.approx(recon["splits"]["test"][str(truth.n_latents)]["l0"])
    assert 0 < summary["alive_fraction"] <= 1
    assert summary["l0"] < codes.shape[1]
    skipped = json.loads((out / "skipped_tasks.json").read_text())
    assert any(p["part"] == "reconstruction" for p in skipped["parts"])


def test_skipped_tasks_are_recorded_never_averaged(evaluated) -> None:  # type: ignore[no-untyped-def]
    _, _, out = evaluated
    skipped = json.loads((out / "skipped_tasks.json").read_text())["tasks"]
    probes = pd.read_parquet(out / "probes.parquet")
    names = {s["task"] for s in skipped if "class" not in s}  # whole tasks dropped
    assert names and all(s["reason"] for s in skipped)
    assert not names & set(probes["task"])
    assert probes.loc[probes["split"] == "val", "roc_auc"].notna().all()
    # the synthetic test split holds institutes A, D, E only, which never appear in training:
    # train and val decide, so the task keeps B, C, F, G, H (the paper's validation targets)
    # and drops A, D, E; its test figure is NaN (no test slice of a kept class), never averaged
    assert "institute" not in names
    dropped = {s["class"] for s in skipped if s["task"] == "institute" and "class" in s}
    assert dropped >= {"A", "D", "E"} and len(dropped) <= 6  # 8 institutes, two or more kept
    assert all("(< 5)" in s["reason"] for s in skipped if s["task"] == "institute")
    inst = probes[probes["task"] == "institute"].set_index(["features", "split"])["roc_auc"]
    assert np.isfinite(inst[("dense", "val")]) and np.isnan(inst[("dense", "test")])
    summary = json.loads((out / "summary.json").read_text())
    test = probes[(probes["split"] == "test") & (probes["features"] == "dense")]
    assert summary["dense_auroc"] == pytest.approx(test["roc_auc"].dropna().mean())
    assert summary["task_filter_splits"] == ["train", "val"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["extra"]["task_filter_splits"] == ["train", "val"]
    targets = {(t["task"], t["class"]): t for t in manifest["extra"]["paper_targets"]}
    assert len(targets) == 40
    assert sum(targets[("institute", c)]["kept"] for c in "ABCDEFGH") == 8 - len(dropped)
    assert (
        not targets[("institute", "A")]["kept"] and "train" in targets[("institute", "A")]["reason"]
    )
    assert {"modality", "plane", "sex", "structure:liver", "group:abdomen"} <= set(probes["task"])
    assert set(probes["split"]) == {"val", "test"} and set(probes["features"]) == {
        "dense",
        "sparse",
    }


def test_probes_and_recovery_on_planted_tasks(evaluated) -> None:  # type: ignore[no-untyped-def]
    _, _, out = evaluated
    probes = pd.read_parquet(out / "probes.parquet")
    test = probes[(probes["split"] == "test") & (probes["task"].isin(["modality", "plane", "sex"]))]
    assert (test["roc_auc"] > 0.97).all()
    rec = pd.read_parquet(out / "recovery.parquet")
    rec = rec[(rec["split"] == "test") & rec["above_floor"]]
    planted = rec[rec["task"].isin(["modality", "plane", "sex"]) & (rec["n_features"] == 1)]
    assert len(planted) == 6  # 3 tasks x (per-class l1, shared coef)
    # per class, one planted latent per class recovers the task
    assert (planted.loc[planted["mode"] == "per_class", "recovery"] > 0.95).all()
    # shared, one latent serves the binary tasks but not every class of the 3-class plane
    shared = planted[planted["mode"] == "shared"].set_index("task")["recovery"]
    assert shared["modality"] > 0.95 and shared["sex"] > 0.95
    curve = rec[rec["method"] == "l1"].groupby("n_features")["recovery"].mean()
    assert curve.loc[10] >= curve.loc[1] - 0.02
    summary = json.loads((out / "summary.json").read_text())
    per_class = rec[(rec["method"] == "l1") & (rec["n_features"] == 10)]["recovery"].mean()
    assert summary["recovery_at_10_per_class"] == pytest.approx(per_class)
    assert summary["recovery_curve"]["l1"]["10"] == pytest.approx(per_class)
    assert set(summary["recovery_curve"]) == {"l1", "shared"}
    # the headline is the shared figure: every class of a task (the 3-class plane too) reads
    # the same 10 latents, at most 10 per task
    shared10 = rec[(rec["mode"] == "shared") & (rec["n_features"] == 10)]["recovery"].mean()
    assert summary["recovery_at_10"] == pytest.approx(shared10)
    assert summary["mean_n_features"] is not None and summary["mean_n_features"] >= 1
    # the figures rank chooses by are validation figures, not the test ones
    sel = summary["selection"]
    val = pd.read_parquet(out / "recovery.parquet")
    val = val[(val["split"] == "val") & val["above_floor"] & (val["method"] == "l1")]
    assert sel["split"] == "val"
    assert sel["recovery_at_10_per_class"] == pytest.approx(
        val[val["n_features"] == 10]["recovery"].mean()
    )


def test_rerun_is_skipped_and_config_change_rebuilds(evaluated) -> None:  # type: ignore[no-untyped-def]
    ws, truth, _ = evaluated
    again = evaluate(ws, truth.encoder, truth.run, small_config())
    assert again.skipped


def _fresh(tmp_path: Path):  # type: ignore[no-untyped-def]
    return make_synthetic_workspace(tmp_path / "ws", n_subjects=12, slices_per_plane=4)


def test_codes_table_mismatch_names_both(tmp_path: Path) -> None:
    ws, truth = _fresh(tmp_path)
    folder = ws.codes(truth.encoder, truth.run)
    codes = load_codes(folder)
    save_codes(
        folder,
        sp.csr_matrix(codes[:-3]),
        {"encoder": truth.encoder, "run": truth.run, "levels": [truth.n_latents]},
    )
    with pytest.raises(ArtifactError, match=r"codes\.npz.*slices\.parquet"):
        evaluate(ws, truth.encoder, truth.run, small_config(parts=["monosemanticity"]))


def test_codes_of_another_encoder_are_refused(tmp_path: Path) -> None:
    ws, truth = _fresh(tmp_path)
    folder = ws.codes(truth.encoder, truth.run)
    save_codes(
        folder,
        load_codes(folder),
        {"encoder": "other-encoder", "run": truth.run, "levels": [truth.n_latents]},
    )
    with pytest.raises(ArtifactError, match=r"other-encoder.*synthetic"):
        evaluate(ws, truth.encoder, truth.run, small_config(parts=["monosemanticity"]))


def test_missing_codes_artifact(tmp_path: Path) -> None:
    ws, truth = _fresh(tmp_path)
    shutil.rmtree(ws.codes(truth.encoder, truth.run))
    with pytest.raises(ArtifactError, match="medsae codes"):
        evaluate(ws, truth.encoder, truth.run)


def test_too_few_subjects_for_monosemanticity_is_recorded(tmp_path: Path) -> None:
    ws, truth = _fresh(tmp_path)
    out = evaluate(
        ws, truth.encoder, truth.run, small_config(parts=["monosemanticity"], mono_splits=["val"])
    ).path
    summary = json.loads((out / "summary.json").read_text())
    assert summary["monosemanticity"] is None
    parts = json.loads((out / "skipped_tasks.json").read_text())["parts"]
    assert any(p["part"] == "monosemanticity" and "distinct subjects" in p["reason"] for p in parts)


def test_no_task_with_enough_examples_gives_nulls_not_numbers(tmp_path: Path) -> None:
    ws, truth = _fresh(tmp_path)
    cfg = small_config(parts=["probes", "recovery"], min_examples=10_000)
    out = evaluate(ws, truth.encoder, truth.run, cfg).path
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recovery_at_10"] is None and summary["dense_auroc"] is None
    assert summary["n_tasks"] == 0
    assert pd.read_parquet(out / "probes.parquet").empty
    assert pd.read_parquet(out / "recovery.parquet").empty
    skipped = json.loads((out / "skipped_tasks.json").read_text())
    assert any(p["part"] == "probes" for p in skipped["parts"])
    assert all(
        "fewer than two classes" in t["reason"]
        or "one class" in t["reason"]
        or "no labelled" in t["reason"]
        or "column" in t["reason"]
        for t in skipped["tasks"]
    )


def test_paper_target_figures(evaluated) -> None:  # type: ignore[no-untyped-def]
    _, _, out = evaluated
    targets = pd.read_parquet(out / "recovery_targets.parquet")
    sel = json.loads((out / "summary.json").read_text())["selection"]
    val = targets[
        (targets["split"] == "val")
        & targets["paper"]
        & targets["above_floor"]
        & (targets["mode"] == "shared")
        & (targets["n_features"] == 10)
    ]
    # the paper's targets: each class against the rest of its task; a binary task's two
    # classes are two targets with the same ROC-AUC (the paper counts both)
    modality = val[val["task"] == "modality"].set_index("target")["roc_auc"]
    assert set(modality.index) == {"CT", "MR"}
    assert modality["CT"] == pytest.approx(modality["MR"])
    assert set(val["task"]) <= {
        "modality",
        "sex",
        "plane",
        "age_group_extremes",
        "kvp_80_vs_120",
        "institute",
        "manufacturer",
        "scanner_model",
        "pathology",
    } | {t for t in val["task"] if t.startswith("structure:")}
    assert sel["recovery_at_10_paper_tasks"] == pytest.approx(val["recovery"].mean())
    strong = val[val["dense_val_roc_auc"] > 0.6]
    assert sel["auc_at_10_mean"] == pytest.approx(strong["roc_auc"].mean())
    assert sel["n_paper_targets"] == val.groupby(["task", "target"]).ngroups
