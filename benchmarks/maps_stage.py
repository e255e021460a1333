"""What the feature maps add to a finished workspace's interpret and report stages.

Reruns, on the given workspace (a copy: the stages rewrite their artifacts), the interpret
stage with and without the localisation scores and the report with and without map
overlays, with the configs the workspace's manifests recorded otherwise. Prints JSON and
writes ``benchmarks/results/maps_stage.json`` with wall and CPU seconds of each run and the
differences (``extra_seconds``), the figure the demo's target (<= 30 s) is about.

    cp -r demo-workspace /tmp/ws-maps
    python benchmarks/maps_stage.py --workspace /tmp/ws-maps
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from _workspace import workspace_run, write_result
from medsae.interpret import InterpretConfig, interpret
from medsae.report import ReportConfig, build_report
from medsae.workspace import read_manifest


def timed(fn: Callable[[], Any]) -> dict[str, float]:
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return {
        "seconds": round(time.perf_counter() - t0, 2),
        "cpu_seconds": round(time.process_time() - c0, 2),
    }


def main() -> None:
    args, ws, encoder, run = workspace_run(__doc__ or "", "maps_stage.json")
    interp = dict((read_manifest(ws.features(encoder, run)) or {}).get("config") or {})
    report = dict((read_manifest(ws.report) or {}).get("config") or {})
    runs = {
        "interpret_with_localisation": lambda: interpret(
            ws, encoder, run, InterpretConfig(**{**interp, "localisation": True}), force=True
        ),
        "interpret_without_localisation": lambda: interpret(
            ws, encoder, run, InterpretConfig(**{**interp, "localisation": False}), force=True
        ),
        "report_with_maps": lambda: build_report(
            ws, ReportConfig(**{**report, "map_slices": report.get("map_slices") or 3}), force=True
        ),
        "report_without_maps": lambda: build_report(
            ws, ReportConfig(**{**report, "map_slices": 0}), force=True
        ),
    }
    measured = {name: timed(fn) for name, fn in runs.items()}
    # leave the workspace as the pipeline built it (with localisation and maps)
    runs["interpret_with_localisation"]()
    runs["report_with_maps"]()
    extra = (
        measured["interpret_with_localisation"]["seconds"]
        - measured["interpret_without_localisation"]["seconds"]
        + measured["report_with_maps"]["seconds"]
        - measured["report_without_maps"]["seconds"]
    )
    write_result(
        {
            "benchmark": "maps_stage",
            "command": f"python benchmarks/maps_stage.py --workspace {args.workspace}",
            "encoder": encoder,
            "run": run,
            "runs": measured,
            "extra_seconds": round(extra, 2),
            "target_extra_seconds": 30,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
