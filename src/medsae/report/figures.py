"""Figures of the report, drawn with matplotlib's Agg backend into PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def frontier_figure(points: list[dict[str, Any]], out: Path) -> Path | None:
    """R² against L0, one point per SAE run (labelled); the best run highlighted.

    ``points``: dicts with ``run``, ``r2``, ``l0`` and optionally ``best``.
    """
    pts = [p for p in points if _finite(p.get("r2")) and _finite(p.get("l0"))]
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.8), dpi=110)
    for p in pts:
        best = bool(p.get("best"))
        ax.scatter(
            p["l0"], p["r2"], s=60 if best else 36, c="#c92456" if best else "#2456c9", zorder=3
        )
        ax.annotate(
            str(p["run"]), (p["l0"], p["r2"]), textcoords="offset points", xytext=(5, 4), fontsize=7
        )
    ax.set_xlabel("L0 (mean active latents per slice)")
    ax.set_ylabel("R² (variance explained)")
    ax.set_title("Sparsity-fidelity frontier (test split)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def recovery_figure(curves: dict[str, pd.DataFrame], out: Path) -> Path | None:
    """Recovery against k, one line per run; each frame has a ``k`` column and a value column."""
    usable = {name: df for name, df in curves.items() if _curve_columns(df) is not None}
    if not usable:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.8), dpi=110)
    for name, df in usable.items():
        k_col, v_col = _curve_columns(df) or ("k", "recovery")
        if "split" in df.columns and (df["split"] == "test").any():
            df = df[df["split"] == "test"]
        groups = df.groupby("method") if "method" in df.columns else [(None, df)]
        for method, part in groups:
            d = part[[k_col, v_col]].groupby(k_col, as_index=False).mean().sort_values(k_col)
            label = name if method is None else f"{name} ({method})"
            ax.plot(d[k_col], d[v_col], marker="o", ms=3, label=label)
    ax.set_xlabel("features kept (k)")
    ax.set_ylabel("recovery (mean over tasks, test split)")
    ax.set_title("Recovery curves", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _curve_columns(df: pd.DataFrame) -> tuple[str, str] | None:
    k_col = next(
        (c for c in df.columns if str(c).lower() in {"k", "top_k", "n_latents", "n_features"}), None
    )
    if k_col is None:
        return None
    value = [
        c
        for c in df.columns
        if "recovery" in str(c).lower() and pd.api.types.is_numeric_dtype(df[c])
    ]
    return (k_col, value[0]) if value else None


def _finite(v: Any) -> bool:
    try:
        return v is not None and float(v) == float(v) and abs(float(v)) != float("inf")
    except (TypeError, ValueError):
        return False
