"""Round trip of ``medsae export`` through the real libraries at full size.

For every built-in architecture (d_in = 1024, 8,192 latents, weights and threshold perturbed
as training leaves them, or the trained runs of a workspace with ``--workspace``), export to
each library that has its inference form, load the folder with the library's own loader
(``SparseCoder.load_from_disk``, ``SAE.load_from_disk``) and compare encode and decode with
medsae's on 4,096 inputs (JumpReLU entries within 1e-5 of the threshold counted apart: there the two
libraries' last-bit rounding can put an entry on either side of the discontinuity). Prints
JSON and writes ``benchmarks/results/interop.json``.

    pip install eai-sparsify sae-lens     # or: pip install -e '.[interop]'
    python benchmarks/interop.py
    python benchmarks/interop.py --workspace WS --encoder efficientnet-lite0
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from medsae.sae.base import SparseAutoencoder
from medsae.sae.checkpoint import load_sae
from medsae.sae.export import export_sae
from medsae.sae.registry import build_sae, sae_config

TOL = 1e-5
SHAPES: dict[str, dict[str, Any]] = {
    "topk": {"k": 40},
    "batchtopk": {"k": 40},
    "matryoshka": {"k": 40, "levels": [128, 512, 2048, 8192]},
    "matryoshka-perlevel": {"k": 40, "levels": [128, 512, 2048, 8192], "k_levels": [5, 10, 20, 40]},
    "relu": {},
}


def synthetic(arch: str, d: int = 1024, n: int = 8192) -> SparseAutoencoder:
    cfg = sae_config(arch=arch, d_in=d, n_latents=n, run=f"{arch}_synthetic", **SHAPES[arch])
    sae = build_sae(cfg, seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        sae.W_enc.add_(0.5 * torch.randn(n, d, generator=gen) / d**0.5)
        sae.b_enc.copy_(0.02 * torch.randn(n, generator=gen))
        sae.b_dec.copy_(0.01 * torch.randn(d, generator=gen))
        sae.threshold.fill_(0.05 if sae.uses_threshold else 0.0)
    return sae.eval()


def library_codes(to: str, folder: Path, x_in: torch.Tensor, codes: torch.Tensor) -> dict[str, Any]:
    """Dense codes, reconstruction of those codes and of medsae's codes, from the library."""
    if to == "sparsify":
        from sparsify import SparseCoder

        coder = SparseCoder.load_from_disk(folder)
        enc = coder.encode(x_in)
        dense = torch.zeros_like(codes).scatter_(1, enc.top_indices, enc.top_acts)
        acts, idx = codes.topk(coder.cfg.k, dim=1)
        return {
            "codes": dense,
            "recon": coder.decode(enc.top_acts, enc.top_indices),
            "recon_of_ours": coder.decode(acts, idx),
        }
    from sae_lens import SAE

    sae = SAE.load_from_disk(str(folder))
    theirs = sae.encode(x_in)
    return {"codes": theirs, "recon": sae.decode(theirs), "recon_of_ours": sae.decode(codes)}


def round_trip(sae: SparseAutoencoder, to: str, n_rows: int) -> dict[str, Any]:
    """Encode and decode differences; entries whose pre-activation lies within ``TOL`` of
    the discontinuity (the JumpReLU threshold, 0 for ReLU) are counted apart (there a last-bit difference in the two
    libraries' matrix products moves the entry across the discontinuity)."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(n_rows, sae.cfg.d_in, generator=gen)
    x_in = sae.preprocess(x) if sae.cfg.input_transform == "l2" else x
    with torch.no_grad():
        pre = sae.pre_activation(x_in)
        codes = sae.infer(pre)
        recon = sae.decode(codes)
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_sae(sae, Path(tmp) / "out", to)
        with torch.no_grad():
            got = library_codes(to, folder, x_in, codes)
    diff = (got["codes"] - codes).abs()
    # the discontinuity: the JumpReLU threshold, 0 for ReLU (TopK's threshold buffer is 0
    # too; its boundary, ties at the k-th value, never flipped)
    boundary = (pre - sae.threshold).abs() <= TOL
    flips = (got["codes"] != 0) != (codes != 0)
    off = float(diff[~boundary].max())
    dec_ours = float((got["recon_of_ours"] - recon).abs().max())
    return {
        "encode_max_abs_diff": float(diff.max()),
        "encode_max_abs_diff_off_threshold": off,
        "support_flips": int(flips.sum()),
        "support_flips_off_threshold": int((flips & ~boundary).sum()),
        "entries": int(diff.numel()),
        "decode_same_codes_max_abs_diff": dec_ours,
        "decode_own_codes_max_abs_diff": float((got["recon"] - recon).abs().max()),
        "within_1e-5": off <= TOL and dec_ours <= TOL and int((flips & ~boundary).sum()) == 0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workspace", default=None, help="export the trained runs of this workspace")
    ap.add_argument("--encoder", default=None)
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "interop.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.workspace:
        base = Path(args.workspace) / "saes" / args.encoder
        saes = {p.name: load_sae(p) for p in sorted(base.iterdir()) if (p / "cfg.json").is_file()}
    else:
        saes = {arch: synthetic(arch) for arch in SHAPES}
    results: dict[str, Any] = {}
    for name, sae in saes.items():
        for to in ("sparsify", "saelens"):
            if to == "sparsify" and sae.inference != "topk":
                results[f"{name}->{to}"] = {"skipped": "sparsify has no JumpReLU/ReLU form"}
                continue
            results[f"{name}->{to}"] = round_trip(sae, to, args.rows)
            print(f"[interop] {name} -> {to}: {results[f'{name}->{to}']}", file=sys.stderr)
    done = [r for r in results.values() if "within_1e-5" in r]
    out = {
        "command": "python benchmarks/interop.py " + " ".join(sys.argv[1:]),
        "versions": {
            p: importlib.metadata.version(p) for p in ("eai-sparsify", "sae-lens", "torch")
        },
        "rows": args.rows,
        "tolerance": TOL,
        "results": results,
        "all_within_tolerance": bool(done) and all(r["within_1e-5"] for r in done),
    }
    text = json.dumps(out, indent=2, sort_keys=True)
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
