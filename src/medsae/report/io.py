"""File names of the report stage's artifact (``WS/report/``), defined once."""

from __future__ import annotations

REPORT_PAGE = "index.html"
"""The self-contained report page."""

FIGURES = "fig"
"""Folder of the report's PNG figures."""
FRONTIER_FIGURE = "frontier.png"
"""R² against L0, one point per configuration."""
RECOVERY_FIGURE = "recovery.png"
"""Performance recovery against the number of features."""
