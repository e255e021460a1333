"""The chosen SAE beside the baseline dictionaries, from ``WS/summary.json``: one row per
headline figure with the SAE's mean and sd over its seeds and each baseline's value, and
the figures where a baseline matches or beats the SAE (the report and the browser show
both).

A baseline *matches or beats* the SAE on a figure when it is at least the SAE's mean minus
one standard deviation over the seeds (at most the mean plus one sd where lower is better;
the mean itself with one seed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medsae.frontend.parts import read_json
from medsae.workspace import SUMMARY

FIGURES: tuple[tuple[str, str, bool | None], ...] = (
    ("r2", "R² (test)", True),
    ("l0", "L0 (active latents per slice)", None),
    ("recovery_at_10", "recovery at 10 (shared)", True),
    ("mean_n_features", "mean N features (50–100% of dense AUROC)", False),
    ("monosemanticity", "monosemanticity (top-10 mean)", True),
    ("detection_balanced_accuracy", "description detection (median)", True),
    ("ranking_top2", "description ranking top-2", True),
    ("fingerprint_agreement", "fingerprint agreement", True),
    ("text_precision_at_10", "text retrieval P@10", True),
    ("pointing_game", "pointing game", True),
    ("energy_in_mask", "energy in mask", True),
)
"""(summary key, label, higher is better; None: not a quality figure)."""


def read_summary(root: Path) -> dict[str, Any] | None:
    """``WS/summary.json`` when it names a run (written by the pipeline), else None."""
    summary = read_json(Path(root) / SUMMARY)
    return summary if isinstance(summary, dict) and summary.get("run") else None


def fmt_spread(value: Any, sd: Any) -> str:
    """``0.833 ± 0.012`` (with an sd), ``0.833``, or ``–`` when missing."""

    def f(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    if value is None:
        return "–"
    return f"{f(value)} ± {f(sd)}" if isinstance(sd, int | float) else f(value)


def with_spread(summary: dict[str, Any], key: str) -> str:
    """A summary figure with its sd over seeds where there is one."""
    return fmt_spread(summary.get(key), summary.get(key + "_sd"))


def matches(base: Any, mean: Any, sd: Any, higher: bool) -> bool:
    """Whether a baseline's value matches or beats the SAE's mean within one sd."""
    if not isinstance(base, int | float) or not isinstance(mean, int | float):
        return False
    spread = float(sd) if isinstance(sd, int | float) else 0.0
    return base >= mean - spread if higher else base <= mean + spread


def findings(summary: dict[str, Any]) -> list[str]:
    """One sentence per (baseline, figure) where the baseline matches or beats the SAE."""
    out = []
    n = summary.get("n_seeds") or 1
    for name, figures in (summary.get("baselines") or {}).items():
        for key, label, higher in FIGURES:
            if higher is None:
                continue
            mean, sd, base = summary.get(key), summary.get(key + "_sd"), figures.get(key)
            if matches(base, mean, sd, higher):
                word = "beats" if (base > mean if higher else base < mean) else "matches"
                out.append(
                    f"{name} {word} the SAE on {label}: {fmt_spread(base, None)} against "
                    f"{with_spread(summary, key)} ({n} seed{'s' if n != 1 else ''})."
                )
    return out


def side_by_side(summary: dict[str, Any]) -> dict[str, Any]:
    """The rows and findings both front ends show (see the module docstring)."""
    baselines = summary.get("baselines") or {}
    return {
        "run": summary.get("run"),
        "n_seeds": summary.get("n_seeds") or 1,
        "seed_stability": summary.get("seed_stability"),
        "baselines": list(baselines),
        "rows": [
            {
                "figure": key,
                "label": label,
                "sae": summary.get(key),
                "sae_sd": summary.get(key + "_sd"),
                "sae_text": with_spread(summary, key),
                "baselines": {b: (baselines[b] or {}).get(key) for b in baselines},
            }
            for key, label, _ in FIGURES
        ],
        "findings": findings(summary),
    }
