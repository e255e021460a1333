"""Numerical precision and determinism of the SAE stages (training, codes, evaluation).

``precision`` (a config field of ``train``, ``codes`` and ``evaluate``):

* ``fp32``: every product in fp32;
* ``tf32``: fp32 tensors, matrix products on TF32 tensor cores (CUDA only; the same as
  ``fp32`` on the CPU);
* ``bf16``: the SAE forward under bf16 autocast (weights, optimiser and the loss reduction
  stay fp32; the JumpReLU threshold statistic is recomputed in fp32);
* ``auto``: ``bf16`` on CUDA, ``fp32`` elsewhere (training's default); codes and evaluation
  default to ``fp32``.

``deterministic`` (training): :func:`deterministic_algorithms` turns on
``torch.use_deterministic_algorithms`` for the run (and ``CUBLAS_WORKSPACE_CONFIG``, which
cuBLAS needs for it); see docs/gpu.md for what that covers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

Precision = Literal["auto", "bf16", "fp32", "tf32"]
PRECISION_HELP = (
    "Numerical precision: 'fp32', 'tf32' (fp32 with TF32 matrix products, CUDA only), 'bf16' "
    "(bf16 autocast of the SAE forward) or 'auto' (bf16 on CUDA, fp32 elsewhere); see "
    "docs/gpu.md."
)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on CUDA, ``fp32`` elsewhere; ``tf32`` is ``fp32`` off CUDA."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "tf32" and device.type != "cuda":
        return "fp32"
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of a forward pass in ``precision`` (a no-op but for bf16)."""
    import torch

    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def matmul_precision(device: torch.device, precision: str) -> Iterator[None]:
    """TF32 matrix products (and convolutions) inside the block when ``precision`` resolves
    to ``tf32``, fp32 ones when to ``fp32``; the previous settings are restored after."""
    import torch

    if device.type != "cuda":
        yield
        return
    p = resolve_precision(precision, device)
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    if p in ("tf32", "fp32"):
        torch.backends.cuda.matmul.allow_tf32 = p == "tf32"
        torch.backends.cudnn.allow_tf32 = p == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@contextlib.contextmanager
def forward_precision(device: torch.device, precision: str) -> Iterator[None]:
    """Inference in ``precision``: :func:`matmul_precision` and :func:`autocast` together."""
    with matmul_precision(device, precision), autocast(device, precision):
        yield


@contextlib.contextmanager
def deterministic_algorithms(on: bool) -> Iterator[None]:
    """``torch.use_deterministic_algorithms(True)`` inside the block when ``on`` (an op with
    no deterministic kernel then raises); cuBLAS gets the workspace setting it needs unless
    one was set (it must be set before cuBLAS starts, so set it in the environment to be
    sure). The previous mode is restored after."""
    import torch

    if not on:
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    saved = torch.are_deterministic_algorithms_enabled()
    saved_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved, warn_only=saved_warn)
