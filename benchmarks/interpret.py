"""Time of the offline ``interpret`` stage (statistics, offline descriptions, embedding scores).

Builds a synthetic workspace (``tests.support.synthetic.make_synthetic_workspace``: planted features
plus random noise features) with ``--subjects`` subjects and ``--latents`` latents, then runs
``interpret`` with the default config (every alive feature described by the offline describer,
scored by the offline text-embedding scorer on the held-out splits). Reports the stage's wall
time with the text model already loaded (``seconds``), the model load time separately
(``model_load_seconds``), and the median detection balanced accuracy of the planted and the
noise features.

Prints JSON and writes ``benchmarks/results/interpret.json``.

    python benchmarks/interpret.py             # 60 subjects (2,160 slices), 300 latents
    python benchmarks/interpret.py --quick     # 24 subjects, 128 latents
    python benchmarks/interpret.py --workspace demo-workspace   # a finished workspace (the
        # demo's): reruns its interpret stage for the best run; writes interpret_workspace.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from _support import make_synthetic_workspace
from medsae.evaluate.io import resolve_run
from medsae.interpret.io import read_features, read_scores
from medsae.interpret.stage import interpret
from medsae.llm.embed import shared_embedder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=60)
    parser.add_argument("--latents", type=int, default=300)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--workspace", type=Path, default=None, help="A finished workspace instead."
    )
    args = parser.parse_args()
    if args.quick:
        args.subjects, args.latents = 24, 128
    os.environ.setdefault("MEDSAE_PROGRESS", "0")

    t0 = time.perf_counter()
    shared_embedder().embed(["warm up"])
    load = time.perf_counter() - t0
    if args.workspace is not None:
        bench_workspace(args.workspace, load)
        return
    with tempfile.TemporaryDirectory() as tmp:
        ws, truth = make_synthetic_workspace(
            Path(tmp), n_subjects=args.subjects, n_latents=args.latents
        )
        t0 = time.perf_counter()
        outcome = interpret(ws, truth.encoder, truth.run)
        seconds = time.perf_counter() - t0
        features = read_features(outcome.path)
        scores = read_scores(outcome.path)
    planted = features["latent"] < len(truth.concepts)
    result = {
        "benchmark": "interpret",
        "seconds": round(seconds, 2),
        "model_load_seconds": round(load, 2),
        "features_described": int(scores["counts"]["described"]),
        "slices": args.subjects * 36,
        "latents": args.latents,
        "median_detection_ba_all": scores["detection_balanced_accuracy"],
        "median_detection_ba_planted": float(
            features.loc[planted, "detection_balanced_accuracy"].median()
        ),
        "median_detection_ba_noise": float(
            features.loc[~planted, "detection_balanced_accuracy"].median()
        ),
        "ranking_top2_planted": float((features.loc[planted, "ranking_rank"] <= 2).mean()),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    write(result, "interpret.json")


def bench_workspace(root: Path, load: float) -> None:
    """Rerun ``interpret`` (forced) on the default run of a finished workspace."""
    from medsae.workspace import Workspace

    ws = Workspace(root)
    encoder, run = resolve_run(ws)
    t0 = time.perf_counter()
    outcome = interpret(ws, encoder, run, force=True)
    seconds = time.perf_counter() - t0
    scores = read_scores(outcome.path)
    result = {
        "benchmark": "interpret_workspace",
        "workspace": str(root),
        "encoder": encoder,
        "run": run,
        "seconds": round(seconds, 2),
        "model_load_seconds": round(load, 2),
        "features_described": int(scores["counts"]["described"]),
        "detection_balanced_accuracy": scores["detection_balanced_accuracy"],
        "detection_auroc_median": scores["detection"]["auroc"]["median"],
        "labels_scorer_balanced_accuracy": scores["detection_by_scorer"]["labels"][
            "balanced_accuracy"
        ]["median"],
        "ranking_top2": scores["ranking"]["top2"],
        "ranking_mean_rank": scores["ranking"]["mean_rank"],
        "detection_by_kind_median": {
            k: v["median"] for k, v in scores["detection"].get("by_kind", {}).items()
        },
        "cpu_count": os.cpu_count(),
    }
    write(result, "interpret_workspace.json")


def write(result: dict, name: str) -> None:
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
