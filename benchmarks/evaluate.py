"""Benchmark: all probes and the recovery curve for one SAE at the paper's scale.

Synthetic data of the target size (8,192 latents, 10,000 training, 5,000 validation and 5,000
test slices, about 40 tasks, 1,024-d dense embeddings, ~64 active latents per slice) goes
through the same library calls as ``medsae evaluate``: dense and sparse probes (the
configured L2 rule: by default one fixed strength, C = 1) and performance recovery (N in
1..100, L1 path and mean difference). Monosemanticity and the concept map are timed beside them.

    python benchmarks/evaluate.py [--quick]

Prints JSON and writes ``benchmarks/results/evaluate.json`` (key ``seconds`` = probes +
recovery, plus per-part timings, and the process CPU time up to the end of recovery: on a
busy shared machine the wall time overstates the cost). Target: ``seconds`` <= 300 on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from medsae.evaluate.concepts import concept_map, labels_from_tasks
from medsae.evaluate.config import EvaluateConfig
from medsae.evaluate.monosemantic import monosemanticity
from medsae.evaluate.probes import run_probes, scale_sparse, standardize_dense
from medsae.evaluate.recovery import recovery_with_config, task_rows
from medsae.evaluate.tasks import Task


def make_data(
    n_train: int, n_eval: int, n_latents: int, dim: int, n_tasks: int, l0: int, seed: int = 0
):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    n = n_train + 2 * n_eval
    n_factors = n_tasks + 8
    factors = rng.random((n, n_factors)) < rng.uniform(0.1, 0.5, n_factors)
    tasks = []
    for t in range(n_tasks):
        if t % 5 == 0:  # a 3-class task from two factors
            labels = factors[:, t].astype(np.int64) + (factors[:, t] & factors[:, t + 1])
            classes: tuple[str, ...] = ("a", "b", "c")
        else:
            labels = factors[:, t].astype(np.int64)
            classes = ("absent", "present")
        flip = rng.random(n) < 0.05
        labels = np.where(flip, rng.integers(0, len(classes), n), labels)
        if t % 4 == 1:
            labels = np.where(rng.random(n) < 0.2, -1, labels)  # missing labels
        tasks.append(Task(f"task{t:02d}", "metadata", classes, labels))
    mix = rng.normal(size=(n_factors, dim)) / np.sqrt(n_factors)
    dense = (factors @ mix + 0.5 * rng.normal(size=(n, dim))).astype(np.float32)
    # codes: latents 0..4*n_factors-1 follow the factors (noisily); the rest fire at random
    n_planted = 4 * n_factors
    planted_vals = np.repeat(factors, 4, axis=1) & (rng.random((n, n_planted)) < 0.8)
    freq = rng.pareto(1.5, n_latents - n_planted) + 1
    freq = freq / freq.sum() * max(l0 - int(planted_vals.sum(1).mean()), 1)
    freq = np.minimum(freq, 0.5)
    cols, rows_idx = [], []
    for j, p in enumerate(freq):
        r = np.flatnonzero(rng.random(n) < p)
        rows_idx.append(r)
        cols.append(np.full(len(r), n_planted + j))
    pr, pc = np.nonzero(planted_vals)
    row = np.concatenate([pr, *rows_idx])
    col = np.concatenate([pc, *cols])
    val = rng.uniform(0.1, 2.0, len(row)).astype(np.float32)
    codes = sp.csr_matrix((val, (row, col)), shape=(n, n_latents), dtype=np.float32)
    rows = {
        "train": np.arange(n_train),
        "val": np.arange(n_train, n_train + n_eval),
        "test": np.arange(n_train + n_eval, n),
    }
    return tasks, dense, codes, rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="A small size for a smoke run.")
    args = parser.parse_args()
    size = (
        {"n_train": 2000, "n_eval": 1000, "n_latents": 2048, "dim": 256, "n_tasks": 10, "l0": 32}
        if args.quick
        else {
            "n_train": 10_000,
            "n_eval": 5_000,
            "n_latents": 8192,
            "dim": 1024,
            "n_tasks": 40,
            "l0": 64,
        }
    )
    cfg = EvaluateConfig()
    timings: dict[str, float] = {}
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    tasks, dense, codes, rows = make_data(**size)
    timings["make_data"] = time.perf_counter() - t0

    t = time.perf_counter()
    dense_s = standardize_dense({k: dense[r] for k, r in rows.items()})
    raw = {k: codes[r] for k, r in rows.items()}
    sparse_s, kept = scale_sparse(raw)
    timings["scaling"] = time.perf_counter() - t

    t = time.perf_counter()
    dense_res, _ = run_probes(
        dense_s, rows, tasks, cfg.l2_grid, cfg.max_iter, "dense", cfg.l2_select, cfg.probe_c
    )
    timings["probes_dense"] = time.perf_counter() - t
    t = time.perf_counter()
    sparse_res, chosen = run_probes(
        sparse_s, rows, tasks, cfg.l2_grid, cfg.max_iter, "sparse", cfg.l2_select, cfg.probe_c
    )
    timings["probes_sparse"] = time.perf_counter() - t

    dense_auc = {(r["task"], r["split"]): r["roc_auc"] for r in dense_res}
    t = time.perf_counter()
    heads, scored = recovery_with_config(
        sparse_s, raw["train"][:, kept], rows, tasks, cfg, chosen["coef"]
    )
    rec = task_rows(heads, rows, scored, dense_auc, cfg.recovery_dense_floor)
    timings["recovery"] = time.perf_counter() - t
    cpu_probes_recovery = time.process_time() - cpu0

    held = np.concatenate([rows["val"], rows["test"]])
    t = time.perf_counter()
    presence = np.stack([(tk.labels == 1).astype(np.int8) for tk in tasks], 1)
    subjects = held // 10  # ten slices per subject
    monosemanticity(codes[held], presence[held], subjects, top_n=10, draws=cfg.mono_baseline_draws)
    timings["monosemanticity"] = time.perf_counter() - t
    t = time.perf_counter()
    concept_map(
        codes[held], labels_from_tasks(tasks, held), cfg.concept_min_fires, cfg.concept_min_fires
    )
    timings["concepts"] = time.perf_counter() - t

    seconds = (
        timings["scaling"]
        + timings["probes_dense"]
        + timings["probes_sparse"]
        + timings["recovery"]
    )
    test_rec = [
        r["recovery"]
        for r in rec
        if r["split"] == "test" and r["n_features"] == 10 and r["method"] == "l1"
    ]
    shared_rec = [
        r["recovery"]
        for r in rec
        if r["split"] == "test" and r["n_features"] == 10 and r["mode"] == "shared"
    ]
    result = {
        "benchmark": "evaluate",
        "command": "python benchmarks/evaluate.py" + (" --quick" if args.quick else ""),
        "quick": args.quick,
        "size": {
            **size,
            "n_heads": sum(tk.n_heads for tk in tasks),
            "nnz_per_row": codes.nnz / codes.shape[0],
        },
        "seconds": round(seconds, 2),
        "seconds_all_parts": round(seconds + timings["monosemanticity"] + timings["concepts"], 2),
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "cpu_seconds_to_recovery": round(cpu_probes_recovery, 2),
        "target_seconds": 300,
        "met": seconds <= 300,
        "sanity": {
            "dense_auroc_test": float(
                np.mean([r["roc_auc"] for r in dense_res if r["split"] == "test"])
            ),
            "sparse_auroc_test": float(
                np.mean([r["roc_auc"] for r in sparse_res if r["split"] == "test"])
            ),
            "recovery_at_10_l1_test": float(np.mean(test_rec)),
            "recovery_at_10_shared_test": float(np.mean(shared_rec)),
            "recovery_ns": cfg.recovery_ns,
            "recovery_methods": cfg.recovery_methods,
            "recovery_modes": cfg.recovery_modes,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "load_avg": os.getloadavg(),
        },
    }
    out = Path(__file__).resolve().parent / "results" / "evaluate.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
