"""Command-line commands of medsae.serve (registered on the main app)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add ``medsae serve`` to the main app."""

    @app.command("serve")
    def serve_cmd(
        workspace: Path = typer.Argument(..., help="Workspace folder to browse."),
        host: str = typer.Option("127.0.0.1", help="Address to bind (local only by default)."),
        port: int = typer.Option(8765, help="Port to listen on."),
        encoder: str | None = typer.Option(None, help="Encoder to show (default: the best run's)."),
        run: str | None = typer.Option(None, help="SAE run to show (default: the best run)."),
        device: str = typer.Option(
            "auto", help="Device of the query encoder and the maps: auto | cpu | cuda | cuda:N."
        ),
    ) -> None:
        """Start the web feature browser on a finished workspace."""
        from medsae.serve import serve

        serve(workspace, host=host, port=port, encoder=encoder, run=run, device=device)
