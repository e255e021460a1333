"""Linear probes on arrays and labels, without a workspace.

:func:`linear_probes` scores features (dense embeddings, or the sparse codes of any SAE) on
labels a user brings, through the same task construction (:func:`~medsae.evaluate.tasks.
categorical_task`), scaling (:func:`~medsae.evaluate.probes.standardize_dense` /
:func:`~medsae.evaluate.probes.scale_sparse`) and probe fit (:func:`~medsae.evaluate.probes.
run_probes`) as the ``evaluate`` stage, with its defaults. Reconstruction on arrays:
:func:`medsae.evaluate.reconstruction.reconstruction_report`, which takes an array as well
as an embedding store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from medsae.errors import InputError
from medsae.evaluate.config import EvaluateConfig
from medsae.evaluate.probes import run_probes, scale_sparse, standardize_dense
from medsae.evaluate.tasks import TASK_FILTER_SPLITS, Task, categorical_task, filter_tasks


def _as_features(x: Any) -> np.ndarray | sp.csr_matrix:
    if sp.issparse(x):
        return sp.csr_matrix(x)
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise InputError("features", f"expected (N, d) features per split, got shape {arr.shape}")
    return arr


def tasks_from_labels(
    labels: Mapping[str, Any], n_rows: Mapping[str, int]
) -> tuple[list[Task], dict[str, np.ndarray]]:
    """Tasks over the splits' rows stacked in order, and each split's row numbers.

    ``labels``: ``{split: y}`` (one task, ``label``) or ``{split: {task: y}}``; ``y`` holds
    one class per row (any values; None or NaN is missing).
    """
    rows: dict[str, np.ndarray] = {}
    start = 0
    for split, n in n_rows.items():
        rows[split] = np.arange(start, start + n)
        start += n
    per_split = {s: y if isinstance(y, Mapping) else {"label": y} for s, y in labels.items()}
    names = list(next(iter(per_split.values())))
    tasks = []
    for name in names:
        parts = []
        for split, n in n_rows.items():
            if split not in per_split or name not in per_split[split]:
                raise InputError(f"labels[{split!r}]", f"no labels of task {name!r}")
            y = pd.Series(np.asarray(per_split[split][name], dtype=object))
            if len(y) != n:
                raise InputError(
                    f"labels[{split!r}][{name!r}]", f"{len(y)} labels for {n} feature rows"
                )
            parts.append(y)
        tasks.append(categorical_task(name, pd.concat(parts, ignore_index=True), kind="label"))
    return tasks, rows


def linear_probes(
    features: Mapping[str, Any],
    labels: Mapping[str, Any],
    *,
    l2_grid: Sequence[float] | None = None,
    max_iter: int | None = None,
    min_examples: int | None = None,
    kind: str | None = None,
    l2_select: str | None = None,
    probe_c: float | None = None,
) -> pd.DataFrame:
    """Probe scores of ``features`` on ``labels``, one row per task and evaluation split.

    ``features``: ``{"train": X, "val": X, "test": X}`` (``test`` optional; NumPy, torch or
    SciPy sparse), rows aligned with ``labels`` (see :func:`tasks_from_labels`). The L2
    strength is the fixed ``C = probe_c`` by default (``l2_select = "val"``: chosen per
    one-vs-rest classifier on ``val``), never chosen on ``test``. Sparse
    features (the codes of an SAE) are divided by their training standard deviation and
    latents that never fire in training are dropped; dense ones are standardised. Defaults
    are the ``evaluate`` stage's (:class:`~medsae.evaluate.config.EvaluateConfig`). As there,
    ``train`` and ``val`` decide which classes exist: a class without ``min_examples`` rows in
    both is dropped, a task left with fewer than two classes is left out (the drops are
    listed in the result's ``attrs["skipped"]``).
    """
    defaults = EvaluateConfig()
    for needed in ("train", "val"):
        if needed not in features:
            raise InputError(
                "features", f"needs a {needed!r} split (train and val decide the classes)"
            )
    feats = {s: _as_features(x) for s, x in features.items()}
    tasks, rows = tasks_from_labels(labels, {s: int(x.shape[0]) for s, x in feats.items()})
    kept, skipped = filter_tasks(
        tasks,
        {s: rows[s] for s in TASK_FILTER_SPLITS},
        defaults.min_examples if min_examples is None else min_examples,
    )
    sparse = all(sp.issparse(x) for x in feats.values())
    if sparse:
        scaled: Mapping[str, Any] = scale_sparse(feats)[0]  # type: ignore[arg-type]
    else:
        scaled = standardize_dense(
            {s: sp.csr_matrix(x).toarray() if sp.issparse(x) else x for s, x in feats.items()}
        )
    results, _ = run_probes(
        scaled,
        rows,
        kept,
        defaults.l2_grid if l2_grid is None else l2_grid,
        defaults.max_iter if max_iter is None else max_iter,
        kind or ("sparse" if sparse else "dense"),
        defaults.l2_select if l2_select is None else l2_select,
        defaults.probe_c if probe_c is None else probe_c,
    )
    frame = pd.DataFrame.from_records(results)
    frame.attrs["skipped"] = skipped
    return frame
