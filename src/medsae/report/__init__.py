"""medsae.report: the self-contained HTML report of a workspace.

Names are imported on first use, so that registering ``medsae report`` on the command line
imports nothing heavy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medsae._lazy import lazy_exports

if TYPE_CHECKING:
    from medsae.frontend.view import WorkspaceView
    from medsae.report.build import build_report
    from medsae.report.config import ReportConfig

_EXPORTS: dict[str, str] = {
    "ReportConfig": "medsae.report.config",
    "build_report": "medsae.report.build",
    "WorkspaceView": "medsae.frontend.view",
}

__all__ = ["ReportConfig", "WorkspaceView", "build_report"]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
