"""Command-line commands of medsae.evaluate: ``medsae evaluate`` and ``medsae rank``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from medsae.evaluate.io import TABLE1_MD


def _section(config: Path | None, name: str) -> dict[str, Any]:
    """The ``[name]`` table of a config file (or the whole file when it is flat)."""
    if config is None:
        return {}
    from medsae.config import read_config_file

    raw = read_config_file(config)
    section = raw.get(name, raw)
    return dict(section) if isinstance(section, dict) else {}


def register(app: typer.Typer) -> None:
    """Add this subpackage's commands to the main app."""

    @app.command("evaluate")
    def evaluate_cmd(
        workspace: Path = typer.Option(..., "--workspace", "-w", help="Workspace folder."),
        encoder: str | None = typer.Option(
            None, "--encoder", "-e", help="One encoder (default: every encoder with codes)."
        ),
        run: str | None = typer.Option(
            None, "--run", help="One SAE run (default: every run with codes)."
        ),
        parts: str | None = typer.Option(
            None,
            "--parts",
            help="Comma-separated subset of reconstruction,probes,recovery,monosemanticity,concepts.",
        ),
        config: Path | None = typer.Option(
            None, "--config", help="TOML/YAML/JSON file (an evaluate table, or flat)."
        ),
        max_train: int | None = typer.Option(
            None, "--max-train", help="Training slices per probe (default 10,000)."
        ),
        min_examples: int | None = typer.Option(
            None, "--min-examples", help="Minimum slices per class and split."
        ),
        seed: int | None = typer.Option(None, "--seed", help="Seed."),
        force: bool = typer.Option(False, "--force", help="Re-evaluate even when up to date."),
    ) -> None:
        """Evaluate SAE runs: reconstruction, probes, recovery, monosemanticity, concepts."""
        from medsae.config import build_config, merge_overrides
        from medsae.errors import InputError
        from medsae.evaluate.config import EvaluateConfig
        from medsae.evaluate.inputs import evaluated_runs
        from medsae.evaluate.stage import evaluate
        from medsae.progress import console
        from medsae.workspace import Workspace

        overrides = {
            "parts": [p.strip() for p in parts.split(",") if p.strip()] if parts else None,
            "max_train": max_train,
            "min_examples": min_examples,
            "seed": seed,
        }
        cfg = build_config(
            EvaluateConfig,
            merge_overrides(_section(config, "evaluate"), overrides),
            config or "command line",
        )
        ws = Workspace(workspace)
        targets = [
            (e, r)
            for e, r in evaluated_runs(ws)
            if (encoder is None or e == encoder) and (run is None or r == run)
        ]
        if not targets:
            what = f"encoder '{encoder}'" if encoder else "any encoder"
            what += f", run '{run}'" if run else ""
            raise InputError(
                ws.root / "codes", f"no finished codes for {what}; run `medsae codes` first"
            )
        for enc, r in targets:
            outcome = evaluate(ws, enc, r, cfg, force=force)
            extra = outcome.manifest.get("extra", {})
            shown = ", ".join(
                f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                for k, v in extra.items()
                if v is not None
            )
            console.print(f"{enc}/{r}: {shown or 'no headline figures'} ({outcome.path})")

    @app.command("rank")
    def rank_cmd(
        workspace: Path = typer.Option(..., "--workspace", "-w", help="Workspace folder."),
        config: Path | None = typer.Option(
            None, "--config", help="TOML/YAML/JSON file (a rank table, or flat)."
        ),
        force: bool = typer.Option(False, "--force", help="Rebuild even when up to date."),
    ) -> None:
        """Rank every evaluated SAE configuration (the paper's Table 1) and draw the figures."""
        from medsae.config import build_config
        from medsae.evaluate.config import RankConfig
        from medsae.evaluate.ranking import rank
        from medsae.progress import console

        cfg = build_config(RankConfig, _section(config, "rank"), config or "command line")
        outcome = rank(workspace, cfg, force=force)
        console.print((outcome.path / TABLE1_MD).read_text())
        console.print(f"best: {outcome.manifest.get('extra', {}).get('best')}")
