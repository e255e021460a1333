"""The ``evaluate`` stage: every part for one SAE run, written to ``WS/eval/<encoder>/<run>/``.

Files: ``reconstruction.json``, ``probes.parquet``, ``recovery.parquet``,
``monosemanticity.parquet``, ``concepts.parquet``, ``skipped_tasks.json`` and ``summary.json``
(``r2``, ``l0``, ``alive_fraction``, ``recovery_at_10``, ``monosemanticity``, ``dense_auroc`` and
more on the headline split; under ``selection`` the figures ``medsae rank`` chooses by, on the
selection split only; unknown figures are null, never invented). See docs/evaluate.md for every
formula.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsae.device import describe_device, resolve_device
from medsae.evaluate.config import EvaluateConfig
from medsae.evaluate.headline import TARGET_COLUMNS, recovery_figures
from medsae.evaluate.headline import mean_finite as _mean
from medsae.evaluate.inputs import EvalInputs, input_keys, load_inputs, sample_rows
from medsae.evaluate.io import (
    CONCEPTS,
    MONOSEMANTICITY,
    PROBES,
    RECONSTRUCTION,
    RECOVERY,
    RECOVERY_TARGETS,
    SKIPPED_TASKS,
    SUMMARY,
)
from medsae.evaluate.tasks import TASK_FILTER_SPLITS
from medsae.jsonsafe import json_safe
from medsae.precision import forward_precision
from medsae.progress import console
from medsae.workspace import StageOutcome, StageResult, Workspace, run_stage, write_json_atomic

RECON_NOTE = (
    "r2 = 1 - SSE / sum of per-dimension variance = 1 - fvu (variance-weighted per-dimension R2); "
    "r2_uniform = mean over dimensions of 1 - SSE_j / SST_j; r2_grand_mean is the paper's "
    "form (one grand scalar mean), reported for comparison only; r2_grand_mean_batched "
    "(val only) is the paper's reported figure: that form per batch of 2,048 validation rows, "
    "averaged weighted by batch size"
)


class _Run:
    """One evaluation in progress: inputs, config, results and timings."""

    def __init__(self, inputs: EvalInputs, config: EvaluateConfig) -> None:
        self.inp = inputs
        self.cfg = config
        self.timings: dict[str, float] = {}
        self.skipped_tasks: list[dict[str, Any]] = []
        self.skipped_parts: list[dict[str, str]] = []
        self.summary: dict[str, Any] = {"encoder": inputs.encoder, "run": inputs.run}
        self.dense_auc: dict[tuple[str, str], float] = {}
        self.dense_target_auc: dict[tuple[str, str, str], float] = {}
        self.paper_targets: list[dict[str, Any]] = []
        self.sparse_coef: np.ndarray | None = None
        self.selection: dict[str, Any] = {"split": config.selection_split}
        self._probe_data: dict[str, Any] | None = None
        self._probes_done = False

    # -- reconstruction ------------------------------------------------------------------
    def reconstruction(self, out: Path) -> None:
        from medsae.evaluate.reconstruction import reconstruction_report, sparsity_from_codes

        split_of_row = self.inp.table["split"].to_numpy()
        report: dict[str, Any] = {"levels": self.inp.levels, "note": RECON_NOTE}
        if self.inp.sae_folder is not None:
            from medsae.sae import load_sae

            device = resolve_device(self.cfg.device)
            sae = load_sae(self.inp.sae_folder, device=device)
            report["source"] = "sae"
            with forward_precision(device, self.cfg.precision):
                report["splits"] = reconstruction_report(
                    sae, self.inp.store, split_of_row, self.inp.levels, self.cfg.batch_size
                )
        else:
            report["source"] = "codes"
            report["splits"] = sparsity_from_codes(self.inp.codes, split_of_row, self.inp.levels)
            self.skipped_parts.append(
                {
                    "part": "reconstruction",
                    "reason": f"no SAE checkpoint at {self.inp.ws.sae(self.inp.encoder, self.inp.run)}: "
                    "r2, fvu and cosine not computed; sparsity taken from the stored codes",
                }
            )
        write_json_atomic(out / RECONSTRUCTION, json_safe(report))
        head = report["splits"].get(self.cfg.headline_split, {}).get(str(max(self.inp.levels)), {})
        for key in (
            "r2",
            "r2_uniform",
            "r2_grand_mean",
            "fvu",
            "cosine",
            "l0",
            "alive_fraction",
            "dead_fraction",
            "dense_fraction",
        ):
            self.summary[key] = head.get(key)
        paper = report["splits"].get("val", {}).get(str(max(self.inp.levels)), {})
        self.summary["r2_grand_mean_val_paper"] = paper.get("r2_grand_mean_batched")

    # -- probes and recovery --------------------------------------------------------------
    def _prepare_probes(self) -> dict[str, Any]:
        if self._probe_data is not None:
            return self._probe_data
        from medsae.evaluate.paper import paper_target_status
        from medsae.evaluate.probes import scale_sparse, standardize_dense
        from medsae.evaluate.tasks import derive_tasks, filter_tasks

        cfg, inp = self.cfg, self.inp
        rows = {
            "train": sample_rows(inp.rows_of("train"), cfg.max_train, cfg.seed),
            "val": sample_rows(inp.rows_of("val"), cfg.max_eval, cfg.seed + 1),
            "test": sample_rows(inp.rows_of("test"), cfg.max_eval, cfg.seed + 2),
        }
        tasks, unformed = derive_tasks(
            inp.table,
            inp.presence,
            inp.structures,
            cfg.structure_tasks,
            cfg.group_tasks,
            inp.label_columns,
        )
        # which tasks and classes exist is decided on train and validation only, never test
        deciding = {s: rows[s] for s in TASK_FILTER_SPLITS}
        kept, skipped = filter_tasks(tasks, deciding, cfg.min_examples)
        self.skipped_tasks = unformed + skipped
        self.paper_targets = paper_target_status(tasks, kept, self.skipped_tasks)
        dense = standardize_dense(
            {k: inp.store.read(r, normalize=cfg.dense_normalize) for k, r in rows.items()}
        )
        raw = {k: inp.codes[r] for k, r in rows.items()}
        sparse, kept_latents = scale_sparse(raw)
        self._probe_data = {
            "rows": rows,
            "tasks": kept,
            "dense": dense,
            "sparse": sparse,
            "raw": raw,
            "latents": kept_latents,
        }
        return self._probe_data

    def probes(self, out: Path) -> None:
        from medsae.evaluate.probes import HeadTable, run_probes, target_aucs

        d = self._prepare_probes()
        self._probes_done = True
        if not d["tasks"]:
            self.skipped_parts.append(
                {
                    "part": "probes",
                    "reason": f"no task has two classes with {self.cfg.min_examples} "
                    "examples each in train and val (see tasks)",
                }
            )
        results: list[dict[str, Any]] = []
        for kind in ("dense", "sparse"):
            t0 = time.perf_counter()
            res, chosen = run_probes(
                d[kind],
                d["rows"],
                d["tasks"],
                self.cfg.l2_grid,
                self.cfg.max_iter,
                kind,
                self.cfg.l2_select,
                self.cfg.probe_c,
            )
            self.timings[f"probes_{kind}"] = round(time.perf_counter() - t0, 3)
            results += res
            if kind == "sparse":
                self.sparse_coef = chosen.get("coef")
            elif d["tasks"]:
                heads = HeadTable.build(d["tasks"])
                for split in ("val", "test"):
                    for task, cls, auc in target_aucs(heads, d["rows"][split], chosen[split]):
                        self.dense_target_auc[(task, cls, split)] = auc
        frame = pd.DataFrame.from_records(results, columns=PROBE_COLUMNS)
        frame.to_parquet(out / PROBES, index=False)
        dense = frame[frame["features"] == "dense"]
        self.dense_auc = {(r.task, r.split): float(r.roc_auc) for r in dense.itertuples()}
        head = frame[frame["split"] == self.cfg.headline_split]
        self.summary["n_tasks"] = len(d["tasks"])
        self.summary["dense_auroc"] = _mean(head.loc[head["features"] == "dense", "roc_auc"])
        self.summary["sparse_auroc"] = _mean(head.loc[head["features"] == "sparse", "roc_auc"])

    def recovery(self, out: Path) -> None:
        from medsae.evaluate.headline import target_rows
        from medsae.evaluate.paper import paper_target_keys
        from medsae.evaluate.recovery import recovery_with_config, task_rows

        if not self._probes_done:
            self.probes(out)
        d = self._prepare_probes()
        cfg = self.cfg
        heads, scored = recovery_with_config(
            d["sparse"],
            d["raw"]["train"][:, d["latents"]],
            d["rows"],
            d["tasks"],
            cfg,
            self.sparse_coef,
        )
        res = task_rows(heads, d["rows"], scored, self.dense_auc, cfg.recovery_dense_floor)
        frame = pd.DataFrame.from_records(res, columns=RECOVERY_COLUMNS)
        frame.to_parquet(out / RECOVERY, index=False)
        per_target = target_rows(
            heads,
            d["rows"],
            scored,
            self.dense_target_auc,
            cfg.recovery_dense_floor,
            paper_target_keys(d["tasks"]),
        )
        targets = pd.DataFrame.from_records(per_target, columns=TARGET_COLUMNS)
        targets.to_parquet(out / RECOVERY_TARGETS, index=False)
        self.summary.update(recovery_figures(frame, cfg, cfg.headline_split, targets))
        self.selection.update(recovery_figures(frame, cfg, cfg.selection_split, targets))

    # -- monosemanticity and concepts -----------------------------------------------------
    def monosemanticity(self, out: Path) -> None:
        from medsae.evaluate.monosemantic import config_score, monosemanticity

        cfg, inp = self.cfg, self.inp
        rows = inp.rows_of(*cfg.mono_splits)
        frame, base = monosemanticity(
            inp.codes[rows],
            inp.presence[rows],
            inp.table["subject_key"].to_numpy()[rows],
            inp.table["slice_id"].to_numpy()[rows],
            cfg.mono_top_n,
            None,
            cfg.mono_baseline_draws,
            cfg.seed,
            inp.levels,
        )
        frame.drop(columns=["top_rows"]).to_parquet(out / MONOSEMANTICITY, index=False)
        n_scored = int(frame["scored"].sum())
        if n_scored == 0:
            self.skipped_parts.append(
                {
                    "part": "monosemanticity",
                    "reason": f"no feature fires on {cfg.mono_top_n} distinct subjects of "
                    f"split(s) {cfg.mono_splits} ({len(np.unique(inp.table['subject_key'].to_numpy()[rows]))} subjects there)",
                }
            )
        self.summary["monosemanticity"] = config_score(frame["score"], cfg.mono_top_features)
        self.summary["monosemanticity_top100"] = config_score(frame["score"], 100)
        self.summary["monosemanticity_mean"] = _mean(frame["score"])
        self.summary["monosemanticity_baseline"] = base["baseline"]
        self.summary["monosemanticity_scored"] = n_scored
        # the figures rank chooses by: the same score on the selection split's slices only
        sel_rows = inp.rows_of(cfg.selection_split)
        sel, sel_base = monosemanticity(
            inp.codes[sel_rows],
            inp.presence[sel_rows],
            inp.table["subject_key"].to_numpy()[sel_rows],
            inp.table["slice_id"].to_numpy()[sel_rows],
            cfg.mono_top_n,
            None,
            cfg.mono_baseline_draws,
            cfg.seed,
            inp.levels,
        )
        self.selection["monosemanticity"] = config_score(sel["score"], cfg.mono_top_features)
        self.selection["monosemanticity_top100"] = config_score(sel["score"], 100)
        self.selection["monosemanticity_baseline"] = sel_base["baseline"]
        self.selection["monosemanticity_scored"] = int(sel["scored"].sum())

    def concepts(self, out: Path) -> None:
        from medsae.evaluate.concepts import concept_map, labels_from_tasks
        from medsae.evaluate.tasks import derive_tasks

        cfg, inp = self.cfg, self.inp
        rows = sample_rows(inp.rows_of(*cfg.concept_splits), cfg.max_eval, cfg.seed + 3)
        tasks, _ = derive_tasks(
            inp.table, inp.presence, inp.structures, True, True, inp.label_columns
        )
        frame = concept_map(
            inp.codes[rows],
            labels_from_tasks(tasks, rows),
            cfg.concept_min_fires,
            cfg.concept_min_fires,
        )
        frame.to_parquet(out / CONCEPTS, index=False)
        self.summary["concept_latents"] = int(frame["concept"].notna().sum())
        self.summary["concept_auroc_median"] = (
            float(frame["auroc"].median()) if frame["auroc"].notna().any() else None
        )


PROBE_COLUMNS = [
    "task",
    "kind",
    "n_classes",
    "features",
    "split",
    "roc_auc",
    "balanced_accuracy",
    "f1",
    "n_train",
    "n_eval",
    "l2",
]
RECOVERY_COLUMNS = [
    "task",
    "kind",
    "method",
    "mode",
    "n_features",
    "split",
    "roc_auc",
    "balanced_accuracy",
    "f1",
    "dense_roc_auc",
    "recovery",
    "recovery_above_chance",
    "above_floor",
]
SUMMARY_KEYS = ("r2", "l0", "alive_fraction", "recovery_at_10", "monosemanticity", "dense_auroc")


def build_evaluation(inputs: EvalInputs, config: EvaluateConfig, out: Path) -> dict[str, Any]:
    """Run the configured parts into ``out``; returns the summary (also written as summary.json)."""
    run = _Run(inputs, config)
    run.summary.update({k: None for k in SUMMARY_KEYS})
    run.summary.update(
        headline_split=config.headline_split,
        headline_method=config.headline_method,
        selection_split=config.selection_split,
    )
    parts = list(config.parts)
    for part in ("reconstruction", "probes", "recovery", "monosemanticity", "concepts"):
        if part not in parts:
            run.skipped_parts.append({"part": part, "reason": "not requested (config.parts)"})
            continue
        t0 = time.perf_counter()
        console.print(f"evaluate {inputs.encoder}/{inputs.run}: {part}", style="dim")
        getattr(run, part)(out)
        run.timings[part] = round(time.perf_counter() - t0, 3)
    from medsae.encode.tokens import is_token_store

    if is_token_store(inputs.store.folder):  # an SAE on tokens: where its latents fire
        from medsae.evaluate.organs import organ_rediscovery

        t0 = time.perf_counter()
        console.print(f"evaluate {inputs.encoder}/{inputs.run}: organs", style="dim")
        run.summary["organ_map"] = organ_rediscovery(inputs, config, out)
        run.timings["organs"] = round(time.perf_counter() - t0, 3)
    run.summary["n_skipped_tasks"] = len(run.skipped_tasks)
    run.summary["task_filter_splits"] = list(TASK_FILTER_SPLITS)
    run.summary["paper_targets"] = run.paper_targets
    run.summary["selection"] = run.selection
    run.summary["timings"] = run.timings
    write_json_atomic(
        out / SKIPPED_TASKS, json_safe({"tasks": run.skipped_tasks, "parts": run.skipped_parts})
    )
    summary = json_safe(run.summary)
    write_json_atomic(out / SUMMARY, summary)
    return summary


def evaluate(
    workspace: str | Path | Workspace,
    encoder: str,
    run: str,
    config: EvaluateConfig | None = None,
    force: bool = False,
) -> StageOutcome:
    """Evaluate one SAE run of one encoder (the ``evaluate`` stage, through ``run_stage``).

    Inputs: the ``slices``, ``split``, ``embeddings``, ``codes`` artifacts and ``saes`` when the
    run has a checkpoint. Raises :class:`~medsae.errors.ArtifactError` when they do not align
    (row counts, encoder names, latent counts).
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    cfg = config or EvaluateConfig()
    device = resolve_device(cfg.device, "evaluate.device")
    keys = input_keys(ws, encoder, run)

    def build(tmp: Path) -> StageResult:
        inputs = load_inputs(ws, encoder, run)
        summary = build_evaluation(inputs, cfg, tmp)
        return StageResult(
            counts={
                "slices": len(inputs.table),
                "latents": int(inputs.codes.shape[1]),
                "tasks": summary.get("n_tasks"),
            },
            extra={
                **{k: summary.get(k) for k in SUMMARY_KEYS},
                "task_filter_splits": list(TASK_FILTER_SPLITS),
                "paper_targets": summary.get("paper_targets", []),
            },
        )

    return run_stage(
        ws.eval(encoder, run),
        "evaluate",
        cfg,
        keys,
        build,
        force=force,
        runtime=describe_device(device),
    )
