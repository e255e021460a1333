"""Reconstruction and sparsity metrics: the one place for their formulas.

Notation: ``x`` is an ``(n, d)`` batch of inputs, ``x_hat`` its reconstruction,
``SSE_j = sum_i (x_ij - x_hat_ij)^2`` and ``SST_j = sum_i (x_ij - mean_j)^2`` with ``mean_j`` the
per-dimension mean over the split.

* ``fvu`` (fraction of variance unexplained) = sum_j SSE_j / sum_j SST_j.
* ``r2`` = 1 - fvu: the *variance-weighted* per-dimension R² (each dimension's R² weighted by
  its share of the total variance; scikit-learn's ``multioutput="variance_weighted"``).
* ``r2_uniform`` = mean_j (1 - SSE_j / SST_j): the *uniform* mean of the per-dimension R²
  (scikit-learn's ``"uniform_average"``; constant dimensions, ``SST_j = 0``, are left out). It
  gives low-variance dimensions the same say as high-variance ones, so it differs from
  ``r2`` whenever the dimensions' variances and errors differ.
* ``r2_grand_mean`` (the paper's form, reported for comparison only) uses one scalar mean over
  all entries instead of per-dimension means: 1 - SSE / sum_ij (x_ij - mean)^2. It is inflated
  whenever dimensions have different means (a random-init encoder reaches 0.91 with it).
* ``r2_grand_mean_batched`` (the figure the paper reports, 0.941 for its chosen SAE): the
  grand-mean R² of each consecutive batch of 2,048 rows (the paper's validation loader, in row
  order, the last batch smaller), averaged over the batches weighted by their size (the epoch
  mean its training framework logs); :func:`paper_r2`, :class:`BatchedGrandMeanR2`.
* ``cosine``: mean over rows of cos(x_i, x_hat_i).
* ``l0``: mean number of non-zero latents per row.
* dead latents: never non-zero on the split; dense latents: non-zero on more than 10% of rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DENSE_THRESHOLD = 0.10


@dataclass
class ReconstructionAccumulator:
    """Streams batches and yields exact split-level metrics (sums in float64)."""

    d: int
    n: int = 0
    sum_x: np.ndarray = field(init=False)
    sum_x2: np.ndarray = field(init=False)
    sse_j: np.ndarray = field(init=False)
    cos_sum: float = 0.0

    def __post_init__(self) -> None:
        self.sum_x = np.zeros(self.d, dtype=np.float64)
        self.sum_x2 = np.zeros(self.d, dtype=np.float64)
        self.sse_j = np.zeros(self.d, dtype=np.float64)

    @property
    def sse(self) -> float:
        """Sum of squared errors over every entry."""
        return float(self.sse_j.sum())

    def update(self, x: np.ndarray, x_hat: np.ndarray) -> None:
        """Add a batch of inputs ``x`` and reconstructions ``x_hat`` (both ``(n, d)``)."""
        x = np.asarray(x, dtype=np.float64)
        x_hat = np.asarray(x_hat, dtype=np.float64)
        if x.shape != x_hat.shape or x.shape[1] != self.d:
            raise ValueError(f"shape mismatch: x {x.shape}, x_hat {x_hat.shape}, d={self.d}")
        self.n += len(x)
        self.sum_x += x.sum(0)
        self.sum_x2 += (x * x).sum(0)
        self.sse_j += ((x - x_hat) ** 2).sum(0)
        num = (x * x_hat).sum(1)
        den = np.linalg.norm(x, axis=1) * np.linalg.norm(x_hat, axis=1)
        self.cos_sum += float(np.where(den > 0, num / np.maximum(den, 1e-300), 0.0).sum())

    def result(self) -> dict[str, float]:
        """``fvu``, ``r2``, ``r2_uniform``, ``r2_grand_mean``, ``cosine``, ``mse``, ``n``."""
        if self.n == 0:
            raise ValueError("no rows accumulated")
        mean_j = self.sum_x / self.n
        sst_j = np.maximum(self.sum_x2 - self.n * mean_j**2, 0.0)
        ss_per_dim = float(sst_j.sum())
        grand = self.sum_x.sum() / (self.n * self.d)
        ss_grand = float(self.sum_x2.sum() - self.n * self.d * grand**2)
        fvu = self.sse / ss_per_dim if ss_per_dim > 0 else float("nan")
        # a dimension whose variance is lost in rounding of the raw moments counts as constant
        varying = sst_j > 1e-10 * np.maximum(self.sum_x2, np.finfo(np.float64).tiny)
        r2_uniform = (
            float(np.mean(1.0 - self.sse_j[varying] / sst_j[varying]))
            if varying.any()
            else float("nan")
        )
        return {
            "fvu": fvu,
            "r2": 1.0 - fvu,
            "r2_uniform": r2_uniform,
            "r2_grand_mean": 1.0 - self.sse / ss_grand if ss_grand > 0 else float("nan"),
            "cosine": self.cos_sum / self.n,
            "mse": self.sse / (self.n * self.d),
            "n": float(self.n),
        }


PAPER_R2_BATCH = 2048
"""Rows per batch of the paper's validation R² (its loader's batch size)."""


def grand_mean_r2(x: np.ndarray, x_hat: np.ndarray) -> float:
    """``1 - SSE / sum_ij (x_ij - m)^2`` with ``m`` the one mean of every entry of ``x``."""
    x = np.asarray(x, dtype=np.float64)
    x_hat = np.asarray(x_hat, dtype=np.float64)
    if x.shape != x_hat.shape:
        raise ValueError(f"shape mismatch: x {x.shape}, x_hat {x_hat.shape}")
    ss_tot = float(((x - x.mean()) ** 2).sum())
    return 1.0 - float(((x - x_hat) ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")


@dataclass
class BatchedGrandMeanR2:
    """The paper's R²: :func:`grand_mean_r2` per consecutive batch of ``batch_size`` rows,
    averaged over the batches weighted by their size (streamed; the last batch is smaller)."""

    batch_size: int = PAPER_R2_BATCH
    _x: list[np.ndarray] = field(default_factory=list)
    _x_hat: list[np.ndarray] = field(default_factory=list)
    _buffered: int = 0
    _sum: float = 0.0
    _n: int = 0

    def _flush(self, rows: int) -> None:
        x = np.concatenate(self._x)
        x_hat = np.concatenate(self._x_hat)
        value = grand_mean_r2(x[:rows], x_hat[:rows])
        if np.isfinite(value):
            self._sum += value * rows
            self._n += rows
        self._x, self._x_hat = [x[rows:]], [x_hat[rows:]]
        self._buffered -= rows

    def update(self, x: np.ndarray, x_hat: np.ndarray) -> None:
        """Add rows (in order) of inputs and reconstructions."""
        if len(x) == 0:
            return
        self._x.append(np.asarray(x, dtype=np.float32))
        self._x_hat.append(np.asarray(x_hat, dtype=np.float32))
        self._buffered += len(x)
        while self._buffered >= self.batch_size:
            self._flush(self.batch_size)

    def result(self) -> float:
        """The size-weighted mean over batches (NaN without rows); flushes the last batch."""
        if self._buffered:
            self._flush(self._buffered)
        return self._sum / self._n if self._n else float("nan")


def paper_r2(x: np.ndarray, x_hat: np.ndarray, batch_size: int = PAPER_R2_BATCH) -> float:
    """The paper's validation R² of rows held in memory (:class:`BatchedGrandMeanR2`)."""
    acc = BatchedGrandMeanR2(batch_size)
    acc.update(x, x_hat)
    return acc.result()


def reconstruction_metrics(x: np.ndarray, x_hat: np.ndarray) -> dict[str, float]:
    """All reconstruction metrics of one split held in memory (see module docstring)."""
    acc = ReconstructionAccumulator(d=x.shape[1])
    acc.update(x, x_hat)
    return acc.result()


def firing_stats(
    fire_counts: np.ndarray, n_rows: int, dense_threshold: float = DENSE_THRESHOLD
) -> dict[str, float]:
    """Dead / dense / alive fractions from per-latent firing counts over ``n_rows`` rows."""
    fire_counts = np.asarray(fire_counts)
    freq = fire_counts / max(n_rows, 1)
    return {
        "dead_fraction": float((fire_counts == 0).mean()),
        "alive_fraction": float((fire_counts > 0).mean()),
        "dense_fraction": float((freq > dense_threshold).mean()),
        "n_dead": float((fire_counts == 0).sum()),
        "n_dense": float((freq > dense_threshold).sum()),
    }
