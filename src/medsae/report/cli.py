"""Command-line commands of medsae.report (registered on the main app)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add ``medsae report`` to the main app."""

    @app.command("report")
    def report_cmd(
        workspace: Path = typer.Option(..., "--workspace", "-w", help="Workspace folder."),
        encoder: str | None = typer.Option(None, help="Encoder to show (default: the best run's)."),
        run: str | None = typer.Option(None, help="SAE run to show (default: the best run)."),
        n_features: int = typer.Option(24, help="Feature cards to show."),
        force: bool = typer.Option(False, "--force", help="Rebuild even when up to date."),
    ) -> None:
        """Write the self-contained HTML report to WS/report/index.html."""
        from medsae.progress import console
        from medsae.report import ReportConfig, build_report
        from medsae.report.io import REPORT_PAGE

        outcome = build_report(
            workspace, ReportConfig(encoder=encoder, run=run, n_features=n_features), force=force
        )
        console.print(f"report: {outcome.path / REPORT_PAGE}")
