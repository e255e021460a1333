"""Command-line commands of medsae.retrieval: index, search, ask (registered on the main app).

Defaults and choices come from the configs (:mod:`medsae.retrieval.config`), never typed here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.text import Text

from medsae.cli_config import config_command
from medsae.retrieval.config import ASK_MODES, AskConfig, IndexConfig, SearchConfig

_ASK = AskConfig()
_SEARCH = SearchConfig()
_SHOWN = ("rank", "score", "slice_id", "modality", "plane", "sex", "age_group", "split")


def parse_filters(items: list[str] | None) -> dict[str, list[str]]:
    from medsae.errors import InputError

    out: dict[str, list[str]] = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"--filter {item}", "expected column=value (e.g. modality=CT)")
        key, value = item.split("=", 1)
        out.setdefault(key.strip(), []).extend(v.strip() for v in value.split(","))
    return out


def _check_mode(value: str | None) -> str | None:
    """A ``--mode`` value: one of :data:`ASK_MODES` (or None for the default)."""
    if value is not None and value not in ASK_MODES:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(ASK_MODES)}")
    return value


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


def index_cmd(
    workspace: Path | None = typer.Option(
        None, "--workspace", "-w", help="Workspace folder (default: `workspace` of --config)."
    ),
    encoder: str = typer.Option(
        None, help="Encoder (default: the ranking's best, else the only one)."
    ),
    run: str = typer.Option(None, help="SAE run (default: the ranking's best, else the only one)."),
    force: bool = typer.Option(False, help="Rebuild even when up to date."),
    config: Any = None,
) -> None:
    """Build the fingerprint index and evaluate fingerprint and text retrieval."""
    from medsae.progress import console
    from medsae.retrieval.index import build_index
    from medsae.sae.runs import warn_gone

    assert workspace is not None
    warn_gone(workspace, "index")
    out = build_index(workspace, encoder, run, config, force=force)
    extra = out.manifest.get("extra", {})
    for key in ("fingerprint_agreement", "text_precision_at_10"):
        if extra.get(key) is not None:
            console.print(f"{key}: {extra[key]:.3f}", markup=False)


def search_cmd(
    workspace: Path = typer.Option(..., "--workspace", "-w", help="Workspace folder."),
    slice_id: str = typer.Option(None, "--slice-id", help="Query by a slice of the workspace."),
    image: Path = typer.Option(None, "--image", help="Query by a PNG, JPEG, DICOM or NIfTI file."),
    plane: str = typer.Option(None, help="Plane of the slice to cut from a NIfTI volume."),
    index: int = typer.Option(
        None, "--index", help="Slice index to cut from a NIfTI volume (default: the middle)."
    ),
    encoder: str = typer.Option(
        None, help="Encoder (default: the ranking's best, else the only one)."
    ),
    run: str = typer.Option(None, help="SAE run (default: the ranking's best, else the only one)."),
    k: int = typer.Option(
        None,
        help="Fingerprint size: the query's top-K active features "
        f"(default: the index stage's, {_SEARCH.k} unless configured).",
    ),
    n: int = typer.Option(10, help="Number of results (one per subject)."),
    filter_: list[str] = typer.Option(None, "--filter", help="column=value[,value] (repeatable)."),
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
        filters=parse_filters(filter_) or None,
    )
    _print_results(results, f"similar to {slice_id or image}")


def ask_cmd(
    query: str = typer.Argument(..., help='What to look for, e.g. "axial CT of the lumbar spine".'),
    workspace: Path = typer.Option(..., "--workspace", "-w", help="Workspace folder."),
    encoder: str = typer.Option(
        None, help="Encoder (default: the ranking's best, else the only one)."
    ),
    run: str = typer.Option(None, help="SAE run (default: the ranking's best, else the only one)."),
    n: int = typer.Option(None, help=f"Number of results, one per subject (default: {_ASK.n})."),
    features: int = typer.Option(
        None,
        "--features",
        help=f"m, the features matched per text (default: {_ASK.features}): 'similarity' "
        "composes the m descriptions closest to the query; 'aspects' m in all (one per metadata "
        "term, the rest by the anatomy words); 'coverage' m matched to the anatomy words plus "
        "a backfill of the m closest to the whole query (weight: the index's ask.backfill), "
        "so up to 2m. The features used are printed.",
    ),
    mode: str = typer.Option(
        None,
        callback=_check_mode,
        help=f"How features are chosen: {', '.join(ASK_MODES)} (default: the index stage's, "
        f"{_ASK.mode} unless configured; see docs/retrieval.md).",
    ),
    filter_: list[str] = typer.Option(
        None, "--filter", help="Restrict results: column=value[,value]."
    ),
    metadata_filter: bool = typer.Option(
        None,
        "--metadata-filter/--no-metadata-filter",
        help=AskConfig.model_fields["metadata_filter"].description,
    ),
) -> None:
    """Slices matching a text query, through the SAE features (concept profiles or descriptions)."""
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
        filters=parse_filters(filter_) or None,
        metadata_filter=metadata_filter,
    )
    if result.reading is not None:
        console.print(Text.assemble("read as: ", result.reading.summary()))
    console.print(Text.assemble((query, "bold"), " -> features:"))
    for c in result.features:
        concept = f"[{'not ' if c.negated else ''}{c.concept}] " if c.concept else ""
        if c.probe:
            concept += f"({c.probe} probe: {c.matched}) "
        elif c.against:
            concept += f"(against {c.against}) "
        console.print(
            f"  latent {c.latent:>6}  weight {c.weight:.2f}  sim {c.similarity:.2f}  "
            f"{concept}{c.description}",
            markup=False,
            highlight=False,
        )
    _print_results(result.results, "results")


def register(app: typer.Typer) -> None:
    """Add ``medsae index``, ``medsae search`` and ``medsae ask`` to the main app."""
    config_command(
        app,
        "index",
        IndexConfig,
        aliases={"search_k": ["--k"], "search_eval_queries": ["--queries"]},
    )(index_cmd)
    app.command("search")(search_cmd)
    app.command("ask")(ask_cmd)
