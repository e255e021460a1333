"""Downstream artifacts in the documented formats, for tests of the report and the browser.

:func:`write_fixture_artifacts` completes a workspace made by
:func:`tests.support.synthetic.make_synthetic_workspace` with ``eval``, ``ranking``, ``features`` and
``index`` artifacts (with manifests) whose figures are *derived from the planted codes*, so
that the report and the browser can be tested before (and independently of) the real
evaluate and interpret stages. The figures are plausible, not measured: never use them for
anything but tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medsae.data.table import read_slices
from medsae.evaluate import io as ev
from medsae.interpret.io import FEATURES, SCORES
from medsae.retrieval.io import FINGERPRINT_EVAL, TEXT_RETRIEVAL
from medsae.sae.codes_io import load_codes, load_codes_meta
from medsae.workspace import StageResult, Workspace, artifact_key, run_stage, write_json_atomic
from tests.support.synthetic import SyntheticTruth

TEXT_QUERIES: tuple[tuple[str, str], ...] = (
    ("axial CT slice", "plane"),
    ("MRI of a female patient", "modality"),
    ("slice through the liver", "structure"),
)


def _feature_table(ws: Workspace, truth: SyntheticTruth) -> pd.DataFrame:
    table = read_slices(ws.slices)
    codes = load_codes(ws.codes(truth.encoder, truth.run)).tocsc()
    levels = load_codes_meta(ws.codes(truth.encoder, truth.run)).get("levels") or [truth.n_latents]
    rows = []
    n = codes.shape[0]
    for j in range(truth.n_latents):
        col = codes.getcol(j)
        idx = col.indices
        vals = col.data
        order = idx[np.argsort(-vals, kind="stable")]
        seen: set[str] = set()
        top: list[str] = []
        for r in order:
            subj = str(table.at[int(r), "subject_key"])
            if subj not in seen:
                seen.add(subj)
                top.append(str(table.at[int(r), "slice_id"]))
            if len(top) >= 8:
                break
        planted = j < len(truth.concepts)
        concept = truth.concepts[j] if planted else None
        scanner = j == len(truth.concepts)  # one feature described by a scanner setting
        level = next((lv for lv in sorted(levels) if j < lv), levels[-1])
        rows.append(
            {
                "latent": j,
                "level": int(level),
                "frequency": float(len(idx) / n),
                "mean_activation": float(vals.mean()) if len(vals) else 0.0,
                "max_activation": float(vals.max()) if len(vals) else 0.0,
                "top_slice_ids": top,
                "description": f"slices showing {concept.replace('=', ' ')}"
                if concept
                else (
                    "axial slices; 3 T scanners; not in view: lungs"
                    if scanner
                    else "unclear pattern"
                ),
                "describer": "fixture",
                "rule": [concept]
                if concept
                else (["plane=axial", "field_strength=3", "not group=lungs"] if scanner else []),
                "rule_min": 1 if concept else (2 if scanner else 0),
                "detection_balanced_accuracy": 0.92 if planted else 0.51,
                "detection_f1": 0.9 if planted else 0.1,
                "detection_auroc": 0.95 if planted else 0.5,
                "ranking_rank": 1.0 if planted else 40.0,
                "concept": concept,
                "concept_auroc": 0.97 if planted else 0.52,
            }
        )
    return pd.DataFrame(rows)


def write_fixture_artifacts(ws: Workspace, truth: SyntheticTruth, runs: int = 2) -> None:
    """Write eval (for ``runs`` run names), ranking, features and index fixture artifacts."""
    enc, run = truth.encoder, truth.run
    codes_key = artifact_key(ws.codes(enc, run))
    features = _feature_table(ws, truth)
    run_names = [run] + [f"{run}-alt{i}" for i in range(1, runs)]

    for i, name in enumerate(run_names):
        r2 = 0.9 - 0.08 * i
        l0 = 12.0 + 10 * i

        def build_eval(tmp: Path, r2: float = r2, l0: float = l0, i: int = i) -> StageResult:
            recon = {
                split: {
                    str(truth.n_latents): {
                        "r2": r2,
                        "fvu": 1 - r2,
                        "r2_grand_mean": r2 + 0.03,
                        "cosine": 0.95,
                        "l0": l0,
                        "dead_fraction": 0.05,
                        "dense_fraction": 0.0,
                        "alive_fraction": 0.95,
                    }
                }
                for split in ("val", "test")
            }
            write_json_atomic(tmp / ev.RECONSTRUCTION, recon)
            summary = {
                "r2": r2,
                "l0": l0,
                "alive_fraction": 0.95,
                "recovery_at_10": 0.8 - 0.1 * i,
                "monosemanticity": 0.7,
                "dense_auroc": 0.9,
            }
            write_json_atomic(tmp / ev.SUMMARY, summary)
            ks = [1, 2, 5, 10, 20]
            pd.DataFrame(
                {
                    "k": ks,
                    "recovery": [min(1.0, (0.3 + 0.05 * k) * (1 - 0.1 * i)) for k in ks],
                    "split": "test",
                }
            ).to_parquet(tmp / ev.RECOVERY, index=False)
            pd.DataFrame(
                {"group": ["modality", "plane", "structure"], "monosemanticity": [0.9, 0.8, 0.6]}
            ).to_parquet(tmp / ev.MONOSEMANTICITY, index=False)
            features[["latent", "concept", "concept_auroc", "frequency"]].rename(
                columns={"concept_auroc": "auroc"}
            ).assign(concept_kind="metadata", f1=0.8).to_parquet(tmp / ev.CONCEPTS, index=False)
            pd.DataFrame(
                {
                    "task": ["modality", "plane"],
                    "auroc_dense": [0.99, 0.97],
                    "auroc_sparse": [0.98, 0.9],
                }
            ).to_parquet(tmp / ev.PROBES, index=False)
            write_json_atomic(tmp / ev.SKIPPED_TASKS, [])
            return StageResult(counts={"runs": 1})

        run_stage(
            ws.eval(enc, name),
            "evaluate",
            {"run": name},
            {"codes": codes_key},
            build_eval,
            quiet=True,
        )

    def build_rank(tmp: Path) -> StageResult:
        rows = []
        for i, name in enumerate(run_names):
            s = json.loads((ws.eval(enc, name) / ev.SUMMARY).read_text())
            rows.append({"encoder": enc, "run": name, **s, "rank": i + 1})
        df = pd.DataFrame(rows)
        df.to_csv(tmp / ev.TABLE1_CSV, index=False)
        (tmp / ev.TABLE1_MD).write_text(df.to_string(index=False))
        (tmp / ev.FIGURES).mkdir()
        write_json_atomic(
            tmp / ev.RANKING, {"best": {"encoder": enc, "run": run}, "order": run_names}
        )
        return StageResult(counts={"runs": len(rows)})

    eval_keys = {f"eval:{n}": artifact_key(ws.eval(enc, n)) for n in run_names}
    run_stage(ws.ranking, "rank", {}, eval_keys, build_rank, quiet=True)

    def build_features(tmp: Path) -> StageResult:
        features.to_parquet(tmp / FEATURES, index=False)
        write_json_atomic(
            tmp / SCORES,
            {
                "describer": "fixture",
                "detection_balanced_accuracy": float(
                    features["detection_balanced_accuracy"].median()
                ),
                "detection_balanced_accuracy_median": float(
                    features["detection_balanced_accuracy"].median()
                ),
                "detection_balanced_accuracy_mean": float(
                    features["detection_balanced_accuracy"].mean()
                ),
                "n_features": len(features),
                "failures": 0,
                "detection": {
                    "by_kind": {
                        "tpr_strong": {"median": 1.0, "mean": 0.95, "n": len(features)},
                        "tpr_weak": {"median": 0.7, "mean": 0.72, "n": len(features)},
                        "tnr_hard": {"median": 0.5, "mean": 0.55, "n": len(features)},
                        "tnr_random": {"median": 0.9, "mean": 0.88, "n": len(features)},
                    }
                },
            },
        )
        return StageResult(counts={"features": len(features)})

    run_stage(
        ws.features(enc, run),
        "interpret",
        {"run": run},
        {"codes": codes_key},
        build_features,
        quiet=True,
    )

    read_slices(ws.slices)

    def build_index(tmp: Path) -> StageResult:
        try:
            from medsae.retrieval.fingerprint import FingerprintIndex
        except ImportError:  # the index arrays are optional for the report and the browser
            pass
        else:
            FingerprintIndex.build(load_codes(ws.codes(enc, run)), read_slices(ws.slices)).save(tmp)
        sparse = {
            "modality_agreement": 0.97,
            "plane_agreement": 0.93,
            "sex_agreement": 0.61,
            "structure_jaccard": 0.55,
        }
        write_json_atomic(
            tmp / FINGERPRINT_EVAL,
            {
                "fingerprint_agreement": 0.95,
                "modality_agreement": 0.97,
                "plane_agreement": 0.93,
                "methods": {
                    "sparse": sparse,
                    "dense_topk": dict(sparse, modality_agreement=0.9),
                    "dense_full": sparse,
                },
                "k": 5,
                "n": 5,
            },
        )
        queries = []
        for i, (q, aspect) in enumerate(TEXT_QUERIES):
            queries.append(
                {
                    "id": f"q{i}",
                    "text": q,
                    "source": "fixture",
                    "precision_at_n": 0.7,
                    "aspects": {aspect: 0.7},
                    "features": [
                        {"latent": 2, "weight": 1.0, "similarity": 0.8, "description": "axial"}
                    ],
                }
            )
        queries.append(  # no relevant slice in the gallery: listed, not scored
            {
                "id": "q-none",
                "text": "coronal CT kidneys",
                "source": "fixture",
                "precision_at_n": 0.0,
                "answerable": False,
                "aspects": {"anatomy": 0.0},
                "features": [],
            }
        )
        write_json_atomic(
            tmp / TEXT_RETRIEVAL,
            {
                "text_precision_at_10": 0.7,
                "precision_at_n": 0.7,
                "n": 10,
                "aspects": {a: 0.7 for _, a in TEXT_QUERIES},
                "queries": queries,
            },
        )
        return StageResult(counts={"queries": len(queries)})

    run_stage(
        ws.index(enc, run),
        "index",
        {"run": run},
        {"features": artifact_key(ws.features(enc, run))},
        build_index,
        quiet=True,
    )
