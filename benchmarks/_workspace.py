"""Command line shared by the benchmarks that read a finished workspace."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from medsae.evaluate.io import resolve_run
from medsae.workspace import Workspace

RESULTS = Path(__file__).parent / "results"


def workspace_run(
    description: str, result_name: str
) -> tuple[argparse.Namespace, Workspace, str, str]:
    """Parse ``--workspace``, ``--encoder``, ``--run`` and ``--out``; resolve the run.

    Returns the arguments, the workspace, and the encoder and run (the ranking's best when not
    given); ``--out`` defaults to ``benchmarks/results/<result_name>``.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--encoder", default=None)
    parser.add_argument("--run", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / result_name)
    args = parser.parse_args()
    os.environ.setdefault("MEDSAE_PROGRESS", "0")
    ws = Workspace(args.workspace)
    encoder, run = resolve_run(ws, args.encoder, args.run)
    return args, ws, encoder, run


def demo_workspace(
    description: str, default_workspace: Path, result_name: str
) -> tuple[argparse.Namespace, Workspace, float | None]:
    """Parse ``--workspace``, ``--run-demo`` and ``--out``; run ``medsae demo`` into the
    workspace when asked. Returns the arguments, the workspace and the demo's wall seconds
    (None without ``--run-demo``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workspace", type=Path, default=default_workspace)
    parser.add_argument("--run-demo", action="store_true", help="Run `medsae demo` first.")
    parser.add_argument("--out", type=Path, default=RESULTS / result_name)
    args = parser.parse_args()
    seconds = None
    if args.run_demo:
        import time

        from medsae.pipeline import run_demo

        t0 = time.perf_counter()
        run_demo(args.workspace)
        seconds = round(time.perf_counter() - t0, 1)
    return args, Workspace(args.workspace), seconds


def write_result(report: dict[str, Any], out: Path) -> None:
    """Print ``report`` as JSON and write it to ``out``."""
    text = json.dumps(report, indent=2)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
