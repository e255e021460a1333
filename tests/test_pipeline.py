"""The pipeline commands: `medsae run CONFIG` and the summary (without the upstream stages)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsae.cli import app
from medsae.config import PipelineConfig
from medsae.errors import InputError
from medsae.pipeline import (
    SUMMARY_KEYS,
    collect_summary,
    demo_config,
    load_pipeline_config,
    run_pipeline,
    write_summary,
)
from tests.support.fixtures import write_fixture_artifacts
from tests.support.synthetic import make_synthetic_workspace


@pytest.fixture(scope="module")
def fixture_ws(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("pipe") / "ws"
    ws, truth = make_synthetic_workspace(root, n_subjects=6, slices_per_plane=4)
    write_fixture_artifacts(ws, truth)
    return ws, truth


def test_summary_reads_the_artifacts(fixture_ws):
    ws, truth = fixture_ws
    s = collect_summary(ws)
    assert set(SUMMARY_KEYS) <= set(s)
    ev = json.loads((ws.eval(truth.encoder, truth.run) / "summary.json").read_text())
    assert s["best_config"] == f"{truth.encoder}/{truth.run}"
    assert (s["r2"], s["l0"], s["alive_fraction"], s["recovery_at_10"]) == (
        ev["r2"],
        ev["l0"],
        ev["alive_fraction"],
        ev["recovery_at_10"],
    )
    scores = json.loads((ws.features(truth.encoder, truth.run) / "scores.json").read_text())
    assert s["detection_balanced_accuracy"] == scores.get("detection_balanced_accuracy")
    tr = json.loads((ws.index(truth.encoder, truth.run) / "text_retrieval.json").read_text())
    assert s["text_precision_at_10"] == tr["text_precision_at_10"]
    fe = json.loads((ws.index(truth.encoder, truth.run) / "fingerprint_eval.json").read_text())
    assert s["fingerprint_agreement"] == fe["fingerprint_agreement"]


def test_summary_of_empty_workspace_is_all_none(tmp_path):
    ws, _ = make_synthetic_workspace(tmp_path / "bare", n_subjects=3, slices_per_plane=2)
    shutil.rmtree(ws.root / "codes")
    s = write_summary(ws)
    assert all(s[k] is None for k in SUMMARY_KEYS)
    assert json.loads((ws.root / "summary.json").read_text())["r2"] is None


def test_run_report_stage_from_config_file(fixture_ws, tmp_path):
    ws, _ = fixture_ws
    root = tmp_path / "copy"
    shutil.copytree(ws.root, root)
    cfg = tmp_path / "pipeline.toml"
    cfg.write_text(f'workspace = "{root}"\n\n[report]\nn_features = 3\ntext_search = "keyword"\n')
    result = CliRunner().invoke(
        app, ["run", str(cfg), "--stage", "report", "--set", "report.top_slices=2"]
    )
    assert result.exit_code == 0, result.output
    html = (root / "report" / "index.html").read_text()
    assert html.count('class="card"') == 3
    manifest = json.loads((root / "report" / "manifest.json").read_text())
    assert manifest["config"]["top_slices"] == 2
    summary = json.loads((root / "summary.json").read_text())
    assert summary["r2"] is not None
    # a rerun skips the finished report; --force rebuilds it
    again = run_pipeline(load_pipeline_config(cfg, ["report.top_slices=2"]), stages=["report"])
    assert again.outcomes["report"][0].status == "skipped"
    forced = run_pipeline(
        load_pipeline_config(cfg, ["report.top_slices=2"]), stages=["report"], force=True
    )
    assert forced.outcomes["report"][0].status == "rebuilt"


def test_config_errors_name_the_field(tmp_path):
    cfg = tmp_path / "p.toml"
    cfg.write_text(f'workspace = "{tmp_path / "ws"}"\n[report]\nn_features = 3\n')
    with pytest.raises(InputError, match="report"):
        run_pipeline(load_pipeline_config(cfg, ["report.nope=1"]), stages=["report"])
    with pytest.raises(InputError, match="unknown stage"):
        run_pipeline(load_pipeline_config(cfg), stages=["fly"])
    with pytest.raises(InputError, match="workspace"):
        run_pipeline(PipelineConfig(), stages=["report"])


def test_example_configs_parse():
    root = Path(__file__).resolve().parents[1] / "examples"
    for name in ("demo.toml", "totalsegmentator.toml"):
        cfg = load_pipeline_config(root / name)
        assert cfg.workspace and cfg.train["arch"]


def test_config_paths_are_relative_to_the_file(tmp_path, monkeypatch):
    """`medsae run examples/demo.toml` means the same from any working directory."""
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)
    cfg = load_pipeline_config(root / "examples" / "demo.toml", ["split.seed=1"])
    assert cfg.workspace == str(root / "demo-workspace")
    assert cfg.prepare["source"] == str(root / "demo-workspace" / "phantom-data")


def test_demo_config_sizes(tmp_path):
    cfg, phantom = demo_config(tmp_path / "demo")
    assert cfg.prepare["source"].endswith("phantom-data")
    assert cfg.encode["encoder"] == "efficientnet-lite0"
    assert "matryoshka" in cfg.train["arch"] and "topk" in cfg.train["arch"]
    assert phantom["ct_subjects"] + phantom["mri_subjects"] > 0


def test_demo_toml_matches_the_demo(tmp_path):
    """examples/demo.toml is what `medsae demo` runs (same settings, stage by stage)."""
    root = Path(__file__).resolve().parents[1] / "examples"
    example = load_pipeline_config(root / "demo.toml")
    demo, phantom = demo_config(tmp_path / "demo")
    for stage in ("prepare", "split", "encode", "train", "evaluate", "interpret", "index"):
        a, b = dict(getattr(example, stage)), dict(getattr(demo, stage))
        a.pop("source", None), b.pop("source", None)
        assert a == b, stage
    text = (root / "demo.toml").read_text()
    assert (
        f"--ct-subjects {phantom['ct_subjects']} --mri-subjects {phantom['mri_subjects']}" in text
    )
