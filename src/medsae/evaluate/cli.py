"""Command-line commands of medsae.evaluate: ``medsae evaluate`` and ``medsae rank``.

Every setting is a flag made from :class:`~medsae.evaluate.config.EvaluateConfig` or
:class:`~medsae.evaluate.config.RankConfig` (:mod:`medsae.cli_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from medsae.cli_config import config_command
from medsae.evaluate.config import EvaluateConfig, RankConfig
from medsae.evaluate.io import TABLE1_MD

WORKSPACE_HELP = "Workspace folder (default: `workspace` of --config)."


def register(app: typer.Typer) -> None:
    """Add this subpackage's commands to the main app."""

    @config_command(app, "evaluate", EvaluateConfig)
    def evaluate_cmd(
        workspace: Path | None = typer.Option(None, "--workspace", "-w", help=WORKSPACE_HELP),
        encoder: str | None = typer.Option(
            None, "--encoder", "-e", help="One encoder (default: every encoder with codes)."
        ),
        run: str | None = typer.Option(
            None, "--run", help="One SAE run (default: every run with codes)."
        ),
        force: bool = typer.Option(False, "--force", help="Re-evaluate even when up to date."),
        config: Any = None,
    ) -> None:
        """Evaluate SAE runs: reconstruction, probes, recovery, monosemanticity, concepts."""
        from medsae.errors import InputError
        from medsae.evaluate.inputs import evaluated_runs
        from medsae.evaluate.stage import evaluate
        from medsae.progress import console
        from medsae.sae.runs import check_run, warn_gone
        from medsae.workspace import Workspace

        assert workspace is not None
        ws = Workspace(workspace)
        warn_gone(ws, "evaluate")
        if run is not None:
            check_run(ws, encoder, run)
        targets = [
            (e, r)
            for e, r in evaluated_runs(ws)
            if (encoder is None or e == encoder) and (run is None or r == run)
        ]
        if not targets:
            what = f"encoder '{encoder}'" if encoder else "any encoder"
            what += f", run '{run}'" if run else ""
            raise InputError(
                ws.root / "codes",
                f"no finished codes for {what}; run `medsae codes` first "
                f"(`medsae runs --workspace {workspace}` lists the runs)",
            )
        for enc, r in targets:
            outcome = evaluate(ws, enc, r, config, force=force)
            extra = outcome.manifest.get("extra", {})
            shown = ", ".join(
                f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                for k, v in extra.items()
                if v is not None
            )
            console.print(
                f"{enc}/{r}: {shown or 'no headline figures'} ({outcome.path})", markup=False
            )

    @config_command(app, "rank", RankConfig)
    def rank_cmd(
        workspace: Path | None = typer.Option(None, "--workspace", "-w", help=WORKSPACE_HELP),
        force: bool = typer.Option(False, "--force", help="Rebuild even when up to date."),
        config: Any = None,
    ) -> None:
        """Rank every evaluated SAE configuration (the paper's Table 1) and draw the figures."""
        from medsae.evaluate.ranking import rank
        from medsae.progress import console

        assert workspace is not None
        outcome = rank(workspace, config, force=force)
        console.print((outcome.path / TABLE1_MD).read_text(), markup=False)
        console.print(f"best: {outcome.manifest.get('extra', {}).get('best')}", markup=False)
