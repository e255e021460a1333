"""Benchmark of every stage after encode at paper scale (100k to 1M slices).

For each size N it synthesises a workspace without volumes, then runs
split -> train -> codes -> evaluate -> rank -> interpret -> index -> report (the demo's
config, with a fixed training sample budget) and sends browser API requests to
``medsae serve`` on it. The synthetic workspace holds:

* a slice table of N rows over the paper's 1,844 subjects (1,228 CT + 616 MRI), three
  planes, with metadata drawn as the phantom draws it (:func:`medsae.data.phantom._draw`)
  and every slice's anatomy labels, position, window and pixels copied from the nearest
  slice (same plane, relative position) of a small prepared phantom subject of the same
  modality and study type (a reference phantom built once in the work folder);
* ``images.npy``: uint8 ``(N, 32, 32)``, written through a memory map;
* an embedding store of dimension 1,024 in the store format (``shard-NNNNN.npy`` of
  ``shard_rows`` rows + ``store.json``) with planted sparse structure: every row is a sparse
  sum of unit atoms (one per metadata value, one per present structure weighted by its area,
  position atoms, a subject texture atom) plus Gaussian noise.

Each stage runs in its own child process (``python benchmarks/scale.py --child STAGE``);
its wall and CPU seconds and peak RSS come from ``os.wait4`` (``ru_maxrss``), its output
size from the artifact folders it writes. The growth exponent of a stage between two sizes
is ``log(t2 / t1) / log(N2 / N1)`` on wall seconds (1 = linear, 0 = constant).

The browser: ``medsae serve WS`` as a child process on 127.0.0.1; ``serve_first_page_s`` is
the time from the process start until ``/``, ``/api/info`` and the first page of
``/api/features`` have all answered; then ``--requests`` requests in a fixed seeded mix
(features list pages, feature pages, slice pages, text searches, similar slices) are
sent one after another; ``serve_p95_ms`` is their 95th percentile latency.

Prints JSON and writes ``benchmarks/results/scale.json`` (the sizes of this run: per stage
``seconds``, ``cpu_seconds``, ``peak_rss_mb``, ``output_mb``, ``exponent`` for the largest
size, every size under ``sizes``) and ``benchmarks/results/scale-<N>.json`` per size.

Usage::

    python benchmarks/scale.py --quick                      # 100k only
    python benchmarks/scale.py --n 100000,300000,1000000
    python benchmarks/scale.py --n 1000000 --with-previous  # exponents against saved sizes
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
STAGES = ("split", "train", "codes", "evaluate", "rank", "interpret", "index", "report")
OUTPUTS = {  # stage -> workspace folder it writes
    "split": "split",
    "train": "saes",
    "codes": "codes",
    "evaluate": "eval",
    "rank": "ranking",
    "interpret": "features",
    "index": "index",
    "report": "report",
}
ENCODER = "synthetic-1024"
DIM = 1024
IMAGE_SIZE = 32
CT_SUBJECTS = 1228  # TotalSegmentator CT v2
MR_SUBJECTS = 616  # TotalSegmentator MRI v2
PLANE_SHARES = (("axial", 0.5), ("coronal", 0.25), ("sagittal", 0.25))
META_ATOMS = (
    "modality",
    "plane",
    "study_type",
    "institute",
    "manufacturer",
    "sex",
    "age_group",
    "kvp",
    "field_strength",
)
N_TEXTURES = 64
SEED = 0


# ----------------------------------------------------------------------------- reference
def reference_workspace(workdir: Path) -> Path:
    """A small prepared phantom (16 + 16 subjects, three planes, 32 x 32): the anatomy source."""
    from medsae.data import PhantomConfig, PrepareConfig, make_phantom, prepare
    from medsae.workspace import Workspace

    root = workdir / "reference"
    ws = Workspace(root / "ws").ensure()
    if not (ws.slices / "manifest.json").is_file():
        make_phantom(
            root / "phantom",
            PhantomConfig(ct_subjects=16, mri_subjects=16, size_xy=48, n_slices=48, seed=SEED),
        )
    prepare(
        ws,
        PrepareConfig(
            source=str(root / "phantom"),
            planes=["axial", "coronal", "sagittal"],
            step=2,
            size=IMAGE_SIZE,
        ),
    )
    return ws.root


# ----------------------------------------------------------------------------- synthesis
def _subjects() -> list[dict[str, Any]]:
    """Metadata of the 1,844 subjects as the phantom draws it."""
    from medsae.data.phantom import _draw

    out = []
    for modality, count in (("CT", CT_SUBJECTS), ("MR", MR_SUBJECTS)):
        for i in range(count):
            _, meta = _draw(modality, i, SEED)
            meta["modality"] = modality
            out.append(meta)
    return out


def _templates(subjects: list[dict[str, Any]], ref: Any, rng: np.random.Generator) -> list[str]:
    """A reference subject (``subject_key``) of the same modality and study type per subject."""
    per = ref.groupby("subject_key")[["modality", "study_type", "sex"]].first()
    out = []
    for s in subjects:
        same = per[(per["modality"] == s["modality"]) & (per["study_type"] == s["study_type"])]
        if same.empty:
            same = per[per["modality"] == s["modality"]]
        sex = "M" if s["gender"] == "m" else "F"
        if (same["sex"] == sex).any():
            same = same[same["sex"] == sex]
        out.append(str(same.index[int(rng.integers(len(same)))]))
    return out


def synth_slices(ws: Any, n: int, ref_root: Path) -> None:
    """Write the ``slices`` artifact of N rows (table, images, anatomy) from the reference."""
    import pandas as pd

    from medsae.data.intensity import ct_window, window_bounds
    from medsae.data.table import (
        IMAGES_FILE,
        SLICES_FILE,
        age_group,
        open_images,
        read_anatomy,
        read_slices,
        write_anatomy,
    )
    from medsae.workspace import StageResult, run_stage

    ref = read_slices(ref_root / "slices")
    ref_anat = read_anatomy(ref_root / "slices", mmap=False)
    ref_images = np.asarray(open_images(ref_root / "slices"))
    rng = np.random.default_rng(SEED)
    subjects = _subjects()
    templates = _templates(subjects, ref, rng)
    n_sub = len(subjects)

    # (subject, plane) groups and their slice counts
    per_subject = np.full(n_sub, n // n_sub) + (np.arange(n_sub) < n % n_sub)
    g_subject, g_plane, g_count = [], [], []
    for i, c in enumerate(per_subject):
        left = int(c)
        for j, (plane, share) in enumerate(PLANE_SHARES):
            m = left if j == len(PLANE_SHARES) - 1 else int(np.rint(c * share))
            m = min(m, left)
            left -= m
            if m:
                g_subject.append(i)
                g_plane.append(plane)
                g_count.append(m)
    counts = np.asarray(g_count)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    total = int(counts.sum())
    group = np.repeat(np.arange(len(counts)), counts)
    index = np.arange(total) - starts[group]
    rel = index / np.maximum(counts[group] - 1, 1)

    # nearest reference slice of every row
    ref_rows = np.empty(total, dtype=np.int64)
    ref_by = {k: v.sort_values("rel_position") for k, v in ref.groupby(["subject_key", "plane"])}
    for g in range(len(counts)):
        tpl = ref_by.get((templates[g_subject[g]], g_plane[g]))
        if tpl is None:
            tpl = ref[ref["plane"] == g_plane[g]].sort_values("rel_position")
        rp = tpl["rel_position"].to_numpy()
        lo, hi = starts[g], starts[g] + counts[g]
        pos = np.clip(np.searchsorted(rp, rel[lo:hi]), 0, len(rp) - 1)
        prev = np.clip(pos - 1, 0, len(rp) - 1)
        better = np.abs(rp[prev] - rel[lo:hi]) < np.abs(rp[pos] - rel[lo:hi])
        ref_rows[lo:hi] = tpl.index.to_numpy()[np.where(better, prev, pos)]

    sub_of_row = np.asarray(g_subject)[group]
    s_mod = np.array([s["modality"] for s in subjects])[sub_of_row]
    s_id = np.array([s["image_id"] for s in subjects])[sub_of_row]
    planes = np.asarray(g_plane)[group]
    table = pd.DataFrame(
        {
            "slice_id": [
                f"{m}:{s}:{p}:{i:04d}"
                for m, s, p, i in zip(s_mod, s_id, planes, index, strict=True)
            ],
            "subject": s_id,
            "subject_key": np.char.add(np.char.add(s_mod.astype(str), ":"), s_id.astype(str)),
            "dataset": np.where(s_mod == "CT", "ct", "mri"),
            "source_kind": "totalsegmentator",
            "modality": s_mod,
            "plane": planes,
            "index": index.astype(np.int64),
            "n_slices": counts[group].astype(np.int64),
            "position_mm": ref["position_mm"].to_numpy()[ref_rows],
            "rel_position": rel,
        }
    )
    meta = pd.DataFrame(subjects)
    age = meta["age"].astype(float).to_numpy()
    windows = [
        ct_window(s["study_type"], (40.0, 400.0))[0] if s["modality"] == "CT" else (np.nan, np.nan)
        for s in subjects
    ]
    wc = np.array([w[0] for w in windows])
    ww = np.array([w[1] for w in windows])
    lows = np.array([window_bounds(c, w)[0] if np.isfinite(c) else np.nan for c, w in windows])
    highs = np.array([window_bounds(c, w)[1] if np.isfinite(c) else np.nan for c, w in windows])
    kvp = pd.to_numeric(meta["kvp"], errors="coerce").to_numpy(dtype=float)
    field = pd.to_numeric(meta.get("magnetic_field_strength"), errors="coerce").to_numpy(
        dtype=float
    )
    table["age"] = age[sub_of_row]
    table["age_group"] = np.array([age_group(a) for a in age], dtype=object)[sub_of_row]
    table["sex"] = np.where(meta["gender"].to_numpy() == "m", "M", "F")[sub_of_row]
    for col in ("institute", "manufacturer", "scanner_model", "study_type", "pathology"):
        table[col] = meta[col].to_numpy()[sub_of_row]
    loc = meta["pathology_location"].replace("", None).to_numpy()
    table["pathology_location"] = loc[sub_of_row]
    table["kvp"] = kvp[sub_of_row]
    table["field_strength"] = field[sub_of_row]
    table["window_center"] = wc[sub_of_row]
    table["window_width"] = ww[sub_of_row]
    ref_low = ref["intensity_low"].to_numpy()[ref_rows]
    ref_high = ref["intensity_high"].to_numpy()[ref_rows]
    table["intensity_low"] = np.where(s_mod == "CT", lows[sub_of_row], ref_low)
    table["intensity_high"] = np.where(s_mod == "CT", highs[sub_of_row], ref_high)
    table["pixel_spacing_mm"] = ref["pixel_spacing_mm"].to_numpy()[ref_rows]
    table["source_file"] = [
        f"synthetic/{d}/{s}/{d}.nii.gz"
        for d, s in zip(table["dataset"], table["subject"], strict=True)
    ]
    for col in table.columns:
        if table[col].dtype == object:
            table[col] = table[col].astype("string")

    def build(out: Path) -> StageResult:
        table.to_parquet(out / SLICES_FILE, index=False)
        images = np.lib.format.open_memmap(
            out / IMAGES_FILE, mode="w+", dtype=np.uint8, shape=(total, IMAGE_SIZE, IMAGE_SIZE)
        )
        for lo in range(0, total, 65536):
            images[lo : lo + 65536] = ref_images[ref_rows[lo : lo + 65536]]
        images.flush()
        del images
        write_anatomy(
            out,
            ref_anat.presence[ref_rows],
            ref_anat.area[ref_rows],
            ref_anat.structures,
        )
        (out / "failures.json").write_text("[]")
        return StageResult(
            counts={"slices": total, "subjects": n_sub, "volumes": n_sub, "failed": 0}
        )

    run_stage(
        ws.slices,
        "prepare",
        {"synthetic": True, "n": n, "seed": SEED},
        {"reference": _tree_key(ref_root / "slices")},
        build,
        quiet=True,
    )


def _tree_key(folder: Path) -> str:
    from medsae.workspace import artifact_key

    return artifact_key(folder)


def synth_embeddings(ws: Any) -> None:
    """Write the embedding store: sparse sums of planted unit atoms plus noise, dimension 1,024."""
    from medsae.data.table import read_anatomy, read_slices
    from medsae.encode.config import EncodeConfig
    from medsae.encode.store import Shard, save_shard, shard_name, write_store_meta
    from medsae.workspace import StageResult, artifact_key, run_stage

    table = read_slices(ws.slices)
    anat = read_anatomy(ws.slices)
    n = len(table)
    rng = np.random.default_rng(SEED + 1)
    codes: list[np.ndarray] = []  # per metadata column: atom id per row (-1 = none)
    n_atoms = 0
    for col in META_ATOMS:
        values = table[col].astype("string").fillna("<NA>")
        cats = sorted(set(values.unique()) - {"<NA>"})
        ids = values.map({c: n_atoms + k for k, c in enumerate(cats)}).fillna(-1)
        codes.append(ids.to_numpy(dtype=np.int64))
        n_atoms += len(cats)
    structure0 = n_atoms
    n_atoms += len(anat.structures)
    position0 = n_atoms
    n_atoms += 2
    texture0 = n_atoms
    n_atoms += N_TEXTURES
    atoms = rng.standard_normal((n_atoms, DIM)).astype(np.float32)
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    gains = rng.uniform(0.5, 1.5, n_atoms).astype(np.float32)
    subject_codes = table["subject_key"].astype("category").cat.codes.to_numpy().astype(np.int64)
    texture = texture0 + (subject_codes * 2654435761 % N_TEXTURES)
    rel = table["rel_position"].to_numpy(dtype=np.float32)
    cfg = EncodeConfig(encoder=ENCODER)
    shard_rows = cfg.shard_rows

    def build(out: Path) -> StageResult:
        shards = []
        for k, lo in enumerate(range(0, n, shard_rows)):
            hi = min(lo + shard_rows, n)
            rows = np.arange(lo, hi)
            c = np.zeros((hi - lo, n_atoms), dtype=np.float32)
            for ids in codes:
                ok = ids[lo:hi] >= 0
                c[rows[ok] - lo, ids[lo:hi][ok]] = 1.0
            area = np.nan_to_num(np.asarray(anat.area[lo:hi], dtype=np.float32))
            present = np.asarray(anat.presence[lo:hi]) == 1
            c[:, structure0:position0] = present * (0.3 + 3.0 * np.sqrt(area))
            c[:, position0] = rel[lo:hi]
            c[:, position0 + 1] = 1.0 - rel[lo:hi]
            c[rows - lo, texture[lo:hi]] = 0.5
            x = (c * gains) @ atoms
            x += 0.02 * rng.standard_normal(x.shape, dtype=np.float32)
            name = shard_name(k)
            save_shard(out, name, x)
            shards.append(Shard(name, lo, hi))
        write_store_meta(
            out,
            ENCODER,
            shards,
            DIM,
            "float32",
            {"synthetic": {"atoms": n_atoms, "noise": 0.02}, "shard_rows": shard_rows},
        )
        return StageResult(counts={"rows": n, "dim": DIM, "shards": len(shards)})

    run_stage(
        ws.embeddings(ENCODER),
        "encode",
        {"encoder": ENCODER, "synthetic": True, "seed": SEED},
        {"slices": artifact_key(ws.slices)},
        build,
        quiet=True,
    )


# ----------------------------------------------------------------------------- stages
def pipeline_config(ws_root: Path, max_samples: int) -> Any:
    """The demo's config for the stages after encode, training on a fixed sample budget."""
    from medsae.config import PipelineConfig, build_config
    from medsae.pipeline import DEMO_CONFIG

    data: dict[str, Any] = {k: v for k, v in DEMO_CONFIG.items() if k not in ("prepare", "encode")}
    data = json.loads(json.dumps(data))
    data["train"]["max_samples"] = max_samples
    data["workspace"] = str(ws_root)
    return build_config(PipelineConfig, data, "scale")


def child(stage: str, workspace: Path, max_samples: int) -> None:
    """Run one stage (the body of a ``--child`` process)."""
    from medsae.pipeline import Pipeline

    os.environ.setdefault("MEDSAE_PROGRESS", "0")
    Pipeline(pipeline_config(workspace, max_samples), workspace).run([stage])


def _folder_mb(path: Path) -> float:
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0
    return round(total / 2**20, 2)


def measure(cmd: list[str], log: Path) -> dict[str, float]:
    """Run ``cmd`` as a child process; wall and CPU seconds and peak RSS from ``wait4``."""
    t0 = time.perf_counter()
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with {proc.returncode}; see {log}")
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }


# ----------------------------------------------------------------------------- serve
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _vm_hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def serve_benchmark(ws_root: Path, n_requests: int, log: Path) -> dict[str, Any]:
    """Start ``medsae serve``, time its first page, then send a fixed mix of API requests."""
    import httpx
    import pandas as pd

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "medsae", "serve", str(ws_root), "--port", str(port)]
    t0 = time.perf_counter()
    with open(log, "ab") as fh:
        server = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    try:
        first: dict[str, float] = {}
        with httpx.Client(base_url=base, timeout=120) as client:
            while "page" not in first:
                if server.poll() is not None or time.perf_counter() - t0 > 900:
                    raise SystemExit(f"the server did not start; see {log}")
                try:
                    client.get("/").raise_for_status()
                    first["listening"] = time.perf_counter() - t0
                    client.get("/api/info").raise_for_status()
                    client.get("/api/features", params={"limit": 50}).raise_for_status()
                    first["page"] = time.perf_counter() - t0
                except httpx.TransportError:
                    time.sleep(0.1)
            info = client.get("/api/info").json()
            features = client.get("/api/features", params={"limit": 1000}).json()["items"]
            latents = [int(f["latent"]) for f in features] or [0]
            slice_ids = pd.read_parquet(
                ws_root / "slices" / "slices.parquet", columns=["slice_id"]
            )["slice_id"].to_numpy()
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from serve import unique_queries  # benchmarks/serve.py

            rng = np.random.default_rng(SEED)
            queries = unique_queries(n_requests)
            sorts = ("frequency", "detection_balanced_accuracy", "max_activation", "latent")
            kinds: list[tuple[str, Callable[[int], httpx.Response]]] = [
                (
                    "features",
                    lambda i: client.get(
                        "/api/features",
                        params={"sort": sorts[i % len(sorts)], "offset": 50 * (i % 4), "limit": 50},
                    ),
                ),
                (
                    "feature",
                    lambda i: client.get(
                        f"/api/features/{latents[int(rng.integers(len(latents)))]}"
                    ),
                ),
                (
                    "slice",
                    lambda i: client.get(
                        f"/api/slices/{slice_ids[int(rng.integers(len(slice_ids)))]}"
                    ),
                ),
                ("search", lambda i: client.get("/api/search", params={"q": queries[i], "k": 12})),
                (
                    "similar",
                    lambda i: client.get(
                        f"/api/slices/{slice_ids[int(rng.integers(len(slice_ids)))]}/similar",
                        params={"k": 12},
                    ),
                ),
            ]
            per: dict[str, list[float]] = {k: [] for k, _ in kinds}
            errors = 0
            for i in range(n_requests):
                name, call = kinds[i % len(kinds)]
                t = time.perf_counter()
                r = call(i)
                per[name].append((time.perf_counter() - t) * 1000)
                errors += r.status_code != 200
        rss = _vm_hwm_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)
    every = np.concatenate([np.asarray(v) for v in per.values()])
    return {
        "serve_p95_ms": round(float(np.percentile(every, 95)), 1),
        "serve_p50_ms": round(float(np.percentile(every, 50)), 1),
        "serve_first_page_s": round(first["page"], 2),
        "serve_listening_s": round(first["listening"], 2),
        "serve_requests": len(every),
        "serve_errors": errors,
        "serve_peak_rss_mb": rss,
        "serve_text_search": info.get("text_search"),
        "serve_p95_ms_by_route": {
            k: round(float(np.percentile(v, 95)), 1) for k, v in per.items() if v
        },
    }


# ----------------------------------------------------------------------------- driver
def run_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """Synthesise a workspace of ``n`` slices and measure every stage and the browser on it."""
    from medsae.workspace import Workspace

    workdir: Path = args.workdir
    ref_root = reference_workspace(workdir)
    root = workdir / f"ws-{n}"
    if root.exists() and not args.reuse:
        shutil.rmtree(root)
    ws = Workspace(root).ensure()
    log = workdir / f"ws-{n}.log"
    t0 = time.perf_counter()
    synth_slices(ws, n, ref_root)
    synth_embeddings(ws)
    synth_s = time.perf_counter() - t0
    print(f"[scale] N={n}: synthesised in {synth_s:.1f} s", file=sys.stderr, flush=True)
    stages: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            stage,
            "--workspace",
            str(root),
            "--max-samples",
            str(args.max_samples),
        ]
        stats = measure(cmd, log)
        stats["output_mb"] = _folder_mb(root / OUTPUTS[stage])
        stages[stage] = stats
        print(f"[scale] N={n}: {stage} {json.dumps(stats)}", file=sys.stderr, flush=True)
    result: dict[str, Any] = {
        "n_rows": n,
        "subjects": CT_SUBJECTS + MR_SUBJECTS,
        "dim": DIM,
        "max_samples": args.max_samples,
        "synthesis_seconds": round(synth_s, 1),
        "inputs_mb": {
            "slices": _folder_mb(root / "slices"),
            "embeddings": _folder_mb(root / "embeddings"),
        },
        "stages": stages,
        "index_mb": stages["index"]["output_mb"],
        "report_mb": stages["report"]["output_mb"],
    }
    result.update(serve_benchmark(root, args.requests, log))
    if not args.keep:
        shutil.rmtree(root)
    return result


def rerun_stages(n: int, stages: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Measure ``stages`` again on the kept workspace of ``n`` slices (after a fix), and the
    browser when ``serve`` is named; the other figures of ``results/scale-<n>.json`` stay.

    Each named stage's artifact folder is removed first, so the stage builds from scratch on
    the same inputs; the entry records ``rerun: true``.
    """
    root = args.workdir / f"ws-{n}"
    path = RESULTS / f"scale-{n}.json"
    if not root.is_dir() or not path.is_file():
        raise SystemExit(f"--rerun needs the kept workspace {root} and {path} (run with --keep)")
    result = json.loads(path.read_text())
    log = args.workdir / f"ws-{n}.log"
    for stage in stages:
        if stage == "serve":
            result.update(serve_benchmark(root, args.requests, log))
            result["serve_rerun"] = True
            continue
        shutil.rmtree(root / OUTPUTS[stage], ignore_errors=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", stage]
        cmd += ["--workspace", str(root), "--max-samples", str(result["max_samples"])]
        stats: dict[str, Any] = measure(cmd, log)
        stats["output_mb"] = _folder_mb(root / OUTPUTS[stage])
        stats["rerun"] = True
        result["stages"][stage] = stats
        print(f"[scale] N={n}: {stage} (rerun) {json.dumps(stats)}", file=sys.stderr, flush=True)
    result["index_mb"] = result["stages"]["index"]["output_mb"]
    result["report_mb"] = result["stages"]["report"]["output_mb"]
    return result


def combine(by_size: list[dict[str, Any]]) -> dict[str, Any]:
    """The largest size with each stage's growth exponent against the next smaller size."""
    by_size = sorted(by_size, key=lambda r: r["n_rows"])
    for prev, cur in itertools.pairwise(by_size):
        ratio = math.log(cur["n_rows"] / prev["n_rows"])
        for stage, stats in cur["stages"].items():
            before = prev["stages"].get(stage)
            if before and before["seconds"] > 0 and stats["seconds"] > 0:
                stats["exponent"] = round(math.log(stats["seconds"] / before["seconds"]) / ratio, 2)
                stats["rss_exponent"] = round(
                    math.log(stats["peak_rss_mb"] / before["peak_rss_mb"]) / ratio, 2
                )
    out = dict(by_size[-1])
    out["sizes"] = {str(r["n_rows"]): r for r in by_size}
    out["table"] = [
        {"stage": s, "n_rows": r["n_rows"], **r["stages"][s]} for s in STAGES for r in by_size
    ]
    out["targets"] = {
        "peak_rss_mb": 12 * 1024,
        "exponent": 1.15,
        "serve_p95_ms": 500,
        "serve_first_page_s": 2.0,
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="100000,300000,1000000", help="comma-separated sizes")
    ap.add_argument("--quick", action="store_true", help="100,000 slices only")
    ap.add_argument("--max-samples", type=int, default=100_000, help="training sample budget")
    ap.add_argument("--requests", type=int, default=200, help="browser API requests")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/medsae-scale"))
    ap.add_argument("--keep", action="store_true", help="keep the synthetic workspaces")
    ap.add_argument("--reuse", action="store_true", help="reuse a kept workspace's artifacts")
    ap.add_argument(
        "--with-previous",
        action="store_true",
        help="also read results/scale-<N>.json of other sizes for the exponents",
    )
    ap.add_argument(
        "--rerun",
        default="",
        help="comma-separated stages (or 'serve') to measure again on the kept workspace of "
        "each --n size, keeping its other figures",
    )
    ap.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    ap.add_argument("--workspace", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("MEDSAE_PROGRESS", "0")
    if args.child:
        child(args.child, args.workspace, args.max_samples)
        return
    sizes = [100_000] if args.quick else [int(s) for s in args.n.split(",") if s.strip()]
    args.workdir.mkdir(parents=True, exist_ok=True)
    measured: dict[int, dict[str, Any]] = {}
    rerun = [s.strip() for s in args.rerun.split(",") if s.strip()]
    unknown = [s for s in rerun if s not in (*STAGES, "serve")]
    if unknown:
        raise SystemExit(f"--rerun: unknown stage(s) {unknown}; known: {', '.join(STAGES)}, serve")
    for n in sizes:
        result = rerun_stages(n, rerun, args) if rerun else run_size(n, args)
        measured[n] = result
        path = RESULTS / f"scale-{n}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
    if args.with_previous:
        for path in sorted(RESULTS.glob("scale-*.json")):
            old = json.loads(path.read_text())
            if old.get("max_samples") == args.max_samples:
                measured.setdefault(int(old["n_rows"]), old)
    report = combine(list(measured.values()))
    report["command"] = "python benchmarks/scale.py " + " ".join(sys.argv[1:])
    text = json.dumps(report, indent=2)
    print(text)
    (RESULTS / "scale.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
