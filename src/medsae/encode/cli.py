"""Command-line commands of medsae.encode (registered on the main app).

``medsae encode`` takes every :class:`~medsae.encode.config.EncodeConfig` field as a flag
(:mod:`medsae.cli_config`); ``--option key=value`` sets one encoder option. Without any
encoder option, a store already in the workspace for the same encoder keeps the options it
was built with (said on the console), so the stage is not rebuilt by accident.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from medsae.cli_config import config_command
from medsae.encode.config import EncodeConfig
from medsae.errors import InputError


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` -> dict; values are parsed as YAML (numbers, booleans, lists)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"--option {item}", "expected key=value")
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw) if raw else ""
    return out


def recorded_options(workspace: Path, config: EncodeConfig) -> dict[str, Any] | None:
    """The encoder options of the workspace's store for ``config``'s encoder, if one exists."""
    from medsae.workspace import Workspace, read_manifest

    manifest = read_manifest(Workspace(workspace).embeddings(config.name or config.encoder))
    recorded = (manifest or {}).get("config") or {}
    if recorded.get("encoder") != config.encoder or not isinstance(recorded.get("options"), dict):
        return None
    return dict(recorded["options"])


def register(app: typer.Typer) -> None:
    """Add this subpackage's commands to the main app."""

    @app.command("encoders")
    def encoders_cmd() -> None:
        """List the encoders (built-in and from plugins) with their dimension and availability."""
        from medsae.encode.registry import list_encoders

        infos = list_encoders()
        width = max(len(i.name) for i in infos)
        dim_width = max(len(i.dim) for i in infos)
        for info in infos:
            status = "available" if info.available else "UNAVAILABLE"
            note = f" ({info.note})" if info.note else ""
            source = "" if info.source == "built-in" else f"  [plugin {info.source}]"
            typer.echo(f"{info.name:<{width}}  dim {info.dim:<{dim_width}}  {info.summary}{source}")
            typer.echo(f"{'':<{width}}  {status}{note}")

    @config_command(app, "encode", EncodeConfig, aliases={"encoder": ["-e"]})
    def encode_cmd(
        workspace: Path | None = typer.Option(
            None,
            "--workspace",
            "-w",
            help="Workspace folder with a finished slices/ (default: `workspace` of --config).",
        ),
        option: list[str] = typer.Option(
            [],
            "--option",
            "-o",
            help="Encoder option key=value (repeatable), merged into the options; without any, "
            "an existing store of the same encoder keeps its recorded options.",
        ),
        force: bool = typer.Option(False, "--force", help="Rebuild even when up to date."),
        config: Any = None,
    ) -> None:
        """Encode every slice of a workspace into WS/embeddings/<name>/ (resumable, shardable)."""
        from medsae.encode.stage import encode
        from medsae.progress import console

        assert workspace is not None
        if option:
            config.options = {**config.options, **parse_options(option)}
        elif not config.options:
            recorded = recorded_options(workspace, config)
            if recorded:
                config.options = recorded
                shown = ", ".join(f"{k}={v}" for k, v in sorted(recorded.items()))
                console.print(
                    f"encode: options recorded in the store ({shown}); pass --option to change them",
                    markup=False,
                )
        outcome = encode(workspace, config, force=force)
        counts = outcome.manifest.get("counts", {})
        console.print(
            f"{outcome.stage}: {outcome.status} {outcome.path} ({counts.get('rows', '?')} rows, "
            f"dim {counts.get('dim', '?')})",
            markup=False,
        )

    from medsae.encode.imported import ImportConfig

    @config_command(app, "import-embeddings", ImportConfig, "import", aliases={"encoder": ["-e"]})
    def import_cmd(
        file: Path = typer.Argument(
            ..., help="(N, d) .npy array, or a Parquet table with an id column and the vectors."
        ),
        workspace: Path | None = typer.Option(
            None, "--workspace", "-w", help="Workspace folder (default: `workspace` of --config)."
        ),
        metadata: Path = typer.Option(
            None, "--metadata", "-m", help="Parquet/CSV table: id, labels, split, subject."
        ),
        images: Path = typer.Option(
            None, "--images", help="uint8 .npy images (N, S, S) or (N, S, S, 3), row-aligned."
        ),
        force: bool = typer.Option(False, "--force", help="Rebuild even when up to date."),
        config: Any = None,
    ) -> None:
        """Import embeddings from a file (with optional metadata and images) into a workspace."""
        from medsae.encode.import_stage import import_embeddings

        assert workspace is not None
        for outcome in import_embeddings(workspace, file, metadata, images, config, force=force):
            typer.echo(f"{outcome.stage}: {outcome.status} {outcome.path}")
