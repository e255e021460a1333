"""Batched L2 logistic regression: many binary classifiers fitted jointly with L-BFGS.

Every classifier ("head") ``h`` minimises its own objective

    L_h(w, b) = sum_i s_ih [softplus(z_ih) - y_ih z_ih] + lambda_h / 2 * ||w_h||^2,
    z_ih = x_i . w_h + b_h,

with class-balanced sample weights ``s_ih`` (each class of a head sums to 1/2; rows with a
missing label have weight 0) and no penalty on the intercept. Heads are independent, so the
sum of their objectives is minimised at once: one matrix product serves every head, which is
what makes ~40 tasks x a grid of L2 strengths fit in seconds on sparse 8,192-latent codes.

Designs: a shared dense matrix, a shared sparse CSR matrix (gradient through its transpose,
never densified), or one dense block per head (``(H, n, d)``, for small refits).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

SMALL_WORK = 2_000_000  # elements per operation below which one thread is faster than several


@contextlib.contextmanager
def threads_for(work: int) -> Iterator[None]:
    """Use a single torch thread for small operations (thread start-up dominates them)."""
    before = torch.get_num_threads()
    if work < SMALL_WORK and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _csr_tensor(m: sp.csr_matrix) -> torch.Tensor:
    m = sp.csr_matrix(m, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(np.int64)),
            torch.from_numpy(m.indices.astype(np.int64)),
            torch.from_numpy(m.data),
            size=m.shape,
            check_invariants=False,
        )


class Design:
    """A design matrix shared by every head: ``X @ W`` and ``X.T @ R``."""

    def __init__(self, x: np.ndarray | sp.spmatrix) -> None:
        self.sparse = sp.issparse(x)
        if self.sparse:
            csr = sp.csr_matrix(x, dtype=np.float32)
            self._x = _csr_tensor(csr)
            self._xt = _csr_tensor(csr.T.tocsr())
        else:
            self._x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            self._xt = self._x.T
        self.n, self.d = int(x.shape[0]), int(x.shape[1])

    def mm(self, w_dh: torch.Tensor) -> torch.Tensor:
        return self._x @ w_dh

    def tmm(self, r_nh: torch.Tensor) -> torch.Tensor:
        return self._xt @ r_nh


def balanced_weights(y_nh: np.ndarray, valid_nh: np.ndarray) -> np.ndarray:
    """Sample weights: each class of each head sums to 1/2 over its valid rows (0 elsewhere)."""
    y = y_nh.astype(bool) & valid_nh
    neg = ~y_nh.astype(bool) & valid_nh
    n_pos = np.maximum(y.sum(0, keepdims=True), 1)
    n_neg = np.maximum(neg.sum(0, keepdims=True), 1)
    return (y * (0.5 / n_pos) + neg * (0.5 / n_neg)).astype(np.float32)


def fixed_c_lambda(valid_nh: np.ndarray, c: float) -> np.ndarray:
    """L2 strength per head of a fixed inverse strength ``C``: ``1 / (C n_h)``, ``(H,)``.

    ``n_h`` is the head's number of valid training rows: with the class-balanced weights of
    :func:`balanced_weights` (summing to 1) this is scikit-learn's ``C`` with
    ``class_weight="balanced"`` (whose weights sum to ``n_h``), the paper's ``C = 1``.
    """
    if not c > 0:
        raise ValueError(f"probe_c: expected a positive number, got {c}")
    n = np.maximum(np.asarray(valid_nh).sum(0), 1).astype(np.float64)
    return np.asarray(1.0 / (c * n), dtype=np.float32)


@dataclass
class LinearFit:
    """Weights ``(d, H)`` and intercepts ``(H,)`` of jointly fitted heads."""

    w_dh: np.ndarray
    b_h: np.ndarray
    iterations: int

    def decision(self, x: np.ndarray | sp.spmatrix) -> np.ndarray:
        """Scores ``x @ w + b`` of every head, ``(n, H)``."""
        if x.shape[0] == 0:
            return np.zeros((0, self.w_dh.shape[1]), dtype=np.float32)
        z = x @ self.w_dh
        return np.asarray(z, dtype=np.float32) + self.b_h


def _lbfgs(params: list[torch.Tensor], closure_fn, max_iter: int, tol: float = 1e-5) -> int:  # type: ignore[no-untyped-def]
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=max_iter,
        max_eval=int(max_iter * 1.5),
        history_size=10,
        tolerance_grad=tol,
        tolerance_change=tol * 1e-4,
        line_search_fn="strong_wolfe",
    )
    opt.step(closure_fn)
    state = opt.state[opt._params[0]]
    return int(state.get("n_iter", 0))


def fit_logistic(
    design: Design,
    y_nh: np.ndarray,
    weights_nh: np.ndarray,
    lam_h: np.ndarray,
    max_iter: int = 150,
    tol: float = 1e-5,
    init: LinearFit | None = None,
) -> LinearFit:
    """Fit H independent L2 logistic regressions on one shared design (see module docstring).

    Parameters
    ----------
    design: the ``(n, d)`` inputs shared by every head.
    y_nh: 0/1 targets per head.
    weights_nh: sample weights per head (0 excludes a row), e.g. :func:`balanced_weights`.
    lam_h: L2 strength per head.
    init: a fit of the same heads to start from (e.g. at a stronger penalty: a warm-started path).
    tol: L-BFGS stops when the largest gradient entry is below ``tol`` (or the objective
        changes by less than ``tol * 1e-4``); ROC-AUC is insensitive below the default.
    """
    y = torch.from_numpy(np.asarray(y_nh, dtype=np.float32))
    s = torch.from_numpy(np.asarray(weights_nh, dtype=np.float32))
    lam = torch.from_numpy(np.asarray(lam_h, dtype=np.float32))
    h = y.shape[1]
    if init is not None:
        w = torch.from_numpy(init.w_dh.astype(np.float32, copy=True)).requires_grad_(True)
        b = torch.from_numpy(init.b_h.astype(np.float32, copy=True)).requires_grad_(True)
    else:
        w = torch.zeros(design.d, h, requires_grad=True)
        b = torch.zeros(h, requires_grad=True)

    def closure() -> torch.Tensor:
        with torch.no_grad():
            z = design.mm(w) + b
            loss = (s * (F.softplus(z) - y * z)).sum() + 0.5 * (lam * (w * w).sum(0)).sum()
            r = s * (torch.sigmoid(z) - y)
            w.grad = design.tmm(r) + lam * w
            b.grad = r.sum(0)
        return loss

    with threads_for(design.n * h):
        iters = _lbfgs([w, b], closure, max_iter, tol)
    return LinearFit(w.detach().numpy().copy(), b.detach().numpy().copy(), iters)


def fit_logistic_blocks(
    x_hnd: np.ndarray,
    y_nh: np.ndarray,
    weights_nh: np.ndarray,
    lam_g: np.ndarray,
    max_iter: int = 100,
    init: tuple[np.ndarray, np.ndarray] | None = None,
    tol: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit one classifier per head and L2 strength, head ``h`` on its own columns ``x_hnd[h]``.

    Returns weights ``(H, G, d)`` and intercepts ``(H, G)`` for the ``G`` strengths ``lam_g``
    (``(G,)`` shared by every head, or ``(H, G)`` per head).
    ``init`` = (weights ``(H, G, d0)``, intercepts ``(H, G)``) warm-starts the first ``d0 <= d``
    columns (the others start at 0), e.g. from the fit on a prefix of the columns.
    """
    x = torch.from_numpy(np.ascontiguousarray(x_hnd, dtype=np.float32))
    y = torch.from_numpy(np.asarray(y_nh, dtype=np.float32)).T.unsqueeze(2)  # (H, n, 1)
    s = torch.from_numpy(np.asarray(weights_nh, dtype=np.float32)).T.unsqueeze(2)
    n_heads, _, d = x.shape
    lam_arr = np.asarray(lam_g, dtype=np.float32)
    lam = torch.from_numpy(lam_arr.reshape(n_heads if lam_arr.ndim == 2 else 1, -1, 1).copy())
    g = lam.shape[1]
    w0 = torch.zeros(n_heads, d, g)
    b0 = torch.zeros(n_heads, 1, g)
    if init is not None:
        w_init = torch.from_numpy(np.asarray(init[0], dtype=np.float32)).permute(0, 2, 1)
        w0[:, : w_init.shape[1], :] = w_init
        b0[:, 0, :] = torch.from_numpy(np.asarray(init[1], dtype=np.float32))
    w = w0.requires_grad_(True)
    b = b0.requires_grad_(True)

    def closure() -> torch.Tensor:
        with torch.no_grad():
            z = torch.bmm(x, w) + b  # (H, n, G)
            loss = (s * (F.softplus(z) - y * z)).sum() + 0.5 * (lam.transpose(1, 2) * w * w).sum()
            r = s * (torch.sigmoid(z) - y)
            w.grad = torch.bmm(x.transpose(1, 2), r) + lam.transpose(1, 2) * w
            b.grad = r.sum(1, keepdim=True)
        return loss

    with threads_for(int(x.numel()) + n_heads * x.shape[1] * g):
        _lbfgs([w, b], closure, max_iter, tol)
    return w.detach().permute(0, 2, 1).numpy().copy(), b.detach()[:, 0, :].numpy().copy()


def block_decision(x_hnd: np.ndarray, w_hgd: np.ndarray, b_hg: np.ndarray) -> np.ndarray:
    """Scores ``(H, n, G)`` of per-head blocks."""
    return np.einsum("hnd,hgd->hng", x_hnd, w_hgd, optimize=True) + b_hg[:, None, :]
