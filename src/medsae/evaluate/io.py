"""File names and readers of the evaluate and rank stages' artifacts (the one place for them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medsae.errors import ArtifactError
from medsae.sae import io as sae_io
from medsae.workspace import MANIFEST, Workspace
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
RECOVERY_TARGETS = "recovery_targets.parquet"
"""ROC-AUC(N) and recovery(N) per target (class against the rest of its task); ``paper``
marks the paper's targets."""
MONOSEMANTICITY = "monosemanticity.parquet"
"""The paper's monosemanticity score per latent (reporting splits)."""
CONCEPTS = "concepts.parquet"
"""Best-matching label per latent (AUROC, F1)."""
SKIPPED_TASKS = "skipped_tasks.json"
ORGANS = "organs.json"
"""Organ rediscovery of a token SAE: per method mAP, Purity@16, Coverage@0.3, pointing game."""
ORGAN_STRUCTURES = "organ_structures.parquet"
"""Organ rediscovery per method and structure: best latent, AP, chance AP, purity, pointing."""
ORGAN_LATENTS = "organ_latents.parquet"
"""Organ rediscovery per latent of the token SAE: best structure, its AP and pointing game."""
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
    """``ranking.json`` of a ranking folder as a dict; ``{}`` when absent (not computed);
    :class:`medsae.artifacts.DamagedArtifact` naming it when unreadable."""
    from medsae.artifacts import read_json_optional

    return read_json_optional(Path(ranking_dir) / RANKING) or {}


def best_run(ws: Workspace, encoder: str | None = None) -> tuple[str, str] | None:
    """The ``(encoder, run)`` that ``medsae rank`` chose, if it still exists in ``ws``.

    The one rule every stage and front end uses to pick "the" SAE: the ``best`` entry of
    ``WS/ranking/ranking.json`` when it names a run that still exists (a checkpoint, or
    codes of its own: :func:`medsae.sae.runs.run_exists`) and, when ``encoder`` is given, of
    that encoder; else None.
    """
    from medsae.sae.runs import run_exists

    best = read_ranking(ws.ranking).get("best") or {}
    enc, run = best.get("encoder"), best.get("run")
    if not (enc and run) or (encoder is not None and enc != encoder):
        return None
    enc, run = str(enc), str(run)
    if run_exists(ws, enc, run) and (
        (ws.sae(enc, run) / sae_io.CFG).is_file() or (ws.codes(enc, run) / MANIFEST).is_file()
    ):
        return enc, run
    return None


def resolve_run(
    ws: Workspace, encoder: str | None = None, run: str | None = None
) -> tuple[str, str]:
    """The ``(encoder, run)`` to use: as given; else :func:`best_run`; else the only run with
    codes (of ``encoder`` when given). Raises :class:`ArtifactError` naming what is missing
    or ambiguous; a run or an encoder that does not exist is an :class:`InputError` naming
    the nearest ones and ``medsae runs`` (runs whose checkpoint is gone never qualify)."""
    from medsae.sae.runs import check_encoder, check_run, runs_with_codes

    if encoder:
        check_encoder(ws, encoder)
    if run:
        check_run(ws, encoder, run)
    if encoder and run:
        return encoder, run
    best = best_run(ws, encoder)
    if best is not None and run in (None, best[1]):
        return best
    found = [(e, r) for e, r in runs_with_codes(ws, encoder) if run in (None, r)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ArtifactError(f"{ws.root / 'codes'}: no sparse codes found; run `medsae codes` first")
    names = ", ".join(f"{e}/{r}" for e, r in found)
    raise ArtifactError(
        f"{ws.root}: several SAE runs have codes ({names}) and no ranking chose one; "
        "run `medsae rank` or pass --encoder and --run"
    )


def organ_runs(ws: Workspace) -> list[tuple[str, str]]:
    """``(encoder, run)`` of every token SAE with organ rediscovery (:data:`ORGANS`), the
    ranking's best run of each token store first."""
    best = read_ranking(ws.ranking).get("best_per_encoder") or {}
    found: list[tuple[str, str]] = []
    base = ws.root / "eval"
    for enc in sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []:
        runs = sorted(p.name for p in (base / enc).iterdir() if (p / ORGANS).is_file())
        runs.sort(key=lambda r: r != best.get(enc))
        found.extend((enc, r) for r in runs)
    return found
