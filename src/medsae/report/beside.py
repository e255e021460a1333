"""The report's side-by-side section: the chosen SAE (mean ± sd over its seeds) beside every
baseline dictionary on each headline figure, its stability across seeds, and in words where
a baseline matches or beats the SAE.

A baseline *matches or beats* the SAE on a figure when it is at least the SAE's mean minus
one standard deviation over the seeds (at most the mean plus one sd where lower is better;
the mean itself with one seed). Everything comes from ``WS/summary.json`` (``baselines``,
``<figure>_sd``, ``n_seeds``, ``seed_stability``).
"""

from __future__ import annotations

from typing import Any

from medsae.frontend.parts import read_json
from medsae.report.html import esc, fmt, kpis, table_html
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


def with_spread(summary: dict[str, Any], key: str) -> str:
    """``0.833 ± 0.012`` (the sd over seeds where there is one), or the value alone."""
    value, sd = summary.get(key), summary.get(key + "_sd")
    if value is None:
        return "–"
    return f"{fmt(value)} ± {fmt(sd)}" if isinstance(sd, int | float) else fmt(value)


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
                    f"{name} {word} the SAE on {label}: {fmt(base)} against "
                    f"{with_spread(summary, key)} ({n} seed{'s' if n != 1 else ''})."
                )
    return out


def baselines_section(ws_root: Any) -> str:
    """The section's inner HTML (a "not computed" note without a summary)."""
    summary = read_json(ws_root / SUMMARY)
    if not isinstance(summary, dict) or not summary.get("run"):  # a workspace built stage by stage
        return (
            '<p class="muted">No <code>summary.json</code> in this workspace: the pipeline '
            "(<code>medsae run</code>, <code>medsae demo</code>) writes it, with the seed "
            "spread and the baselines' figures.</p>"
        )
    baselines = summary.get("baselines") or {}
    n = summary.get("n_seeds") or 1
    parts = []
    stability = summary.get("seed_stability")
    if isinstance(stability, dict):
        parts.append(
            kpis(
                [
                    ("seeds", n),
                    ("MCC across seeds", stability.get("mcc")),
                    ("alive latents matched ≥ 0.9", stability.get("frac_match_0_9")),
                    ("alive latents matched ≥ 0.7", stability.get("frac_match_0_7")),
                ]
            )
        )
    elif n < 2:
        parts.append(
            '<p class="muted">The chosen SAE was trained with one seed: no spread and no '
            "stability across seeds (set <code>train.seeds</code>).</p>"
        )
    sae_head = f"SAE {summary['run']} (mean ± sd, {n} seed{'s' if n != 1 else ''})"
    rows = [
        [label, with_spread(summary, key), *[(baselines[b] or {}).get(key) for b in baselines]]
        for key, label, _ in FIGURES
    ]
    parts.append(table_html(rows, ["figure", sae_head, *baselines], range(2, 2 + len(baselines))))
    if not baselines:
        parts.append(
            '<p class="muted">No baseline dictionary in this workspace (train <code>pca</code>, '
            "<code>kmeans</code>, <code>ica</code>, <code>dictionary</code> or "
            "<code>random</code> beside the SAEs).</p>"
        )
    else:
        said = findings(summary)
        parts.append(
            "<h3>Where a baseline matches or beats the SAE</h3>"
            + (
                "<ul>" + "".join(f"<li>{esc(s)}</li>" for s in said) + "</ul>"
                if said
                else "<p>On no figure: the SAE is ahead of every baseline (beyond one sd).</p>"
            )
            + '<p class="muted">A dash: the figure was not computed for that run (interpret '
            "and index run on the chosen SAE; <code>benchmarks/evidence.py</code> runs them on "
            "the baselines and seeds too).</p>"
        )
    return "".join(parts)
