"""Command-line commands for whole-pipeline work: ``run`` and ``demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from medsae.workspace import SUMMARY


def print_summary(run: Any) -> None:
    """The headline figures, per-stage times and where the report is."""
    from rich.table import Table

    from medsae.progress import console
    from medsae.report.io import REPORT_PAGE  # medsae.report imports the report's stack

    summary = run.summary or {}
    labels = {
        "best_config": "best config",
        "r2": "R² (test)",
        "l0": "L0",
        "alive_fraction": "alive fraction",
        "recovery_at_10": "recovery at 10 (shared: at most 10 latents per task)",
        "recovery_at_10_per_class": "recovery at 10 (per class: 10 latents per class)",
        "auc_at_10_mean_val": "ROC-AUC at 10 features, paper targets (val; paper Fig. 2G)",
        "r2_grand_mean_val_paper": "R², the paper's form (val, batches of 2,048)",
        "detection_balanced_accuracy": "detection score (median balanced accuracy)",
        "text_precision_at_10": "text retrieval precision@10",
        "fingerprint_agreement": "fingerprint agreement",
    }
    table = Table(title="medsae summary", show_header=False)
    for key, label in labels.items():
        value = summary.get(key)
        table.add_row(
            label,
            "not computed"
            if value is None
            else f"{value:.3f}"
            if isinstance(value, float)
            else str(value),
        )
    console.print(table)
    times = Table(title="stage times (s)")
    times.add_column("stage")
    times.add_column("this run", justify="right")
    times.add_column("CPU", justify="right")
    times.add_column("artifact build", justify="right")
    built = run.stage_seconds()
    for stage, seconds in run.seconds.items():
        cpu = run.cpu_seconds.get(stage)
        times.add_row(
            stage,
            f"{seconds:.1f}",
            "" if cpu is None else f"{cpu:.1f}",
            f"{built.get(stage, 0.0):.1f}" if stage in built else "",
        )
    total_cpu = sum(run.cpu_seconds.values())
    times.add_row("total", f"{sum(run.seconds.values()):.1f}", f"{total_cpu:.1f}", "")
    console.print(times)
    report = run.workspace.report / REPORT_PAGE
    if report.is_file():
        console.print(f"report: {report}")
    console.print(f"summary: {run.workspace.root / SUMMARY}")


def register(app: typer.Typer) -> None:
    """Add the pipeline commands to the main app."""

    @app.command("run")
    def run_cmd(
        config: Path = typer.Argument(..., help="Pipeline config (TOML, YAML or JSON)."),
        workspace: Path | None = typer.Option(
            None, "--workspace", "-w", help="Overrides `workspace` of the config."
        ),
        overrides: list[str] = typer.Option(
            [], "--set", help="Override a value: section.key=value (repeatable)."
        ),
        stages: list[str] = typer.Option(
            [], "--stage", help="Run only these stages (repeatable; default all)."
        ),
        force: bool = typer.Option(
            False, "--force", help="Rebuild every stage even when up to date."
        ),
    ) -> None:
        """Run the configured stages in order; finished stages are skipped."""
        from medsae.pipeline import load_pipeline_config, run_pipeline

        cfg = load_pipeline_config(config, overrides)
        result = run_pipeline(cfg, workspace, force=force, stages=stages or None)
        print_summary(result)

    @app.command("demo")
    def demo_cmd(
        workspace: Path = typer.Option(
            Path("demo-workspace"), "--workspace", "-w", help="Workspace folder."
        ),
        serve: bool = typer.Option(
            False, "--serve", help="Start the feature browser on the result."
        ),
        port: int = typer.Option(8765, help="Port of the browser (with --serve)."),
        force: bool = typer.Option(
            False, "--force", help="Rebuild every stage even when up to date."
        ),
    ) -> None:
        """The full pipeline on the built-in phantom dataset (a few minutes on 2 cores)."""
        from medsae.pipeline import run_demo

        result = run_demo(workspace, force=force)
        print_summary(result)
        if serve:
            from medsae.serve import serve as serve_browser

            serve_browser(workspace, port=port)
