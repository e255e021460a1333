"""The report's side-by-side section: the chosen SAE (mean ± sd over its seeds) beside every
baseline dictionary on each headline figure, its stability across seeds, and in words where
a baseline matches or beats the SAE (:mod:`medsae.frontend.beside`, from ``WS/summary.json``).
"""

from __future__ import annotations

from typing import Any

from medsae.frontend.beside import FIGURES, findings, read_summary, with_spread
from medsae.report.html import esc, kpis, table_html

__all__ = ["FIGURES", "baselines_section", "findings", "with_spread"]


def baselines_section(ws_root: Any) -> str:
    """The section's inner HTML (a "not computed" note without a summary)."""
    summary = read_summary(ws_root)
    if summary is None:  # a workspace built stage by stage
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
                    ("MCC by activations", stability.get("act_mcc")),
                    ("matched by activations ≥ 0.7", stability.get("act_frac_0_7")),
                ]
            )
        )
        parts.append(
            '<p class="muted">Decoder rows are matched on |cosine|, activations on their '
            "correlation over the same slices. Decoder cosine understates recurrence when the "
            "embeddings span fewer dimensions than they have: a decoder row keeps its random "
            "initialisation outside the data's span (docs/evaluate.md).</p>"
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
