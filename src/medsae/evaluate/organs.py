"""Organ rediscovery: does a latent fire on the tokens of one anatomical structure?

Part of ``evaluate`` for an SAE trained on a token store (``WS/embeddings/<enc>-tokens/``).
On held-out slices (a seeded sample of at most ``organ_max_slices`` validation slices to
choose each structure's best latent, and as many test slices to score it) every method gives
a score per token and latent, and every structure with at least ``organ_min_tokens``
positive tokens in both sets is scored with :mod:`medsae.evaluate.organ_scores`:

* ``token_sae``: the token SAE's per-token codes (``WS/codes/<enc>-tokens/<run>/tokens``);
* ``attribution``: the image-level SAE of the source encoder (run ``organ_attribution_run``,
  default the token SAE's run name when the image-level grid has it) with its exact
  attribution maps (:func:`medsae.sae.attribution.latent_maps`) made on the token grid:
  every feature-map part resampled to the grid as the tokens are, which equals the maps
  package's finest-grid map summed over each token's cell;
* ``pca``: projections on the principal components of training tokens, each sign a latent;
* ``kmeans``: minus the squared distance to each k-means centroid of training tokens;
* ``chance``: the token SAE against label maps shuffled across slices (a permutation null:
  slice ``i``'s tokens are scored against the mask of another slice of the same split).

The pointing game of a method: for each structure its best latent's token map (upsampled
to pixels, :func:`medsae.sae.attribution.to_pixels`) on the scored slices where the
structure is present and the map is not flat: a hit when the peak is within the maps
package's tolerance of the structure's pixels (:func:`medsae.metrics.pointing.pointing_hit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsae.data.io import LABEL_MAPS_FLAG, has_label_maps, open_label_maps
from medsae.data.structures import ALL_STRUCTURES
from medsae.encode.tokens import TokenStore
from medsae.evaluate.io import ORGAN_LATENTS, ORGAN_STRUCTURES, ORGANS
from medsae.evaluate.organ_scores import (
    COVERAGE_TAU,
    PURITY_K,
    average_precision,
    best_latents,
    coverage,
    purity_at_k,
    token_labels,
)
from medsae.metrics.pointing import POINTING_TOLERANCE, pointing_hit
from medsae.sae.attribution import to_pixels

METHODS = ("token_sae", "attribution", "pca", "kmeans", "chance")
POINTING_SLICES = 16


@dataclass
class TokenSet:
    """Tokens of some slices: rows in the token store, positions, slice rows and masks."""

    slices: np.ndarray  # slice rows of the set
    tokens: np.ndarray  # token rows
    positions: np.ndarray  # (n, 3) slice row, grid row, grid col
    labels: np.ndarray  # (n, 256) bool


def token_set(store: TokenStore, rows: np.ndarray, label_maps: np.ndarray) -> TokenSet:
    tokens = store.token_rows(rows)
    pos = np.asarray(store.positions[tokens], dtype=np.int64)
    local = pos.copy()
    local[:, 0] = np.searchsorted(rows, pos[:, 0])
    maps = np.asarray(label_maps[rows])
    return TokenSet(rows, tokens, pos, token_labels(maps, local, store.grid))


def shuffled(
    ts: TokenSet, store: TokenStore, label_maps: np.ndarray, seed: int
) -> tuple[np.ndarray, dict[int, int]]:
    """The token labels of ``ts`` against the masks of a permutation of its slices, and
    which slice's mask each slice was given."""
    perm = np.random.default_rng(seed).permutation(len(ts.slices))
    local = ts.positions.copy()
    local[:, 0] = perm[np.searchsorted(ts.slices, ts.positions[:, 0])]
    given = {int(r): int(ts.slices[perm[i]]) for i, r in enumerate(ts.slices)}
    return token_labels(np.asarray(label_maps[ts.slices]), local, store.grid), given


def score_method(
    sel: np.ndarray,
    y_sel: np.ndarray,
    test: np.ndarray,
    y_test: np.ndarray,
    ts: TokenSet,
    label_maps: np.ndarray,
    values: np.ndarray,
    grid: int,
    mask_of: dict[int, int] | None = None,
) -> dict[str, Any]:
    """Best latents on the selection tokens, then AP, Purity@16, Coverage and pointing on
    the scored tokens; per structure and summarised. ``mask_of``: the slice whose mask each
    scored slice is given (the permutation null), default its own."""
    best = best_latents(average_precision(sel, y_sel))
    ap = np.array([average_precision(test[:, j], y_test[:, k])[0, 0] for k, j in enumerate(best)])
    purity = np.array([purity_at_k(test[:, j], y_test[:, k]) for k, j in enumerate(best)])
    pointing = np.array(
        [
            pointing_game(test[:, j], ts, label_maps, int(values[k]), grid, mask_of)
            for k, j in enumerate(best)
        ]
    )
    return {
        "best_latent": best,
        "ap": ap,
        "purity": purity,
        "pointing": pointing,
        "summary": {
            "map": _mean(ap),
            "purity_at_16": _mean(purity),
            "coverage_at_0_3": round(coverage(ap, COVERAGE_TAU), 4) if ap.size else None,
            "pointing_game": _mean(pointing),
        },
    }


def pointing_game(
    scores: np.ndarray,
    ts: TokenSet,
    label_maps: np.ndarray,
    value: int,
    grid: int,
    mask_of: dict[int, int] | None = None,
) -> float:
    """Mean pointing hit of one latent's token maps on the scored slices holding ``value``
    (at most :data:`POINTING_SLICES` of them, in slice order)."""
    hits = []
    for row in ts.slices:
        mask = np.asarray(label_maps[(mask_of or {}).get(int(row), int(row))]) == value
        if not mask.any():
            continue
        sel = ts.positions[:, 0] == row
        if not sel.any():
            continue
        vals = scores[sel]
        if not float(vals.max()) > float(vals.min()):
            continue
        g = np.full((grid, grid), float(vals.min()))
        g[ts.positions[sel, 1], ts.positions[sel, 2]] = vals
        size = mask.shape[0]
        hits.append(pointing_hit(to_pixels(g, size), mask, POINTING_TOLERANCE * size))
        if len(hits) >= POINTING_SLICES:
            break
    return float(np.mean(hits)) if hits else float("nan")


def _mean(x: np.ndarray) -> float | None:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return round(float(x.mean()), 4) if x.size else None


def not_computed(reason: str) -> dict[str, Any]:
    return {"status": "not computed", "reason": reason, **dict.fromkeys(METHODS)}


def sample(rows: np.ndarray, n: int, seed: int) -> np.ndarray:
    if len(rows) <= n:
        return np.sort(rows)
    return np.sort(np.random.default_rng(seed).choice(rows, n, replace=False))


def organ_rediscovery(inputs: Any, config: Any, out: Path) -> dict[str, Any]:
    """Run the module's scoring for one token SAE run; write :data:`ORGANS`,
    :data:`ORGAN_STRUCTURES` and :data:`ORGAN_LATENTS` into ``out``; returns the summary."""
    from medsae.evaluate.organ_methods import attribution_scores, baseline_scores, sae_scores
    from medsae.workspace import write_json_atomic

    ws = inputs.ws
    if not has_label_maps(ws.slices):
        missing = not_computed(
            f"{ws.slices}: no pixel label maps; prepare the workspace with `{LABEL_MAPS_FLAG}` "
            "(label_maps = true in [prepare])"
        )
        write_json_atomic(out / ORGANS, missing)
        return missing
    store = TokenStore(inputs.store.folder)
    table = inputs.table
    store.check_slices(len(table), ws.slices)
    label_maps = open_label_maps(ws.slices)
    seed = int(config.seed)
    n = int(config.organ_max_slices)
    sel_set = token_set(store, sample(inputs.rows_of("val"), n, seed), label_maps)
    test_set = token_set(store, sample(inputs.rows_of("test"), n, seed + 1), label_maps)
    min_tok = int(config.organ_min_tokens)
    counts_sel, counts_test = sel_set.labels.sum(axis=0), test_set.labels.sum(axis=0)
    values = np.flatnonzero((counts_sel >= min_tok) & (counts_test >= min_tok))
    values = values[values > 0]  # 0 is background
    if values.size == 0:
        missing = not_computed(
            f"no structure has {min_tok} positive tokens in both the validation and test "
            "slices sampled (a token is positive when half its pixels hold the structure)"
        )
        write_json_atomic(out / ORGANS, missing)
        return missing
    y_sel, y_test = sel_set.labels[:, values], test_set.labels[:, values]
    names = [ALL_STRUCTURES[int(v) - 1] for v in values]

    results: dict[str, dict[str, Any]] = {}
    reasons: dict[str, str] = {}
    sae_sel = sae_scores(inputs, sel_set)
    sae_test = sae_scores(inputs, test_set)
    results["token_sae"] = score_method(
        sae_sel, y_sel, sae_test, y_test, test_set, label_maps, values, store.grid
    )
    perm = seed + 7
    y_sel_null = shuffled(sel_set, store, label_maps, perm)[0][:, values]
    y_test_null, given = shuffled(test_set, store, label_maps, perm + 1)
    results["chance"] = score_method(
        sae_sel,
        y_sel_null,
        sae_test,
        y_test_null[:, values],
        test_set,
        label_maps,
        values,
        store.grid,
        given,
    )
    n_lat = int(sae_sel.shape[1])
    for name in ("pca", "kmeans"):
        s, t = baseline_scores(name, store, table, sel_set, test_set, n_lat, config)
        results[name] = score_method(s, y_sel, t, y_test, test_set, label_maps, values, store.grid)
    attr = attribution_scores(inputs, store, sel_set, test_set, config)
    if isinstance(attr, str):
        reasons["attribution"] = attr
    else:
        attr_run, (s, t) = attr
        reasons["attribution_run"] = attr_run
        results["attribution"] = score_method(
            s, y_sel, t, y_test, test_set, label_maps, values, store.grid
        )

    rows = []
    for method, res in results.items():
        for k, name in enumerate(names):
            rows.append(
                {
                    "method": method,
                    "structure": name,
                    "best_latent": int(res["best_latent"][k]),
                    "ap": float(res["ap"][k]),
                    "chance_ap": float(results["chance"]["ap"][k]),
                    "purity_at_16": float(res["purity"][k]),
                    "pointing": float(res["pointing"][k]),
                    "positive_tokens": int(y_test[:, k].sum()),
                }
            )
    pd.DataFrame(rows).to_parquet(out / ORGAN_STRUCTURES, index=False)
    ap_all = average_precision(sae_test, y_test)  # (latents, structures) on the scored tokens
    best_k = np.argmax(ap_all, axis=1)
    fires = np.asarray((sae_test > 0).any(axis=0), dtype=bool).tolist()
    pointing = [
        pointing_game(sae_test[:, j], test_set, label_maps, int(values[k]), store.grid)
        if f
        else np.nan
        for j, (k, f) in enumerate(zip(best_k, fires, strict=True))
    ]
    pd.DataFrame(
        {
            "latent": np.arange(n_lat, dtype=np.int64),
            "organ_structure": [names[k] if f else "" for k, f in zip(best_k, fires, strict=True)],
            "organ_ap": np.where(fires, ap_all[np.arange(n_lat), best_k], np.nan),
            "organ_pointing": np.asarray(pointing, dtype=np.float64),
        }
    ).to_parquet(out / ORGAN_LATENTS, index=False)
    done: dict[str, Any] = {
        "status": "computed",
        **{m: results[m]["summary"] if m in results else None for m in METHODS},
        "reasons": reasons,
        "n_structures": len(names),
        "n_select_slices": len(sel_set.slices),
        "n_scored_slices": len(test_set.slices),
        "n_scored_tokens": len(test_set.tokens),
        "grid": store.grid,
        "purity_k": PURITY_K,
        "coverage_tau": COVERAGE_TAU,
        "selection_split": "val",
        "scored_split": "test",
        "definitions": "docs/evaluate.md#organ-rediscovery (saev, arXiv 2511.17735)",
    }
    write_json_atomic(out / ORGANS, done)
    return done
