"""Ranking figures (matplotlib, Agg backend): frontier, recovery curves, monosemanticity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medsae.evaluate.io import (
    FIGURE_MONOSEMANTICITY,
    FIGURE_R2_L0,
    FIGURE_RECOVERY,
    MONOSEMANTICITY,
    RECOVERY,
    SUMMARY,
)


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pareto_front(l0: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """Indices of the points not dominated (lower L0 and higher R²), sorted by L0."""
    order = np.argsort(l0, kind="stable")
    front, best = [], -np.inf
    for i in order:
        if r2[i] > best:
            front.append(i)
            best = r2[i]
    return np.array(front, dtype=np.int64)


def frontier_figure(table: pd.DataFrame, path: Path, dpi: int) -> bool:
    """R² against L0, one colour per encoder, with each encoder's Pareto frontier."""
    data = table.dropna(subset=["r2", "l0"])
    if data.empty:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    kind = data["kind"] if "kind" in data else pd.Series("sae", index=data.index)
    for enc, sub in data[kind == "sae"].groupby("encoder"):
        l0, r2 = sub["l0"].to_numpy(float), sub["r2"].to_numpy(float)
        pts = ax.scatter(l0, r2, label=str(enc), alpha=0.8)
        if "r2_sd" in sub:  # the spread over seeds, where a configuration has several
            sd = sub["r2_sd"].to_numpy(float)
            ax.errorbar(l0, r2, yerr=np.nan_to_num(sd), fmt="none", color="gray", lw=1)
        front = pareto_front(l0, r2)
        ax.plot(l0[front], r2[front], color=pts.get_facecolor()[0], lw=1)
    for _, row in data[kind == "baseline"].iterrows():
        ax.scatter([row["l0"]], [row["r2"]], marker="x", color="black", alpha=0.8)
        ax.annotate(str(row["run"]).split("_")[0], (row["l0"], row["r2"]), fontsize=7)
    ax.set_xlabel("L0 (active latents per slice)")
    ax.set_ylabel("R² (per-dimension)")
    ax.set_title("Reconstruction vs sparsity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return True


def recovery_figure(folders: list[Path], path: Path, dpi: int) -> bool:
    """Mean recovery against N per configuration (headline split; the shared mode, the
    headline, when it was run, else the per-class ``headline_method``)."""
    import json

    from medsae.evaluate.seeds import config_of, is_baseline

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    groups: dict[str, list[pd.Series]] = {}
    for folder in folders:
        rec_path = folder / RECOVERY
        if not rec_path.is_file():
            continue
        summary = json.loads((folder / SUMMARY).read_text())
        rec = pd.read_parquet(rec_path)
        keep = rec["split"] == summary.get("headline_split", "test")
        if "mode" in rec.columns and (rec["mode"] == "shared").any():
            keep &= rec["mode"] == "shared"
        else:
            keep &= rec["method"] == summary.get("headline_method", "l1")
            if "mode" in rec.columns:
                keep &= rec["mode"] == "per_class"
        if "above_floor" in rec.columns:
            keep &= rec["above_floor"].astype(bool)
        rec = rec[keep]
        if rec.empty:
            continue
        label = f"{folder.parent.name}/{config_of(folder.name)}"
        groups.setdefault(label, []).append(rec.groupby("n_features")["recovery"].mean())
    for label, curves in groups.items():  # the mean over seeds, the band one sd either side
        both = pd.concat(curves, axis=1)
        mean = both.mean(axis=1)
        baseline = is_baseline(label.split("/", 1)[1])
        line = ax.plot(
            mean.index,
            mean.to_numpy(),
            marker="x" if baseline else "o",
            ls="--" if baseline else "-",
            ms=3,
            label=label + (f" ({len(curves)} seeds)" if len(curves) > 1 else ""),
        )
        if len(curves) > 1:
            sd = both.std(axis=1, ddof=1).to_numpy()
            color = line[0].get_color()
            ax.fill_between(mean.index, mean - sd, mean + sd, color=color, alpha=0.2)
    if not groups:
        plt.close(fig)
        return False
    ax.set_xscale("log")
    ax.set_xlabel("N sparse features per classifier")
    ax.set_ylabel("ROC-AUC(N) / dense ROC-AUC (mean over tasks)")
    ax.set_title("Performance recovery")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return True


def monosemanticity_figure(folders: list[Path], path: Path, dpi: int) -> bool:
    """Distribution of the scored features' monosemanticity per configuration."""
    data, labels = [], []
    for folder in folders:
        p = folder / MONOSEMANTICITY
        if not p.is_file():
            continue
        scores = pd.read_parquet(p, columns=["score"])["score"].dropna().to_numpy()
        if len(scores):
            data.append(scores)
            labels.append(f"{folder.parent.name}/{folder.name}")
    if not data:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(data) + 2), 4.5))
    ax.boxplot(data, showfliers=True)
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("monosemanticity (coherence x specificity)")
    ax.set_title("Monosemanticity of scored features")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return True


def write_figures(folders: list[Path], table: pd.DataFrame, out: Path, dpi: int = 120) -> list[str]:
    """Write every figure that has data; returns their file names."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if frontier_figure(table, out / FIGURE_R2_L0, dpi):
        written.append(FIGURE_R2_L0)
    if recovery_figure(folders, out / FIGURE_RECOVERY, dpi):
        written.append(FIGURE_RECOVERY)
    if monosemanticity_figure(folders, out / FIGURE_MONOSEMANTICITY, dpi):
        written.append(FIGURE_MONOSEMANTICITY)
    return written
