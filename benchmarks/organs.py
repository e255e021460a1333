"""Organ rediscovery on a demo workspace: does the token SAE localise better than the rest?

Reads (never recomputes) a finished demo workspace (``--workspace``; ``--run-demo`` first
runs ``medsae demo`` into it) and records, from its artifacts:

* ``methods``: mAP, Purity@16, Coverage@0.3 and the pointing game of the token SAE, the
  image-level SAE's exact attribution maps, PCA, k-means and chance (``organs.json`` of the
  token SAE's evaluation, docs/evaluate.md);
* ``token_store_mb_per_1000_slices``: the token shards' disk size per 1,000 slices;
* ``token_training_samples_per_s``: training samples of the token SAE over the train
  stage's wall time of its artifact (the whole stage: statistics, training, metrics);
* ``extra_demo_seconds``: the build times of the token artifacts (token store, token SAE,
  its codes and evaluation) as their manifests record them, beside the sum over every
  artifact of the demo (``demo_stage_seconds``), and the wall time of ``--run-demo``;
* ``load_average``: the machine's 1-minute load when it ran (timings on a shared machine
  are read beside it).

Usage::

    python benchmarks/organs.py --run-demo --workspace /tmp/organs-demo
    python benchmarks/organs.py --workspace WS        # an existing demo workspace

Prints JSON and writes benchmarks/results/organs.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("MEDSAE_PROGRESS", "0")

import json
import platform
from pathlib import Path
from typing import Any

from _workspace import demo_workspace
from medsae.encode.tokens import TokenStore, is_token_store
from medsae.evaluate.io import ORGANS, organ_runs
from medsae.sae.io import METRICS
from medsae.workspace import Workspace, read_manifest

METHODS = ("token_sae", "attribution", "pca", "kmeans", "chance")


def seconds(folder: Path) -> float:
    """The build time an artifact's manifest records (0 when it has none)."""
    return float(((read_manifest(folder) or {}).get("timings") or {}).get("seconds") or 0.0)


def collect(ws: Workspace) -> dict[str, Any]:
    runs = organ_runs(ws)
    if not runs:
        raise SystemExit(f"{ws.root}: no token SAE with organ rediscovery; run the demo first")
    enc, run = runs[0]
    organs = json.loads((ws.eval(enc, run) / ORGANS).read_text())
    store = TokenStore(ws.embeddings(enc))
    metrics = json.loads((ws.sae(enc, run) / METRICS).read_text())
    samples = int(metrics["training"]["samples"])
    train_s = seconds(ws.saes(enc))
    token_parts = {
        "encode_tokens": seconds(ws.embeddings(enc)),
        "train": train_s,
        "codes": seconds(ws.codes(enc, run)),
        "evaluate": seconds(ws.eval(enc, run)),
    }
    every: dict[str, float] = {}
    for manifest in ws.root.rglob("manifest.json"):
        rel = manifest.parent.relative_to(ws.root)
        if any(p.startswith(".") for p in rel.parts) or rel.parts[0] == "report":
            continue
        stage = str((read_manifest(manifest.parent) or {}).get("stage", rel.parts[0]))
        every[stage] = round(every.get(stage, 0.0) + seconds(manifest.parent), 2)
    return {
        "token_sae": f"{enc}/{run}",
        "attribution_run": (organs.get("reasons") or {}).get("attribution_run"),
        "status": organs.get("status"),
        "methods": {m: organs.get(m) for m in METHODS},
        "n_structures": organs.get("n_structures"),
        "n_select_slices": organs.get("n_select_slices"),
        "n_scored_slices": organs.get("n_scored_slices"),
        "grid": store.grid,
        "token_dim": store.dim,
        "token_parts": store.info.get("parts"),
        "tokens": store.n_tokens,
        "slices": store.n_slices,
        "token_store_mb_per_1000_slices": store.mb_per_1000_slices(),
        "token_training_samples": samples,
        "token_training_seconds": round(train_s, 2),
        "token_training_samples_per_s": round(samples / train_s, 1) if train_s else None,
        "extra_demo_seconds": round(sum(token_parts.values()), 2),
        "extra_demo_seconds_by_part": {k: round(v, 2) for k, v in token_parts.items()},
        "demo_stage_seconds": every,
        "demo_stage_seconds_total": round(sum(every.values()), 2),
    }


def main() -> None:
    args, ws, wall = demo_workspace(
        __doc__.splitlines()[0], Path("/tmp/organs-demo"), "organs.json"
    )
    if not any(is_token_store(ws.embeddings(e)) for e in ws.encoders()):
        raise SystemExit(f"{ws.root}: no token store (the demo writes one with [encode] tokens)")
    out = {
        **collect(ws),
        "demo_wall_seconds": wall,
        "load_average": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    text = json.dumps(out, indent=2, sort_keys=True)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
