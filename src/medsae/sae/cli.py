"""Command-line commands of medsae.sae: ``medsae train``, ``medsae codes`` and ``medsae export``.

Every setting is a flag made from :class:`~medsae.sae.config.TrainConfig` or
:class:`~medsae.sae.config.CodesConfig` (:mod:`medsae.cli_config`); ``--levels`` and
``--k`` take ladders as comma lists, ``;`` between ladders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from medsae.cli_config import config_command
from medsae.sae.config import CodesConfig, TrainConfig

WORKSPACE_HELP = "Workspace folder (default: `workspace` of --config)."


def register(app: typer.Typer) -> None:
    """Add this subpackage's commands to the main app."""

    @config_command(app, "train", TrainConfig)
    def train_cmd(
        workspace: Path | None = typer.Option(None, "--workspace", "-w", help=WORKSPACE_HELP),
        encoder: str = typer.Option(
            ..., "--encoder", "-e", help="Encoder whose embeddings to train on."
        ),
        force: bool = typer.Option(False, "--force", help="Retrain even when up to date."),
        config: Any = None,
    ) -> None:
        """Train a grid of sparse autoencoders on one encoder's embeddings (train split).

        The grid replaces the encoder's previous one: runs not in the new grid are removed
        with their codes, evaluations, features and indexes.
        """
        from medsae.sae.stage import train

        assert workspace is not None
        train(workspace, encoder, config, force=force)

    @config_command(app, "codes", CodesConfig)
    def codes_cmd(
        workspace: Path | None = typer.Option(None, "--workspace", "-w", help=WORKSPACE_HELP),
        encoder: str = typer.Option(..., "--encoder", "-e", help="Encoder name."),
        run: str | None = typer.Option(
            None, "--run", help="One run (default: every run of the encoder)."
        ),
        force: bool = typer.Option(False, "--force", help="Rewrite even when up to date."),
        config: Any = None,
    ) -> None:
        """Write the sparse codes (CSR) of every slice for trained SAE run(s)."""
        from medsae.sae.stage import write_codes

        assert workspace is not None
        write_codes(workspace, encoder, run=run, config=config, force=force)

    @app.command("export")
    def export_cmd(
        run: Path = typer.Argument(..., help="Run folder (WS/saes/<encoder>/<run>)."),
        out: Path = typer.Argument(..., help="Folder to write (must be new or empty)."),
        to: str = typer.Option(..., "--to", help="Target library: sparsify | saelens."),
        force: bool = typer.Option(False, "--force", help="Replace a non-empty OUT."),
    ) -> None:
        """Export a trained SAE for another library (sparsify, SAELens) with a model card."""
        from medsae.progress import console
        from medsae.sae.export import export_run

        folder = export_run(run, out, to, force=force)
        console.print(f"export: wrote {folder} ({to}; README.md is the model card)")
