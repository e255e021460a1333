"""File names of the report stage's artifact (``WS/report/``), defined once."""

from __future__ import annotations

REPORT_PAGE = "index.html"
"""The self-contained report page."""

WORKSPACE_SUMMARY = "summary.json"
"""``WS/summary.json``: the headline figures of a finished pipeline (read by the report)."""
