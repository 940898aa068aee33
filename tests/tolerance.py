"""Tolerances for agreement with float32 reference outputs that hold on any CPU.

A reference output recorded in float32 on one machine differs from the same computation on
another machine by float32 rounding: the summation order of convolutions and matrix products
depends on the CPU's vector width and on the BLAS/oneDNN kernel chosen at run time, and the
difference grows with the depth of the network and with the magnitude of the values summed.
A fixed ``atol``/``rtol`` set on the recording machine therefore fails elsewhere (it did: a
BKSE gradient differed by 4e-5 relative on another CPU) or, set loosely, hides bugs.

So we compare *our float64 computation* with the reference, and measure how large float32
rounding is for this very computation on this very machine: the distance between our float32
and float64 results.  The reference's own float32 error is of the same order (same network,
same inputs, another summation order), so the reference must lie within a small multiple of
that measured rounding (``FACTOR``), with a floor of a few float32 ulps of the largest value.
A real bug — a wrong layer, padding, normalisation or sign — changes the output by orders of
magnitude more than float32 rounding (checked while writing these tests by switching a padding
mode and dropping a residual connection: both failed by > 1000× the tolerance).
"""
from __future__ import annotations

import copy

import torch

EPS32 = torch.finfo(torch.float32).eps
FACTOR = 16  # the reference's rounding vs ours: same computation, other order; 16× covers a
             # different accumulation width (AVX-512 vs AVX2 vs scalar) with margin


def float32_rounding(run) -> tuple[torch.Tensor, float]:
    """``(float64 result, max |float32 − float64|)`` of ``run(dtype)``."""
    got64 = run(torch.float64).detach().double()
    got32 = run(torch.float32).detach().double()
    return got64, float((got32 - got64).abs().max())


def assert_matches_float32_reference(run, expected: torch.Tensor, what: str) -> None:
    """``run(dtype)`` computes our result in ``dtype``; ``expected`` was recorded in float32 by
    the reference code on another machine."""
    expected = expected.detach().double()
    got64, rounding = float32_rounding(run)
    floor = 8 * EPS32 * float(expected.abs().max())
    tol = FACTOR * max(rounding, floor)
    diff = float((got64 - expected).abs().max())
    print(f"{what}: max |ours − reference| = {diff:.3g}; tolerance {tol:.3g} "
          f"(float32 rounding here {rounding:.3g}, max |reference| {float(expected.abs().max()):.3g})")
    assert diff <= tol, (f"{what}: max |ours − reference| = {diff:.3g} exceeds {tol:.3g} = {FACTOR} × the float32 "
                         f"rounding of this computation ({rounding:.3g}, floor {floor:.3g})")


def in_dtype(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of ``module`` in ``dtype`` (the original stays as it is)."""
    return copy.deepcopy(module).to(dtype)
