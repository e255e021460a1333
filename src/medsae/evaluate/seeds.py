"""Figures over the seeds of one configuration, and which runs are baselines.

A configuration trained with several seeds (``TrainConfig.seeds``) has one run per seed:
``<run>`` for the first and ``<run>_s<seed>`` for the others
(:func:`medsae.sae.grid.seed_of`). Every figure of the configuration is the **mean over its
seeds**, beside the **sample standard deviation** (``ddof = 1``; None with one seed) and the
number of seeds: :func:`mean_sd` for one figure, :func:`aggregate_seeds` for Table 1's rows.
Rank ranks on the means.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from medsae.sae.grid import seed_of

SD_SUFFIX = "_sd"
"""``<figure>_sd``: the standard deviation of ``<figure>`` over the configuration's seeds."""
N_SEEDS = "n_seeds"


def mean_sd(values: Iterable[Any]) -> tuple[float | None, float | None, int]:
    """``(mean, sd, n)`` of the finite numbers among ``values``: the mean, the sample standard
    deviation (``ddof = 1``; None below two values) and how many there were."""
    xs = [float(v) for v in values if _finite(v)]
    if not xs:
        return None, None, 0
    mean = float(np.mean(xs))
    sd = float(np.std(xs, ddof=1)) if len(xs) > 1 else None
    return mean, sd, len(xs)


def _finite(v: Any) -> bool:
    if isinstance(v, bool) or v is None:
        return False
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def arch_of(run: str) -> str:
    """The architecture of a run name (its first part)."""
    return run.split("_", 1)[0]


def is_baseline(run: str) -> bool:
    """Whether a run is a baseline dictionary (pca, ica, kmeans, dictionary, random)."""
    from medsae.sae.baselines import BASELINES

    return arch_of(run) in BASELINES


def config_of(run: str) -> str:
    """The configuration a run belongs to (its name without a seed suffix)."""
    return seed_of(run)[0]


def seed_group(run: str, runs: Sequence[str]) -> list[str]:
    """The runs among ``runs`` of ``run``'s configuration: the first seed's run, then the
    others in seed order."""
    config = config_of(run)
    group = [r for r in runs if config_of(r) == config]
    return sorted(group, key=lambda r: -1 if seed_of(r)[1] is None else int(seed_of(r)[1] or 0))


def aggregate_seeds(frame: pd.DataFrame, figures: Sequence[str]) -> pd.DataFrame:
    """One row per (encoder, configuration): the mean of every numeric column over the seeds,
    ``<figure>_sd`` for ``figures`` and ``n_seeds``; ``run`` is the configuration's first run
    and ``seed_runs`` lists its runs."""
    if frame.empty:
        out = frame.copy()
        for c in figures:
            out[c + SD_SUFFIX] = pd.Series(dtype=float)
        out[N_SEEDS] = pd.Series(dtype=int)
        out["seed_runs"] = pd.Series(dtype=object)
        return out
    rows = []
    keys = frame.assign(_config=frame["run"].map(config_of))
    for (_, _), sub in keys.groupby(["encoder", "_config"], sort=False):
        runs = seed_group(str(sub["run"].iloc[0]), [str(r) for r in sub["run"]])
        sub = sub.set_index("run").loc[runs].reset_index()
        row: dict[str, Any] = {}
        for col in frame.columns:
            if col == "run":
                row[col] = runs[0]
            elif pd.api.types.is_numeric_dtype(frame[col]):
                row[col] = mean_sd(sub[col])[0]
            else:
                row[col] = sub[col].iloc[0]
        for c in figures:
            row[c + SD_SUFFIX] = mean_sd(sub[c])[1]
        row[N_SEEDS] = len(runs)
        row["seed_runs"] = " ".join(runs)
        rows.append(row)
    return pd.DataFrame(rows)


def seed_summary(figures: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The figures of one configuration's seed runs (``{run: {figure: value}}``, first run
    first) summarised: each numeric figure the mean over the seeds that have it,
    ``<figure>_sd`` beside it, ``n_seeds`` (runs) and ``seed_runs``; a figure fewer than
    ``n_seeds`` runs have also gets ``<figure>_n``."""
    runs = list(figures)
    out: dict[str, Any] = {N_SEEDS: len(runs), "seed_runs": runs}
    keys = [k for k in (figures[runs[0]] if runs else {}) if not k.endswith("_baseline")]
    for key in keys:
        values = [figures[r].get(key) for r in runs]
        if not any(_finite(v) for v in values):
            continue
        mean, sd, n = mean_sd(values)
        out[key], out[key + SD_SUFFIX] = mean, sd
        if n < len(runs):
            out[key + "_n"] = n
    return out
