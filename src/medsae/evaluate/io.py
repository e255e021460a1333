"""File names and readers of the evaluate and rank stages' artifacts (the one place for them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medsae.workspace import SUMMARY as WORKSPACE_SUMMARY_NAME

# -- WS/eval/<encoder>/<run>/ ----------------------------------------------------------------
SUMMARY = WORKSPACE_SUMMARY_NAME
"""Headline figures of one evaluation (``r2``, ``recovery_at_10``, ``selection``, ...)."""
RECONSTRUCTION = "reconstruction.json"
"""R², FVU, cosine, L0 and firing fractions per split and Matryoshka level."""
PROBES = "probes.parquet"
"""Dense and sparse probe figures per task and split."""
RECOVERY = "recovery.parquet"
"""ROC-AUC(N) and recovery(N) per task, method, mode, N and split."""
MONOSEMANTICITY = "monosemanticity.parquet"
"""The paper's monosemanticity score per latent (reporting splits)."""
CONCEPTS = "concepts.parquet"
"""Best-matching label per latent (AUROC, F1)."""
SKIPPED_TASKS = "skipped_tasks.json"
"""Tasks not probed and parts not run, with the reason."""

# -- WS/ranking/ -----------------------------------------------------------------------------
RANKING = "ranking.json"
"""``WS/ranking/ranking.json``: ``best`` ({encoder, run}), the order and the rule used."""
TABLE1_CSV = "table1.csv"
"""Table 1 (one row per configuration) as CSV."""
TABLE1_MD = "table1.md"
"""Table 1 as a Markdown table."""
FIGURES = "figures"
"""Folder of the ranking figures."""
FIGURE_R2_L0 = "r2_vs_l0.png"
"""R² against L0 with each encoder's Pareto frontier."""
FIGURE_RECOVERY = "recovery_curves.png"
"""Mean recovery against N per configuration."""
FIGURE_MONOSEMANTICITY = "monosemanticity.png"
"""Distribution of scored latents per configuration."""


def read_ranking(ranking_dir: Path) -> dict[str, Any]:
    """``ranking.json`` of a ranking folder as a dict; ``{}`` when absent or unreadable."""
    try:
        data = json.loads((Path(ranking_dir) / RANKING).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
