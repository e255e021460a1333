"""Fingerprint retrieval against the fingerprint size K on a finished workspace.

For every K of ``SearchConfig.sweep_k`` (1, 3, 5, 10, 20 by default) and the SAE the ranking
chose (or ``--encoder``/``--run``), runs the index stage's evaluation
(:func:`medsae.retrieval.fingerprint_eval.evaluate_fingerprints`): test-split queries,
train + val gallery, five results per query, one per subject, never the query's own subject.
Records, per K, the modality and plane agreement and the mean dense cosine of the results for
sparse fingerprints and for dense top-K, beside full dense retrieval. Definitions (K = 1
included) are written with the figures.

    python benchmarks/fingerprint_k_sweep.py --workspace demo-workspace
"""

from __future__ import annotations

import time

import numpy as np

from _workspace import workspace_run, write_result
from medsae.data.table import read_anatomy, slices_with_split
from medsae.encode.store import EmbeddingStore
from medsae.retrieval.config import SearchConfig
from medsae.retrieval.fingerprint import FingerprintIndex
from medsae.retrieval.fingerprint_eval import evaluate_fingerprints
from medsae.sae.codes_io import load_codes

MEASURES = ("modality_agreement", "plane_agreement", "dense_cosine")


def main() -> None:
    args, ws, encoder, run = workspace_run(__doc__ or "", "fingerprint_k_sweep.json")
    table = slices_with_split(ws.slices, ws.split)
    index = FingerprintIndex.build(load_codes(ws.codes(encoder, run)), table)
    presence = np.asarray(read_anatomy(ws.slices).presence)
    embeddings = EmbeddingStore(ws.embeddings(encoder)).read()
    config = SearchConfig()
    t0 = time.perf_counter()
    result = evaluate_fingerprints(index, table, presence, embeddings, config)
    seconds = time.perf_counter() - t0

    def pick(metrics: dict[str, float | None]) -> dict[str, float | None]:
        return {
            m: None if metrics.get(m) is None else round(float(metrics[m]), 4) for m in MEASURES
        }

    report = {
        "benchmark": "fingerprint_k_sweep",
        "command": f"python benchmarks/fingerprint_k_sweep.py --workspace {args.workspace}",
        "encoder": encoder,
        "run": run,
        "queries": result["queries"],
        "n": result["n"],
        "query_splits": result["query_splits"],
        "gallery_splits": result["gallery_splits"],
        "excluded_latents": result["excluded_latents"],
        "sweep_k": {
            k: {method: pick(m) for method, m in per.items()}
            for k, per in result["sweep_k"].items()
        },
        "dense_full": pick(result["methods"]["dense_full"]),
        "definitions": result["definitions"],
        "seconds": round(seconds, 2),
    }
    write_result(report, args.out)


if __name__ == "__main__":
    main()
