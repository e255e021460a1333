"""Seeds: the grid's runs per seed, the mean and standard deviation over seeds (hand
computed), Table 1 ranking on the means, and baselines listed beside, never chosen."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from medsae.evaluate.ranking import _best, build_table
from medsae.evaluate.seeds import config_of, is_baseline, mean_sd, seed_group
from medsae.sae.config import TrainConfig
from medsae.sae.grid import expand_grid, seed_of


def test_mean_and_sd_over_seeds_are_the_hand_computed_ones() -> None:
    mean, sd, n = mean_sd([0.80, 0.84, 0.86])
    assert n == 3 and mean == pytest.approx(0.8333333333)
    # sum of squared deviations 0.0011333... + 0.0000444... + 0.0007111... = 0.0018667; / 2
    assert sd == pytest.approx(math.sqrt(0.00186666667 / 2))
    assert mean_sd([0.5, None, float("nan")]) == (0.5, None, 1)  # one value: no spread
    assert mean_sd([]) == (None, None, 0)


def test_seed_runs_are_named_and_grouped() -> None:
    cfg = TrainConfig(
        arch=["matryoshka", "topk", "pca"],
        levels=[[16, 64]],
        k=[[4]],
        seeds=[0, 1, 2],
        seeds_for=["matryoshka"],
    )
    runs, _ = expand_grid(cfg, d_in=32)
    names = [r.run for r in runs]
    assert names == [
        "matryoshka_D16-64_K4",
        "matryoshka_D16-64_K4_s1",
        "matryoshka_D16-64_K4_s2",
        "topk_D64_K4",
        "pca_D64_K4",
    ]
    assert seed_of("matryoshka_D16-64_K4_s2") == ("matryoshka_D16-64_K4", 2)
    assert seed_of("topk_D64_K4") == ("topk_D64_K4", None)
    assert config_of("topk_D64_K4_s7") == "topk_D64_K4"
    assert seed_group("matryoshka_D16-64_K4_s2", names) == names[:3]
    assert is_baseline("pca_D64_K4") and not is_baseline("topk_D64_K4")
    every = expand_grid(cfg.model_copy(update={"seeds_for": None}), d_in=32)[0]
    assert len(every) == 9
    with pytest.raises(ValidationError, match="distinct"):
        TrainConfig(seeds=[1, 1])


def _row(run: str, r2: float, rec: float, mono: float) -> dict[str, object]:
    return {
        "encoder": "e",
        "run": run,
        "r2": r2,
        "l0": 16.0,
        "selection": {"split": "val", "recovery_at_10": rec, "monosemanticity": mono},
    }


def test_table1_ranks_on_the_mean_over_seeds_and_lists_baselines_unranked() -> None:
    summaries = [
        _row("a_D8_K2", 0.80, 0.90, 0.10),
        _row("a_D8_K2_s1", 0.84, 0.50, 0.10),
        _row("a_D8_K2_s2", 0.86, 0.40, 0.10),  # mean recovery 0.6: below b's
        _row("b_D8_K2", 0.70, 0.70, 0.10),
        _row("pca_D8_K2", 0.95, 0.99, 0.90),  # better on everything: still not chosen
    ]
    table = build_table(summaries, performance_term="recovery_at_10")
    assert list(table["run"]) == ["b_D8_K2", "a_D8_K2", "pca_D8_K2"]
    assert list(table["kind"]) == ["sae", "sae", "baseline"]
    a = table.set_index("run").loc["a_D8_K2"]
    assert a["n_seeds"] == 3 and a["seed_runs"] == "a_D8_K2 a_D8_K2_s1 a_D8_K2_s2"
    assert a["r2"] == pytest.approx(0.8333333333)
    assert a["r2_sd"] == pytest.approx(math.sqrt(0.00186666667 / 2))
    assert a["selection_recovery_at_10"] == pytest.approx(0.6)
    base = table.set_index("run").loc["pca_D8_K2"]
    assert math.isnan(base["overall_rank"]) and base["n_seeds"] == 1
    assert _best(table, "recovery_at_10")["best"] == {"encoder": "e", "run": "b_D8_K2"}


def test_summary_holds_the_seed_spread_and_the_baselines(tmp_path: Path) -> None:
    from medsae.pipeline import collect_summary
    from medsae.workspace import Workspace

    ws = Workspace(tmp_path / "ws").ensure()
    r2 = {"m_D8_K2": 0.80, "m_D8_K2_s1": 0.84, "m_D8_K2_s2": 0.86, "pca_D8_K2": 0.9}
    for run, value in r2.items():
        (ws.sae("e", run)).mkdir(parents=True)
        (ws.sae("e", run) / "cfg.json").write_text("{}")
        ws.eval("e", run).mkdir(parents=True)
        summary = {"r2": value, "l0": 2.0, "recovery_at_10": 0.5}
        (ws.eval("e", run) / "summary.json").write_text(json.dumps(summary))
    s = collect_summary(ws, "e", "m_D8_K2")
    assert s["n_seeds"] == 3 and s["seed_runs"] == ["m_D8_K2", "m_D8_K2_s1", "m_D8_K2_s2"]
    assert s["r2"] == pytest.approx(0.8333333333)
    assert s["r2_sd"] == pytest.approx(math.sqrt(0.00186666667 / 2))
    assert s["l0_sd"] == 0.0 and s["detection_balanced_accuracy"] is None
    assert list(s["baselines"]) == ["pca_D8_K2"] and s["baselines"]["pca_D8_K2"]["r2"] == 0.9


def test_an_architecture_may_take_its_own_ladders() -> None:
    cfg = TrainConfig(
        arch=["matryoshka", "pca"],
        levels=[[16, 64], [32, 128]],
        k=[[4]],
        arch_options={"pca": {"levels": [[64]], "k": [[2]], "fit_samples": 100}},
    )
    runs, _ = expand_grid(cfg, d_in=256)
    assert [r.run for r in runs] == ["matryoshka_D16-64_K4", "matryoshka_D32-128_K4", "pca_D64_K2"]
    assert getattr(runs[-1], "fit_samples", None) == 100
