"""Fingerprint search latency on synthetic codes (1,000,000 slices x 8,192 latents by default).

Synthetic codes: latent ``j`` fires in a fraction ``p_j = min(p_max, c (j + 1)^-alpha)`` of
the rows (a power law, as SAE latent frequencies are in practice; ``c`` is solved so that
a row has ``active`` latents on average, ``p_max`` caps the densest latents), activations
are log-normal (median 1, sigma 0.5) and independent of the latent. Rows come in blocks of
``rows_per_subject`` consecutive rows per subject, like a slice table. Queries are random
indexed slices, searched with their own subject excluded (the `medsae search --slice-id`
case); the timed work is the fingerprint of the query's codes row plus the index search.

Every timed query is also answered by a brute-force scan (:func:`brute_force_search`) and
the answers compared (:func:`check_exact`): ``exact`` is true only if all agree.

Prints JSON and writes ``benchmarks/results/search.json`` with ``p50_ms``, ``p95_ms``
(wall clock), ``p50_cpu_ms``, ``p95_cpu_ms`` (process CPU time, which other jobs on a busy
machine do not inflate), ``exact``, ``index_mb``, the load average and the set-up.

    python benchmarks/search.py            # the full size
    python benchmarks/search.py --quick    # 100,000 slices, for a smoke run
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
from scipy.optimize import brentq

from medsae.retrieval.fingerprint import (
    FingerprintIndex,
    fingerprint_of,
)
from medsae.retrieval.fingerprint_reference import brute_force_search, check_exact


def latent_frequencies(n_latents: int, active: float, alpha: float, p_max: float) -> np.ndarray:
    """Power-law firing frequencies summing to ``active`` (expected active latents per row)."""
    ranks = np.arange(1, n_latents + 1, dtype=np.float64) ** -alpha

    def excess(c: float) -> float:
        return float(np.minimum(p_max, c * ranks).sum() - active)

    c = brentq(excess, 1e-9, 1e6)
    return np.minimum(p_max, c * ranks)


def synthetic_codes(
    n_rows: int, n_latents: int, active: float, alpha: float, p_max: float, seed: int
) -> sp.csc_matrix:
    """CSC codes with power-law latent frequencies (see the module docstring)."""
    rng = np.random.default_rng(seed)
    freq = latent_frequencies(n_latents, active, alpha, p_max)
    counts = rng.binomial(n_rows, freq)
    cols = []
    for count in counts:
        rows = np.unique(rng.integers(0, n_rows, size=int(count), dtype=np.int64)).astype(np.int32)
        cols.append(rows)
    indptr = np.zeros(n_latents + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(c) for c in cols])
    indices = np.concatenate(cols)
    data = rng.lognormal(0.0, 0.5, size=len(indices)).astype(np.float32)
    return sp.csc_matrix((data, indices, indptr), shape=(n_rows, n_latents))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="100,000 slices, 50 queries")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--latents", type=int, default=8192)
    ap.add_argument("--active", type=float, default=40.0, help="mean active latents per row")
    ap.add_argument(
        "--alpha", type=float, default=0.8, help="power-law exponent of latent frequency"
    )
    ap.add_argument("--p-max", type=float, default=0.25, help="cap on a latent's firing frequency")
    ap.add_argument("--rows-per-subject", type=int, default=500)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "search.json")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.queries = 100_000, 50

    t0 = time.perf_counter()
    csc = synthetic_codes(args.rows, args.latents, args.active, args.alpha, args.p_max, args.seed)
    t_gen = time.perf_counter() - t0
    subjects = np.arange(args.rows) // args.rows_per_subject
    t0 = time.perf_counter()
    index = FingerprintIndex.build(csc, subjects=subjects)
    t_build = time.perf_counter() - t0
    csr = csc.tocsr()
    del csc
    csr64 = sp.csr_matrix(csr, dtype=np.float64)
    squared = csr64.multiply(csr64).tocsr()

    rng = np.random.default_rng(args.seed + 1)
    query_rows = rng.choice(args.rows, size=args.queries, replace=False)
    latencies, cpu, exact, postings = [], [], True, []
    load_before = os.getloadavg()[0]
    # Warm-up (first-touch page faults of the posting arrays are not query cost).
    for row in query_rows[:5]:
        lat, w = fingerprint_of(csr[int(row)].toarray().ravel(), args.k)
        index.search_fingerprint(lat, w, args.n, exclude_subject=int(index.subject_ids[row]))
    for row in query_rows:
        row = int(row)
        dense = csr[row].toarray().ravel()
        own = int(index.subject_ids[row])
        t, c = time.perf_counter(), time.process_time()
        lat, w = fingerprint_of(dense, args.k)
        hits = index.search_fingerprint(lat, w, args.n, exclude_subject=own)
        latencies.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
        postings.append(int((index.indptr[lat + 1] - index.indptr[lat]).sum()))
        ref = brute_force_search(
            csr64, index.subject_ids, lat, w, args.n + 1, exclude_subject=own, squared=squared
        )
        exact &= check_exact(hits, ref, args.n)

    lat_ms = np.asarray(latencies)
    cpu_ms = np.asarray(cpu)
    result = {
        "p50_ms": round(float(np.percentile(lat_ms, 50)), 3),
        "p95_ms": round(float(np.percentile(lat_ms, 95)), 3),
        "mean_ms": round(float(lat_ms.mean()), 3),
        "max_ms": round(float(lat_ms.max()), 3),
        "p50_cpu_ms": round(float(np.percentile(cpu_ms, 50)), 3),
        "p95_cpu_ms": round(float(np.percentile(cpu_ms, 95)), 3),
        "exact": bool(exact),
        "index_mb": round(index.memory_bytes() / 2**20, 1),
        "rows": args.rows,
        "latents": args.latents,
        "nnz": len(index.rows),
        "mean_active": round(len(index.rows) / args.rows, 2),
        "subjects": len(index.subject_keys),
        "queries": args.queries,
        "k": args.k,
        "n": args.n,
        "alpha": args.alpha,
        "p_max": args.p_max,
        "median_postings_per_query": int(np.median(postings)),
        "max_postings_per_query": int(np.max(postings)),
        "generate_s": round(t_gen, 2),
        "build_s": round(t_build, 2),
        "quick": bool(args.quick),
        "cpus": os.cpu_count(),
        "load_average_at_start": round(load_before, 2),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
