"""Command-line commands of medsae.encode (registered on the main app)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

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

    @app.command("encode")
    def encode_cmd(
        workspace: Path = typer.Option(
            ..., "--workspace", "-w", help="Workspace folder (with a finished slices/)."
        ),
        encoder: str = typer.Option(
            "efficientnet-lite0", "--encoder", "-e", help="Encoder name (see `medsae encoders`)."
        ),
        option: list[str] = typer.Option(
            None, "--option", "-o", help="Encoder option key=value (repeatable)."
        ),
        name: str = typer.Option(
            None, "--name", help="Store name under WS/embeddings/ (default: the encoder's name)."
        ),
        batch_size: int = typer.Option(
            None, "--batch-size", help="Images per forward pass (default: 32 on CPU, 128 on GPU)."
        ),
        workers: int = typer.Option(1, "--workers", help="Background loader threads (0: none)."),
        threads: int = typer.Option(
            None, "--threads", help="torch CPU threads (default: all cores)."
        ),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
        tf32: bool = typer.Option(False, "--tf32", help="On a GPU: TF32 for fp32 products."),
        shard_rows: int = typer.Option(
            4096, "--shard-rows", help="Rows per shard (unit of resume and job splits)."
        ),
        shard_index: int = typer.Option(
            0, "--shard-index", help="This job's index in a job array."
        ),
        num_shards: int = typer.Option(1, "--num-shards", help="Number of jobs in the job array."),
        merge_only: bool = typer.Option(
            False, "--merge-only", help="Only assemble the store from finished job parts."
        ),
        backend: str = typer.Option("local", "--backend", help="local | ray."),
        ray_address: str = typer.Option(
            None, "--ray-address", help="Ray cluster address (default: local)."
        ),
        ray_actors: int = typer.Option(None, "--ray-actors", help="Number of encoder actors."),
        dtype: str = typer.Option("float32", "--dtype", help="float32 | float16 storage."),
        force: bool = typer.Option(False, "--force", help="Rebuild even when up to date."),
    ) -> None:
        """Encode every slice of a workspace into WS/embeddings/<name>/ (resumable, shardable)."""
        from medsae.config import build_config
        from medsae.encode.config import EncodeConfig
        from medsae.encode.stage import encode
        from medsae.progress import console

        data: dict[str, Any] = {
            "encoder": encoder,
            "options": parse_options(option),
            "name": name,
            "batch_size": batch_size,
            "workers": workers,
            "threads": threads,
            "device": device,
            "tf32": tf32,
            "shard_rows": shard_rows,
            "shard_index": shard_index,
            "num_shards": num_shards,
            "merge_only": merge_only,
            "backend": backend,
            "ray_address": ray_address,
            "ray_actors": ray_actors,
            "dtype": dtype,
        }
        config = build_config(
            EncodeConfig, {k: v for k, v in data.items() if v is not None}, "command line"
        )
        outcome = encode(workspace, config, force=force)
        counts = outcome.manifest.get("counts", {})
        console.print(
            f"{outcome.stage}: {outcome.status} {outcome.path} ({counts.get('rows', '?')} rows, dim {counts.get('dim', '?')})"
        )

    @app.command("import-embeddings")
    def import_cmd(
        file: Path = typer.Argument(
            ..., help="(N, d) .npy array, or a Parquet table with an id column and the vectors."
        ),
        workspace: Path = typer.Option(..., "--workspace", "-w", help="Workspace folder."),
        metadata: Path = typer.Option(
            None, "--metadata", "-m", help="Parquet/CSV table: id, labels, split, subject."
        ),
        images: Path = typer.Option(
            None, "--images", help="uint8 .npy images (N, S, S) or (N, S, S, 3), row-aligned."
        ),
        encoder: str = typer.Option(
            None, "--encoder", "-e", help="Store name under WS/embeddings/ (default: imported)."
        ),
        id_column: str = typer.Option(None, "--id-column", help="Id column (default: id)."),
        vector_column: str = typer.Option(
            None, "--vector-column", help="Parquet column holding the vectors."
        ),
        split_column: str = typer.Option(
            None, "--split-column", help="Metadata split column (default: split)."
        ),
        subject_column: str = typer.Option(
            None, "--subject-column", help="Metadata subject column (default: subject)."
        ),
        label_columns: str = typer.Option(
            None, "--label-columns", help="Comma-separated label columns (default: inferred)."
        ),
        seed: int = typer.Option(None, "--seed", help="Seed of a drawn split."),
        force: bool = typer.Option(False, "--force", help="Rebuild even when up to date."),
    ) -> None:
        """Import embeddings from a file (with optional metadata and images) into a workspace."""
        from medsae.config import build_config
        from medsae.encode.import_stage import import_embeddings
        from medsae.encode.imported import ImportConfig

        data: dict[str, Any] = {
            "encoder": encoder,
            "id_column": id_column,
            "vector_column": vector_column,
            "split_column": split_column,
            "subject_column": subject_column,
            "label_columns": [c.strip() for c in label_columns.split(",") if c.strip()]
            if label_columns
            else None,
            "seed": seed,
        }
        config = build_config(
            ImportConfig, {k: v for k, v in data.items() if v is not None}, "command line"
        )
        for outcome in import_embeddings(workspace, file, metadata, images, config, force=force):
            typer.echo(f"{outcome.stage}: {outcome.status} {outcome.path}")
