"""Text-to-image retrieval on the query suite under several ``ask`` settings.

On a finished workspace (descriptions in ``WS/features/<encoder>/<run>/features.parquet``,
codes of the same run), evaluates the shipped query suite (precision@10, one result per
subject, gallery = the ``AskConfig.gallery_splits``) once per setting: ``aspects``,
``similarity``, ``coverage`` with the sum combination and no coverage bonus, and the
defaults (``coverage``, bonus 0.4, backfill 0.5, product). Reports the mean precision@10 and
its modality / plane / anatomy / demographics parts per setting.

Prints JSON and writes ``benchmarks/results/ask_modes.json``.

    python benchmarks/ask_modes.py --workspace demo-workspace
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from _workspace import workspace_run, write_result
from medsae.data.table import read_anatomy, slices_with_split
from medsae.retrieval.config import AskConfig
from medsae.retrieval.fingerprint import FingerprintIndex
from medsae.retrieval.language import TextRetriever
from medsae.retrieval.queries import load_queries
from medsae.retrieval.text_eval import evaluate_text_retrieval
from medsae.sae.codes_io import load_codes

SETTINGS: dict[str, dict[str, Any]] = {
    "aspects": {"mode": "aspects", "combine": "sum"},
    "similarity": {"mode": "similarity", "combine": "sum"},
    "coverage_sum_no_bonus": {"mode": "coverage", "combine": "sum", "coverage_bonus": 0.0},
    "defaults": {},
}


def main() -> None:
    args, ws, encoder, run = workspace_run(__doc__.splitlines()[0], "ask_modes.json")
    table = slices_with_split(ws.slices, ws.split)
    index = FingerprintIndex.build(load_codes(ws.codes(encoder, run)), table)
    anatomy = read_anatomy(ws.slices)
    features = pd.read_parquet(ws.features(encoder, run) / "features.parquet")
    queries = load_queries()
    results: dict[str, Any] = {}
    embeddings = None
    for name, overrides in SETTINGS.items():
        cfg = AskConfig(**overrides)
        retriever = TextRetriever(index, features, None, cfg, description_embeddings=embeddings)
        embeddings = retriever.desc_emb  # embed the descriptions once
        gallery = table["split"].isin(cfg.gallery_splits).to_numpy()
        out = evaluate_text_retrieval(
            retriever, queries, table, np.asarray(anatomy.presence), anatomy.structures, gallery
        )
        results[name] = {
            "settings": cfg.model_dump(
                include={"mode", "combine", "coverage_bonus", "backfill", "features"}
            ),
            "precision_at_10": out["precision_at_n"],
            "aspects": out["aspects"],
        }
    report = {
        "benchmark": "ask_modes",
        "workspace": str(args.workspace),
        "encoder": encoder,
        "run": run,
        "queries": len(queries),
        "gallery_subjects": out["gallery_subjects"],
        "settings": results,
    }
    write_result(report, args.out)


if __name__ == "__main__":
    main()
