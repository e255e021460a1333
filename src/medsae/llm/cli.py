"""Command-line command of medsae.llm: ``medsae fake-llm-server``."""

from __future__ import annotations

import typer

FAKE_LLM_PORT = 8766
"""Default port of the fake server (the feature browser's is 8765, so both can run)."""


def fake_llm_server_command(
    port: int = typer.Option(FAKE_LLM_PORT, help="Port on 127.0.0.1."),
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
        console.print(f"fake LLM server at {server.base_url} (Ctrl-C to stop)", markup=False)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


def register(app: typer.Typer) -> None:
    """Add ``medsae fake-llm-server`` to the main app."""
    app.command("fake-llm-server")(fake_llm_server_command)
