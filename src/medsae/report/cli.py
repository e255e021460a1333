"""Command-line commands of medsae.report (registered on the main app).

Every setting is a flag made from :class:`~medsae.report.ReportConfig`
(:mod:`medsae.cli_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from medsae.cli_config import config_command
from medsae.report.config import ReportConfig


def register(app: typer.Typer) -> None:
    """Add ``medsae report`` to the main app."""

    @config_command(app, "report", ReportConfig)
    def report_cmd(
        workspace: Path | None = typer.Option(
            None, "--workspace", "-w", help="Workspace folder (default: `workspace` of --config)."
        ),
        force: bool = typer.Option(False, "--force", help="Rebuild even when up to date."),
        config: Any = None,
    ) -> None:
        """Write the self-contained HTML report to WS/report/index.html."""
        from medsae.progress import console
        from medsae.report import build_report
        from medsae.report.io import REPORT_PAGE
        from medsae.sae.runs import warn_gone

        assert workspace is not None
        warn_gone(workspace, "report")
        outcome = build_report(workspace, config, force=force)
        console.print(f"report: {outcome.path / REPORT_PAGE}", markup=False)
