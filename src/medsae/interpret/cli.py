"""Command-line commands of medsae.interpret (registered on the main app)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add this subpackage's commands to the main app."""
    app.command("interpret")(interpret_command)
    app.command("fake-llm-server")(fake_llm_server_command)


def interpret_command(
    workspace: Path = typer.Option(..., "--workspace", "-w", help="Workspace folder."),
    encoder: str | None = typer.Option(
        None, help="Encoder (default: the ranking's best run, else the only run with codes)."
    ),
    run: str | None = typer.Option(None, help="SAE run (default as for --encoder)."),
    describer: str | None = typer.Option(
        None, help="offline (no model) or llm (OpenAI-compatible endpoint)."
    ),
    scorer: str | None = typer.Option(
        None, help="embedding, labels or llm: scorer of the headline numbers."
    ),
    base_url: str | None = typer.Option(
        None, help="LLM endpoint, e.g. http://127.0.0.1:8000/v1 (default: MEDSAE_LLM_BASE_URL)."
    ),
    model: str | None = typer.Option(None, help="LLM model name (default: MEDSAE_LLM_MODEL)."),
    top_n: int | None = typer.Option(
        None, help="Describe only the top N features (see --rank-by)."
    ),
    rank_by: str | None = typer.Option(None, help="concept or frequency: order used with --top-n."),
    selection_split: str | None = typer.Option(
        None, help="train (default) or val: split on which --top-n chooses (never a scored split)."
    ),
    fit_slices: int | None = typer.Option(
        None,
        help="Most slices of a split read per feature (rule fitting, detection negatives; "
        "default 100000).",
    ),
    text_only: bool = typer.Option(False, "--text-only", help="Send no images to the LLM."),
    config: Path | None = typer.Option(
        None, help="Config file (TOML/YAML/JSON) with an 'interpret' table."
    ),
    force: bool = typer.Option(False, help="Rebuild even when up to date."),
) -> None:
    """Describe an SAE's features and score the descriptions on held-out slices."""
    from medsae.config import build_config, merge_overrides, read_config_file
    from medsae.evaluate.io import resolve_run
    from medsae.interpret.config import InterpretConfig
    from medsae.interpret.stage import interpret
    from medsae.progress import console
    from medsae.workspace import Workspace

    data: dict = {}
    if config is not None:
        data = dict(read_config_file(config).get("interpret", {}))
    overrides: dict = {
        "describer": describer,
        "scorer": scorer,
        "rank_by": rank_by,
        "selection_split": selection_split,
        "fit_slices": fit_slices,
    }
    if top_n is not None:
        overrides.update(select="top_n", top_n=top_n)
    llm = {"base_url": base_url, "model": model, "send_images": False if text_only else None}
    data = merge_overrides(
        data, {**overrides, "llm": {k: v for k, v in llm.items() if v is not None}}
    )
    cfg = build_config(InterpretConfig, data, config or "command line")
    ws = Workspace(workspace)
    enc, r = resolve_run(ws, encoder, run)
    outcome = interpret(ws, enc, r, cfg, force=force)
    extra = outcome.manifest.get("extra", {})
    console.print(
        f"{enc}/{r}: describer {extra.get('describer')}, median detection balanced accuracy "
        f"{_fmt(extra.get('detection_balanced_accuracy'))}, ranking top-2 {_fmt(extra.get('ranking_top2'))} "
        f"-> {outcome.path}"
    )


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "n/a"


def fake_llm_server_command(
    port: int = typer.Option(8765, help="Port on 127.0.0.1."),
    delay: float = typer.Option(0.0, help="Seconds to wait before every answer."),
    status: int | None = typer.Option(None, help="Answer every request with this HTTP status."),
    malformed: bool = typer.Option(False, help="Answer content that is not JSON."),
    refusal: bool = typer.Option(False, help="Refuse every request."),
    api_key: str | None = typer.Option(None, help="Require this bearer key."),
) -> None:
    """Run the deterministic fake OpenAI-compatible server (for trying the LLM path offline)."""
    import time

    from medsae.llm.fake_server import FakeLLMServer, Faults
    from medsae.progress import console

    faults = Faults(delay_s=delay, status=status, malformed=malformed, refusal=refusal)
    with FakeLLMServer(faults=faults, port=port, api_key=api_key) as server:
        console.print(f"fake LLM server at {server.base_url} (Ctrl-C to stop)")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
