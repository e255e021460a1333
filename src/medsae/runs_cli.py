"""Lookup commands: ``medsae runs`` (the runs of a workspace) and ``medsae slices``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

SLICE_COLUMNS = (
    "slice_id",
    "modality",
    "plane",
    "subject",
    "split",
    "sex",
    "age_group",
    "study_type",
)


def run_rows(workspace: Any) -> list[dict[str, str]]:
    """One row per run for ``medsae runs``: its stages' status and whether it is selected."""
    from medsae.evaluate.io import best_run
    from medsae.sae.runs import DOWNSTREAM, all_runs, gone_runs
    from medsae.workspace import MANIFEST, Workspace

    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    best = best_run(ws)
    rows = []
    for enc, run in all_runs(ws):
        row = {"encoder": enc, "run": run}
        row["trained"] = "yes" if ws.sae(enc, run).is_dir() else "-"
        for kind, folder in (
            ("codes", ws.codes(enc, run)),
            ("eval", ws.eval(enc, run)),
            ("features", ws.features(enc, run)),
            ("index", ws.index(enc, run)),
        ):
            row[kind] = "yes" if (folder / MANIFEST).is_file() else "-"
        row["selected"] = "best" if best == (enc, run) else ""
        rows.append(row)
    for g in gone_runs(ws):
        rows.append(
            {"encoder": g.encoder, "run": g.run, "trained": "GONE"}
            | {k: ("stale" if k in g.artifacts else "-") for k in DOWNSTREAM}
            | {"selected": ""}
        )
    return rows


def register(app: typer.Typer) -> None:
    """Add ``medsae runs`` and ``medsae slices`` to the main app."""

    @app.command("runs")
    def runs_cmd(
        workspace: Path = typer.Option(..., "--workspace", "-w", help="Workspace folder."),
    ) -> None:
        """List the encoders and SAE runs of a workspace, their stages and the selected run.

        A run is one trained SAE, named <arch>_D<levels>_K<k> (e.g. matryoshka_D32-128-512_K16):
        pass it as --run; "best" marks the run `medsae rank` selected, which every later
        stage uses by default.
        """
        from rich.table import Table
        from rich.text import Text

        from medsae.progress import console
        from medsae.workspace import Workspace

        ws = Workspace(workspace)
        encoders = ws.encoders()
        console.print(f"encoders: {', '.join(encoders) or 'none'}", markup=False)
        rows = run_rows(ws)
        if not rows:
            console.print("runs: none yet (run `medsae train`)", markup=False)
            return
        table = Table(title=f"runs of {ws.root}", title_justify="left")
        for col in rows[0]:
            table.add_column(col, no_wrap=col == "run")
        for row in rows:
            table.add_row(*(Text(str(v)) for v in row.values()))
        console.print(table)

    @app.command("slices")
    def slices_cmd(
        workspace: Path = typer.Option(..., "--workspace", "-w", help="Workspace folder."),
        filter_: list[str] = typer.Option(
            [],
            "--filter",
            help="column=value[,value] (repeatable), e.g. modality=CT, plane=axial, split=test.",
        ),
        limit: int = typer.Option(20, "--limit", help="Slices shown at most (0: all)."),
        ids: bool = typer.Option(False, "--ids", help="Print only the slice ids, one per line."),
    ) -> None:
        """Slice ids of a workspace with their metadata (for --slice-id and the browser)."""
        from rich.table import Table
        from rich.text import Text

        from medsae.data.table import read_slices, slices_with_split
        from medsae.errors import InputError
        from medsae.progress import console
        from medsae.retrieval.cli import parse_filters
        from medsae.workspace import MANIFEST, Workspace, require_artifact

        ws = Workspace(workspace)
        require_artifact(ws.slices, "slice table", "run `medsae prepare` first")
        table = (
            slices_with_split(ws.slices, ws.split)
            if (ws.split / MANIFEST).is_file()
            else read_slices(ws.slices)
        )
        for column, values in parse_filters(filter_).items():
            if column not in table.columns:
                raise InputError(
                    f"--filter {column}=...", f"no such column; columns: {', '.join(table.columns)}"
                )
            table = table[table[column].astype(str).isin(values)]
        total = len(table)
        shown = table if limit == 0 else table.head(limit)
        if ids:
            for sid in shown["slice_id"].astype(str):
                typer.echo(sid)
            return
        out = Table(title=f"{total:,} slices (showing {len(shown):,})", title_justify="left")
        cols = [c for c in SLICE_COLUMNS if c in shown.columns]
        for c in cols:
            out.add_column(c, no_wrap=c == "slice_id")
        for row in shown[cols].itertuples(index=False):
            out.add_row(*(Text(str(v)) for v in row))
        console.print(out)
