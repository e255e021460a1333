"""Fast sparse paths agree with the eager reference; selection invariants (property tests)."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medsae.sae import kernels
from medsae.sae.matryoshka import nested_fvu
from medsae.sae.registry import build_sae, sae_config

ARCHES = ["topk", "batchtopk", "matryoshka", "matryoshka-perlevel"]


def _pair(arch: str, d: int, D: int, k: int, seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    levels = [D // 4, D] if arch.startswith("matryoshka") else [D]
    extra = {"k_levels": [max(1, min(k, levels[0]) // 2), k]} if arch.endswith("perlevel") else {}
    cfg = sae_config(
        arch=arch, d_in=d, n_latents=D, levels=levels, k=k, dead_after_samples=1, **extra
    )
    fast, ref = build_sae(cfg, fast=True, seed=seed), build_sae(cfg, fast=False, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in (fast, ref):
            m.b_enc.copy_(0.1 * torch.randn(D, generator=torch.Generator().manual_seed(seed + 1)))
            m.b_dec.copy_(0.1 * torch.randn(d, generator=torch.Generator().manual_seed(seed + 2)))
            m.W_enc.add_(0.3 * torch.randn(D, d, generator=torch.Generator().manual_seed(seed + 3)))
    _ = gen
    return fast, ref


@settings(max_examples=25, deadline=None)
@given(
    arch=st.sampled_from(ARCHES),
    B=st.integers(2, 12),
    d=st.integers(2, 9),
    D=st.sampled_from([8, 16, 32]),
    k=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    dead=st.booleans(),
)
def test_fast_matches_reference_forward_and_grads(
    arch: str, B: int, d: int, D: int, k: int, seed: int, dead: bool
) -> None:
    fast, ref = _pair(arch, d, D, k, seed)
    if dead:  # half the latents dead: exercises the AuxK path
        for m in (fast, ref):
            m.samples_since_fire[: D // 2] = 10
    x = torch.randn(B, d, generator=torch.Generator().manual_seed(seed + 4))
    out_f, out_r = fast.train_loss(x), ref.train_loss(x)
    torch.testing.assert_close(out_f.loss, out_r.loss, rtol=1e-5, atol=1e-6)
    assert abs(out_f.aux_loss - out_r.aux_loss) <= 1e-5 * max(1.0, abs(out_r.aux_loss))
    out_f.loss.backward()
    out_r.loss.backward()
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        gf, gr = getattr(fast, name).grad, getattr(ref, name).grad
        torch.testing.assert_close(gf, gr, rtol=1e-4, atol=1e-5, msg=f"{arch}: grad of {name}")


@settings(max_examples=30, deadline=None)
@given(
    B=st.integers(1, 40), D=st.integers(1, 64), k=st.integers(1, 20), seed=st.integers(0, 10_000)
)
def test_batch_topk_selects_exactly_k_times_b_and_the_largest(
    B: int, D: int, k: int, seed: int
) -> None:
    k = min(k, D)
    pre = torch.randn(B, D, generator=torch.Generator().manual_seed(seed))
    rows, cols = kernels.batch_topk_select(pre, k)
    assert rows.numel() == k * B
    assert torch.all(rows[1:] >= rows[:-1])
    chosen = torch.zeros(B, D, dtype=torch.bool)
    chosen[rows, cols] = True
    assert int(chosen.sum()) == k * B  # no duplicates
    # every selected value >= every unselected value
    if chosen.all():
        return
    assert pre[chosen].min() >= pre[~chosen].max()


def test_batch_topk_fallback_when_one_row_dominates() -> None:
    pre = torch.randn(8, 64)
    pre[3] += 100.0  # row 3 holds more than 4k winners: the candidate shortcut must not be used
    rows, cols = kernels.batch_topk_select(pre, 2)
    expected = set(pre.reshape(-1).topk(16).indices.tolist())
    assert set((rows * 64 + cols).tolist()) == expected


@settings(max_examples=20, deadline=None)
@given(B=st.integers(1, 30), D=st.integers(2, 50), k=st.integers(1, 10), seed=st.integers(0, 1000))
def test_topk_exactly_k_per_sample(B: int, D: int, k: int, seed: int) -> None:
    k = min(k, D)
    cfg = sae_config(arch="topk", d_in=4, n_latents=D, k=k, input_transform="none")
    sae = build_sae(cfg, seed=seed)
    with torch.no_grad():
        sae.b_enc.fill_(10.0)  # every pre-activation positive: exactly k non-zero
    codes = sae.encode(torch.randn(B, 4, generator=torch.Generator().manual_seed(seed)))
    assert torch.all((codes > 0).sum(1) == k)


@settings(max_examples=30, deadline=None)
@given(
    n_rows=st.integers(1, 12),
    n_cols=st.integers(1, 12),
    nnz=st.integers(0, 40),
    seed=st.integers(0, 10_000),
)
def test_transposed_sparse_mm_matches_dense_with_repeated_entries(
    n_rows: int, n_cols: int, nnz: int, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    rows = torch.sort(torch.randint(0, n_rows, (nnz,), generator=gen)).values
    cols = torch.randint(0, n_cols, (nnz,), generator=gen)  # repeats allowed: they add up
    values = torch.randn(nnz, generator=gen)
    dense = torch.randn(n_rows, 5, generator=gen)
    S = torch.zeros(n_rows, n_cols).index_put((rows, cols), values, accumulate=True)
    got = kernels.transposed_sparse_mm(rows, cols, values, (n_rows, n_cols), dense)
    torch.testing.assert_close(got, S.t() @ dense, rtol=1e-5, atol=1e-5)


def test_batch_topk_threshold_path_equals_the_candidate_method() -> None:
    """The sampled-threshold selection picks the same entries in the same order as the
    per-row candidate method, at a size where the sample is a strict subset; when the
    sample misleads it (the sampled entries are the largest) or winners tie at the
    threshold, the candidate method answers."""
    gen = torch.Generator().manual_seed(0)
    pre = torch.randn(512, 2048, generator=gen)
    k = 16
    assert pre.numel() > kernels.BATCH_TOPK_SAMPLE
    got, ref = kernels.batch_topk_select(pre, k), kernels._batch_topk_by_rows(pre, k)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    flat = pre.clone().reshape(-1)
    stride = flat.numel() // kernels.BATCH_TOPK_SAMPLE
    flat[::stride] += 50.0  # the sample sees only huge values: the guess is far too high
    misled = flat.view(512, 2048)
    got, ref = kernels.batch_topk_select(misled, k), kernels._batch_topk_by_rows(misled, k)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    ties = torch.randint(0, 4, (512, 2048), generator=gen).float()  # many equal values
    rows, cols = kernels.batch_topk_select(ties, k)
    assert rows.numel() == k * 512 and torch.all(rows[1:] >= rows[:-1])
    chosen = torch.zeros_like(ties, dtype=torch.bool)
    chosen[rows, cols] = True
    assert ties[chosen].min() >= ties[~chosen].max()


@settings(max_examples=20, deadline=None)
@given(
    L=st.integers(1, 5),
    B=st.integers(1, 9),
    d=st.integers(1, 7),
    seed=st.integers(0, 10_000),
    use_scratch=st.booleans(),
)
def test_nested_fvu_matches_autograd_through_the_running_sums(
    L: int, B: int, d: int, seed: int, use_scratch: bool
) -> None:
    g = torch.Generator().manual_seed(seed)
    partial = torch.randn(L, B, d, generator=g)
    x = torch.randn(B, d, generator=g)
    b_dec = torch.randn(d, generator=g)
    w = torch.rand(L, generator=g) + 0.1
    total_var = (x - x.mean(0)).pow(2).sum().clamp_min(1e-12)
    old = kernels.SCRATCH_MIN_NUMEL
    kernels.SCRATCH_MIN_NUMEL = 0 if use_scratch else old
    try:
        grads = []
        for _ in range(2):  # twice: a reused scratch buffer must not leak into the next call
            p, xx, bb = (t.clone().requires_grad_(True) for t in (partial, x, b_dec))
            fvu, resid = nested_fvu(p, xx, bb, total_var)
            (w * fvu).sum().backward()
            grads.append((fvu.detach(), resid, p.grad, xx.grad, bb.grad))
    finally:
        kernels.SCRATCH_MIN_NUMEL = old
    p, xx, bb = (t.clone().requires_grad_(True) for t in (partial, x, b_dec))
    recons = [s + bb for s in itertools.accumulate(p.unbind(0))]
    ref = torch.stack([(xx - r).pow(2).sum() / total_var for r in recons])
    (w * ref).sum().backward()
    for fvu, resid, gp, gx, gb in grads:
        torch.testing.assert_close(fvu, ref.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(resid, (xx - recons[-1]).detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gp, p.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(gx, xx.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(gb, bb.grad, rtol=1e-4, atol=1e-5)
        assert resid.requires_grad is False


@pytest.fixture
def reuse_every_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every tensor, however small, comes from ``kernels.scratch``."""
    monkeypatch.setattr(kernels, "SCRATCH_MIN_NUMEL", 0)


def _assert_same_grads(fast: torch.nn.Module, ref: torch.nn.Module) -> None:
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        torch.testing.assert_close(
            getattr(fast, name).grad, getattr(ref, name).grad, rtol=1e-4, atol=1e-5
        )


def test_fast_training_steps_with_reused_buffers_match_the_reference(
    reuse_every_buffer: None,
) -> None:
    """Every buffer reused across steps (forced on for a small SAE): two optimiser-free
    steps of the fast Matryoshka path give the reference's loss and gradients each time."""
    cfg = sae_config(arch="matryoshka", d_in=6, n_latents=32, levels=[4, 8, 16, 32], k=5)
    fast, ref = build_sae(cfg, fast=True, seed=3), build_sae(cfg, fast=False, seed=3)
    for step in range(2):
        x = torch.randn(10, 6, generator=torch.Generator().manual_seed(step))
        for m in (fast, ref):
            m.zero_grad(set_to_none=True)
        out_f, out_r = fast.train_loss(x), ref.train_loss(x)
        torch.testing.assert_close(out_f.loss, out_r.loss, rtol=1e-5, atol=1e-6)
        out_f.loss.backward()
        out_r.loss.backward()
        _assert_same_grads(fast, ref)


def test_two_graphs_in_one_backward_pass_do_not_share_a_buffer(reuse_every_buffer: None) -> None:
    """Two Matryoshka SAEs of one shape, their losses summed into one backward pass with
    every buffer forced to be reused: each gets the reference's gradients."""
    cfg = sae_config(arch="matryoshka", d_in=6, n_latents=32, levels=[4, 8, 16, 32], k=5)
    pairs = [
        (build_sae(cfg, fast=True, seed=s), build_sae(cfg, fast=False, seed=s)) for s in (1, 2)
    ]
    x = [torch.randn(10, 6, generator=torch.Generator().manual_seed(s)) for s in (7, 8)]
    sum(f.train_loss(xi).loss for (f, _), xi in zip(pairs, x, strict=True)).backward()
    sum(r.train_loss(xi).loss for (_, r), xi in zip(pairs, x, strict=True)).backward()
    for fast, ref in pairs:
        _assert_same_grads(fast, ref)


def test_a_buffer_still_in_use_is_not_handed_out_again(reuse_every_buffer: None) -> None:
    like = torch.zeros(1)
    a = kernels.scratch((3, 4), like, "test-in-use")
    assert a is not None
    where = a.data_ptr()
    assert kernels.scratch((3, 4), like, "test-in-use") is None  # a still holds it
    view = a[1:]
    del a
    assert kernels.scratch((3, 4), like, "test-in-use") is None  # so does a view of it
    del view
    again = kernels.scratch((3, 4), like, "test-in-use")
    assert again is not None and again.data_ptr() == where
