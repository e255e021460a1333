"""medsae.report: the self-contained HTML report of a workspace."""

from __future__ import annotations

from medsae.report.build import ReportConfig, build_report
from medsae.view import WorkspaceView

__all__ = ["ReportConfig", "WorkspaceView", "build_report"]
