"""Benchmark of the feature browser: latency of concurrent text searches.

Starts the browser's server on 127.0.0.1 (a free port, in a child process), then sends rounds of
``--concurrency`` simultaneous ``GET /api/search?q=...`` requests (a bounded loop: ``--rounds``
rounds, nothing but 127.0.0.1 is contacted) and reports per-request latency. The queries of
the measured rounds are all different (plane x modality x anatomy combinations); the
warm-up sends a few fixed queries first.

Prints JSON and writes benchmarks/results/serve.json:

* ``p95_ms``: 95th percentile of the request latency (target: < 500 ms at 50 concurrent);
* ``p50_ms``, ``max_ms``, ``requests``, ``errors``, ``concurrency``;
* ``text_search``: ``interpret`` (sentence embedder over the descriptions) or ``keyword``;
* ``workspace``: the workspace searched (``synthetic`` when none was given or found).

Usage::

    python benchmarks/serve.py [--workspace demo-workspace] [--concurrency 50] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

QUERIES = (
    "axial CT slice of the liver",
    "sagittal MRI of the spine",
    "coronal CT through the lungs",
    "axial MRI of the brain",
    "CT of the pelvis with the urinary bladder",
    "kidney",
    "heart and aorta",
    "female patient abdomen",
)


PLANES = ("axial", "coronal", "sagittal", "")
MODALITIES = ("CT", "MRI", "")
ANATOMY = (
    "liver",
    "lungs",
    "brain",
    "spine",
    "kidneys",
    "heart",
    "pelvis",
    "urinary bladder",
    "spleen",
    "femur",
    "aorta",
    "stomach",
    "hip",
    "skull",
    "vertebrae",
    "gallbladder",
)


def unique_queries(n: int, offset: int = 0) -> list[str]:
    """``n`` distinct queries such as 'axial CT slice of the liver' (plane x modality x anatomy)."""
    combos = [
        " ".join(w for w in (plane, modality, "slice of the", organ) if w)
        for organ in ANATOMY
        for plane in PLANES
        for modality in MODALITIES
    ]
    return [combos[(offset + i) % len(combos)] for i in range(n)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _workspace(path: str | None, tmp: Path) -> tuple[Path, str]:
    if path and (Path(path) / "slices" / "manifest.json").is_file():
        return Path(path), str(path)
    from _support import make_synthetic_workspace, write_fixture_artifacts

    ws, truth = make_synthetic_workspace(tmp / "ws", n_subjects=48, slices_per_plane=12)
    write_fixture_artifacts(ws, truth)
    return ws.root, "synthetic"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--workspace", default="demo-workspace", help="finished workspace (default: demo-workspace)"
    )
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()

    import httpx

    with tempfile.TemporaryDirectory() as tmp:
        root, label = _workspace(args.workspace, Path(tmp))
        port = _free_port()
        # the server runs in its own process, as `medsae serve` does (the client threads
        # of this process would otherwise compete with it for the interpreter lock)
        code = (
            f"from medsae.serve import serve; serve({str(root)!r}, host='127.0.0.1', port={port})"
        )
        t0 = time.perf_counter()
        server = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        base = f"http://127.0.0.1:{port}"
        try:
            info = None
            while info is None:
                if server.poll() is not None or time.perf_counter() - t0 > 600:
                    raise SystemExit("the server did not start")
                try:
                    info = httpx.get(f"{base}/api/info", timeout=5).json()
                except httpx.TransportError:
                    time.sleep(0.2)
            startup_s = time.perf_counter() - t0
            text_mode = info["text_search"]
            for q in QUERIES:  # warm-up: one of each fixed query
                httpx.get(f"{base}/api/search", params={"q": q, "k": 12}, timeout=60)

            latencies: list[float] = []
            errors = 0
            limits = httpx.Limits(
                max_connections=args.concurrency, max_keepalive_connections=args.concurrency
            )
            with httpx.Client(base_url=base, timeout=60, limits=limits) as client:
                queries = unique_queries(args.concurrency * args.rounds)

                def one(q: str) -> tuple[float, bool]:
                    t = time.perf_counter()
                    r = client.get("/api/search", params={"q": q, "k": 12})
                    return time.perf_counter() - t, r.status_code == 200

                with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
                    for r in range(args.rounds):
                        batch = queries[r * args.concurrency : (r + 1) * args.concurrency]
                        for seconds, ok in pool.map(one, batch):
                            latencies.append(seconds * 1000)
                            errors += not ok
        finally:
            server.terminate()
            server.wait(timeout=30)

    arr = np.asarray(latencies)
    result = {
        "p95_ms": round(float(np.percentile(arr, 95)), 1),
        "p50_ms": round(float(np.percentile(arr, 50)), 1),
        "max_ms": round(float(arr.max()), 1),
        "requests": len(latencies),
        "distinct_queries": len(set(unique_queries(args.concurrency * args.rounds))),
        "errors": errors,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "text_search": text_mode,
        "workspace": label,
        "startup_s": round(startup_s, 2),
        "target_p95_ms": 500,
    }
    print(json.dumps(result, indent=2))
    out = Path(__file__).resolve().parent / "results" / "serve.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
