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
        upload_mib: float | None = typer.Option(
            None, "--upload-mib", help="Largest upload in MiB, before decompression (default 20)."
        ),
        max_decompressed_mib: float | None = typer.Option(
            None, help="MiB a gzip-compressed upload may decompress to (default 256)."
        ),
        max_pixels: int | None = typer.Option(
            None, help="Pixels a 2D upload may declare (default 36,000,000)."
        ),
        max_voxels: int | None = typer.Option(
            None, help="Voxels an uploaded volume may declare (default 67,108,864)."
        ),
        heavy_workers: int | None = typer.Option(
            None, help="Uploads and feature maps computed at once (default 4)."
        ),
        heavy_wait_s: float | None = typer.Option(
            None, help="Seconds a request waits for a turn before a 503 (default 15)."
        ),
    ) -> None:
        """Start the web feature browser on a finished workspace."""
        from medsae.serve import ServeLimits, serve

        limits = ServeLimits.from_options(
            upload_mib=upload_mib,
            max_decompressed_mib=max_decompressed_mib,
            max_pixels=max_pixels,
            max_voxels=max_voxels,
            heavy_workers=heavy_workers,
            heavy_wait_s=heavy_wait_s,
        )
        serve(
            workspace, host=host, port=port, encoder=encoder, run=run, device=device, limits=limits
        )
