from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from medsae.report import ReportConfig, WorkspaceView, build_report
from medsae.workspace import read_manifest

SECTIONS = (
    "summary",
    "dataset",
    "table1",
    "frontier",
    "recovery",
    "features",
    "fingerprints",
    "text",
    "config",
)


def _copy(ws_root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ws"
    shutil.copytree(ws_root, dst)
    return dst


def test_report_sections_and_self_contained(full_workspace, tmp_path):
    ws, _ = full_workspace
    root = _copy(ws.root, tmp_path)
    outcome = build_report(root, ReportConfig(n_features=6, top_slices=4, text_search="keyword"))
    html = (outcome.path / "index.html").read_text()
    for anchor in SECTIONS:
        assert f'<section id="{anchor}">' in html
    # nothing is loaded from another host: no http(s) src/href, no external scripts
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', html)
    assert "<script" not in html
    # every referenced file exists inside the report folder
    refs = set(re.findall(r'src="([^"]+)"', html))
    assert refs, "the report shows images"
    for ref in refs:
        assert not ref.startswith("/") and ".." not in ref
        assert (outcome.path / ref).is_file(), ref
    assert (outcome.path / "fig" / "frontier.png").is_file()
    assert "Not computed" not in html  # every artifact of the fixture workspace is present
    # figures come from the artifacts: Table 1 lists both runs, the feature cards the descriptions
    assert "synthetic-run-alt1" in html
    assert "slices showing modality CT" in html
    assert "Where the detection scorer is right" in html  # scores.json detection.by_kind
    assert "no relevant slice in the gallery (not scored)" in html  # an unanswerable query
    assert "similar non-activating slices judged not to match" in html
    # features whose rule names an acquisition label are listed (the fixture has one)
    assert "Features that follow the scanner, the study or a recorded finding" in html
    assert "plane=axial, field_strength=3" in html
    assert "field strength): 1, what a model can learn as a shortcut" in html
    assert read_manifest(outcome.path)["stage"] == "report"


def test_report_skips_when_unchanged_and_rebuilds_when_stale(full_workspace, tmp_path):
    ws, _ = full_workspace
    root = _copy(ws.root, tmp_path)
    cfg = ReportConfig(n_features=2, top_slices=2, fingerprint_examples=1, text_search="keyword")
    assert build_report(root, cfg).status == "built"
    assert build_report(root, cfg).status == "skipped"
    assert build_report(root, cfg, force=True).status == "rebuilt"
    (root / "summary.json").write_text('{"r2": 0.5, "best_config": "x"}')
    assert build_report(root, cfg).status == "rebuilt"
    assert "best SAE" in (root / "report" / "index.html").read_text()


def test_report_on_bare_workspace_says_not_computed(bare_workspace):
    ws, _ = bare_workspace
    outcome = build_report(ws.root, ReportConfig(n_features=3, top_slices=2, text_search="keyword"))
    html = (outcome.path / "index.html").read_text()
    for anchor in SECTIONS:
        assert f'<section id="{anchor}">' in html
    for what in (
        "Table 1",
        "R²-vs-L0 frontier",
        "recovery",
        "descriptions and scores",
        "text retrieval evaluation",
    ):
        assert f"Not computed: {what}" in html
    assert "Feature #" in html  # cards still shown from the codes


def test_view_statistics_match_codes(full_workspace):
    ws, truth = full_workspace
    view = WorkspaceView(ws.root)
    assert (view.encoder, view.run) == (truth.encoder, truth.run)
    codes = view.codes.toarray()
    latent = truth.concepts.index("modality=MR")
    row = view.feature_row(latent)
    assert row["frequency"] == pytest.approx((codes[:, latent] > 0).mean())
    # the planted MR feature is enriched for modality=MR and its top slices are MR slices
    labels = [e["label"] for e in view.enrichment(latent)]
    assert "modality=MR" in labels
    top = view.top_rows(latent, 5)
    assert all(view.table.at[r, "modality"] == "MR" for r in top)
    hist = view.histogram(latent, bins=5)
    assert sum(hist["counts"]) + hist["zeros"] == len(view.table)
    qs = view.quantile_rows(latent)
    acts = [q["activation"] for q in qs]
    assert acts == sorted(acts)


def test_view_picks_requested_run_and_rejects_unknown(full_workspace):
    ws, truth = full_workspace
    from medsae.errors import ArtifactError

    with pytest.raises(ArtifactError, match="no codes"):
        WorkspaceView(ws.root, encoder=truth.encoder, run="nope")
