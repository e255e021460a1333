"""Command-line commands for whole-pipeline work: ``run`` and ``demo``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the pipeline commands to the main app."""
