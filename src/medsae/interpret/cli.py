"""Command-line command of medsae.interpret: ``medsae interpret``.

Every setting is a flag made from :class:`~medsae.interpret.config.InterpretConfig` and its
endpoint :class:`~medsae.llm.config.LLMConfig` (``--llm-*``; ``--base-url`` and ``--model``
are short names) through :mod:`medsae.cli_config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from medsae.cli_config import config_command
from medsae.interpret.config import InterpretConfig


def register(app: typer.Typer) -> None:
    """Add this subpackage's commands to the main app."""
    config_command(
        app,
        "interpret",
        InterpretConfig,
        aliases={"llm_base_url": ["--base-url"], "llm_model": ["--model"]},
        exclude=("top_n",),
    )(interpret_command)


def interpret_command(
    workspace: Path | None = typer.Option(
        None, "--workspace", "-w", help="Workspace folder (default: `workspace` of --config)."
    ),
    encoder: str | None = typer.Option(
        None, help="Encoder (default: the ranking's best run, else the only run with codes)."
    ),
    run: str | None = typer.Option(None, help="SAE run (default as for --encoder)."),
    top_n: int | None = typer.Option(
        None,
        "--top-n",
        help="Describe only the top N features (sets select = top_n and top_n; see --rank-by).",
    ),
    text_only: bool = typer.Option(
        False, "--text-only", help="Send no images to the LLM (llm.send_images = false)."
    ),
    force: bool = typer.Option(False, help="Rebuild even when up to date."),
    config: Any = None,
) -> None:
    """Describe an SAE's features and score the descriptions on held-out slices."""
    from medsae.evaluate.io import resolve_run
    from medsae.interpret.stage import interpret
    from medsae.progress import console
    from medsae.sae.runs import warn_gone
    from medsae.workspace import Workspace

    assert workspace is not None
    if top_n is not None:
        config.top_n = top_n
        config.select = "top_n"
    if text_only:
        config.llm.send_images = False
    ws = Workspace(workspace)
    warn_gone(ws, "interpret")
    enc, r = resolve_run(ws, encoder, run)
    outcome = interpret(ws, enc, r, config, force=force)
    extra = outcome.manifest.get("extra", {})
    console.print(
        f"{enc}/{r}: describer {extra.get('describer')}, median detection balanced accuracy "
        f"{_fmt(extra.get('detection_balanced_accuracy'))}, ranking top-2 "
        f"{_fmt(extra.get('ranking_top2'))} -> {outcome.path}",
        markup=False,
    )


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "n/a"
