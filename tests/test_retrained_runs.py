"""A workspace retrained with another grid never ranks, describes or reports a deleted run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsae.cli import app
from medsae.errors import InputError
from medsae.evaluate.io import best_run, read_ranking, resolve_run
from medsae.runs_cli import run_rows
from medsae.sae.io import trained_runs
from medsae.sae.runs import gone_runs, nearest_slice_ids, runs_with_codes
from tests.support.synthetic import make_synthetic_workspace

OLD = "topk_D32_K2"
NEW = "batchtopk_D32_K2"
GONE = re.compile(r"(?<!batch)topk_D32_K2")  # the old run's name, not inside the new one's


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


def _train(ws_root: str, encoder: str, arch: str) -> None:
    _invoke("train", "-w", ws_root, "-e", encoder, "--arch", arch, "--levels", "32", "--k", "2")
    _invoke("codes", "-w", ws_root, "-e", encoder)
    _invoke("evaluate", "-w", ws_root, "-e", encoder, "--parts", "reconstruction,monosemanticity")


def test_a_deleted_run_is_never_ranked_described_or_reported(tmp_path: Path) -> None:
    ws, truth = make_synthetic_workspace(tmp_path / "ws", dim=16, n_subjects=12, slices_per_plane=4)
    root, enc = str(ws.root), truth.encoder
    common = ["--epochs", "1", "--batch-size", "16"]
    _invoke("train", "-w", root, "-e", enc, "--arch", "topk", "--levels", "32", "--k", "2", *common)
    _invoke("codes", "-w", root, "-e", enc)
    _invoke("evaluate", "-w", root, "--run", OLD, "--parts", "reconstruction,monosemanticity")
    _invoke("rank", "-w", root)
    assert (ws.eval(enc, OLD) / "summary.json").is_file()
    kept = {kind: tmp_path / f"kept-{kind}" for kind in ("codes", "eval")}
    for kind, folder in kept.items():
        shutil.copytree(ws.root / kind / enc / OLD, folder)

    # retraining with another grid removes the old run's downstream artifacts
    out = _invoke(
        "train", "-w", root, "-e", enc, "--arch", "batchtopk", "--levels", "32", "--k", "2", *common
    )
    assert "removed the artifacts" in " ".join(out.split()) and GONE.search(out)
    assert trained_runs(ws, enc) == [NEW]
    assert not ws.codes(enc, OLD).exists() and not ws.eval(enc, OLD).exists()

    # a workspace left from before (the leftovers still there) never uses them either
    for kind, folder in kept.items():
        shutil.copytree(folder, ws.root / kind / enc / OLD)
    assert [(g.encoder, g.run) for g in gone_runs(ws)] == [(enc, OLD)]
    assert best_run(ws) is None  # the old ranking named the deleted run
    _invoke("codes", "-w", root, "-e", enc)
    out = _invoke("evaluate", "-w", root, "--parts", "reconstruction,monosemanticity")
    assert f"{enc}/{NEW}" in out and f"{enc}/{OLD}:" not in out
    out = _invoke("rank", "-w", root)
    assert "left out 1 run" in " ".join(out.split())
    ranking = read_ranking(ws.ranking)
    assert ranking["best"]["run"] != OLD
    assert not GONE.search((ws.ranking / "table1.csv").read_text())
    assert OLD not in [r for _, r in runs_with_codes(ws)]
    with pytest.raises(InputError, match="checkpoint no longer exists"):
        resolve_run(ws, enc, OLD)
    result = CliRunner().invoke(app, ["interpret", "-w", root, "--encoder", enc, "--run", OLD])
    assert result.exit_code != 0 and isinstance(result.exception, InputError)
    assert resolve_run(ws)[1] != OLD
    from medsae.report import ReportConfig, build_report

    build_report(ws, ReportConfig(n_features=2, fingerprint_examples=0, map_slices=0))
    assert not GONE.search((ws.report / "index.html").read_text())
    # `medsae runs` shows it as gone, never as selected
    rows = {r["run"]: r for r in run_rows(ws)}
    assert rows[OLD]["trained"] == "GONE" and rows[OLD]["selected"] == ""
    out = _invoke("runs", "-w", root)
    assert NEW in out and "GONE" in out


def test_slices_command_and_nearest_ids(tmp_path: Path) -> None:
    ws, _ = make_synthetic_workspace(tmp_path / "ws", n_subjects=6, slices_per_plane=4)
    out = _invoke("slices", "-w", str(ws.root), "--filter", "modality=CT", "--ids", "--limit", "3")
    ids = out.split()
    assert len(ids) == 3 and all(i.startswith("CT:") for i in ids)
    table = json.loads(json.dumps(_invoke("slices", "-w", str(ws.root), "--limit", "2")))
    assert "slices (showing 2)" in table
    # a wrong id is answered with the nearest ones and the lookup command
    wanted = ids[0].rsplit(":", 1)[0] + ":9999"
    near = nearest_slice_ids(wanted, ids)
    assert near and near[0].startswith(ids[0].rsplit(":", 1)[0])
    result = CliRunner().invoke(app, ["slices", "-w", str(ws.root), "--filter", "nope=1"])
    assert result.exit_code != 0
