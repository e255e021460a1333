"""Export a trained SAE to the folder layout another SAE library loads with its own loader.

* ``sparsify`` (EleutherAI): ``cfg.json`` (``SparseCoderConfig`` + ``d_in``) and
  ``sae.safetensors`` with ``encoder.weight (D, d)``, ``encoder.bias``, ``W_dec (D, d)``,
  ``b_dec``; ``SparseCoder.load_from_disk(folder)``. TopK inference form only (sparsify has
  no JumpReLU).
* ``saelens``: ``cfg.json`` (``architecture`` and the SAE config of SAELens 6) and
  ``sae_weights.safetensors`` with ``W_enc (d, D)``, ``b_enc``, ``W_dec (D, d)``, ``b_dec`` and,
  for the JumpReLU form, ``threshold``; ``SAE.load_from_disk(folder)``. medsae's ``topk``
  form is SAELens's ``topk``, ``jumprelu`` (BatchTopK and both Matryoshka variants, with
  medsae's threshold) its ``jumprelu``, ``relu`` its ``standard``.

Which form an SAE has is its architecture's ``inference`` trait; before writing, the export
checks on random inputs that the plain form computed from the exported tensors gives the
architecture's own codes, and refuses an architecture whose inference is something else.
The libraries take the SAE's input as medsae's ``preprocess`` makes it: a ``scale``
transform is folded into the weights (raw inputs work), an ``l2`` one is the caller's (each
row divided by its norm), as the model card says. Every export also writes ``README.md``
(:mod:`medsae.sae.model_card`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

from medsae.errors import InputError
from medsae.sae.base import SparseAutoencoder
from medsae.sae.checkpoint import load_sae
from medsae.sae.io import CFG, EXPORT_MODEL_CARD, EXPORT_SAELENS_WEIGHTS, WEIGHTS
from medsae.sae.model_card import model_card

Target = Literal["sparsify", "saelens"]
TARGETS: tuple[str, ...] = ("sparsify", "saelens")
SAELENS_ARCHITECTURE = {"topk": "topk", "jumprelu": "jumprelu", "relu": "standard"}
SAELENS_VERSION = "6.0.0"
"""The SAELens config layout written (``metadata.sae_lens_version``; 6.x loaders read it)."""


def plain_codes(
    form: str, x_bd: torch.Tensor, tensors: dict[str, torch.Tensor], k: int | None
) -> torch.Tensor:
    """Codes of the plain inference ``form`` from medsae-layout tensors (``W_enc (D, d)``)."""
    pre = (x_bd - tensors["b_dec"]) @ tensors["W_enc"].t() + tensors["b_enc"]
    if form == "topk":
        assert k is not None
        vals, idx = pre.topk(k, dim=1, sorted=False)
        return torch.zeros_like(pre).scatter_(1, idx, vals.clamp_min(0))
    act = pre.clamp_min(0)
    if form == "jumprelu":
        return act * (pre > tensors["threshold"])
    return act


def _inference_tensors(sae: SparseAutoencoder) -> dict[str, torch.Tensor]:
    return {
        name: getattr(sae, name).detach().float().cpu().contiguous()
        for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")
    }


def check_plain_form(sae: SparseAutoencoder, what: str, n: int = 256, tol: float = 1e-5) -> None:
    """Refuse an SAE whose codes are not its ``inference`` form computed plainly."""
    gen = torch.Generator().manual_seed(0)
    x = sae.preprocess(torch.randn(n, sae.cfg.d_in, generator=gen))
    with torch.no_grad():
        own = sae.infer(sae.pre_activation(x)).float().cpu()
        plain = plain_codes(sae.inference, x.cpu(), _inference_tensors(sae), _k(sae))
    err = float((own - plain).abs().max()) if own.numel() else 0.0
    if err > tol:
        raise InputError(
            what,
            f"architecture {sae.cfg.arch!r} does not compute the plain {sae.inference!r} "
            f"inference form (codes differ by {err:.3g}); it cannot be exported to another library",
        )


def _k(sae: SparseAutoencoder) -> int | None:
    k = getattr(sae.cfg, "k", None)
    return int(k) if k is not None else None


def _sparsify_files(sae: SparseAutoencoder, what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if sae.inference != "topk":
        raise InputError(
            what,
            f"sparsify's SparseCoder has a TopK form only; {sae.cfg.arch!r} has the "
            f"{sae.inference!r} inference form: export it with --to saelens",
        )
    t = _inference_tensors(sae)
    cfg = {
        "activation": "topk",
        "expansion_factor": max(1, sae.cfg.n_latents // sae.cfg.d_in),
        "normalize_decoder": True,
        "num_latents": sae.cfg.n_latents,
        "k": _k(sae),
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": sae.cfg.d_in,
    }
    weights = {
        "encoder.weight": t["W_enc"],
        "encoder.bias": t["b_enc"],
        "W_dec": t["W_dec"],
        "b_dec": t["b_dec"],
    }
    return {CFG: cfg}, {WEIGHTS: weights}


def _saelens_files(sae: SparseAutoencoder, what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    architecture = SAELENS_ARCHITECTURE.get(sae.inference)
    if architecture is None:
        raise InputError(what, f"SAELens has no form for inference {sae.inference!r}")
    t = _inference_tensors(sae)
    cfg: dict[str, Any] = {
        "architecture": architecture,
        "d_in": sae.cfg.d_in,
        "d_sae": sae.cfg.n_latents,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": SAELENS_VERSION,
            "model_name": sae.cfg.encoder,
            "hook_name": "embedding",
            "medsae_arch": sae.cfg.arch,
            "medsae_run": sae.cfg.run,
            "medsae_levels": list(sae.cfg.levels),
            "medsae_input_transform": sae.cfg.input_transform,
        },
    }
    if architecture == "topk":
        cfg["k"] = _k(sae)
        cfg["rescale_acts_by_decoder_norm"] = False
    weights = {
        "W_enc": t["W_enc"].t().contiguous(),
        "b_enc": t["b_enc"],
        "W_dec": t["W_dec"],
        "b_dec": t["b_dec"],
    }
    if architecture == "jumprelu":
        weights["threshold"] = t["threshold"]
    return {CFG: cfg}, {EXPORT_SAELENS_WEIGHTS: weights}


WRITERS: dict[str, Callable[[SparseAutoencoder, str], tuple[dict[str, Any], dict[str, Any]]]] = {
    "sparsify": _sparsify_files,
    "saelens": _saelens_files,
}


def export_sae(
    sae: SparseAutoencoder,
    out: str | Path,
    to: str,
    *,
    run_folder: Path | None = None,
    force: bool = False,
) -> Path:
    """Write ``sae`` to ``out`` in the layout of library ``to`` (module docstring) with a model
    card; ``run_folder`` (the trained run) supplies the card's figures. Refuses to replace a
    non-empty ``out`` unless ``force``; writes a temporary folder, then renames it."""
    what = f"export of {sae.cfg.run or sae.cfg.arch}"
    if to not in WRITERS:
        raise InputError("--to", f"unknown target {to!r}; choose one of {list(TARGETS)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise InputError(str(out), "exists and is not empty; choose another folder or --force")
    sae = sae.cpu().eval()
    sae.fold_input_scale()
    check_plain_form(sae, what)
    json_files, tensor_files = WRITERS[to](sae, what)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, data in json_files.items():
        (tmp / name).write_text(json.dumps(data, indent=2, sort_keys=True))
    for name, tensors in tensor_files.items():
        save_file(tensors, str(tmp / name), metadata={"format": "pt"})
    (tmp / EXPORT_MODEL_CARD).write_text(model_card(sae, to, run_folder))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def export_run(run_folder: str | Path, out: str | Path, to: str, force: bool = False) -> Path:
    """Export the trained run in ``run_folder`` (``WS/saes/<encoder>/<run>``) to ``out``."""
    run_folder = Path(run_folder)
    return export_sae(load_sae(run_folder), out, to, run_folder=run_folder, force=force)
