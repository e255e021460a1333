"""The ``rank`` stage: one row per SAE configuration, the paper's Table 1, and figures.

Rows come from every ``WS/eval/<encoder>/<run>/summary.json``, one per configuration: the
runs of its seeds are averaged (:mod:`medsae.evaluate.seeds`; ``<figure>_sd`` and
``n_seeds`` beside), and ranks are taken on the means. Baseline dictionaries (``kind =
"baseline"``) are listed after the SAEs, never ranked nor chosen. Configurations are *chosen* by
figures of the selection split only (``summary.json`` ``selection``, validation by default);
test figures are reported beside them, never used to choose. Ranks (1 = best; ties share the
smallest rank; a missing figure ranks last):

* ``rank_mean_n_features``: the paper's Table 1 performance term on the selection split (mean
  number of features needed to reach 50..100% of the dense ROC-AUC; lower is better);
* ``rank_recovery``: recovery at 10 on the selection split (higher is better), the
  alternative term;
* ``rank_performance``: the one of the two named by ``RankConfig.performance_term``;
* ``rank_monosemanticity``: the paper's top-10 monosemanticity on the selection split (higher
  is better; ties, e.g. when the best 10 features of every configuration reach the ceiling
  ``1 - baseline`` as on simple anatomy, are ordered by the same score over the top 100);
* ``combined_rank`` = mean of ``rank_monosemanticity`` and ``rank_performance`` (the paper's
  selection rule), within each encoder by default (the paper ranks each model's grid);
  ``combined_rank_recovery_at_10`` = the same with ``rank_recovery``;
* ``overall_rank`` = ``combined_rank`` with ranks taken over every row;
* ``rank_r2``, ``rank_l0``, ``rank_alive``: reported figures, not part of the choice.

* ``sail_final_rank``: the paper's own final rank (``evaluate_sae_configs.py``): the same two
  ranks with method "min" and no tie-break (top-10 monosemanticity only), their mean ranked
  again with method "min", so tied configurations share a final rank.

``ranking.json`` names the ``best`` configuration (lowest ``overall_rank``; ties: the better
performance term, then higher monosemanticity), the best per encoder (lowest
``combined_rank``), the selection split, the rule used and ``tie_break``: the runs sharing
the best one's sail final rank and which tie-break of this package chose among them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsae.errors import ArtifactError
from medsae.evaluate.config import RankConfig
from medsae.evaluate.io import FIGURES, RANKING, SUMMARY, TABLE1_CSV, TABLE1_MD
from medsae.evaluate.seeds import aggregate_seeds, is_baseline
from medsae.workspace import (
    MANIFEST,
    StageOutcome,
    StageResult,
    Workspace,
    artifact_key,
    run_stage,
    write_json_atomic,
)

REPORTED_COLUMNS = (
    "r2",
    "r2_uniform",
    "r2_grand_mean",
    "l0",
    "alive_fraction",
    "mean_n_features",
    "recovery_at_10",
    "recovery_at_10_per_class",
    "recovery_at_10_paper_tasks",
    "auc_at_10_mean",
    "r2_grand_mean_val_paper",
    "monosemanticity",
    "monosemanticity_top100",
    "dense_auroc",
)
"""Figures of the headline split (test) and reporting splits: shown, never used to choose."""
SELECTION_FIGURES = (
    "mean_n_features",
    "recovery_at_10",
    "monosemanticity",
    "monosemanticity_top100",
)
"""Figures of ``summary.json``'s ``selection`` that the ranks are taken from."""
SELECTION_PREFIX = "selection_"
SEED_FIGURES = (
    "selection_mean_n_features",
    "selection_recovery_at_10",
    "selection_monosemanticity",
    "r2",
    "l0",
    "alive_fraction",
    "mean_n_features",
    "recovery_at_10",
    "monosemanticity",
)
"""Figures of Table 1 shown with their standard deviation over seeds (``<figure>_sd``)."""
TABLE_COLUMNS = (
    "encoder",
    "run",
    "selection_split",
    *(SELECTION_PREFIX + c for c in SELECTION_FIGURES),
    *REPORTED_COLUMNS,
)
REPORTED_RANKS = {
    "r2": ("rank_r2", False),
    "l0": ("rank_l0", True),
    "alive_fraction": ("rank_alive", False),
}
PERFORMANCE_TERMS = {
    "mean_n_features": ("rank_mean_n_features", True),
    "recovery_at_10": ("rank_recovery", False),
}
"""Performance term -> (rank column, lower is better)."""


def eval_folders(ws: Workspace) -> list[Path]:
    """Finished evaluation folders (``WS/eval/<encoder>/<run>/`` with a manifest) of runs
    that still exist (:func:`medsae.sae.runs.run_exists`)."""
    from medsae.sae.runs import run_exists

    base = ws.root / "eval"
    if not base.is_dir():
        return []
    return sorted(
        p
        for p in base.glob("*/*")
        if (p / MANIFEST).is_file()
        and (p / SUMMARY).is_file()
        and run_exists(ws, p.parent.name, p.name)
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


def _sel(name: str) -> str:
    return SELECTION_PREFIX + name


def _mono_rank(frame: pd.DataFrame) -> pd.Series:
    return rank_tiebroken(
        frame[_sel("monosemanticity")], frame[_sel("monosemanticity_top100")], False
    )


def _per_group(frame: pd.DataFrame, within: bool, fn: Any) -> pd.Series:
    if not within:
        return fn(frame)  # type: ignore[no-any-return]
    return pd.concat([fn(sub) for _, sub in frame.groupby("encoder", sort=False)])


def table_row(summary: dict[str, Any]) -> dict[str, Any]:
    """One Table 1 row from an evaluation summary: selection figures and reported figures."""
    sel = summary.get("selection") or {}
    row: dict[str, Any] = {
        "encoder": summary.get("encoder"),
        "run": summary.get("run"),
        "selection_split": sel.get("split"),
    }
    for c in SELECTION_FIGURES:
        row[_sel(c)] = sel.get(c)
    for c in REPORTED_COLUMNS:
        row[c] = summary.get(c)
    return row


def build_table(
    summaries: Sequence[dict[str, Any]],
    within_encoder: bool = True,
    performance_term: str = "mean_n_features",
) -> pd.DataFrame:
    """Table 1 from evaluation summaries (see the module docstring for the ranks).

    Every rank that decides the order is taken from the summaries' ``selection`` figures; a
    summary without them ranks last on every such rank. The runs of one configuration's
    seeds make one row (means, ``<figure>_sd`` for :data:`SEED_FIGURES`, ``n_seeds``); the
    baseline dictionaries (``kind = "baseline"``) follow the ranked SAEs, unranked.
    """
    if performance_term not in PERFORMANCE_TERMS:
        raise ValueError(
            f"performance_term: expected one of {sorted(PERFORMANCE_TERMS)}, got {performance_term!r}"
        )
    frame = pd.DataFrame([table_row(s) for s in summaries], columns=list(TABLE_COLUMNS))
    for col in TABLE_COLUMNS[3:]:
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    frame = aggregate_seeds(frame, SEED_FIGURES)
    frame["kind"] = ["baseline" if is_baseline(str(r)) else "sae" for r in frame["run"]]
    saes, baselines = frame[frame["kind"] == "sae"], frame[frame["kind"] == "baseline"]
    ranked = _ranked(saes.reset_index(drop=True), within_encoder, performance_term)
    if baselines.empty:
        return ranked
    rest = baselines.sort_values(["encoder", "run"]).reset_index(drop=True)
    return pd.concat([ranked, rest], ignore_index=True) if not ranked.empty else rest


def _ranked(frame: pd.DataFrame, within_encoder: bool, performance_term: str) -> pd.DataFrame:
    """The SAE rows with their ranks, best first (see the module docstring)."""
    if frame.empty:
        return frame
    for col, (name, ascending) in REPORTED_RANKS.items():
        frame[name] = _per_group(
            frame, within_encoder, lambda f, c=col, a=ascending: rank_values(f[c], a)
        )
    for term, (name, ascending) in PERFORMANCE_TERMS.items():
        frame[name] = _per_group(
            frame, within_encoder, lambda f, c=_sel(term), a=ascending: rank_values(f[c], a)
        )
    frame["rank_performance"] = frame[PERFORMANCE_TERMS[performance_term][0]]
    frame["rank_monosemanticity"] = _per_group(frame, within_encoder, _mono_rank)
    frame["combined_rank"] = (frame["rank_monosemanticity"] + frame["rank_performance"]) / 2
    frame["combined_rank_recovery_at_10"] = (
        frame["rank_monosemanticity"] + frame["rank_recovery"]
    ) / 2
    term_col, term_ascending = _sel(performance_term), PERFORMANCE_TERMS[performance_term][1]
    frame["overall_rank"] = (_mono_rank(frame) + rank_values(frame[term_col], term_ascending)) / 2
    frame["sail_final_rank"] = _per_group(
        frame, within_encoder, lambda f: sail_final_rank(f, term_col, term_ascending)
    )
    order = frame.sort_values(
        ["overall_rank", term_col, _sel("monosemanticity"), _sel("monosemanticity_top100")],
        ascending=[True, term_ascending, False, False],
        na_position="last",
    )
    return order.reset_index(drop=True)


def sail_final_rank(frame: pd.DataFrame, term_col: str, ascending: bool) -> pd.Series:
    """The paper's final rank: ranks with method "min" and no tie-break anywhere.

    The monosemanticity rank (top-10 score only) and the performance rank are averaged and
    the average is ranked again with method "min": tied configurations share a final rank.
    """
    mono = rank_values(frame[_sel("monosemanticity")], False)
    perf = rank_values(frame[term_col], ascending)
    return rank_values((mono + perf) / 2, True)


def tie_break_note(
    frame: pd.DataFrame, performance_term: str = "mean_n_features", within_encoder: bool = True
) -> dict[str, Any]:
    """Which of this package's tie-breaks chose the best row among those sail ranks first.

    ``frame`` is :func:`build_table`'s output (best row first). Returns ``sail_final_rank``
    of the best row, ``sail_tied``: the runs sharing it (within its encoder when ranks are),
    and ``decided_by``: ``"sail rank"`` (no tie), ``"monosemanticity top-100 tie-break"``
    (the monosemanticity rank's own tie-break), then the sort that orders equal overall
    ranks: ``"performance term"``, ``"monosemanticity"``, ``"monosemanticity top-100"``, or
    ``"row order"``.
    """
    frame = frame[frame["kind"] == "sae"] if "kind" in frame else frame
    if frame.empty:
        return {"sail_final_rank": None, "sail_tied": [], "decided_by": None}
    best = frame.iloc[0]
    group = frame[frame["encoder"] == best["encoder"]] if within_encoder else frame
    tied = group[group["sail_final_rank"] == best["sail_final_rank"]]
    runs = [f"{e}/{r}" for e, r in zip(tied["encoder"], tied["run"], strict=True)]
    out: dict[str, Any] = {"sail_final_rank": int(best["sail_final_rank"]), "sail_tied": runs}
    level = tied[tied["overall_rank"] == best["overall_rank"]]
    if len(tied) == 1:
        out["decided_by"] = "sail rank"
    elif len(level) == 1:
        out["decided_by"] = "monosemanticity top-100 tie-break"
    else:
        out["decided_by"] = "row order"
        for col, name in (
            (_sel(performance_term), "performance term"),
            (_sel("monosemanticity"), "monosemanticity"),
            (_sel("monosemanticity_top100"), "monosemanticity top-100"),
        ):
            if level[col].nunique(dropna=False) > 1:
                out["decided_by"] = name
                break
    return out


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


def _best(
    frame: pd.DataFrame, performance_term: str, token_encoders: set[str] | None = None
) -> dict[str, Any]:
    """The best row overall (an SAE on slices when there is one: a token SAE is ranked
    beside them but chosen only when nothing else was evaluated) and per encoder."""
    best: dict[str, Any] = {"best": None, "best_per_encoder": {}}
    frame = frame[frame["kind"] == "sae"] if "kind" in frame else frame
    if frame.empty:
        return best
    slices = frame[~frame["encoder"].isin(sorted(token_encoders or set()))]
    top = (slices if not slices.empty else frame).iloc[0]
    best["best"] = {"encoder": top["encoder"], "run": top["run"]}
    term_col, ascending = _sel(performance_term), PERFORMANCE_TERMS[performance_term][1]
    for enc, sub in frame.groupby("encoder"):
        s = sub.sort_values(
            ["combined_rank", term_col], ascending=[True, ascending], na_position="last"
        )
        best["best_per_encoder"][str(enc)] = str(s.iloc[0]["run"])
    return best


def selection_split_of(summaries: Sequence[dict[str, Any]], folders: Sequence[Path]) -> str:
    """The one selection split of every summary; refuses summaries without one or mixed splits."""
    splits: dict[str, list[str]] = {}
    for summary, folder in zip(summaries, folders, strict=True):
        sel = summary.get("selection")
        if not isinstance(sel, dict) or not sel.get("split"):
            raise ArtifactError(
                f"{folder / SUMMARY}: no selection figures (evaluated by an older version); "
                "rerun `medsae evaluate --force`"
            )
        splits.setdefault(str(sel["split"]), []).append(f"{folder.parent.name}/{folder.name}")
    if len(splits) > 1:
        raise ArtifactError(
            f"evaluations chose on different splits: {splits}; rerun `medsae evaluate` with one "
            "selection_split"
        )
    return next(iter(splits))


RULES = {
    "mean_n_features": "combined rank = mean of the monosemanticity rank and the rank of the "
    "mean number of features needed to reach 50/60/70/80/90/100% of the dense ROC-AUC (tasks "
    "with dense ROC-AUC > 0.6; the paper's Table 1 rule), both on the selection split",
    "recovery_at_10": "combined rank = mean of the monosemanticity rank and the recovery-at-10 "
    "rank, both on the selection split",
}


def rank(
    workspace: str | Path | Workspace, config: RankConfig | None = None, force: bool = False
) -> StageOutcome:
    """Rank every evaluated configuration (the ``rank`` stage): ``WS/ranking/``.

    Writes ``table1.csv``, ``table1.md``, ``ranking.json`` (``best``: ``{encoder, run}``,
    ``selection_split``, ``performance_term``, ``rule``) and ``figures/*.png`` (R² vs L0 per
    encoder, recovery curves, monosemanticity distributions).
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    cfg = config or RankConfig()
    from medsae.sae.runs import warn_gone

    warn_gone(ws, "rank")
    folders = eval_folders(ws)
    if not folders:
        raise ArtifactError(
            f"{ws.root / 'eval'}: no finished evaluation found; run `medsae evaluate` first"
        )
    keys = {f"{p.parent.name}/{p.name}": artifact_key(p) for p in folders}

    def build(tmp: Path) -> StageResult:
        from medsae.evaluate.figures import write_figures

        summaries = [json.loads((p / SUMMARY).read_text()) for p in folders]
        split = selection_split_of(summaries, folders)
        table = build_table(summaries, cfg.rank_within_encoder, cfg.performance_term)
        table.to_csv(tmp / TABLE1_CSV, index=False)
        (tmp / TABLE1_MD).write_text(to_markdown(table))
        from medsae.encode.tokens import is_token_store

        tokens = {str(e) for e in table["encoder"].unique() if is_token_store(ws.embeddings(e))}
        info = _best(table, cfg.performance_term, tokens)
        info["tie_break"] = tie_break_note(table, cfg.performance_term, cfg.rank_within_encoder)
        figures = write_figures(folders, table, tmp / FIGURES, cfg.figure_dpi)
        info.update(
            n_configs=len(table),
            figures=figures,
            selection_split=split,
            performance_term=cfg.performance_term,
            rule=RULES[cfg.performance_term],
            alternative={
                "performance_term": "recovery_at_10",
                "column": "combined_rank_recovery_at_10",
            },
        )
        write_json_atomic(tmp / RANKING, info)
        return StageResult(
            counts={"configs": len(table)},
            extra={"best": info["best"], "selection_split": split},
        )

    return run_stage(ws.ranking, "rank", cfg, keys, build, force=force)
