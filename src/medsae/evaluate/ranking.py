"""The ``rank`` stage: one row per SAE configuration, the paper's Table 1, and figures.

Rows come from every ``WS/eval/<encoder>/<run>/summary.json``. Ranks (1 = best; ties share
the smallest rank; a missing figure ranks last):

* ``rank_r2`` (higher R² is better), ``rank_l0`` (lower L0 is better), ``rank_alive`` (higher
  alive fraction is better), ``rank_recovery`` (higher recovery at 10 is better),
  ``rank_monosemanticity`` (higher is better; configurations tied on the paper's top-10 score,
  e.g. when the best 10 features of every configuration reach the ceiling ``1 - baseline``
  as on simple anatomy, are ordered by the same score over the top 100 features);
* ``combined_rank`` = mean of ``rank_monosemanticity`` and ``rank_recovery`` (the paper's
  selection rule), within each encoder by default (the paper ranks each model's grid);
* ``overall_rank`` = the same combination with ranks taken over every row.

``ranking.json`` names the ``best`` configuration (lowest ``overall_rank``; ties: higher
recovery, then higher monosemanticity) and the best per encoder (lowest ``combined_rank``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsae.errors import ArtifactError
from medsae.evaluate.config import RankConfig
from medsae.workspace import (
    MANIFEST,
    StageOutcome,
    StageResult,
    Workspace,
    artifact_key,
    run_stage,
    write_json_atomic,
)

TABLE_COLUMNS = (
    "encoder",
    "run",
    "r2",
    "r2_grand_mean",
    "l0",
    "alive_fraction",
    "recovery_at_10",
    "monosemanticity",
    "monosemanticity_top100",
    "dense_auroc",
)
RANKED = {
    "r2": ("rank_r2", False),
    "l0": ("rank_l0", True),
    "alive_fraction": ("rank_alive", False),
    "recovery_at_10": ("rank_recovery", False),
    "monosemanticity": ("rank_monosemanticity", False),
}


def eval_folders(ws: Workspace) -> list[Path]:
    """Finished evaluation folders (``WS/eval/<encoder>/<run>/`` with a manifest)."""
    base = ws.root / "eval"
    if not base.is_dir():
        return []
    return sorted(
        p for p in base.glob("*/*") if (p / MANIFEST).is_file() and (p / "summary.json").is_file()
    )


def rank_values(values: pd.Series, ascending: bool) -> pd.Series:
    """Competition ranks (1 = best, ties share the smallest rank, missing values last)."""
    return (
        values.astype(float).rank(method="min", ascending=ascending, na_option="bottom").astype(int)
    )


def rank_tiebroken(primary: pd.Series, secondary: pd.Series, ascending: bool) -> pd.Series:
    """Competition ranks of ``primary`` with its ties ordered by ``secondary`` (same direction)."""
    first = rank_values(primary, ascending)
    second = rank_values(secondary, ascending)
    return rank_values(first * (len(primary) + 1) + second, True)


def _mono_rank(frame: pd.DataFrame) -> pd.Series:
    return rank_tiebroken(frame["monosemanticity"], frame["monosemanticity_top100"], False)


def build_table(summaries: list[dict[str, Any]], within_encoder: bool = True) -> pd.DataFrame:
    """Table 1 from evaluation summaries (see module docstring for the ranks)."""
    frame = pd.DataFrame(
        [{c: s.get(c) for c in TABLE_COLUMNS} for s in summaries], columns=list(TABLE_COLUMNS)
    )
    for col in TABLE_COLUMNS[2:]:
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    if frame.empty:
        return frame
    groups = frame.groupby("encoder", sort=False) if within_encoder else None
    for col, (name, ascending) in RANKED.items():
        if col == "monosemanticity":
            frame[name] = (
                pd.concat([_mono_rank(sub) for _, sub in groups])
                if groups is not None
                else _mono_rank(frame)
            )
        elif groups is not None:
            frame[name] = groups[col].transform(lambda v, a=ascending: rank_values(v, a))
        else:
            frame[name] = rank_values(frame[col], ascending)
    frame["combined_rank"] = (frame["rank_monosemanticity"] + frame["rank_recovery"]) / 2
    overall = (_mono_rank(frame) + rank_values(frame["recovery_at_10"], False)) / 2
    frame["overall_rank"] = overall
    order = frame.sort_values(
        ["overall_rank", "recovery_at_10", "monosemanticity", "monosemanticity_top100"],
        ascending=[True, False, False, False],
        na_position="last",
    )
    return order.reset_index(drop=True)


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table (numbers with 3 decimals, missing as a dash)."""
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        cells = []
        for v in row:
            if v is None or (isinstance(v, float) and not np.isfinite(v)):
                cells.append("-")
            elif isinstance(v, float | np.floating):
                cells.append(f"{float(v):.3f}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _best(frame: pd.DataFrame) -> dict[str, Any]:
    best: dict[str, Any] = {"best": None, "best_per_encoder": {}}
    if frame.empty:
        return best
    top = frame.iloc[0]
    best["best"] = {"encoder": top["encoder"], "run": top["run"]}
    for enc, sub in frame.groupby("encoder"):
        s = sub.sort_values(
            ["combined_rank", "recovery_at_10"], ascending=[True, False], na_position="last"
        )
        best["best_per_encoder"][str(enc)] = str(s.iloc[0]["run"])
    return best


def rank(
    workspace: str | Path | Workspace, config: RankConfig | None = None, force: bool = False
) -> StageOutcome:
    """Rank every evaluated configuration (the ``rank`` stage): ``WS/ranking/``.

    Writes ``table1.csv``, ``table1.md``, ``ranking.json`` (``best``: ``{encoder, run}``) and
    ``figures/*.png`` (R² vs L0 per encoder, recovery curves, monosemanticity distributions).
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    cfg = config or RankConfig()
    folders = eval_folders(ws)
    if not folders:
        raise ArtifactError(
            f"{ws.root / 'eval'}: no finished evaluation found; run `medsae evaluate` first"
        )
    keys = {f"{p.parent.name}/{p.name}": artifact_key(p) for p in folders}

    def build(tmp: Path) -> StageResult:
        from medsae.evaluate.figures import write_figures

        summaries = [json.loads((p / "summary.json").read_text()) for p in folders]
        table = build_table(summaries, cfg.rank_within_encoder)
        table.to_csv(tmp / "table1.csv", index=False)
        (tmp / "table1.md").write_text(to_markdown(table))
        info = _best(table)
        figures = write_figures(folders, table, tmp / "figures", cfg.figure_dpi)
        info.update(
            n_configs=len(table),
            figures=figures,
            rule="combined rank = mean of the monosemanticity rank and the recovery-at-10 rank",
        )
        write_json_atomic(tmp / "ranking.json", info)
        return StageResult(counts={"configs": len(table)}, extra={"best": info["best"]})

    return run_stage(ws.ranking, "rank", cfg, keys, build, force=force)
