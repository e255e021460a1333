"""Time of the offline ``interpret`` stage (statistics, offline descriptions, embedding scores).

Builds a synthetic workspace (``medsae.testing.make_synthetic_workspace``: planted features
plus random noise features) with ``--subjects`` subjects and ``--latents`` latents, then runs
``interpret`` with the default config (every alive feature described by the offline describer,
scored by the offline text-embedding scorer on the held-out splits). Reports the stage's wall
time with the text model already loaded (``seconds``), the model load time separately
(``model_load_seconds``), and the median detection balanced accuracy of the planted and the
noise features.

Prints JSON and writes ``benchmarks/results/interpret.json``.

    python benchmarks/interpret.py             # 60 subjects (2,160 slices), 300 latents
    python benchmarks/interpret.py --quick     # 24 subjects, 128 latents
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd

from medsae.interpret.stage import interpret
from medsae.interpret.text import shared_embedder
from medsae.testing import make_synthetic_workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=60)
    parser.add_argument("--latents", type=int, default=300)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.subjects, args.latents = 24, 128
    os.environ.setdefault("MEDSAE_PROGRESS", "0")

    t0 = time.perf_counter()
    shared_embedder().embed(["warm up"])
    load = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        ws, truth = make_synthetic_workspace(Path(tmp), n_subjects=args.subjects, n_latents=args.latents)
        t0 = time.perf_counter()
        outcome = interpret(ws, truth.encoder, truth.run)
        seconds = time.perf_counter() - t0
        features = pd.read_parquet(outcome.path / "features.parquet")
        scores = json.loads((outcome.path / "scores.json").read_text())
    planted = features["latent"] < len(truth.concepts)
    result = {
        "benchmark": "interpret",
        "seconds": round(seconds, 2),
        "model_load_seconds": round(load, 2),
        "features_described": int(scores["counts"]["described"]),
        "slices": args.subjects * 36,
        "latents": args.latents,
        "median_detection_ba_all": scores["detection_balanced_accuracy"],
        "median_detection_ba_planted": float(features.loc[planted, "detection_balanced_accuracy"].median()),
        "median_detection_ba_noise": float(features.loc[~planted, "detection_balanced_accuracy"].median()),
        "ranking_top2_planted": float((features.loc[planted, "ranking_rank"] <= 2).mean()),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results" / "interpret.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
