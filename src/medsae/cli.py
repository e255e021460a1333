"""The ``medsae`` command line: a thin layer over the library, one subcommand per stage.

Each subpackage registers its own commands (``register(app)`` in its ``cli`` module); heavy
imports happen inside the commands so that ``medsae --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import typer

from medsae import __version__
from medsae.cli_config import escape_help
from medsae.errors import MedsaeError

app = typer.Typer(
    name="medsae",
    help="Sparse autoencoders for medical-imaging foundation models: "
    "volumes -> slices -> embeddings -> SAEs -> evaluation -> interpretation -> report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

COMMAND_MODULES = (
    "medsae.data.cli",
    "medsae.encode.cli",
    "medsae.sae.cli",
    "medsae.evaluate.cli",
    "medsae.interpret.cli",
    "medsae.llm.cli",
    "medsae.retrieval.cli",
    "medsae.report.cli",
    "medsae.serve.cli",
    "medsae.pipeline_cli",
    "medsae.runs_cli",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medsae {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
) -> None:
    """medsae command line."""


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)
escape_help(app)


def main() -> None:
    """Entry point: known errors print one clear line and exit 2, never a traceback."""
    try:
        app()
    except MedsaeError as e:
        from rich.text import Text

        from medsae.progress import console

        console.print(Text.assemble(("error:", "bold red"), f" {e}"))
        sys.exit(2)
    except KeyboardInterrupt:
        from medsae.progress import console

        console.print(
            "interrupted; finished artifacts are intact and the stage resumes on rerun",
            style="yellow",
        )
        sys.exit(130)
