"""Benchmark of the feature browser: latency of concurrent text searches.

Starts the browser's server on 127.0.0.1 (a free port, in this process), then sends rounds of
``--concurrency`` simultaneous ``GET /api/search?q=...`` requests (a bounded loop: ``--rounds``
rounds, nothing but 127.0.0.1 is contacted) and reports per-request latency.

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
import tempfile
import threading
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _workspace(path: str | None, tmp: Path) -> tuple[Path, str]:
    if path and (Path(path) / "slices" / "manifest.json").is_file():
        return Path(path), str(path)
    from medsae.report.fixtures import write_fixture_artifacts
    from medsae.testing import make_synthetic_workspace

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
    import uvicorn

    from medsae.serve import create_app

    with tempfile.TemporaryDirectory() as tmp:
        root, label = _workspace(args.workspace, Path(tmp))
        t0 = time.perf_counter()
        app = create_app(root)
        startup_s = time.perf_counter() - t0
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        text_mode = httpx.get(f"{base}/api/info").json()["text_search"]
        for q in QUERIES:  # warm-up: one of each query
            httpx.get(f"{base}/api/search", params={"q": q, "k": 12}, timeout=60)

        latencies: list[float] = []
        errors = 0
        limits = httpx.Limits(
            max_connections=args.concurrency, max_keepalive_connections=args.concurrency
        )
        with httpx.Client(base_url=base, timeout=60, limits=limits) as client:

            def one(i: int) -> tuple[float, bool]:
                t = time.perf_counter()
                r = client.get("/api/search", params={"q": QUERIES[i % len(QUERIES)], "k": 12})
                return time.perf_counter() - t, r.status_code == 200

            with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
                for _ in range(args.rounds):
                    for seconds, ok in pool.map(one, range(args.concurrency)):
                        latencies.append(seconds * 1000)
                        errors += not ok
        server.should_exit = True
        thread.join(timeout=10)

    arr = np.asarray(latencies)
    result = {
        "p95_ms": round(float(np.percentile(arr, 95)), 1),
        "p50_ms": round(float(np.percentile(arr, 50)), 1),
        "max_ms": round(float(arr.max()), 1),
        "requests": len(latencies),
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
