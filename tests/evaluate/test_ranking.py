import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medsae.errors import ArtifactError
from medsae.evaluate.figures import pareto_front
from medsae.evaluate.ranking import build_table, rank, to_markdown


def _summaries() -> list[dict[str, object]]:
    def row(
        enc: str,
        run: str,
        r2: float | None,
        l0: float,
        alive: float,
        rec: float,
        mono: float | None,
    ) -> dict[str, object]:
        return {
            "encoder": enc,
            "run": run,
            "r2": r2,
            "l0": l0,
            "alive_fraction": alive,
            "selection": {"split": "val", "recovery_at_10": rec, "monosemanticity": mono},
        }

    return [
        row("a", "r1", 0.9, 40, 0.5, 0.80, 0.10),
        row("a", "r2", 0.8, 20, 0.7, 0.90, 0.05),
        row("a", "r3", 0.7, 10, 0.9, 0.85, 0.20),
        row("b", "r1", None, 30, 0.4, 0.70, None),
    ]


def test_combined_rank_is_mean_of_monosemanticity_and_recovery_ranks() -> None:
    table = build_table(_summaries(), performance_term="recovery_at_10").set_index(
        ["encoder", "run"]
    )
    a = table.loc["a"]
    assert a["rank_recovery"].to_dict() == {"r1": 3, "r2": 1, "r3": 2}
    assert a["rank_monosemanticity"].to_dict() == {"r1": 2, "r2": 3, "r3": 1}
    assert a["rank_l0"].to_dict() == {"r1": 3, "r2": 2, "r3": 1}  # lower L0 is better
    assert a["rank_r2"].to_dict() == {"r1": 1, "r2": 2, "r3": 3}
    np.testing.assert_allclose(
        a["combined_rank"], (a["rank_monosemanticity"] + a["rank_recovery"]) / 2
    )
    # overall: the missing monosemanticity of b/r1 ranks last
    assert table.loc[("b", "r1"), "overall_rank"] == 4.0
    assert table.loc[("a", "r3"), "overall_rank"] == 1.5
    ordered = build_table(_summaries(), performance_term="recovery_at_10")
    assert tuple(ordered.iloc[0][["encoder", "run"]]) == ("a", "r3")
    md = to_markdown(ordered)
    assert md.count("\n") == len(ordered) + 2 and "| - |" in md


def test_pareto_front() -> None:
    l0 = np.array([10.0, 20.0, 30.0, 15.0])
    r2 = np.array([0.5, 0.7, 0.6, 0.4])
    assert pareto_front(l0, r2).tolist() == [0, 1]


def test_rank_stage_and_cli(evaluated, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from medsae.cli import app

    ws, truth, _ = evaluated
    runner = CliRunner()
    res = runner.invoke(app, ["rank", "--workspace", str(ws.root)])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(ws.ranking / "table1.csv")
    assert len(table) == 1 and table.loc[0, "run"] == truth.run
    info = json.loads((ws.ranking / "ranking.json").read_text())
    assert info["best"] == {"encoder": truth.encoder, "run": truth.run}
    assert (ws.ranking / "table1.md").is_file()
    assert (ws.ranking / "figures" / "recovery_curves.png").is_file()
    assert (ws.ranking / "figures" / "monosemanticity.png").is_file()
    assert rank(ws).skipped
    with pytest.raises(ArtifactError, match="medsae evaluate"):
        rank(tmp_path / "empty")


def test_evaluate_cli_parts(evaluated) -> None:  # type: ignore[no-untyped-def]
    from medsae.cli import app

    ws, _truth, _ = evaluated
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["evaluate", "--workspace", str(ws.root), "--run", "nope"],
    )
    assert res.exit_code != 0
    res = runner.invoke(app, ["evaluate", "--workspace", str(ws.root), "--parts", "bogus"])
    assert res.exit_code != 0


def test_public_api_names_are_callables() -> None:
    import medsae.evaluate as ev

    for name in (
        "evaluate",
        "rank",
        "monosemanticity",
        "concept_map",
        "run_probes",
        "performance_recovery",
        "reconstruction_report",
    ):
        assert callable(getattr(ev, name)), name


def test_evaluate_cli_runs_every_run_with_codes(tmp_path: Path) -> None:
    from medsae.cli import app
    from tests.support.synthetic import make_synthetic_workspace

    ws, truth = make_synthetic_workspace(tmp_path / "ws", n_subjects=12, slices_per_plane=4)
    res = CliRunner().invoke(
        app, ["evaluate", "--workspace", str(ws.root), "--parts", "monosemanticity,concepts"]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((ws.eval(truth.encoder, truth.run) / "summary.json").read_text())
    assert summary["recovery_at_10"] is None  # not requested, so not invented
    parts = json.loads((ws.eval(truth.encoder, truth.run) / "skipped_tasks.json").read_text())[
        "parts"
    ]
    assert {"reconstruction", "probes", "recovery"} <= {p["part"] for p in parts}


def test_saturated_top10_monosemanticity_is_tie_broken_by_the_top100_score() -> None:
    def row(run: str, rec: float, top100: float) -> dict[str, object]:
        # every configuration's best 10 features at the same ceiling, as on simple anatomy
        sel = {"recovery_at_10": rec, "monosemanticity": 0.9124, "monosemanticity_top100": top100}
        return {"encoder": "e", "run": run, "selection": {"split": "val", **sel}}

    table = build_table(
        [row("r1", 0.92, 0.69), row("r2", 0.93, 0.78), row("r3", 0.88, 0.85)],
        performance_term="recovery_at_10",
    )
    ranks = table.set_index("run")["rank_monosemanticity"].to_dict()
    assert ranks == {"r3": 1, "r2": 2, "r1": 3}  # without the tie-break all would be 1
    assert table.set_index("run")["combined_rank"].to_dict() == {"r1": 2.5, "r2": 1.5, "r3": 2.0}
    assert table.iloc[0]["run"] == "r2"
    assert "monosemanticity_top100" in table.columns
    # a real difference in the top-10 score still decides first
    r2 = row("r2", 0.9, 0.9)
    r2["selection"] = {**r2["selection"], "monosemanticity": 0.5}  # type: ignore[dict-item]
    rows = [row("r1", 0.9, 0.1), r2]
    assert build_table(rows).set_index("run")["rank_monosemanticity"].to_dict() == {
        "r1": 1,
        "r2": 2,
    }


def test_sail_final_ranks_are_shared_and_the_tie_break_is_named() -> None:
    from medsae.evaluate.ranking import tie_break_note

    def row(run: str, n: float, top10: float, top100: float) -> dict[str, object]:
        sel = {"mean_n_features": n, "monosemanticity": top10, "monosemanticity_top100": top100}
        return {"encoder": "e", "run": run, "selection": {"split": "val", **sel}}

    # r1 best on mean N, worst on top-10; r2 the reverse; r3 between on both: sail's mean
    # ranks are 2, 2 and 2, one shared final rank
    rows = [row("r1", 5.0, 0.5, 0.4), row("r2", 9.0, 0.9, 0.3), row("r3", 7.0, 0.7, 0.2)]
    table = build_table(rows)
    assert table.set_index("run")["sail_final_rank"].to_dict() == {"r1": 1, "r2": 1, "r3": 1}
    note = tie_break_note(table)
    assert note["sail_final_rank"] == 1 and len(note["sail_tied"]) == 3
    assert note["decided_by"] == "performance term" and table.iloc[0]["run"] == "r1"
    # equal top-10 scores: the top-100 tie-break of the monosemanticity rank decides
    rows = [row("r1", 5.0, 0.9, 0.4), row("r2", 5.0, 0.9, 0.8)]
    table = build_table(rows)
    assert set(table["sail_final_rank"]) == {1}
    assert tie_break_note(table)["decided_by"] == "monosemanticity top-100 tie-break"
    assert table.iloc[0]["run"] == "r2"
    # no tie: sail's rank alone
    table = build_table([row("r1", 5.0, 0.9, 0.4), row("r2", 9.0, 0.5, 0.8)])
    assert table.set_index("run")["sail_final_rank"].to_dict() == {"r1": 1, "r2": 2}
    assert tie_break_note(table)["decided_by"] == "sail rank"
