"""Command-line commands for search and ask (medsae.interpret) (registered on the main app)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

_SHOWN = ("rank", "score", "slice_id", "modality", "plane", "sex", "age_group", "split")


def _filters(items: list[str] | None) -> dict[str, list[str]]:
    from medsae.errors import InputError

    out: dict[str, list[str]] = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"--filter {item}", "expected column=value (e.g. modality=CT)")
        key, value = item.split("=", 1)
        out.setdefault(key.strip(), []).extend(v.strip() for v in value.split(","))
    return out


def _print_results(results: Any, title: str) -> None:
    from rich.table import Table

    from medsae.progress import console

    table = Table(title=title, title_justify="left")
    cols = [c for c in _SHOWN if c in results.columns]
    for c in cols:
        table.add_column(
            c, justify="right" if c in {"rank", "score"} else "left", no_wrap=c == "slice_id"
        )
    for row in results.itertuples(index=False):
        values = [getattr(row, c) for c in cols]
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in values))
    if results.empty:
        console.print(f"{title}: no matching slices")
    else:
        console.print(table)


def register(app: typer.Typer) -> None:
    """Add this subpackage's commands to the main app."""

    @app.command("index")
    def index_cmd(
        workspace: Path = typer.Option(..., "--workspace", "-w", help="Workspace folder."),
        encoder: str = typer.Option(
            None, help="Encoder (default: the ranking's best, else the only one)."
        ),
        run: str = typer.Option(
            None, help="SAE run (default: the ranking's best, else the only one)."
        ),
        k: int = typer.Option(5, help="Fingerprint size K for the evaluation."),
        queries: int = typer.Option(
            500, help="Query slices sampled for the fingerprint evaluation."
        ),
        force: bool = typer.Option(False, help="Rebuild even when up to date."),
    ) -> None:
        """Build the fingerprint index and evaluate fingerprint and text retrieval."""
        from medsae.progress import console
        from medsae.retrieval.config import IndexConfig, SearchConfig
        from medsae.retrieval.index import build_index

        cfg = IndexConfig(search=SearchConfig(k=k, eval_queries=queries))
        out = build_index(workspace, encoder, run, cfg, force=force)
        extra = out.manifest.get("extra", {})
        for key in ("fingerprint_agreement", "text_precision_at_10"):
            if extra.get(key) is not None:
                console.print(f"{key}: {extra[key]:.3f}")

    @app.command("search")
    def search_cmd(
        workspace: Path = typer.Option(..., "--workspace", "-w", help="Workspace folder."),
        slice_id: str = typer.Option(None, "--slice-id", help="Query by a slice of the workspace."),
        image: Path = typer.Option(None, "--image", help="Query by a PNG, DICOM or NIfTI file."),
        plane: str = typer.Option(None, help="Plane of the slice to cut from a NIfTI volume."),
        index: int = typer.Option(None, "--index", help="Slice index to cut from a NIfTI volume."),
        encoder: str = typer.Option(
            None, help="Encoder (default: the ranking's best, else the only one)."
        ),
        run: str = typer.Option(
            None, help="SAE run (default: the ranking's best, else the only one)."
        ),
        k: int = typer.Option(5, help="Fingerprint size: the query's top-K active features."),
        n: int = typer.Option(10, help="Number of results (one per subject)."),
        filter_: list[str] = typer.Option(
            None, "--filter", help="column=value[,value] (repeatable)."
        ),
    ) -> None:
        """Slices similar to a slice or an image (sparse fingerprints, one per subject)."""
        from medsae.retrieval.index import search_similar

        results = search_similar(
            workspace,
            encoder,
            run,
            slice_id=slice_id,
            image=image,
            plane=plane,
            index=index,
            k=k,
            n=n,
            filters=_filters(filter_) or None,
        )
        _print_results(results, f"similar to {slice_id or image}")

    @app.command("ask")
    def ask_cmd(
        query: str = typer.Argument(
            ..., help='What to look for, e.g. "axial CT of the lumbar spine".'
        ),
        workspace: Path = typer.Option(..., "--workspace", "-w", help="Workspace folder."),
        encoder: str = typer.Option(
            None, help="Encoder (default: the ranking's best, else the only one)."
        ),
        run: str = typer.Option(
            None, help="SAE run (default: the ranking's best, else the only one)."
        ),
        n: int = typer.Option(10, help="Number of results (one per subject)."),
        features: int = typer.Option(3, "--features", help="Features composed per query."),
        mode: str = typer.Option(
            "aspects", help="'aspects' or 'similarity' (see docs/retrieval.md)."
        ),
        filter_: list[str] = typer.Option(
            None, "--filter", help="Restrict results: column=value[,value]."
        ),
    ) -> None:
        """Slices matching a text query, through the descriptions of SAE features."""
        from medsae.progress import console
        from medsae.retrieval.index import ask

        result = ask(
            workspace,
            encoder,
            run,
            query,
            n=n,
            features=features,
            mode=mode,
            filters=_filters(filter_) or None,
        )
        console.print(f"[bold]{query}[/bold] -> features:")
        for c in result.features:
            console.print(
                f"  latent {c.latent:>6}  weight {c.weight:.2f}  sim {c.similarity:.2f}  {c.description}"
            )
        _print_results(result.results, "results")
