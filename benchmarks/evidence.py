"""Is this feature real? The chosen SAE (mean ± sd over its seeds) beside every baseline
dictionary on a demo workspace, its stability across seeds, and the planted-dictionary
ground truth.

On a finished demo workspace (``--workspace``; ``--run-demo`` first runs ``medsae demo``
into it), the demo's interpret and index stages (the demo's own settings) run on every run
beside the chosen one: the other seeds of its configuration and the baseline dictionaries
(the demo runs them on the chosen run only, to hold its time). Then ``summary.json`` and the
report are rewritten, so that the report's side-by-side section shows every figure, and this
records from the summary:

* ``sae``: per figure ``{mean, sd, n}`` over the chosen configuration's seeds: ``r2`` (at the
  matched L0: the baselines take the SAE's k), ``l0``, ``recovery_at_10`` (the shared-N
  figure), ``mean_n_features``, ``monosemanticity`` (top-10 mean),
  ``detection_balanced_accuracy``, ``ranking_top2``, ``fingerprint_agreement``,
  ``text_precision_at_10``, ``pointing_game``, ``energy_in_mask``;
* ``baselines``: the same figures of each baseline, and ``findings``: where one matches or
  beats the SAE (at least its mean minus one sd; the report's rule);
* ``seed_stability``: ``mcc``, ``frac_match_0_9``, ``frac_match_0_7`` by decoder |cosine|,
  ``act_mcc``, ``act_frac_0_9``, ``act_frac_0_7`` by activation correlation (and each pair);
* ``planted``: the planted-dictionary MCC and feature-recovery F1 per architecture, as
  ``benchmarks/results/sae_train.json`` records them (null when it does not);
* ``seconds``: the wall time of the extra interpret and index runs, and ``load_average``.

Usage::

    python benchmarks/evidence.py --run-demo --workspace /tmp/evidence-demo
    python benchmarks/evidence.py --workspace WS        # an existing demo workspace

Prints JSON and writes benchmarks/results/evidence.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("MEDSAE_PROGRESS", "0")

import json
import platform
import time
from pathlib import Path
from typing import Any

from _workspace import RESULTS, demo_workspace, write_result
from medsae.evaluate.io import best_run
from medsae.evaluate.seeds import config_of, is_baseline, seed_group
from medsae.interpret import interpret
from medsae.interpret.config import InterpretConfig
from medsae.interpret.stability import ACTIVATION_KEYS
from medsae.pipeline import DEMO_CONFIG, write_summary
from medsae.report import build_report
from medsae.report.beside import FIGURES, findings
from medsae.retrieval.config import IndexConfig
from medsae.retrieval.index import build_index
from medsae.sae.io import trained_runs
from medsae.workspace import Workspace


def companions(ws: Workspace, encoder: str, run: str) -> list[str]:
    """The other seeds of the chosen configuration and every baseline dictionary."""
    names = trained_runs(ws, encoder)
    seeds = [r for r in seed_group(run, names) if r != run]
    return seeds + [r for r in names if is_baseline(r) and config_of(r) == r]


def planted(path: Path) -> dict[str, Any] | None:
    """``{arch: {mcc, f1, ...}}`` from the SAE training benchmark's results, where it has them."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    found: dict[str, Any] = {}

    def walk(node: Any, name: str) -> None:
        if isinstance(node, dict):
            keys = {k for k in node if isinstance(k, str)}
            if "mcc" in keys:
                found[name] = {k: node[k] for k in keys if not isinstance(node[k], dict | list)}
            for k, v in node.items():
                walk(v, f"{name}/{k}" if name else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                label = v.get("arch") if isinstance(v, dict) else None
                walk(v, f"{name}/{label or i}")

    walk(data, "")
    return found or None


def main() -> None:
    args, ws, demo_seconds = demo_workspace(
        __doc__.splitlines()[0], Path("/tmp/evidence-demo"), "evidence.json"
    )
    found = best_run(ws)
    if found is None:
        raise SystemExit(f"{ws.root}: no ranking; run `medsae demo --workspace {ws.root}` first")
    encoder, run = found
    interpret_cfg = InterpretConfig.model_validate(DEMO_CONFIG["interpret"])
    index_cfg = IndexConfig.model_validate(DEMO_CONFIG["index"])
    seconds: dict[str, dict[str, float]] = {}
    for other in companions(ws, encoder, run):
        t0 = time.perf_counter()
        interpret(ws, encoder, other, interpret_cfg)
        t1 = time.perf_counter()
        build_index(ws, encoder, other, index_cfg)
        seconds[other] = {
            "interpret": round(t1 - t0, 1),
            "index": round(time.perf_counter() - t1, 1),
        }
    summary = write_summary(ws)
    build_report(ws, DEMO_CONFIG["report"])
    keys = [key for key, _, _ in FIGURES]
    sae = {
        key: {
            "mean": summary.get(key),
            "sd": summary.get(key + "_sd"),
            "n": summary.get(key + "_n", summary.get("n_seeds")),
        }
        for key in keys
    }
    baselines = {
        name: {key: figures.get(key) for key in keys}
        for name, figures in (summary.get("baselines") or {}).items()
    }
    stability = summary.get("seed_stability") or {}
    report = {
        "workspace": str(ws.root),
        "encoder": encoder,
        "run": run,
        "n_seeds": summary.get("n_seeds"),
        "seed_runs": summary.get("seed_runs"),
        "sae": sae,
        "baselines": baselines,
        "findings": findings(summary),
        "seed_stability": {
            k: stability.get(k)
            for k in ("mcc", "frac_match_0_9", "frac_match_0_7", *ACTIVATION_KEYS, "pairs")
        },
        "planted": planted(RESULTS / "sae_train.json"),
        "seconds": {"companion_stages": seconds, "demo": demo_seconds},
        "load_average": round(os.getloadavg()[0], 2),
        "machine": platform.machine(),
        "command": "python benchmarks/evidence.py"
        + (" --run-demo" if args.run_demo else "")
        + f" --workspace {args.workspace}",
    }
    write_result(report, args.out)


if __name__ == "__main__":
    main()
