"""A small external encoder adapter speaking medsae's adapter protocol (version 1), for tests.

Usage: ``python fake_adapter.py REQUEST.json``. Its embedding is a fixed function of the
pixels (so tests can check row alignment): per image, the mean intensity, the standard
deviation, the fraction of bright pixels, and the mean of each image quadrant, padded with
cosines of the mean up to ``dim``. Options: ``dim`` (default 8), ``name`` (``fake``),
``fail_after`` (exit with status 3 after writing this many shards, like a killed job; also
read from the environment variable FAKE_ADAPTER_FAIL_AFTER, which is not part of any key),
``nan_row`` (an image row whose embedding is NaN), ``marker`` (a file to append one line to per
encoded shard, so tests can count what was recomputed).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np


def features(images: np.ndarray, dim: int) -> np.ndarray:
    x = images.astype(np.float64) / 255.0
    if x.ndim == 4:
        x = x.mean(axis=-1)
    _, h, w = x.shape
    cols = [
        x.mean(axis=(1, 2)),
        x.std(axis=(1, 2)),
        (x > 0.5).mean(axis=(1, 2)),
        x[:, : h // 2, : w // 2].mean(axis=(1, 2)),
        x[:, : h // 2, w // 2 :].mean(axis=(1, 2)),
        x[:, h // 2 :, : w // 2].mean(axis=(1, 2)),
        x[:, h // 2 :, w // 2 :].mean(axis=(1, 2)),
    ]
    k = 1
    while len(cols) < dim:
        cols.append(np.cos(k * np.pi * cols[0]))
        k += 1
    return np.stack(cols[:dim], axis=1).astype(np.float32)


def main() -> int:
    request = json.loads(Path(sys.argv[1]).read_text())
    options = request.get("options") or {}
    dim = int(options.get("dim", 8))
    name = str(options.get("name", "fake"))
    response = Path(request["response"])
    if request["action"] == "describe":
        info = {
            "protocol": 1,
            "name": name,
            "dim": dim,
            "input_size": 0,
            "preprocessing": {"scale": "uint8 / 255"},
            "weights_fingerprint": f"fake-v1-dim{dim}",
        }
        response.write_text(json.dumps(info))
        return 0
    images = np.load(request["images"], mmap_mode="r")
    out_dir = Path(request["out_dir"])
    written = []
    fail_after = options.get("fail_after", os.environ.get("FAKE_ADAPTER_FAIL_AFTER"))
    for i, shard in enumerate(request["shards"]):
        if fail_after is not None and i >= int(fail_after):
            print("fake adapter: simulated failure", file=sys.stderr)
            return 3
        start, stop = int(shard["start"]), int(shard["stop"])
        emb = features(np.asarray(images[start:stop]), dim)
        nan_row = options.get("nan_row")
        if nan_row is not None and start <= int(nan_row) < stop:
            emb[int(nan_row) - start] = np.nan
        tmp = out_dir / f".{shard['file']}.tmp"
        with open(tmp, "wb") as f:
            np.save(f, emb)
        os.replace(tmp, out_dir / shard["file"])
        if "marker" in options:
            with open(options["marker"], "a") as f:
                f.write(shard["file"] + "\n")
        written.append(shard["file"])
    response.write_text(json.dumps({"protocol": 1, "dim": dim, "shards": written}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
