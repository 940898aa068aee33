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

from ..operators.base import operator_label
from ..operators.decomposition import NotDecomposable, cg_solve, linear_part


def _check_linear(operator) -> None:
    if not getattr(operator, "is_linear", False):
        raise TypeError(f"{operator_label(operator)} is not linear: it has no adjoint or pseudo-inverse")


def jacobian_map(operator, image_shape, like: torch.Tensor):
    """``(J, Jᵀ, b)`` of an affine operator: ``J v = A(v) − A(0)``, ``Jᵀ w`` = ``operator.adjoint(w)``,
    ``b = A(0)`` (:func:`~ipsolve.operators.decomposition.linear_part`, after checking that
    ``operator`` is linear)."""
    _check_linear(operator)
    return linear_part(operator, image_shape, like)


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
    return cg_solve(lambda v: jt(jv(v)), rhs, iters=iters, tol=tol)


def gram_inverse(operator, image_shape, iters: int = 100, tol: float = 1e-10):
    """``r ↦ (J Jᵀ)⁻¹ r`` for images of ``image_shape``: exact through the operator's SVD where it
    has one (:meth:`~ipsolve.operators.decomposition.Decomposition.gram_pinv`, built once here),
    else by CG in measurement space (``r`` in the range of ``J``; ``iters`` at most, to ``tol``).
    Then ``Jᵀu = J⁺ r`` and ``‖J⁺ r‖² = ⟨r, u⟩``."""
    try:
        decomposition = operator.svd(tuple(image_shape))
    except NotDecomposable:
        decomposition = None

    @torch.no_grad()
    def solve(r: torch.Tensor) -> torch.Tensor:
        if decomposition is not None:
            return decomposition.gram_pinv(r)
        jv, jt, _ = jacobian_map(operator, image_shape, r)
        return cg_solve(lambda w: jv(jt(w)), r, iters=iters, tol=tol)

    return solve


def gram_solve(operator, r: torch.Tensor, image_shape, iters: int = 100, tol: float = 1e-10) -> torch.Tensor:
    """``u = (J Jᵀ)⁻¹ r`` (:func:`gram_inverse` for one ``r``)."""
    return gram_inverse(operator, image_shape, iters, tol)(r)


@torch.no_grad()
def gram_norm(operator, image_shape, like: torch.Tensor, iters: int = 20) -> torch.Tensor:
    """‖JᵀJ‖ per image (``(B,)``) by power iteration from fixed noise (the same start for every
    image and every call, so the images' own generators are not touched)."""
    jv, jt, _ = jacobian_map(operator, image_shape, like)
    g = torch.Generator().manual_seed(0)
    v = torch.randn(tuple(image_shape[1:]), generator=g).to(like).expand(image_shape).clone()
    lam = torch.ones(image_shape[0], dtype=like.dtype, device=like.device)
    for _ in range(iters):
        v = v / v.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *([1] * (v.ndim - 1)))
        w = jt(jv(v))
        lam = (w * v).flatten(1).sum(1)
        v = w
    return lam.clamp_min(1e-12)
