"""Linear algebra on an operator, for the solvers whose references use ``Aᵀ``, ``A⁺`` or ``(AAᵀ)⁻¹``
(RED-diff's ``H_pinv`` start, FlowDPS's data term): per-image conjugate gradients on the operator's
own maps, so a batch equals single runs.

ipsolve's "linear" operators may be affine (CT and MRI act on ``(x + 1)/2``): ``A(x) = J x + b``
with ``b = A(0)`` and ``Jᵀ`` = ``operator.adjoint`` (the VJP at 0).  Everything here uses ``J``;
a nonlinear operator has none (``TypeError``).

Why not scipy / torch.linalg: the operators are matrix-free maps on batches of images; scipy's
``cg`` works on one flat NumPy vector and would give up the GPU and the batch.
"""
from __future__ import annotations

import torch

from ..operators.decomposition import NotDecomposable


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(1)


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


def _check_linear(operator) -> None:
    if not getattr(operator, "is_linear", False):
        raise TypeError(f"{type(operator).__name__} is not linear: it has no adjoint or pseudo-inverse")


def jacobian_map(operator, image_shape, like: torch.Tensor):
    """``(J, Jᵀ)`` of an affine operator: ``J v = A(v) − A(0)``, ``Jᵀ w`` = ``operator.adjoint(w)``."""
    _check_linear(operator)
    zero = torch.zeros(image_shape, dtype=like.dtype, device=like.device)
    with torch.no_grad():
        offset = operator(zero)
    return (lambda v: operator(v) - offset), operator.adjoint, offset


def conjugate_gradient(apply, rhs: torch.Tensor, iters: int, tol: float) -> torch.Tensor:
    """Solve ``M u = rhs`` (M symmetric positive semi-definite, ``rhs`` in its range) per image by
    CG from 0; an image stops changing once its residual is ≤ ``tol``·‖rhs‖ (so a batch equals
    single runs)."""
    u = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    rr = _dot(r, r)
    target = tol * rr.sqrt()
    for _ in range(iters):
        active = (rr > 0) & (rr.sqrt() > target)
        if not active.any():
            break
        mp = apply(p)
        alpha = torch.where(active, rr / _dot(p, mp).clamp_min(1e-300), torch.zeros_like(rr))
        u = u + _bcast(alpha, u) * p
        r = r - _bcast(alpha, r) * mp
        rr_new = _dot(r, r)
        beta = torch.where(active, rr_new / rr.clamp_min(1e-300), torch.zeros_like(rr))
        p = torch.where(_bcast(active, p), r + _bcast(beta, p) * p, p)
        rr = torch.where(active, rr_new, rr)
    return u


@torch.no_grad()
def pseudo_inverse(operator, y: torch.Tensor, image_shape, iters: int = 50, tol: float = 1e-6) -> torch.Tensor:
    """``J⁺ (y − b)``: exact through the operator's SVD where it has one, else the minimum-norm
    least-squares solution by CG on the normal equations ``JᵀJ x = Jᵀ(y − b)`` from 0 (CGLS: the
    iterates stay in the range of ``Jᵀ``), ``iters`` at most or to ``tol`` — on an ill-conditioned
    ``J`` (blur) the truncation regularises, as DDRM's pseudo-inverse zeroes singular values < 3e-2."""
    try:
        return operator.svd(tuple(image_shape)).pinv(y)
    except NotDecomposable:
        pass
    jv, jt, offset = jacobian_map(operator, image_shape, y)
    rhs = jt(y - offset)
    return conjugate_gradient(lambda v: jt(jv(v)), rhs, iters, tol)


@torch.no_grad()
def gram_solve(operator, r: torch.Tensor, image_shape, iters: int = 100, tol: float = 1e-10) -> torch.Tensor:
    """``u = (J Jᵀ)⁻¹ r`` by CG in measurement space (``r`` in the range of ``J``); then
    ``Jᵀu = J⁺ r`` and ``‖J⁺ r‖² = ⟨r, u⟩``."""
    jv, jt, _ = jacobian_map(operator, image_shape, r)
    return conjugate_gradient(lambda w: jv(jt(w)), r, iters, tol)


@torch.no_grad()
def gram_norm(operator, image_shape, like: torch.Tensor, iters: int = 20) -> torch.Tensor:
    """‖JᵀJ‖ per image (``(B,)``) by power iteration from fixed noise (the same start for every
    image and every call, so the images' own generators are not touched)."""
    jv, jt, _ = jacobian_map(operator, image_shape, like)
    g = torch.Generator().manual_seed(0)
    v = torch.randn(tuple(image_shape[1:]), generator=g).to(like).expand(image_shape).clone()
    lam = torch.ones(image_shape[0], dtype=like.dtype, device=like.device)
    for _ in range(iters):
        v = v / _bcast(v.flatten(1).norm(dim=1).clamp_min(1e-30), v)
        w = jt(jv(v))
        lam = _dot(w, v)
        v = w
    return lam.clamp_min(1e-12)
