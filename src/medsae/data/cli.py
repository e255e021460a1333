"""Command-line commands of medsae.data: ``phantom``, ``prepare``, ``split``.

Every setting is a flag made from the stage's config (:mod:`medsae.cli_config`); the
``[phantom]``, ``[prepare]`` or ``[split]`` table of ``--config FILE`` and ``--set`` set the
same fields. The flags written here are the front end's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from medsae.cli_config import config_command
from medsae.data.config import PhantomConfig, PrepareConfig, SplitConfig

WORKSPACE_HELP = "Workspace folder (default: `workspace` of --config)."


def register(app: typer.Typer) -> None:
    """Add this subpackage's commands to the main app."""

    @config_command(
        app,
        "phantom",
        PhantomConfig,
        aliases={"size_xy": ["--size"], "n_slices": ["--slices"]},
    )
    def phantom_cmd(
        out: Path = typer.Argument(..., help="Output folder (OUT/ct and OUT/mri are written)."),
        subjects: int | None = typer.Option(
            None, "--subjects", help="Total subjects: 2/3 CT, 1/3 MRI (sets both counts)."
        ),
        config: Any = None,
    ) -> None:
        """Write a synthetic dataset in the TotalSegmentator CT and MRI layouts."""
        from medsae.data.phantom import make_phantom
        from medsae.progress import console

        if subjects is not None:
            n_ct = round(subjects * 2 / 3)
            config.ct_subjects, config.mri_subjects = n_ct, subjects - n_ct
        path = make_phantom(out, config)
        console.print(
            f"phantom: {config.ct_subjects} CT + {config.mri_subjects} MRI subjects in {path}",
            markup=False,
        )

    @config_command(
        app,
        "prepare",
        PrepareConfig,
        aliases={
            "workers": ["-j"],
            "restrict_to_labelled": ["--labelled-range/--all-slices"],
            "multi_window": ["--multi-window/--single-window"],
        },
        exclude=("source",),
    )
    def prepare_cmd(
        root: Path | None = typer.Argument(
            None, help="Dataset folder, or a folder of dataset folders (default: [prepare] source)."
        ),
        workspace: Path | None = typer.Option(None, "--workspace", "-w", help=WORKSPACE_HELP),
        allow_failures: bool = typer.Option(
            False, "--allow-failures", help="Keep the result when some inputs fail."
        ),
        force: bool = typer.Option(False, "--force", help="Rebuild even when up to date."),
        config: Any = None,
    ) -> None:
        """Cut volumes into 2D slices with metadata and anatomy labels (WS/slices)."""
        from medsae.data.prepare_stage import prepare

        if root is not None:
            config.source = str(root)
        assert workspace is not None
        prepare(workspace, config, force=force, allow_failures=allow_failures)

    @config_command(app, "split", SplitConfig)
    def split_cmd(
        workspace: Path | None = typer.Option(None, "--workspace", "-w", help=WORKSPACE_HELP),
        force: bool = typer.Option(False, "--force", help="Rebuild even when up to date."),
        config: Any = None,
    ) -> None:
        """Assign subjects to train / val / test (held-out institutes are the test set)."""
        from medsae.data.split_stage import split

        assert workspace is not None
        split(workspace, config, force=force)
