"""Command-line commands of medsae.sae: ``medsae train``, ``medsae codes`` and ``medsae export``."""

from __future__ import annotations

from pathlib import Path

import typer


def _ints(text: str | None, what: str) -> list[list[int]] | None:
    """``"128,512;256,1024"`` -> ``[[128, 512], [256, 1024]]`` (``;`` separates ladders)."""
    if text is None:
        return None
    from medsae.errors import InputError

    try:
        return [
            [int(v) for v in part.split(",") if v.strip()]
            for part in text.split(";")
            if part.strip()
        ]
    except ValueError as e:
        raise InputError(
            what, f"expected comma-separated integers (ladders separated by ';'), got {text!r}"
        ) from e


def register(app: typer.Typer) -> None:
    """Add this subpackage's commands to the main app."""

    @app.command("train")
    def train_cmd(
        workspace: Path = typer.Option(..., "--workspace", "-w", help="Workspace folder."),
        encoder: str = typer.Option(
            ..., "--encoder", "-e", help="Encoder whose embeddings to train on."
        ),
        config: Path | None = typer.Option(
            None, "--config", help="TOML/YAML/JSON file (a train table, or flat)."
        ),
        arch: str | None = typer.Option(
            None,
            "--arch",
            help="Comma-separated architecture names from the registry (built in: topk, "
            "batchtopk, matryoshka, matryoshka-perlevel, relu; others by entry point).",
        ),
        levels: str | None = typer.Option(
            None,
            "--levels",
            help="Dictionary ladder(s), e.g. 128,512,2048,8192 (';' between ladders).",
        ),
        k: str | None = typer.Option(
            None, "--k", help="k ladder(s), e.g. 5,10,20,40 (';' between ladders)."
        ),
        epochs: int | None = typer.Option(None, "--epochs", help="Passes over the train split."),
        max_samples: int | None = typer.Option(None, "--max-samples", help="Sample budget."),
        batch_size: int | None = typer.Option(None, "--batch-size", help="Batch size."),
        lr: float | None = typer.Option(
            None, "--lr", help="Learning rate (default scaled with dictionary size)."
        ),
        input_transform: str | None = typer.Option(
            None, "--input-transform", help="none | l2 | scale."
        ),
        seed: int | None = typer.Option(None, "--seed", help="Seed."),
        device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda."),
        force: bool = typer.Option(False, "--force", help="Retrain even when up to date."),
    ) -> None:
        """Train a grid of sparse autoencoders on one encoder's embeddings (train split)."""
        from medsae.config import build_config, merge_overrides, read_config_file
        from medsae.sae.config import TrainConfig
        from medsae.sae.stage import train

        data: dict[str, object] = {}
        if config is not None:
            raw = read_config_file(config)
            data = dict(raw.get("train", raw)) if isinstance(raw.get("train", raw), dict) else {}
        overrides = {
            "arch": [a.strip() for a in arch.split(",")] if arch else None,
            "levels": _ints(levels, "--levels"),
            "k": _ints(k, "--k"),
            "epochs": epochs,
            "max_samples": max_samples,
            "batch_size": batch_size,
            "lr": lr,
            "input_transform": input_transform,
            "seed": seed,
            "device": device,
        }
        cfg = build_config(TrainConfig, merge_overrides(data, overrides), config or "command line")
        train(workspace, encoder, cfg, force=force)

    @app.command("codes")
    def codes_cmd(
        workspace: Path = typer.Option(..., "--workspace", "-w", help="Workspace folder."),
        encoder: str = typer.Option(..., "--encoder", "-e", help="Encoder name."),
        run: str | None = typer.Option(
            None, "--run", help="One run (default: every run of the encoder)."
        ),
        batch_size: int | None = typer.Option(None, "--batch-size", help="Rows encoded at once."),
        device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda."),
        force: bool = typer.Option(False, "--force", help="Rewrite even when up to date."),
    ) -> None:
        """Write the sparse codes (CSR) of every slice for trained SAE run(s)."""
        from medsae.config import build_config, merge_overrides
        from medsae.sae.config import CodesConfig
        from medsae.sae.stage import write_codes

        cfg = build_config(
            CodesConfig,
            merge_overrides({}, {"batch_size": batch_size, "device": device}),
            "command line",
        )
        write_codes(workspace, encoder, run=run, config=cfg, force=force)

    @app.command("export")
    def export_cmd(
        run: Path = typer.Argument(..., help="Run folder (WS/saes/<encoder>/<run>)."),
        out: Path = typer.Argument(..., help="Folder to write (must be new or empty)."),
        to: str = typer.Option(..., "--to", help="Target library: sparsify | saelens."),
        force: bool = typer.Option(False, "--force", help="Replace a non-empty OUT."),
    ) -> None:
        """Export a trained SAE for another library (sparsify, SAELens) with a model card."""
        from medsae.progress import console
        from medsae.sae.export import export_run

        folder = export_run(run, out, to, force=force)
        console.print(f"export: wrote {folder} ({to}; README.md is the model card)")
