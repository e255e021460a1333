"""Text-to-image retrieval on the query suite's report half, before and after concepts.

On a finished workspace (``features.parquet`` with descriptions and ``profiles.parquet``,
codes of the same run) evaluates the packaged suite (``medsae.retrieval.queries``, split by
intent into a tune half and a report half, seed ``SPLIT_SEED``) with

* ``before``: ``mode="coverage"``, the previous default (descriptions only);
* ``after``: the defaults (``mode="concepts"``: query understanding, concept profiles,
  composition);

and reports per half: precision@10 overall and per aspect, the achievable precision (an
oracle that reads the labels) and the ratio, and the paraphrase consistency (mean top-10
overlap of the five wordings of an intent). Then twelve queries worded independently of the
suite (``OWN``), reported apart, and the time per query on an index of ``--latency-rows``
rows made by repeating the workspace's codes (new subject ids per copy; the features,
profiles and descriptions of the workspace), p50 / p95 over the report half's queries.

Prints JSON and writes ``benchmarks/results/text_retrieval.json``.

    python benchmarks/text_retrieval.py --workspace demo-workspace --latency-rows 1000000
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from _workspace import workspace_run, write_result
from medsae.data.table import read_anatomy, slices_with_split
from medsae.interpret.probes import read_probes
from medsae.interpret.profiles import read_profiles
from medsae.retrieval.config import AskConfig
from medsae.retrieval.fingerprint import FingerprintIndex
from medsae.retrieval.language import TextRetriever
from medsae.retrieval.queries import Query, load_queries, validate_truth
from medsae.retrieval.text_eval import evaluate_text_retrieval
from medsae.sae.codes_io import load_codes

_A3 = ("modality", "plane", "anatomy")
OWN: list[tuple[str, dict[str, Any]]] = [
    (
        "show me the bladder on an axial CT",
        {"modality": "CT", "plane": "axial", "structures_any": ["urinary_bladder"]},
    ),
    (
        "MRI, coronal view, through both kidneys",
        {"modality": "MR", "plane": "coronal", "structures_any": ["kidney_left", "kidney_right"]},
    ),
    (
        "sagittal CT of the lower back",
        {
            "modality": "CT",
            "plane": "sagittal",
            "structures_any": [f"vertebrae_L{i}" for i in range(1, 6)],
        },
    ),
    (
        "transverse MR image at the level of the liver",
        {"modality": "MR", "plane": "axial", "structures_any": ["liver"]},
    ),
    (
        "CT of the chest in the frontal plane",
        {"modality": "CT", "plane": "coronal", "groups_any": ["thorax"]},
    ),
    (
        "axial MRI through the prostate",
        {"modality": "MR", "plane": "axial", "structures_any": ["prostate"]},
    ),
    (
        "coronal computed tomography showing the stomach",
        {"modality": "CT", "plane": "coronal", "structures_any": ["stomach"]},
    ),
    (
        "hip joints, axial MRI",
        {
            "modality": "MR",
            "plane": "axial",
            "structures_any": ["hip_left", "hip_right", "femur_left", "femur_right"],
        },
    ),
    ("brain MRI sagittal", {"modality": "MR", "plane": "sagittal", "structures_any": ["brain"]}),
    (
        "CT image through the pancreas in the axial plane",
        {"modality": "CT", "plane": "axial", "structures_any": ["pancreas"]},
    ),
    (
        "sagittal MR of the pelvis",
        {"modality": "MR", "plane": "sagittal", "groups_any": ["pelvis"]},
    ),
    ("heart on a coronal MRI", {"modality": "MR", "plane": "coronal", "structures_any": ["heart"]}),
]
"""Twelve queries worded independently of the suite (modality, plane and a structure)."""


def own_queries() -> list[Query]:
    out = []
    for i, (text, truth) in enumerate(OWN):
        validate_truth(truth, f"OWN[{i}]")
        out.append(Query(f"own-{i:02d}", text, truth, _A3, "own"))
    return out


def tiled_index(codes: sp.csr_matrix, table: pd.DataFrame, rows: int) -> FingerprintIndex:
    """An index of ``rows`` rows: the codes repeated, each copy with its own subjects."""
    copies = -(-rows // codes.shape[0])
    big = sp.vstack([codes] * copies, format="csr")[:rows]
    parts = []
    for c in range(copies):
        t = table.copy()
        t["subject_key"] = t["subject_key"].astype(str) + f"#{c}"
        parts.append(t)
    return FingerprintIndex.build(big, pd.concat(parts, ignore_index=True).iloc[:rows])


def latency(retriever: TextRetriever, texts: list[str]) -> dict[str, float]:
    """Wall and CPU milliseconds per query (read, choose, rank), the embedder warmed: as a
    session asks them (the ranker's evidence cache filling as it goes, emptied first), and
    cold (the cache emptied before every query: every concept computed afresh)."""
    for t in texts[:3]:
        retriever.answer(t)
    out: dict[str, float] = {"queries": len(texts)}
    for prefix, cold in (("", False), ("cold_", True)):
        retriever.clear_caches()
        wall, cpu = [], []
        for t in texts:
            if cold:
                retriever.clear_caches()
            w0, c0 = time.perf_counter(), time.process_time()
            retriever.answer(t)
            wall.append((time.perf_counter() - w0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
        out |= {
            f"{prefix}p50_ms": float(np.percentile(wall, 50)),
            f"{prefix}p95_ms": float(np.percentile(wall, 95)),
            f"{prefix}p50_cpu_ms": float(np.percentile(cpu, 50)),
            f"{prefix}p95_cpu_ms": float(np.percentile(cpu, 95)),
        }
    return out


def _brief(out: dict[str, Any]) -> dict[str, Any]:
    keep = {k: out[k] for k in ("mode", "halves", "all", "unanswerable")}
    keep["queries"] = [
        {
            k: e[k]
            for k in (
                "id",
                "half",
                "text",
                "reading",
                "precision_at_n",
                "max_achievable",
                "aspects",
                "answerable",
            )
        }
        for e in out["queries"]
    ]
    return keep


def main() -> None:
    sys.argv, rows_arg = _pop_option(sys.argv, "--latency-rows")
    args, ws, encoder, run = workspace_run(__doc__.splitlines()[0], "text_retrieval.json")
    table = slices_with_split(ws.slices, ws.split)
    codes = load_codes(ws.codes(encoder, run))
    index = FingerprintIndex.build(codes, table)
    anatomy = read_anatomy(ws.slices)
    presence = np.asarray(anatomy.presence)
    features = pd.read_parquet(ws.features(encoder, run) / "features.parquet")
    profiles = read_profiles(ws.features(encoder, run))
    probes = read_probes(ws.features(encoder, run))
    queries = load_queries()
    report: dict[str, Any] = {
        "benchmark": "text_retrieval",
        "workspace": str(args.workspace),
        "encoder": encoder,
        "run": run,
        "queries": len(queries),
        "described_features": int(features["description"].notna().sum()),
        "settings": {},
        "own_queries": {},
    }
    embeddings = None
    for name, cfg in (("before", AskConfig(mode="coverage")), ("after", AskConfig())):
        retriever = TextRetriever(
            index,
            features,
            None,
            cfg,
            description_embeddings=embeddings,
            profiles=profiles,
            probes=probes,
        )
        embeddings = retriever.desc_emb
        gallery = table["split"].isin(cfg.gallery_splits).to_numpy()
        out = evaluate_text_retrieval(
            retriever, queries, table, presence, anatomy.structures, gallery
        )
        report["settings"][name] = _brief(out)
        own = evaluate_text_retrieval(
            retriever, own_queries(), table, presence, anatomy.structures, gallery
        )
        report["own_queries"][name] = {
            "precision_at_10": own["all"]["precision_at_n"],
            "achievable": own["all"]["achievable"],
            "aspects": own["all"]["aspects"],
            "queries": [
                {k: e[k] for k in ("text", "reading", "precision_at_n", "max_achievable")}
                for e in own["queries"]
            ],
        }
        report["split"] = out["split"]
        report["gallery_subjects"] = out["gallery_subjects"]
    after = report["settings"]["after"]["halves"]["report"]
    report["text_precision_at_10"] = after["precision_at_n"]
    report["text_precision_at_10_achievable"] = after["achievable"]
    if rows_arg:
        n_rows = int(rows_arg)
        big = tiled_index(codes, table, n_rows)
        retriever = TextRetriever(
            big,
            features,
            None,
            AskConfig(),
            description_embeddings=embeddings,
            profiles=profiles,
            probes=probes,
        )
        texts = [q.text for q in queries if q.id in set(report["split"]["report"])]
        # once per index, before the first query (the browser does it while warming up)
        probe_pass = {k: round(s * 1000, 1) for k, s in retriever.prepare_probes().items()}
        report["latency"] = {
            "rows": n_rows,
            "probe_pass_ms": probe_pass,
            **latency(retriever, texts + [t for t, _ in OWN]),
        }
    write_result(report, args.out)


def _pop_option(argv: list[str], name: str) -> tuple[list[str], str | None]:
    """``argv`` without ``name VALUE``, and the value (None when absent)."""
    if name not in argv:
        return argv, None
    i = argv.index(name)
    return argv[:i] + argv[i + 2 :], argv[i + 1]


if __name__ == "__main__":
    main()
