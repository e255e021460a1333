"""Stability across seeds: is a feature found again when its configuration is retrained?

For a run with sibling seed runs (``<run>`` and ``<run>_s<seed>``, see
:func:`medsae.sae.grid.seed_of`), the decoder rows of the run's *alive* latents (those that
fire on some slice, from the codes' latent statistics) are matched to the alive rows of each
other seed one to one on |cosine| with the Hungarian algorithm
(:func:`medsae.metrics.matching.match_dictionaries`). Per pair of seeds:

* ``mcc``: the mean |cosine| of the matched pairs;
* ``frac_match_0_9`` / ``frac_match_0_7``: the fraction of the run's alive latents whose
  one-to-one partner has |cosine| >= 0.9 / 0.7 (an unmatched latent counts as no match).

A second reading matches by what the latents do rather than where their decoder rows point:
the Pearson correlation of the two latents' activations over every slice of the codes
(both runs encode the same slices), matched one to one the same way: ``act_mcc``,
``act_frac_0_9`` and ``act_frac_0_7``. Decoder cosine understates recurrence when the
embeddings span fewer dimensions than they have: the components of a decoder row outside
the data's span never receive a gradient and keep their random initialisation (on the demo,
about 40% of a row's energy lies outside the span of 99% of the embeddings' variance), and
they differ between seeds by construction.

``scores.json`` ``seed_stability`` gives their means over the other seeds and each pair.
Per feature (``features.parquet``): ``seed_others`` (the other seeds), ``seed_found`` (how
many of them hold a latent whose decoder row has |cosine| >= :data:`FOUND_AT` with it: its
best match, not necessarily its one-to-one partner), ``seed_cosine`` (the mean over the other
seeds of that best |cosine|) and ``seed_matches`` (the best-matching latent in each other
seed, in seed order).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medsae.evaluate.seeds import mean_sd, seed_group
from medsae.metrics.matching import abs_cosine, match_dictionaries
from medsae.sae.codes_io import CODES_FILE, load_codes, load_latent_stats
from medsae.sae.io import WEIGHTS, trained_runs
from medsae.workspace import Workspace

FOUND_AT = 0.7
"""A feature is *found again* in another seed when some latent's decoder row there has at
least this |cosine| with its own."""
COLUMNS = ("seed_others", "seed_found", "seed_cosine", "seed_matches")
ACTIVATION_KEYS = ("act_mcc", "act_frac_0_9", "act_frac_0_7")


def seed_siblings(ws: Workspace, encoder: str, run: str) -> list[str]:
    """The other seeds' runs of ``run``'s configuration, in seed order."""
    return [r for r in seed_group(run, trained_runs(ws, encoder)) if r != run]


def _decoder(ws: Workspace, encoder: str, run: str) -> np.ndarray:
    from safetensors.numpy import load_file

    return np.asarray(load_file(str(ws.sae(encoder, run) / WEIGHTS))["W_dec"], dtype=np.float64)


def _alive(ws: Workspace, encoder: str, run: str, n_latents: int) -> np.ndarray:
    stats = load_latent_stats(ws.codes(encoder, run), n_latents)
    if stats is None:  # no codes yet: every latent counts
        return np.ones(n_latents, dtype=bool)
    return np.asarray(stats["nnz"]) > 0


def _varying(codes: Any) -> tuple[Any, np.ndarray, np.ndarray]:
    """The columns of sparse ``codes`` that vary over the rows (float64), their means and
    standard deviations."""
    z = codes.astype(np.float64).tocsc()
    mean = np.asarray(z.mean(0)).ravel()
    square = np.asarray(z.multiply(z).mean(0)).ravel()
    var = square - mean**2
    keep = np.flatnonzero(var > 1e-12 * square)  # exactly constant columns leave rounding
    return z[:, keep], mean[keep], np.sqrt(var[keep])


def activation_match(ws: Workspace, encoder: str, run: str, other: str) -> dict[str, Any]:
    """Alive latents of ``run`` and ``other`` matched one to one on the |Pearson correlation|
    of their activations over the codes' slices: ``act_mcc``, ``act_frac_0_9``,
    ``act_frac_0_7`` (fractions of ``run``'s alive latents); None values without codes."""
    from scipy.optimize import linear_sum_assignment

    empty: dict[str, Any] = dict.fromkeys(ACTIVATION_KEYS)
    folders = [ws.codes(encoder, r) for r in (run, other)]
    if not all((f / CODES_FILE).is_file() for f in folders):  # a damaged file raises below
        return empty
    a, b = (load_codes(f) for f in folders)
    if a.shape[0] != b.shape[0] or a.shape[0] < 2:
        return empty
    # correlations from sparse moments: no dense (slices x latents) copy of the codes
    za, ma, sa = _varying(a)
    zb, mb, sb = _varying(b)
    if not za.shape[1] or not zb.shape[1]:
        return empty
    cross = np.asarray((za.T @ zb).todense()) / za.shape[0]
    corr = np.abs(cross - np.outer(ma, mb)) / np.outer(sa, sb)
    rows, cols = linear_sum_assignment(corr, maximize=True)
    matched = corr[rows, cols]
    n = len(sa)
    return {
        "act_mcc": float(matched.mean()),
        "act_frac_0_9": float((matched >= 0.9).sum() / n),
        "act_frac_0_7": float((matched >= 0.7).sum() / n),
    }


def seed_stability(
    ws: Workspace, encoder: str, run: str, latents: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    """Per-feature columns (:data:`COLUMNS`, aligned with ``latents``) and the
    ``seed_stability`` summary; ``({}, None)`` without other seeds."""
    others = seed_siblings(ws, encoder, run)
    if not others:
        return {}, None
    own = _decoder(ws, encoder, run)
    alive = np.flatnonzero(_alive(ws, encoder, run, len(own)))
    latents = np.asarray(latents, dtype=np.int64)
    best = np.zeros((len(latents), len(others)))
    where = np.zeros((len(latents), len(others)), dtype=np.int64)
    pairs = []
    for j, other in enumerate(others):
        dec = _decoder(ws, encoder, other)
        alive_b = np.flatnonzero(_alive(ws, encoder, other, len(dec)))
        if len(alive_b):
            cos = abs_cosine(own[latents], dec[alive_b])
            best[:, j] = cos.max(1)
            where[:, j] = alive_b[cos.argmax(1)]
        else:
            where[:, j] = -1
        m = match_dictionaries(own[alive], dec[alive_b])
        partner = np.nan_to_num(m.matched_cosine_a(len(alive)), nan=0.0)
        pairs.append(
            {
                "other": other,
                "mcc": m.mcc,
                "frac_match_0_9": float((partner >= 0.9).mean()) if len(alive) else None,
                "frac_match_0_7": float((partner >= 0.7).mean()) if len(alive) else None,
                "alive": len(alive),
                "alive_other": len(alive_b),
                **activation_match(ws, encoder, run, other),
            }
        )
    columns = {
        "seed_others": np.full(len(latents), len(others), dtype=np.int64),
        "seed_found": (best >= FOUND_AT).sum(1).astype(np.int64),
        "seed_cosine": best.mean(1),
        "seed_matches": np.array([list(map(int, w)) for w in where] or [], dtype=object),
    }
    summary: dict[str, Any] = {"runs": [run, *others], "found_at": FOUND_AT, "pairs": pairs}
    for key in ("mcc", "frac_match_0_9", "frac_match_0_7", *ACTIVATION_KEYS):
        summary[key] = mean_sd(p[key] for p in pairs)[0]
    return columns, summary
