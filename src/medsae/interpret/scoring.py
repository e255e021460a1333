"""Scoring feature descriptions on held-out slices: detection and the paper's ranking protocol.

Detection (per feature)
    A sample of held-out slices: up to ``n_positive`` activating ones drawn across activation
    quantile bins (one random slice per bin), ``n_negative_hard`` non-activating ones that are
    nearest (cosine, code space) to the activating ones, and ``n_negative_random`` random
    non-activating ones. A scorer judges which slices match the description: a score per
    slice and a yes/no decision. For scorers without a decision of their own (the offline
    ones), the decision threshold is the one that maximises balanced accuracy on the same kind
    of sample drawn from the *training* split (the interpret stage pools several such draws),
    then applied unchanged to the held-out sample.

    * balanced accuracy ``BA = (TP / (TP + FN) + TN / (TN + FP)) / 2``
    * ``F1 = 2 TP / (2 TP + FP + FN)``
    * ``AUROC = P(score(pos) > score(neg)) + P(score(pos) = score(neg)) / 2`` (Mann-Whitney)

    (formulas implemented once, in :mod:`medsae.metrics.classification`)
    * where the decisions go right (:func:`detection_rates`): the share of strong and of weak
      activating slices judged to match, and of hard and of random non-activating ones
      judged not to

Ranking (the paper's protocol)
    The true description and ``n_distractors`` other features' descriptions (seeded random,
    distinct texts) are shown with ``n_slices`` held-out top-activating slices (one per subject);
    the scorer orders the descriptions; the rank of the true one (1 = best, ties share the
    average rank) is recorded. Summary: top-2 success rate ``mean(rank <= 2)`` (chance
    ``2 / (n_distractors + 1)`` = 40% for 5 choices) and mean rank (chance 3).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import rankdata

from medsae.interpret.config import InterpretConfig
from medsae.llm.client import LLMError
from medsae.metrics.classification import binary_balanced_accuracy, binary_f1, roc_auc


# ---------------------------------------------------------------------------- metrics
def best_threshold(y_true: np.ndarray, scores: np.ndarray) -> float:
    """The threshold ``th`` maximising the balanced accuracy of ``scores >= th``.

    Candidates are the midpoints between consecutive distinct scores (and one above the
    maximum); among equally good thresholds the median one is taken.
    """
    s = np.unique(np.asarray(scores, dtype=np.float64))
    if len(s) == 0:
        return 0.0
    candidates = np.concatenate([[s[0] - 1.0], (s[1:] + s[:-1]) / 2, [s[-1] + 1.0]])
    ba = np.array([binary_balanced_accuracy(y_true, scores >= c) for c in candidates])
    if np.all(np.isnan(ba)):
        return float(candidates[len(candidates) // 2])
    best = np.flatnonzero(ba >= np.nanmax(ba) - 1e-12)
    return float(candidates[best[len(best) // 2]])


def rank_of_true(scores: Sequence[float] | np.ndarray, true_index: int) -> float:
    """Rank (1 = best) of ``scores[true_index]`` when higher is better; ties share the average."""
    s = np.asarray(scores, dtype=np.float64)
    return float(rankdata(-s)[true_index])


def ranking_summary(ranks: Sequence[float] | np.ndarray, n_choices: int = 5) -> dict[str, float]:
    """``top2`` = share of ranks <= 2, ``mean_rank``, and their chance levels for ``n_choices``."""
    r = np.asarray([x for x in ranks if np.isfinite(x)], dtype=np.float64)
    return {
        "top2": float((r <= 2).mean()) if len(r) else float("nan"),
        "mean_rank": float(r.mean()) if len(r) else float("nan"),
        "chance_top2": min(2, n_choices) / n_choices,
        "chance_mean_rank": (n_choices + 1) / 2,
        "n": len(r),
    }


# ---------------------------------------------------------------------------- scorers
class Scorer(Protocol):
    """Judges how well slices match a description."""

    name: str
    calibrated: bool  # True: its decisions need a threshold chosen on training data

    def prepare(self, descriptions: Sequence[str], background: np.ndarray) -> None:
        """Get ready to score ``descriptions``; ``background``: random held-out rows that
        ranking may compare a description's match with (offline scorers)."""
        ...

    def detect(self, description: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores (higher = better match) and decisions (None: threshold the scores)."""
        ...

    def rank(self, descriptions: Sequence[str], rows: np.ndarray) -> np.ndarray:
        """A score per description for the slices ``rows`` together (higher = better)."""
        ...


# ---------------------------------------------------------------------------- samples
class CodeSpace:
    """Activations and L2-normalised code rows, for drawing detection samples.

    Row sets passed to :meth:`active` and :func:`detection_sample` are cached by identity
    (pass the same array object for repeated draws from the same split).
    """

    def __init__(self, codes: sp.csr_matrix) -> None:
        self.n_rows = codes.shape[0]
        self.csc = sp.csc_matrix(codes)
        norms = np.sqrt(np.asarray(codes.multiply(codes).sum(axis=1)).ravel())
        self.unit = sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1e-12)) @ codes)
        self._subsets: dict[int, tuple[np.ndarray, np.ndarray, sp.csr_matrix]] = {}

    def subset(self, rows: np.ndarray) -> tuple[np.ndarray, sp.csr_matrix]:
        """A row mask of ``rows`` and their normalised codes (cached by identity)."""
        hit = self._subsets.get(id(rows))
        if hit is None or hit[0] is not rows:
            mask = np.zeros(self.n_rows, dtype=bool)
            mask[np.asarray(rows, dtype=np.int64)] = True
            hit = (rows, mask, sp.csr_matrix(self.unit[np.asarray(rows, dtype=np.int64)]))
            self._subsets[id(rows)] = hit
        return hit[1], hit[2]

    def active(self, latent: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Active rows among ``rows`` and their activations."""
        mask, _ = self.subset(rows)
        start, stop = self.csc.indptr[latent], self.csc.indptr[latent + 1]
        idx, val = self.csc.indices[start:stop], self.csc.data[start:stop]
        keep = mask[idx] & (val != 0)
        return idx[keep], val[keep]


def detection_draw(config: InterpretConfig, table: pd.DataFrame) -> dict[str, Any]:
    """Sizes of every detection sample and, for ``hard_negatives="other-series"``, the stack
    (subject and plane) of each slice (the ``series`` of :func:`detection_sample`)."""
    draw: dict[str, Any] = {
        "n_positive": config.n_positive,
        "n_hard": config.n_negative_hard,
        "n_random": config.n_negative_random,
    }
    if config.hard_negatives == "other-series":
        stacks = table["subject_key"].astype(str) + "/" + table["plane"].astype(str)
        draw["series"] = pd.factorize(stacks)[0]
    return draw


def capped_rows(rows: np.ndarray, cap: int, seed: int = 0) -> np.ndarray:
    """``rows`` itself when it holds at most ``cap`` rows, else a seeded uniform sample of
    ``cap`` of them (without replacement, in row order).

    The sample is drawn once per split and passed as the ``background`` of
    :func:`detection_sample`, so that per-feature draws read at most ``cap`` rows whatever the
    size of the split (the same array object each time: :class:`CodeSpace` caches by identity).
    """
    rows = np.asarray(rows)
    if len(rows) <= cap:
        return rows
    rng = np.random.default_rng([seed, len(rows), cap])
    return np.sort(rng.choice(rows, size=cap, replace=False))


def near_miss_sample(
    space: CodeSpace,
    latent: int,
    train: np.ndarray,
    config: InterpretConfig,
    draw: dict[str, Any],
    background: np.ndarray | None = None,
) -> DetectionSample:
    """The offline describer's near-miss draws of one feature from the training split (seeds
    ``seed + 100 ...``, apart from the calibration draws' ``seed + 1 ...``), pooled;
    ``background``: see :func:`detection_sample`."""
    seeds = range(config.seed + 100, config.seed + 100 + config.contrast_draws)
    return pooled_sample(space, latent, train, seeds, background=background, **draw)


@dataclass
class DetectionSample:
    rows: np.ndarray  # slice rows
    positive: np.ndarray  # bool: the feature is active
    kind: np.ndarray  # "positive" | "hard" | "random"


def detection_sample(
    space: CodeSpace,
    latent: int,
    rows: np.ndarray,
    *,
    n_positive: int = 20,
    n_hard: int = 10,
    n_random: int = 10,
    seed: int = 0,
    series: np.ndarray | None = None,
    background: np.ndarray | None = None,
) -> DetectionSample:
    """Activating slices across activation quantiles plus hard and random non-activating ones.

    ``rows``: the slices to draw from (e.g. the held-out splits). Positives: the active rows
    sorted by activation are cut into ``n_positive`` bins and one is drawn from each. Hard
    negatives: inactive rows with the highest cosine similarity (code space) to any positive;
    with ``series`` (one label per row of the code matrix, e.g. subject and plane), only rows
    of series that hold no positive, so that a hard negative is never the neighbouring slice
    of a positive in the same stack. Random negatives: drawn from the remaining inactive rows.

    ``background`` (default ``rows``): a subset of ``rows`` (e.g. :func:`capped_rows`) that the
    hard and random negatives are drawn from, so that the draw costs the size of the
    feature's activations plus that of the background rather than of ``rows``. Positives
    always come from every activating row of ``rows``. A uniform background leaves the
    random negatives' distribution unchanged (uniform over the inactive rows); the hard
    negatives are then the nearest among the background's inactive rows.
    """
    rng = np.random.default_rng([seed, latent])
    act_rows, act_vals = space.active(latent, rows)
    rows = background if background is not None else rows
    _, unit_sub = space.subset(rows)
    rows = np.asarray(rows, dtype=np.int64)
    order = np.lexsort((act_rows, act_vals))
    bins = np.array_split(act_rows[order], min(n_positive, len(act_rows))) if len(act_rows) else []
    pos = np.array([rng.choice(b) for b in bins if len(b)], dtype=np.int64)
    is_active = np.zeros(space.n_rows, dtype=bool)
    is_active[act_rows] = True
    inactive_here = ~is_active[rows]
    hard = np.zeros(0, dtype=np.int64)
    if n_hard and len(pos) and inactive_here.any():
        sims = np.asarray(unit_sub @ space.unit[pos].T.toarray()).max(axis=1)
        eligible = inactive_here
        if series is not None:
            labels = np.asarray(series)
            eligible = inactive_here & ~np.isin(labels[rows], labels[pos])
        sims[~eligible] = -np.inf
        order = np.lexsort((rows, -sims))[: min(n_hard, int(eligible.sum()))]
        hard = rows[order]
    taken = is_active.copy()
    taken[hard] = True
    rest = rows[~taken[rows]]
    rand = rng.choice(rest, size=min(n_random, len(rest)), replace=False) if len(rest) else rest
    all_rows = np.concatenate([pos, hard, rand]).astype(np.int64)
    kind = np.array(["positive"] * len(pos) + ["hard"] * len(hard) + ["random"] * len(rand))
    return DetectionSample(all_rows, kind == "positive", kind)


def pooled_sample(
    space: CodeSpace, latent: int, rows: np.ndarray, seeds: Iterable[int], **draw: Any
) -> DetectionSample:
    """Several :func:`detection_sample` draws (one per seed) concatenated into one sample."""
    draws = [detection_sample(space, latent, rows, seed=s, **draw) for s in seeds]
    return DetectionSample(
        np.concatenate([d.rows for d in draws]),
        np.concatenate([d.positive for d in draws]),
        np.concatenate([d.kind for d in draws]),
    )


@dataclass
class DetectionScore:
    latent: int
    balanced_accuracy: float
    f1: float
    auroc: float
    n_positive: int
    n_negative: int
    threshold: float | None = None
    error: str | None = None
    rates: dict[str, float] | None = None  # see detection_rates


RATE_KINDS = ("tpr_strong", "tpr_weak", "tnr_hard", "tnr_random")
"""Keys of :func:`detection_rates`."""


def detection_rates(sample: DetectionSample, decisions: np.ndarray) -> dict[str, float]:
    """Where a scorer's decisions go right, by kind of slice in a detection sample.

    ``tpr_strong`` / ``tpr_weak``: share of the activating slices of the upper / lower half of
    the activation bins judged to match; ``tnr_hard`` / ``tnr_random``: share of the hard /
    random non-activating slices judged not to match (NaN where a kind is absent).
    """
    d = np.asarray(decisions, dtype=bool)
    pos = np.flatnonzero(sample.positive)  # drawn from the bins in rising activation order
    half = len(pos) // 2

    def share(idx: np.ndarray, value: bool) -> float:
        return float((d[idx] == value).mean()) if len(idx) else float("nan")

    hard, rand = np.flatnonzero(sample.kind == "hard"), np.flatnonzero(sample.kind == "random")
    values = (
        share(pos[half:], True),
        share(pos[:half], True),
        share(hard, False),
        share(rand, False),
    )
    return dict(zip(RATE_KINDS, values, strict=True))


def score_detection(
    scorer: Scorer,
    description: str,
    latent: int,
    space: CodeSpace,
    heldout_rows: np.ndarray,
    *,
    calibration_rows: np.ndarray | None = None,
    n_positive: int = 20,
    n_hard: int = 10,
    n_random: int = 10,
    min_positive: int = 3,
    seed: int = 0,
    sample: DetectionSample | None = None,
    calibration_sample: DetectionSample | None = None,
) -> DetectionScore:
    """Detection scores of one description on held-out slices (module docstring).

    ``calibration_rows`` (the training split) give the threshold of calibrated scorers; without
    them the threshold is 0.5 for scores in [0, 1]. ``sample`` / ``calibration_sample``: samples
    already drawn with :func:`detection_sample` (to share them between scorers).
    """
    kw: dict[str, Any] = {"n_positive": n_positive, "n_hard": n_hard, "n_random": n_random}
    if sample is None:
        sample = detection_sample(space, latent, heldout_rows, seed=seed, **kw)
    n_pos, n_neg = int(sample.positive.sum()), int((~sample.positive).sum())
    nan = float("nan")
    if n_pos < min_positive or n_neg == 0:
        return DetectionScore(
            latent,
            nan,
            nan,
            nan,
            n_pos,
            n_neg,
            error=f"too few held-out slices ({n_pos} active, {n_neg} inactive)",
        )
    try:
        scores, decisions = scorer.detect(description, sample.rows)
    except LLMError as e:
        return DetectionScore(latent, nan, nan, nan, n_pos, n_neg, error=str(e))
    threshold = None
    if decisions is None:
        threshold = 0.5
        cal = calibration_sample
        if cal is None and calibration_rows is not None:
            cal = detection_sample(space, latent, calibration_rows, seed=seed + 1, **kw)
        if cal is not None and cal.positive.any() and (~cal.positive).any():
            cal_scores, _ = scorer.detect(description, cal.rows)
            threshold = best_threshold(cal.positive, cal_scores)
        decisions = scores >= threshold
    return DetectionScore(
        latent,
        binary_balanced_accuracy(sample.positive, decisions),
        binary_f1(sample.positive, decisions),
        roc_auc(sample.positive, scores),
        n_pos,
        n_neg,
        threshold,
        rates=detection_rates(sample, decisions),
    )


def ranking_slices(
    space: CodeSpace, latent: int, rows: np.ndarray, subjects: np.ndarray, n: int
) -> np.ndarray:
    """The ``n`` top-activating slices among ``rows``, one per subject (``subjects`` by row)."""
    act_rows, act_vals = space.active(latent, np.asarray(rows))
    order = np.lexsort((act_rows, -act_vals))
    act_rows = act_rows[order]
    _, first = np.unique(subjects[act_rows], return_index=True)
    return act_rows[np.sort(first)[:n]]


def score_ranking(
    scorer: Scorer,
    descriptions: Mapping[int, str],
    space: CodeSpace,
    heldout_rows: np.ndarray,
    subjects: np.ndarray,
    *,
    n_slices: int = 5,
    n_distractors: int = 4,
    seed: int = 0,
    mapper: Callable[[Callable[[int], float], Iterable[int]], list[Any]] | None = None,
) -> dict[int, float]:
    """Rank of each feature's true description among distractors (module docstring).

    ``descriptions``: latent -> text of every described feature (the distractor pool).
    Returns latent -> rank (NaN when the feature has no held-out activation, too few distinct
    distractors exist, or the scorer failed). ``mapper(fn, latents)`` may run them concurrently.
    """
    latents = sorted(descriptions)

    def one(latent: int) -> float:
        true_text = descriptions[latent]
        pool = sorted({descriptions[k] for k in latents if k != latent} - {true_text})
        rows = ranking_slices(space, latent, heldout_rows, subjects, n_slices)
        if len(pool) < n_distractors or len(rows) == 0:
            return float("nan")
        rng = np.random.default_rng([seed, latent])
        distractors = [pool[i] for i in rng.choice(len(pool), size=n_distractors, replace=False)]
        choices = [true_text, *distractors]
        order = rng.permutation(len(choices))
        try:
            scores = scorer.rank([choices[i] for i in order], rows)
        except LLMError:
            return float("nan")
        return rank_of_true(scores, int(np.flatnonzero(order == 0)[0]))

    run = mapper or (lambda fn, items: [fn(x) for x in items])
    return dict(zip(latents, run(one, latents), strict=True))
