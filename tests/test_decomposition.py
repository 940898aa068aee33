"""Decomposable operators: ``U diag(s) Vᵀ x + b == A(x)``, orthonormal U and V, the singular
values against the dense matrix's, pseudo-inverses (exact, and by CG for CT), the exact data
prox, and the one-line errors for operators without an SVD."""
from __future__ import annotations

import pytest
import torch

from ipsolve import load_prior, make_operator, make_solver, solve
from ipsolve.operators.decomposition import NotDecomposable

CASES = {  # (registry name, parameters, image batch shape)
    "sr_bicubic_x4": ("super_resolution", dict(scale=4), (2, 2, 16, 16)),
    "sr_bicubic_x3_nonsquare": ("super_resolution", dict(scale=3), (1, 1, 12, 15)),
    "sr_avgpool_x2": ("super_resolution", dict(scale=2, kernel="avgpool"), (2, 3, 8, 8)),
    "inpainting_random": ("inpainting", dict(missing=0.7, seed=2), (2, 1, 12, 12)),
    "inpainting_per_image": ("inpainting", dict(missing=[0.3, 0.7], seed=2), (3, 1, 12, 12)),
    "inpainting_box": ("inpainting", dict(mask="box"), (1, 1, 16, 16)),
    "gaussian_blur_9": ("gaussian_blur", dict(size=9, std=1.0), (2, 1, 16, 16)),
    "gaussian_blur_61_std3": ("gaussian_blur", dict(size=61, std=3.0), (1, 1, 32, 32)),
    "mri_4x": ("mri", dict(acceleration=4), (2, 1, 16, 16)),
    "mri_8x_equispaced_odd": ("mri", dict(acceleration=8, mask="equispaced", center_fraction=0.04), (1, 1, 15, 17)),
}


DENSE_CASES = ("sr_bicubic_x3_nonsquare", "sr_avgpool_x2", "inpainting_random", "gaussian_blur_9", "mri_4x",
               "mri_8x_equispaced_odd")


def dense(fn, shape):
    """The matrix of the linear part of ``fn`` on images of ``shape[1:]`` (columns = basis images)."""
    n = shape[1] * shape[2] * shape[3]
    eye = torch.eye(n, dtype=torch.float64).view(n, *shape[1:])
    zero = fn(torch.zeros(1, *shape[1:], dtype=torch.float64))
    return (fn(eye) - zero).flatten(1).T


@pytest.fixture(params=list(CASES))
def case(request):
    name, params, shape = CASES[request.param]
    op = make_operator(name, **params)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    op(x)  # draws masks for this size
    return request.param, op, shape, x


def test_decomposition_reproduces_the_operator(case):
    tag, op, shape, x = case
    dec = op.svd(shape)
    ax = op(x)
    # the Gaussian blur operator convolves with a float32 kernel buffer; the SVD is of the exact g gᵀ
    tol = 1e-7 if tag.startswith("gaussian") else 1e-12
    assert (dec.forward(x) - ax).abs().max() <= tol * ax.abs().max(), tag
    # V orthogonal: ‖Vᵀx‖ = ‖x‖ and V Vᵀ x = x
    z = dec.Vt(x)
    assert z.shape == (shape[0], dec.n)
    assert torch.allclose(z.norm(dim=1), x.flatten(1).norm(dim=1), rtol=1e-12)
    assert torch.allclose(dec.V(z), x, atol=1e-12)
    # U orthonormal on the support: ‖U w‖ = ‖w‖ and Uᵀ U w = w
    w = torch.randn(z.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * dec.support
    uw = dec.U(w)
    assert torch.allclose(uw.flatten(1).norm(dim=1), w.norm(dim=1), rtol=1e-12)
    assert torch.allclose(dec.Ut(uw), w, atol=1e-12)
    # Uᵀ sees all of y that A can produce: U Uᵀ (A x − b) = A x − b
    r = ax - dec.minus_offset(torch.zeros_like(ax))
    assert torch.allclose(dec.U(dec.Ut(r)), r, atol=1e-6 * float(r.abs().max()))


def test_singular_values_are_the_dense_matrix_ones(case):
    tag, op, shape, _ = case
    one = (1, *shape[1:])
    if tag not in DENSE_CASES:
        pytest.skip("a dense SVD for every case is too slow for the suite; each decomposition class has one")
    dec = op.svd(one)
    fn = (lambda v: dec.forward(v)) if tag.startswith("gaussian") else op  # exact kernel, not its float32 copy
    expected = torch.linalg.svdvals(dense(fn, one))
    got = dec.s[0].sort(descending=True).values[:len(expected)]
    assert torch.allclose(got, expected, atol=1e-10), (tag, (got - expected).abs().max())
    if len(got) < dec.n:
        assert (dec.s[0].sort(descending=True).values[len(expected):] == 0).all()


def test_pinv_inverts_on_the_row_space_and_prox_is_exact(case):
    tag, op, shape, x = case
    dec = op.svd(shape)
    s = dec.s
    xr = dec.V(dec.Vt(x) * (s > 1e-6 * s.amax(1, keepdim=True)))  # x on the row space
    assert torch.allclose(dec.pinv(dec.forward(xr), rcond=1e-6), xr, atol=1e-8)
    if not tag.startswith("gaussian"):
        assert torch.allclose(op.pinv(op(xr)), xr, atol=1e-9)
    y = dec.forward(x) + 0.01 * torch.randn(op(x).shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    z = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    xp = dec.prox(y, z, 0.3).requires_grad_()
    objective = (y - dec.forward(xp)).pow(2).sum() + 0.3 * (xp - z).pow(2).sum()
    (grad,) = torch.autograd.grad(objective, xp)
    assert grad.abs().max() < 1e-9, tag


def test_truncation_is_per_factor_for_separable_operators():
    """The reference zeroes the 1-D singular values below 3e-2 (svd_replacement.py L341-342)."""
    op = make_operator("gaussian_blur", size=9, std=1.0)
    dec = op.svd((1, 1, 16, 16))
    cut = dec.truncated(3e-2)
    keep_h = dec.s_h >= 3e-2
    assert 0 < int(keep_h.sum()) < 16
    expected = (dec.s_h * keep_h)[:, None] * (dec.s_w * (dec.s_w >= 3e-2))[None]
    assert torch.equal(cut.s.view(16, 16), expected) and torch.equal(cut.support, dec.support)


def test_deepinv_decomposable_physics():
    dinv = pytest.importorskip("deepinv")
    from ipsolve.operators import from_deepinv

    shape = (2, 1, 8, 8)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mask = (torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.4).float()
    for physics, image_range in ((dinv.physics.Inpainting(img_size=(1, 8, 8), mask=mask), (0.0, 1.0)),
                                 (dinv.physics.Denoising(), (-1.0, 1.0))):
        op = from_deepinv(physics, image_range=image_range)
        dec = op.svd(shape)
        assert torch.allclose(dec.forward(x), op(x), atol=1e-6)
        assert torch.allclose(dec.V(dec.Vt(x)), x, atol=1e-6)
        xr = dec.V(dec.Vt(x) * (dec.s > 0))
        assert torch.allclose(op.pinv(op(xr)), xr, atol=1e-5)
    blur = from_deepinv(dinv.physics.BlurFFT(img_size=(1, 8, 8), filter=torch.ones(1, 1, 3, 3) / 9))
    with pytest.raises(NotDecomposable, match="deepinv BlurFFT has no fast SVD: its V is not a real orthogonal"):
        blur.svd(shape)


def test_ct_pinv_by_conjugate_gradients_is_the_least_squares_solution():
    """CT has no fast SVD: ``pinv`` runs CG on the normal equations from 0, which converges to the
    minimum-norm least-squares solution (checked against the dense pseudo-inverse; 16 views on
    8 × 8 px: condition number 80)."""
    op = make_operator("ct", views=16)
    shape = (1, 1, 8, 8)
    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = op(x) + 0.01 * torch.randn(op(x).shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    a = dense(op, shape)
    b = op(torch.zeros(shape, dtype=torch.float64)).flatten()
    expected = torch.linalg.pinv(a) @ (y.flatten() - b)
    got = op.pinv(y, iters=100).flatten()
    assert (got - expected).norm() < 1e-6 * expected.norm()
    few = op.pinv(y, iters=5).flatten()  # a few iterations: a regularised approximation
    assert (few - expected).norm() < expected.norm()


def test_solvers_needing_an_svd_name_the_operators_that_have_one():
    prior = load_prior("gaussian", image_size=8, channels=1)
    ct = make_operator("ct", views=6)
    y = ct.measure(torch.zeros(1, 1, 8, 8), 0.01)
    with pytest.raises(ValueError) as err:
        solve(y, ct, prior, make_solver("ddrm", progress=False))
    message = str(err.value)
    assert "\n" not in message and message.startswith("solver 'ddrm' needs a decomposable operator")
    for name in ("super_resolution", "inpainting", "gaussian_blur", "mri (single coil)", "deepinv"):
        assert name in message
    with pytest.raises(NotDecomposable, match="operator 'motion_blur' has no fast SVD: its kernel is not separable"):
        make_operator("motion_blur", size=9).svd((1, 1, 16, 16))
    pr = make_operator("phase_retrieval")
    with pytest.raises(ValueError, match="solver 'pigdm' needs a pseudo-inverse: operator 'phase_retrieval' is nonlinear"):
        solve(pr.measure(torch.zeros(1, 1, 8, 8), 0.01), pr, prior, make_solver("pigdm", progress=False))
    # ΠGDM and DiffPIR run on CT through conjugate gradients
    for name in ("pigdm", "diffpir"):
        res = solve(y, ct, prior, make_solver(name, steps=4, progress=False), sigma=0.01)
        assert torch.isfinite(res.x).all() and res.info[0]["nfe"] in (3, 4)
