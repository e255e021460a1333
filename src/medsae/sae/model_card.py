"""The model card (``README.md``, Hugging Face model-card convention) of an exported SAE.

YAML front matter (library, tags), then: what the SAE is, its encoder and training data,
its configuration, the headline figures of the run (``metrics.json``: test split per level;
the evaluation summary when the workspace has one) and how to load it with the target
library and with medsae. Figures are read from the run's files, never restated by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medsae.sae.base import SparseAutoencoder
from medsae.sae.io import METRICS
from medsae.workspace import SUMMARY, read_manifest

LIBRARY = {"sparsify": "sparsify", "saelens": "saelens"}
HEADLINE = ("r2", "l0", "k_nominal", "dead_fraction", "cosine")
EVAL_HEADLINE = (
    "recovery_at_10",
    "detection_balanced_accuracy",
    "fingerprint_agreement",
    "text_precision_at_10",
)


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "n/a" if v is None else str(v)


def _figures(run_folder: Path | None) -> list[str]:
    if run_folder is None:
        return ["No training run was given: no figures."]
    metrics = _json(run_folder / METRICS)
    lines: list[str] = []
    test = (metrics or {}).get("splits", {}).get("test")
    if test:
        lines += [
            "Test split of the training workspace (inference form; `r2` = 1 - FVU with "
            "per-dimension means):",
            "",
            "| level | " + " | ".join(HEADLINE) + " |",
            "|---" * (len(HEADLINE) + 1) + "|",
        ]
        for level, row in test.items():
            lines.append(f"| {level} | " + " | ".join(_fmt(row.get(k)) for k in HEADLINE) + " |")
    else:
        lines.append(f"No test-split metrics in {run_folder / METRICS}.")
    # WS/saes/<encoder>/<run> -> WS/eval/<encoder>/<run>/summary.json
    summary = _json(run_folder.parents[2] / "eval" / run_folder.parent.name / run_folder.name / SUMMARY) if len(run_folder.parents) > 2 else None  # fmt: skip
    if summary:
        found = [(k, summary[k]) for k in EVAL_HEADLINE if k in summary]
        if found:
            lines += ["", "Evaluation (`medsae evaluate`, test split):", ""]
            lines += [f"- `{k}`: {_fmt(v)}" for k, v in found]
    return lines


def _training(run_folder: Path | None) -> list[str]:
    if run_folder is None:
        return []
    manifest = read_manifest(run_folder.parent) or {}
    counts, config = manifest.get("counts", {}), manifest.get("config", {})
    lines = []
    if counts.get("train_rows"):
        lines.append(f"- training slices (train split): {counts['train_rows']:,}")
    if counts.get("steps"):
        lines.append(f"- optimiser steps: {counts['steps']:,}")
    for key in ("epochs", "batch_size", "lr", "lr_schedule", "seed"):
        if key in config:
            lines.append(f"- {key}: {_fmt(config[key])}")
    return lines


def _loading(sae: SparseAutoencoder, to: str) -> str:
    prep = (
        "x = x / x.norm(dim=1, keepdim=True)   # the SAE was trained on L2-normalised embeddings\n"
        if sae.cfg.input_transform == "l2"
        else ""
    )
    if to == "sparsify":
        return (
            "```python\nfrom sparsify import SparseCoder\n"
            'sae = SparseCoder.load_from_disk("THIS_FOLDER")\n'
            f"{prep}out = sae.encode(x)                  # top_acts, top_indices (k per row)\n"
            "x_hat = sae.decode(out.top_acts, out.top_indices)\n```"
        )
    return (
        "```python\nfrom sae_lens import SAE\n"
        'sae = SAE.load_from_disk("THIS_FOLDER")\n'
        f"{prep}codes = sae.encode(x)                 # dense (B, d_sae)\n"
        "x_hat = sae.decode(codes)\n```"
    )


def model_card(sae: SparseAutoencoder, to: str, run_folder: Path | None) -> str:
    """The README.md text of an export of ``sae`` to library ``to``."""
    cfg = sae.cfg
    levels = ", ".join(str(m) for m in cfg.levels)
    k = getattr(cfg, "k", None)
    transform = {
        "l2": "each embedding divided by its L2 norm (do the same before encoding)",
        "scale": "one scale factor, folded into these weights (raw embeddings work)",
        "none": "none (raw embeddings)",
    }[cfg.input_transform]
    front = [
        "---",
        f"library_name: {LIBRARY[to]}",
        "tags:",
        "- sparse-autoencoder",
        "- medsae",
        "- medical-imaging",
        f"- {cfg.arch}",
        "---",
    ]
    body = [
        f"# {cfg.run or cfg.arch}",
        "",
        f"A `{cfg.arch}` sparse autoencoder trained with medsae on the `{cfg.encoder or 'unknown'}` "
        f"embeddings of 2D CT/MRI slices, exported for {to}.",
        "",
        "## Model",
        "",
        f"- input dimension `d_in`: {cfg.d_in}; latents: {cfg.n_latents}",
        f"- nested levels (Matryoshka prefixes; codes `[:, :m]` decode level `m`): {levels}",
        f"- k: {_fmt(k)}; inference form: {sae.inference}"
        + (f" (threshold {float(sae.threshold.max()):.6g})" if sae.inference == "jumprelu" else ""),
        f"- input preprocessing: {transform}",
        "",
        "## Encoder and data",
        "",
        f"- encoder: `{cfg.encoder or 'unknown'}`",
        *_training(run_folder),
        "",
        "## Figures",
        "",
        *_figures(run_folder),
        "",
        "## How to load",
        "",
        _loading(sae, to),
        "",
        "With medsae (the original checkpoint, `cfg.json` + `sae.safetensors` of the run folder):",
        "",
        '```python\nfrom medsae.sae import load_sae\nsae = load_sae("RUN_FOLDER")\n'
        "codes = sae.encode(x_raw)               # preprocessing applied inside\n```",
        "",
        "## Configuration (medsae)",
        "",
        "```json",
        json.dumps(cfg.model_dump(mode="json"), indent=2, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(front + body)
