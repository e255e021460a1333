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
* ``workspace``: the workspace searched (``synthetic`` when none was given or found);
* ``mixed``: a mixed load of ``--concurrency`` simultaneous requests per round (``--mixed-
  rounds`` rounds): text searches, similar-slice searches, image uploads (PNGs of the
  workspace's own slices, each a different image) and pages (feature list, feature and
  slice pages). Every request is first answered alone; each concurrent answer is compared
  with it (the same status, the same JSON, floats within 1e-4 relative): ``wrong_answers``
  counts those that differ, ``errors_5xx`` the answers of status 500 or more (a busy 503
  included), with ``p95_ms`` / ``p50_ms`` of the mixed requests and the count per kind.

Usage::

    python benchmarks/serve.py [--workspace demo-workspace] [--concurrency 50] [--rounds 4]
                               [--mixed-rounds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

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


MIX = (("text", 10), ("similar", 10), ("upload", 10), ("page", 20))
"""Requests of each kind in every 50 of the mixed load."""


def mixed_requests(client: Any, n: int) -> list[tuple[str, str, dict[str, Any]]]:
    """``n`` requests (kind, path, httpx arguments) in the proportions of :data:`MIX`,
    built from the workspace's own features and slices (uploads: PNGs of its slices)."""
    features = client.get("/api/features", params={"limit": 50}).json()["items"]
    latents = [f["latent"] for f in features] or [0]
    slices: list[str] = []
    for j in latents[:12]:
        top = client.get(f"/api/features/{j}", params={"top": 8}).json()["top"]
        slices += [t["slice_id"] for t in top if t["slice_id"] not in slices]
    pngs = [client.get(f"/api/slices/{sid}/image.png").content for sid in slices[:60]]
    texts = unique_queries(n, offset=97)
    requests: list[tuple[str, str, dict[str, Any]]] = []
    pattern = [kind for kind, weight in MIX for _ in range(weight)]
    np.random.default_rng(0).shuffle(pattern)  # every round mixes the kinds
    for i in range(n):
        kind = pattern[i % len(pattern)]
        if kind == "text":
            requests.append((kind, "/api/search", {"params": {"q": texts[i], "k": 12}}))
        elif kind == "similar":
            sid = slices[i % len(slices)]
            requests.append((kind, f"/api/slices/{quote(sid)}/similar", {"params": {"k": 12}}))
        elif kind == "upload":
            png = pngs[i % len(pngs)]
            files = {"file": (f"slice-{i % len(pngs)}.png", png, "image/png")}
            requests.append((kind, "/api/search/image", {"files": files, "params": {"k": 12}}))
        else:
            page = i % 3
            if page == 0:
                args = {"params": {"offset": i % 40, "limit": 25, "sort": "frequency"}}
                requests.append((kind, "/api/features", args))
            elif page == 1:
                requests.append((kind, f"/api/features/{latents[i % len(latents)]}", {}))
            else:
                requests.append((kind, f"/api/slices/{quote(slices[i % len(slices)])}", {}))
    return requests


def _send(client: Any, path: str, kwargs: dict[str, Any]) -> tuple[float, int, Any]:
    t = time.perf_counter()
    r = client.post(path, **kwargs) if "files" in kwargs else client.get(path, **kwargs)
    seconds = time.perf_counter() - t
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else None
    return seconds, r.status_code, body


def same_answer(a: Any, b: Any, rel: float = 1e-4) -> bool:
    """Equal JSON, floats within ``rel`` relative (batched sentence embeddings differ in the
    last bits from one-by-one ones)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_answer(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_answer(x, y, rel) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return (
            isinstance(a, int | float)
            and isinstance(b, int | float)
            and (abs(a - b) <= rel * max(abs(a), abs(b), 1e-6))
        )
    return bool(a == b)


def mixed_load(client: Any, pool: ThreadPoolExecutor, concurrency: int, rounds: int) -> dict:
    """The mixed load (see the module docstring): each request's concurrent answer against
    its answer alone."""
    requests = mixed_requests(client, concurrency * rounds)
    alone = [_send(client, path, kwargs) for _, path, kwargs in requests]
    alone_ms: dict[str, list[float]] = {}
    for (kind, _, _), (seconds, _, _) in zip(requests, alone, strict=True):
        alone_ms.setdefault(kind, []).append(seconds * 1000)
    by_kind_ms: dict[str, list[float]] = {}
    latencies: list[float] = []
    wrong = errors_5xx = 0
    by_kind: dict[str, int] = {}
    wrong_kinds: dict[str, int] = {}
    for r in range(rounds):
        batch = list(range(r * concurrency, (r + 1) * concurrency))
        answers = pool.map(lambda i: _send(client, requests[i][1], requests[i][2]), batch)
        for i, (seconds, status, body) in zip(batch, answers, strict=True):
            kind = requests[i][0]
            by_kind[kind] = by_kind.get(kind, 0) + 1
            latencies.append(seconds * 1000)
            by_kind_ms.setdefault(kind, []).append(seconds * 1000)
            if status >= 500:
                errors_5xx += 1
            elif status != alone[i][1] or not same_answer(body, alone[i][2]):
                wrong += 1
                wrong_kinds[kind] = wrong_kinds.get(kind, 0) + 1
    arr = np.asarray(latencies)
    return {
        "requests": len(latencies),
        "per_kind": by_kind,
        "alone_mean_ms_by_kind": {k: round(float(np.mean(v)), 1) for k, v in alone_ms.items()},
        "p95_ms_by_kind": {k: round(float(np.percentile(v, 95)), 1) for k, v in by_kind_ms.items()},
        "p95_ms": round(float(np.percentile(arr, 95)), 1),
        "p50_ms": round(float(np.percentile(arr, 50)), 1),
        "max_ms": round(float(arr.max()), 1),
        "wrong_answers": wrong,
        "wrong_by_kind": wrong_kinds,
        "errors_5xx": errors_5xx,
        "alone_statuses": sorted({a[1] for a in alone}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--workspace", default="demo-workspace", help="finished workspace (default: demo-workspace)"
    )
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--mixed-rounds", type=int, default=4)
    ap.add_argument("--encoder", default=None, help="encoder to serve (default: the best run's)")
    ap.add_argument("--run", default=None, help="SAE run to serve (default: the best run)")
    ap.add_argument(
        "--out", default=str(Path(__file__).resolve().parent / "results" / "serve.json")
    )
    args = ap.parse_args()

    import httpx

    with tempfile.TemporaryDirectory() as tmp:
        root, label = _workspace(args.workspace, Path(tmp))
        port = _free_port()
        # the server runs in its own process, as `medsae serve` does (the client threads
        # of this process would otherwise compete with it for the interpreter lock)
        code = (
            f"from medsae.serve import serve; serve({str(root)!r}, host='127.0.0.1', port={port}, "
            f"encoder={args.encoder!r}, run={args.run!r})"
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
                    mixed = mixed_load(client, pool, args.concurrency, args.mixed_rounds)
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
        "run": info.get("run"),
        "startup_s": round(startup_s, 2),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "target_p95_ms": 500,
        "mixed": mixed,
        "wrong_answers": mixed["wrong_answers"],
        "errors_5xx": mixed["errors_5xx"],
    }
    print(json.dumps(result, indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
