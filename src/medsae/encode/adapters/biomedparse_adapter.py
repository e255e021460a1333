"""BiomedParse v1 as a medsae external encoder (adapter protocol version 1).

Run it with the Python of an environment where BiomedParse v1 works (its repository checked
out, its requirements and detectron2 installed, the ``biomedparse_v1.pt`` checkpoint on
disk). It needs only NumPy and torch besides BiomedParse, and never imports medsae::

    medsae encode --workspace WS --encoder external \\
        --option command="/opt/bp-env/bin/python $(python -c 'from medsae.encode.adapters import adapter_path; print(adapter_path("biomedparse"))')" \\
        --option repo=/opt/BiomedParse --option checkpoint=/models/biomedparse_v1.pt

Embedding (the paper's): the FocalNet backbone's stage-4 feature map (``res5``, 1536
channels) averaged over space, ``z_c = mean_{h,w} res5_{c,h,w}``.

Preprocessing: uint8 slice -> float in [0, 255], resized to ``input_size`` (1024, the size
BiomedParse was trained at) with bilinear interpolation, grayscale replicated to RGB, then
standardised with the model's own ``pixel_mean``/``pixel_std`` buffers (on the 0-255 scale),
read from the loaded model rather than copied here. On a GPU the uint8 slices are copied
(16x less than the resized floats) and resized there in half precision, and the backbone
runs under fp16 autocast; on the CPU everything stays fp32.

Options (``--option key=value``): ``repo`` (BiomedParse checkout, required), ``checkpoint``
(path to ``biomedparse_v1.pt``, required unless ``random_init``), ``config`` (default
``configs/biomedparse_inference.yaml`` inside ``repo``), ``input_size`` (1024), ``device``
(``cuda`` when available), ``random_init`` (true: the paper's randomly initialised
BiomedParse baseline, seeded by ``seed``), ``dim`` (1536, checked against the model).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

PROTOCOL = 1
DEFAULT_DIM = 1536


def _fingerprint(path: Path, edge: int = 1 << 20) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(f"{path.name}\0{size}\n".encode())
    with open(path, "rb") as f:
        h.update(f.read(edge))
        if size > 2 * edge:
            f.seek(size - edge)
            h.update(f.read(edge))
    return "sha256-edges:" + h.hexdigest()


def describe(options: dict[str, Any]) -> dict[str, Any]:
    random_init = bool(options.get("random_init", False))
    seed = int(options.get("seed", 0))
    checkpoint = options.get("checkpoint")
    if random_init:
        weights = f"random-init:biomedparse-v1:seed={seed}"
    elif checkpoint and Path(checkpoint).is_file():
        weights = _fingerprint(Path(checkpoint))
    else:
        raise SystemExit(
            f"biomedparse adapter: checkpoint {checkpoint!r} not found; download biomedparse_v1.pt "
            "from huggingface.co/microsoft/BiomedParse (accept its licence) and pass --option checkpoint=PATH"
        )
    size = int(options.get("input_size", 1024))
    return {
        "protocol": PROTOCOL,
        "name": "random-biomedparse" if random_init else "biomedparse",
        "dim": int(options.get("dim", DEFAULT_DIM)),
        "input_size": size,
        "preprocessing": {
            "scale": "uint8 as float in [0, 255]",
            "resize": f"bilinear to {size}x{size}",
            "grayscale": "replicated to 3 channels",
            "normalisation": "BiomedParse pixel_mean / pixel_std (from the model)",
            "pooling": "mean of FocalNet stage-4 (res5) features",
        },
        "weights_fingerprint": weights,
    }


def load_model(options: dict[str, Any]) -> Any:
    """Build BiomedParse v1 from its repository (imports BiomedParse only here)."""
    import torch

    repo = Path(str(options.get("repo", ""))).expanduser()
    if not (repo / "modeling").is_dir():
        raise SystemExit(
            f"biomedparse adapter: --option repo={repo} is not a BiomedParse checkout (no modeling/)"
        )
    sys.path.insert(0, str(repo))
    os.chdir(repo)  # BiomedParse resolves its configs relative to the checkout
    from modeling import build_model  # type: ignore[import-not-found]
    from modeling.BaseModel import BaseModel  # type: ignore[import-not-found]
    from utilities.arguments import load_opt_from_config_files  # type: ignore[import-not-found]

    opt = load_opt_from_config_files(
        [str(options.get("config", "configs/biomedparse_inference.yaml"))]
    )
    device = str(options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    opt["device"] = device
    opt["distributed"] = False
    if options.get("random_init"):
        torch.manual_seed(int(options.get("seed", 0)))
        model = BaseModel(opt, build_model(opt))
    else:
        model = BaseModel(opt, build_model(opt)).from_pretrained(str(options["checkpoint"]))
    return model.eval().to(device), device


def model_input(u8: np.ndarray, size: int, mean: Any, std: Any, device: Any) -> Any:
    """A uint8 batch ``(B, S, S)`` / ``(B, S, S, 3)`` -> the standardised model input on
    ``device``: the small uint8 images are copied (pinned, without waiting, on a GPU), then
    resized to ``size`` and standardised there; in half precision on a GPU (fp16 carries the
    0-255 scale to within 0.125), in fp32 on the CPU. ``mean``/``std``: ``(1, 3, 1, 1)``."""
    import torch
    import torch.nn.functional as F

    dev = torch.device(device)
    x = torch.from_numpy(np.ascontiguousarray(u8))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    if dev.type == "cuda":
        x = x.pin_memory()
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    x = x.to(dev, non_blocking=True).to(dtype)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return (x - mean.to(dev, dtype)) / std.to(dev, dtype)


def encode(request: dict[str, Any]) -> dict[str, Any]:
    import contextlib

    import torch

    options = request.get("options") or {}
    info = describe(options)
    model, device = load_model(options)
    net = model.model
    mean = net.pixel_mean.view(1, 3, 1, 1).float()
    std = net.pixel_std.view(1, 3, 1, 1).float()
    size = info["input_size"]
    images = np.load(request["images"], mmap_mode="r")
    out_dir = Path(request["out_dir"])
    batch = max(1, int(request.get("batch_size", 8)))
    on_gpu = torch.device(device).type == "cuda"
    if on_gpu:
        torch.backends.cudnn.benchmark = True
    written = []
    for shard in request["shards"]:
        start, stop = int(shard["start"]), int(shard["stop"])
        parts = []
        for lo in range(start, stop, batch):
            x = model_input(images[lo : min(lo + batch, stop)], size, mean, std, device)
            autocast = (
                torch.autocast("cuda", dtype=torch.float16) if on_gpu else contextlib.nullcontext()
            )
            with torch.inference_mode(), autocast:
                res5 = net.backbone(x)["res5"]
            if res5.shape[1] != info["dim"]:
                raise SystemExit(
                    f"biomedparse adapter: res5 has {res5.shape[1]} channels, described {info['dim']}"
                )
            parts.append(res5.float().mean(dim=(2, 3)).cpu().numpy())
        emb = np.concatenate(parts).astype(np.float32)
        tmp = out_dir / f".{shard['file']}.tmp"
        with open(tmp, "wb") as f:
            np.save(f, emb)
        os.replace(tmp, out_dir / shard["file"])
        written.append(shard["file"])
        print(f"biomedparse adapter: wrote {shard['file']} ({stop - start} slices)", flush=True)
    return {"protocol": PROTOCOL, "dim": info["dim"], "shards": written}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(
            "usage: biomedparse_adapter.py REQUEST.json (called by `medsae encode --encoder external`)",
            file=sys.stderr,
        )
        return 2
    request = json.loads(Path(argv[1]).read_text())
    if int(request.get("protocol", 0)) != PROTOCOL:
        print(
            f"biomedparse adapter speaks protocol {PROTOCOL}, got {request.get('protocol')}",
            file=sys.stderr,
        )
        return 2
    if request["action"] == "describe":
        response = describe(request.get("options") or {})
    elif request["action"] == "encode":
        response = encode(request)
    else:
        print(f"unknown action {request['action']!r}", file=sys.stderr)
        return 2
    Path(request["response"]).write_text(json.dumps(response))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
