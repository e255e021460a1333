"""Feature maps: time to make one latent's map on one slice after the encoder's forward.

For EfficientNet-Lite0 at 128 px on the CPU (both poolings; the demo uses multiscale), with
an SAE of the demo's size (1,024 latents, L2 input transform), it records

* ``forward_ms``: the encoder's ``encode`` on one slice (preprocessing and forward);
* ``spatial_forward_ms``: ``spatial_features`` on one slice (the same forward, keeping the
  maps);
* ``ms_per_map``: from the kept maps to the map at the stored image size for one latent
  (:func:`medsae.maps.latent_maps` + :func:`medsae.maps.to_pixels`; target <= 50 ms);
* ``overhead_vs_forward`` = ``ms_per_map / forward_ms``.

Times are the median of ``--repeats`` runs after a warm-up (all runs recorded).

Usage::

    python benchmarks/maps.py            # writes benchmarks/results/maps.json
    python benchmarks/maps.py --quick

Prints JSON and writes benchmarks/results/maps.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MEDSAE_PROGRESS", "0")

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsae.encode import get_encoder
from medsae.maps import latent_maps, to_pixels
from medsae.sae.registry import build_sae, sae_config

RESULTS = Path(__file__).parent / "results"
TARGET_MS = 50.0


def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Milliseconds of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(1000 * (time.perf_counter() - t0))
    return out


def run(pooling: str, size: int, n_latents: int, repeats: int) -> dict[str, Any]:
    enc = get_encoder("efficientnet-lite0", input_size=size, device="cpu", pooling=pooling)
    sae = build_sae(
        sae_config(arch="matryoshka", d_in=enc.dim, n_latents=n_latents, k=16, levels=[n_latents])
    ).eval()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, size, size), dtype=np.uint8)
    forward = timed(lambda: enc.encode(image), repeats)
    spatial = timed(lambda: enc.spatial_features(image), repeats)  # type: ignore[attr-defined]
    feats = enc.spatial_features(image)  # type: ignore[attr-defined]
    latent = n_latents // 3
    maps = timed(lambda: to_pixels(latent_maps(sae, feats, [latent]).grid[0, 0], size), repeats)
    lm = latent_maps(sae, feats, [latent])
    ms_map, ms_fwd = float(np.median(maps)), float(np.median(forward))
    return {
        "encoder": "efficientnet-lite0",
        "pooling": pooling,
        "input_size": size,
        "n_latents": n_latents,
        "grid": list(lm.grid.shape[2:]),
        "forward_ms": round(ms_fwd, 2),
        "spatial_forward_ms": round(float(np.median(spatial)), 2),
        "ms_per_map": round(ms_map, 2),
        "overhead_vs_forward": round(ms_map / ms_fwd, 3),
        "max_abs_residual": float(np.abs(lm.residual).max()),
        "meets_target": ms_map <= TARGET_MS,
        "runs_ms": {
            "forward": [round(x, 2) for x in forward],
            "map": [round(x, 2) for x in maps],
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--latents", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="5 repeats")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 5 if args.quick else args.repeats
    cases = [run(p, args.size, args.latents, repeats) for p in ("mean", "multiscale")]
    head = next(c for c in cases if c["pooling"] == "mean")
    result = {
        "benchmark": "maps",
        "target_ms_per_map": TARGET_MS,
        "ms_per_map": head["ms_per_map"],
        "overhead_vs_forward": head["overhead_vs_forward"],
        "cases": cases,
        "threads": args.threads,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "maps.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
