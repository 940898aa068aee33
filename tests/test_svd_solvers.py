"""DDRM, ΠGDM and DiffPIR against loops of the reference code, and on the exact Gaussian posterior.

How tests/fixtures/svd_solvers_reference.npz was produced
-----------------------------------------------------------
A generation script (kept outside the repository) ran the references' own code on CPU in float64
(torch's default dtype float64) with a stand-in ε-network (``standin_eps`` below, identical) and
recorded every random draw (``torch.randn_like`` patched to draw from a seeded generator):

* DDRM — bahjat-kawar/ddrm @ 32b6b3c: ``functions/denoising.py`` ``efficient_generalized_steps``
  (whole file, ``'cuda'`` → ``'cpu'``) with ``functions/svd_replacement.py`` ``GeneralH`` of a dense
  12 × 32 matrix H (singular values 3 … 0.005) on (2, 2, 4, 4) images, the grid of
  ``runners/diffusion.py`` L334-335 and DDPM's linear β.  Its three noise draws per step were
  slices of one draw z (the whole vector, z at ``cond_after``, z at the first m entries), which
  is what ipsolve draws.  Cases: σ_0 = 0.05, 20 steps; σ_0 = 0, 10 steps; σ_0 = 0.1, η = 0.5, η_b = 0.7.
* ΠGDM — NVlabs/RED-diff @ 66482f2: ``algos/pgdm.py`` ``PGDM.sample``/``initialize`` with
  ``algos/ddim.py``, ``models/diffusion.py`` (``.cuda()`` removed), ``models/classifier_guidance_model.py``
  and ``utils/degredations.py`` ``GeneralH`` of the same H; cases (steps, η, w, awd): (20, 1, 1, on),
  (10, 0, 0.5, on), (10, 0.5, 1, off).
* DiffPIR — yuanzhi-zhu/DiffPIR @ 111d26e: the loops of ``main_ddpir_inpainting.py`` L189-194,
  L200-211, L217-313 and ``main_ddpir_deblur.py`` L206-217, L225-236, L242-371 exec'd verbatim
  after the schedule lines L80-96, with ``np.float32`` → ``np.float64``, ``.float()`` → ``.double()``
  (and the progress-image stride ``len(seq)//10`` guarded against 0), ``utils_model.model_fn``
  replaced by the stand-in's clipped ``pred_xstart`` (guided-diffusion's formula; its unused
  p_sample noise is not drawn), ``utils/utils_sisr.py`` L9-95 (FFT data step).  Inpainting uses
  ipsolve's ``Inpainting(missing=0.5, seed=3)`` mask on (1, 2, 8, 8) images; deblurring a
  circular 3 × 3 kernel.  Also ``data_solution`` alone for sf = 1, 2.

How tests/fixtures/svd_blur_reference.npz was produced (2026-12-05, same way): ΠGDM — NVlabs/RED-diff
@ 66482f2 ``algos/pgdm.py`` ``PGDM.sample`` (``'cuda'`` → ``'cpu'``, its ``DDIM`` base unused) with
``models/diffusion.py`` (``.cuda()``, ``.float()`` removed), ``models/classifier_guidance_model.py`` and
``utils/degredations.py`` ``Deblurring`` of a 7-tap Gaussian (std 2) on (2, 3, 8, 8) images: its 1-D
singular values 0.0254 and 0.0218 fall below ``ZERO = 3e-2`` and are cut.  One edit to ``Deblurring``:
``singulars()`` L500-501 ``repeat(1, 3)`` → ``repeat_interleave(3)`` — its vectors are channel-interleaved
(``Vt`` L474-480), so unedited the singular values sit on the wrong coordinates and H is not the blur
(see docs/fidelity.md); edited, ``H.H`` equals the truncated separable matrix to 1e-12 (asserted).
y = H.H(x) + 0.05 z as RED-diff's ``main.py`` L102; cases (steps, η, w, awd): (20, 1, 1, on), (10, 0.5, 1, off).
The same file: DDRM — bahjat-kawar/ddrm @ 32b6b3c ``functions/denoising.py`` as above (its three
draws per step slices of one Z) with ``functions/svd_replacement.py`` ``Deblurring`` of the same kernel
(the same edit, L460-461), DDPM's linear β; cases (steps, η, η_b, σ_y): (20, 0.85, 1, 0.05), (10, 0.85, 1, 0).
Its ``ddrm_blur_V_small`` and ``ddrm_blur_perm`` map the reference's V-coordinates to ipsolve's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import ipsolve.solvers.ddrm as ddrm_mod
import ipsolve.solvers.diffpir as diffpir_mod
import ipsolve.solvers.pigdm as pigdm_mod
from ipsolve import load_prior, make_operator, make_solver, solve
from ipsolve.operators import Operator
from ipsolve.operators.decomposition import Decomposition, SeparableDecomposition
from ipsolve.priors import DiffusionPrior
from test_solvers import gaussian_posterior

FIX = dict(np.load(Path(__file__).parent / "fixtures" / "svd_solvers_reference.npz"))
T = {k: torch.from_numpy(v) for k, v in FIX.items() if v.dtype.kind in "fiu"}
BLUR = dict(np.load(Path(__file__).parent / "fixtures" / "svd_blur_reference.npz"))
TB = {k: torch.from_numpy(v) for k, v in BLUR.items() if v.dtype.kind in "fiu"}
MIX = torch.tensor([[0.9, -0.3], [0.4, 0.7]], dtype=torch.float64)
REL = 1e-10  # float64 against float64: the same formulas up to summation order
REL_PIR = 1e-9  # DiffPIR's first step divides by √ᾱ_999 = 0.0064: rounding grows ~150× (measured 2e-10)


MIX3 = torch.tensor([[0.9, -0.3, 0.1], [0.4, 0.7, -0.2], [0.0, 0.2, 0.8]], dtype=torch.float64)


class StandInEps(nn.Module):
    """ε(x, t) = (0.3 + 0.5 s)·Mx + 0.2 tanh(x) + 0.05 s, s = t/1000 (channel mixing M)."""

    def __init__(self, mix=MIX):
        super().__init__()
        self.mix = mix

    def forward(self, x, t):
        s = torch.as_tensor(t, dtype=x.dtype).reshape(-1).expand(x.shape[0]).view(-1, 1, 1, 1) / 1000
        return (0.3 + 0.5 * s) * torch.einsum("oc,bchw->bohw", self.mix.to(x.dtype), x) + 0.2 * torch.tanh(x) + 0.05 * s


class DenseDecomposition(Decomposition):
    """A = U diag(s) Vᵀ from dense factors (U m×m, V n×n), y of shape (B, m, 1, 1)."""

    def __init__(self, shape, u, s, v):
        self.u, self.v, self.m = u, v, u.shape[0]
        n = v.shape[0]
        pad = torch.zeros(1, n, dtype=torch.float64)
        pad[0, :len(s)] = s
        sup = torch.zeros(1, n, dtype=torch.bool)
        sup[0, :self.m] = True
        super().__init__(shape, pad, sup)

    def Vt(self, x):
        return x.flatten(1) @ self.v.to(x)

    def V(self, z):
        return (z @ self.v.to(z).T).reshape(z.shape[0], *self.shape[1:])

    def Ut(self, y):
        out = y.new_zeros(y.shape[0], self.n)
        out[:, :self.m] = y.flatten(1) @ self.u.to(y)
        return out

    def U(self, z):
        return (z[:, :self.m] @ self.u.to(z).T).reshape(z.shape[0], self.m, 1, 1)


class DenseOperator(Operator):
    """y = H x on flattened images, with a given SVD (the reference's, so that signs agree)."""

    is_linear = True
    measurement_is_image = False

    def __init__(self, u, s, v, image_shape, guess=None):
        super().__init__()
        self.u, self.s, self.v, self.image_shape, self.guess = u, s, v, tuple(image_shape), guess
        self.h = u[:, :len(s)] @ torch.diag(s) @ v[:, :len(s)].T

    def apply(self, x):
        return (x.flatten(1) @ self.h.to(x).T).reshape(x.shape[0], -1, 1, 1)

    def output_shape(self, shape):
        return (shape[0], self.h.shape[0], 1, 1)

    def input_shape(self, y_shape):
        return (y_shape[0], *self.image_shape)

    def svd(self, shape):
        return DenseDecomposition(shape, self.u, self.s, self.v)

    def initial_guess(self, y):
        return self.guess if self.guess is not None else super().initial_guess(y)


def prior_with(alphas_cumprod, channels=2, size=4):
    return DiffusionPrior(StandInEps(MIX3 if channels == 3 else MIX), alphas_cumprod, image_size=size, channels=channels)


def replay(monkeypatch, module, draws):
    """ipsolve's noise draws replaced by the reference's, in order (shapes checked)."""
    queue = list(draws)

    def fake(shape, gens, device, dtype=torch.float64):
        z = queue.pop(0)
        assert z.numel() == int(np.prod(shape)), (tuple(z.shape), shape)
        return z.reshape(shape).to(device)

    monkeypatch.setattr(module, "randn_like_batch", fake)
    return queue


def close(got, ref, what, rel=REL):
    got, ref = got.double(), torch.as_tensor(ref).double()
    err = float((got - ref).abs().max())
    tol = rel * max(1.0, float(ref.abs().max()))
    assert err <= tol, f"{what}: max |ipsolve − reference| = {err:.3g} > {tol:.3g}"




def record_steps(solver, y, op, prior, sigma):
    steps = []
    solver.run(y, op, prior, torch.Generator(), sigma, callback=lambda i, d: steps.append((d["x"], d["x_next"])))
    return steps


# ------------------------------------------------------------------ DDRM
@pytest.mark.parametrize("tag", ["ddrm_noisy", "ddrm_clean", "ddrm_etab"])
def test_ddrm_matches_reference_loop(monkeypatch, tag):
    sigma, steps, eta, eta_b = FIX[f"{tag}_params"].tolist()
    ac = torch.cumprod(1 - T["ddrm_betas"], 0)
    op = DenseOperator(T["ddrm_U"], T["ddrm_s"], T["ddrm_V"], (2, 4, 4))
    close(op(T["x_true"]), (T["x_true"].flatten(1) @ T["dense_H"].T)[..., None, None], "dense operator", 1e-12)
    left = replay(monkeypatch, ddrm_mod, [T[f"{tag}_init_noise"], *T[f"{tag}_step_noise"]])
    solver = make_solver("ddrm", steps=int(steps), eta=eta, eta_b=eta_b, svd_cutoff=0.0, progress=False)
    out = record_steps(solver, T[f"{tag}_y"][..., None, None], op, prior_with(ac), sigma)
    assert not left and len(out) == int(steps)
    for i, (x0, x_next) in enumerate(out):
        close(x0, T[f"{tag}_x0s"][i], f"{tag} x̂0 at step {i}")
        close(x_next, T[f"{tag}_xs"][i + 1], f"{tag} x at step {i}")


# ------------------------------------------------------------------ ΠGDM
@pytest.mark.parametrize("tag", ["pgdm_ref", "pgdm_eta0", "pgdm_noawd"])
def test_pigdm_matches_reference_loop(monkeypatch, tag):
    steps, eta, w, awd = FIX[f"{tag}_params"].tolist()
    op = DenseOperator(T["pgdm_U"], T["pgdm_s"], T["pgdm_V"], (2, 4, 4))
    noise = T[f"{tag}_noise"]
    left = replay(monkeypatch, pigdm_mod, list(noise))
    solver = make_solver("pigdm", steps=int(steps), eta=eta, weight=w, awd=bool(awd), svd_cutoff=0.0, progress=False)
    xs = T[f"{tag}_xs"]
    out = record_steps(solver, T[f"{tag}_y"][..., None, None], op, prior_with(T["pgdm_alphas"][1:]), 0.02)
    assert not left and len(out) == int(steps)
    for i, (_, x_next) in enumerate(out):
        close(x_next, xs[i + 1], f"{tag} x at step {i}")


class SeparableBlur(Operator):
    """``y = W X Wᵀ`` per channel (the reference's 1-D matrix W), its SVD ipsolve's own
    :class:`SeparableDecomposition` of W — the form of ipsolve's Gaussian blur."""

    is_linear = True

    def __init__(self, w):
        super().__init__()
        self.w = w

    def apply(self, x):
        return self.w.to(x) @ x @ self.w.to(x).T

    def svd(self, shape):
        return SeparableDecomposition(shape, self.w, self.w)


@pytest.mark.parametrize("tag", ["pgdm_blur", "pgdm_blur_noawd"])
def test_pigdm_matches_reference_loop_on_a_blur_with_cut_singular_values(monkeypatch, tag):
    """RED-diff's ``Deblurring`` (1-D singular values 0.0254 and 0.0218 cut at 3e-2): its
    ``H_pinv`` keeps Uᵀ(y − H x̂0) on the cut coordinates and its ``H`` is the truncated operator.
    tests/fixtures/svd_blur_reference.npz: see the module docstring."""
    steps, eta, w, awd = BLUR[f"{tag}_params"].tolist()
    op = SeparableBlur(TB["blur_H_small"])
    left = replay(monkeypatch, pigdm_mod, list(TB[f"{tag}_noise"]))
    solver = make_solver("pigdm", steps=int(steps), eta=eta, weight=w, awd=bool(awd), progress=False)
    out = record_steps(solver, TB["blur_y"], op, prior_with(TB["blur_alphas"][1:], channels=3, size=8),
                       float(BLUR["blur_sigma0"]))
    assert not left and len(out) == int(steps)
    xs = TB[f"{tag}_xs"]
    for i, (_, x_next) in enumerate(out):
        close(x_next, xs[i + 1], f"{tag} x at step {i}")


def reference_to_ipsolve_coordinates(z_ref, v_small, perm, v_h):
    """The reference ``Deblurring``'s V-coordinates (index 3p + c, pixel pair ``perm[p]``) in
    ipsolve's ``SeparableDecomposition`` order ((c, i, j), flat), with the sign of each 1-D
    singular vector as ipsolve's SVD chose it."""
    n = v_small.shape[0]
    sign = torch.sign((v_small * v_h).sum(0))
    p = torch.arange(n * n).repeat_interleave(3)
    c = torch.arange(3).repeat(n * n)
    i, j = perm[p] // n, perm[p] % n
    out = torch.zeros_like(z_ref)
    out[:, c * n * n + i * n + j] = z_ref * (sign[i] * sign[j])
    return out


@pytest.mark.parametrize("tag", ["ddrm_blur", "ddrm_blur_clean"])
def test_ddrm_matches_reference_loop_on_a_blur_with_cut_singular_values(monkeypatch, tag):
    """DDRM's own ``Deblurring`` (the same two cut values): a cut coordinate is "less noisy than
    y" when σ_y > 0 (``denoising.py`` L91-92 with s = 0) and "missing" when σ_y = 0.  Noise
    draws are in V-coordinates, mapped from the reference's sorted, channel-interleaved order."""
    steps, eta, eta_b, s0 = BLUR[f"{tag}_params"].tolist()
    op = SeparableBlur(TB["blur_H_small"])
    dec = op.svd((2, 3, 8, 8))
    assert (dec.s_h < 3e-2).sum() == 2
    to_ips = lambda z: reference_to_ipsolve_coordinates(z.flatten(1), TB["ddrm_blur_V_small"], TB["ddrm_blur_perm"],
                                                          dec.v_h)
    left = replay(monkeypatch, ddrm_mod, [to_ips(TB[f"{tag}_init_noise"]), *[to_ips(z) for z in TB[f"{tag}_step_noise"]]])
    solver = make_solver("ddrm", steps=int(steps), eta=eta, eta_b=eta_b, progress=False)
    ac = torch.cumprod(1 - TB["ddrm_blur_betas"], 0)
    out = record_steps(solver, TB[f"{tag}_y"], op, prior_with(ac, channels=3, size=8), s0)
    assert not left and len(out) == int(steps)
    for i, (x0, x_next) in enumerate(out):
        close(x0, TB[f"{tag}_x0s"][i], f"{tag} x̂0 at step {i}")
        close(x_next, TB[f"{tag}_xs"][i + 1], f"{tag} x at step {i}")


# ------------------------------------------------------------------ DiffPIR
@pytest.mark.parametrize("tag", ["pir_inp", "pir_inp0"])
def test_diffpir_inpainting_matches_reference_loop(monkeypatch, tag):
    """ipsolve's own Inpainting operator (its mask was given to the reference); the initial
    guess is set to the reference's (y with holes −1: ipsolve's harmonic fill is its documented
    difference, weighted by √ᾱ_999 = 0.006)."""
    noise, iters, lam, zeta, eta = FIX[f"{tag}_params"].tolist()
    op = make_operator("inpainting", missing=0.5, seed=3)
    assert torch.equal(op.mask_for((1, 2, 8, 8)).expand(1, 2, 8, 8).double(), T[f"{tag}_mask"])
    y_ref = T[f"{tag}_y"]
    monkeypatch.setattr(op, "initial_guess", lambda y: y_ref.to(y))
    left = replay(monkeypatch, diffpir_mod, list(T[f"{tag}_noise"]))
    solver = make_solver("diffpir", steps=int(iters), lam=lam, zeta=zeta, eta=eta, progress=False)
    prior = prior_with(T[f"{tag}_alphas_cumprod"], size=8)
    out = record_steps(solver, op(y_ref), op, prior, 2 * noise)
    assert not left and len(out) == int(iters) - 1  # the reference's last network call is unused
    close(out[-1][1], T[f"{tag}_out"], f"{tag} output", REL_PIR)


def circular_blur_matrix(k: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """Dense matrix of the reference's FFT blur (utils_sisr.py p2o: kernel rolled by −k//2)."""
    otf = torch.zeros(size, size, dtype=torch.float64)
    otf[:k.shape[0], :k.shape[1]] = k
    otf = torch.fft.fftn(torch.roll(otf, (-(k.shape[0] // 2), -(k.shape[1] // 2)), (0, 1)))
    eye = torch.eye(size * size, dtype=torch.float64).view(-1, size, size)
    b = torch.real(torch.fft.ifftn(otf * torch.fft.fftn(eye, dim=(-2, -1)), dim=(-2, -1))).reshape(size * size, -1).T
    return torch.block_diag(*[b] * channels)


def dense_from_matrix(h, image_shape, guess=None):
    u, s, vt = torch.linalg.svd(h, full_matrices=True)
    return DenseOperator(u, s, vt.T, image_shape, guess)


def test_diffpir_deblurring_matches_reference_loop(monkeypatch):
    noise, iters, lam, zeta, _ = FIX["pir_deblur_params"].tolist()
    h = circular_blur_matrix(T["pir_deblur_kernel"], 8, 2)
    y = (2 * T["pir_deblur_y01"] - 1)
    op = dense_from_matrix(h, (2, 8, 8), guess=y)
    left = replay(monkeypatch, diffpir_mod, list(T["pir_deblur_noise"]))
    solver = make_solver("diffpir", steps=int(iters), lam=lam, zeta=zeta, progress=False)
    assert diffpir_mod.task_of(op) == "deblur"
    prior = prior_with(T["pir_inp_alphas_cumprod"], size=8)
    out = record_steps(solver, y.flatten(1)[..., None, None], op, prior, 2 * noise)
    assert not left and len(out) == int(iters) - 1
    close(out[-1][1], T["pir_deblur_out"], "deblurring output", REL_PIR)


@pytest.mark.parametrize("sf", [1, 2])
def test_svd_prox_solves_the_reference_fft_data_step(sf):
    """``utils_sisr.py`` ``data_solution`` (USRNet's closed form: argmin ‖y − S B x‖² + α‖x − z‖², B
    circular, S keeps the top-left pixel of each sf × sf block) equals the SVD prox."""
    b = circular_blur_matrix(T["pir_deblur_kernel"], 8, 2)
    keep = torch.zeros(2, 8, 8, dtype=torch.bool)
    keep[:, ::sf, ::sf] = True
    op = dense_from_matrix(b[keep.flatten()], (2, 8, 8))
    z, y = T[f"datasol_sf{sf}_z"], T[f"datasol_sf{sf}_y"]
    for alpha in (0.05, 2.0):
        got = op.svd((1, 2, 8, 8)).prox(y.flatten(1)[..., None, None], z, alpha)
        close(got, T[f"datasol_sf{sf}_a{alpha}"], f"data step sf {sf}, α {alpha}", 1e-9)


# ------------------------------------------------------------------ exact Gaussian posterior
def test_ddrm_and_pigdm_against_the_exact_gaussian_posterior():
    """2×2 Gaussian prior (std 0.5, correlation 0.8), 50 % inpainting, σ = 0.05, 512 samples with
    the paper defaults.  Measured (2026-12-04): error of the sample mean relative to the prior
    mean's — DDRM (20 steps) 0.18, ΠGDM (100 steps) 0.08, ΠGDM ``guidance="noisy"`` 0.08 (DDRM at
    100 steps: 0.08); std of the missing pixels / the posterior's: DDRM 1.02, 0.92, ΠGDM 0.80, 0.82.
    On the observed pixels ΠGDM's reference guidance ignores σ (the noiseless A⁺ pins them: std
    ratio 0.00), its ``noisy`` option keeps 0.48 of the posterior std, DDRM (20 steps) 2.5."""
    prior = load_prior("gaussian", image_size=2, channels=1, mean=0.0, std=0.5, correlation=0.8)
    op = make_operator("inpainting", missing=0.5, seed=1)
    x = torch.tensor([[[[0.4, 0.3], [0.2, 0.1]]]])
    sigma = 0.05
    y1 = op.measure(x, sigma, generator=torch.Generator().manual_seed(0))
    y = y1.expand(512, -1, -1, -1).contiguous()
    mean, cov = gaussian_posterior(prior, op, y1, sigma)
    prior_err = (prior.distribution.mean - mean).norm()
    observed = op.mask_for(x.shape).flatten().bool()
    for name, params, bound, obs_std in (("ddrm", {}, 0.3, (1.5, 4.0)), ("pigdm", {}, 0.15, (0.0, 0.05)),
                                         ("pigdm", {"guidance": "noisy"}, 0.15, (0.3, 0.7))):
        res = solve(y, op, prior, make_solver(name, progress=False, **params), sigma=sigma,
                    generator=torch.Generator().manual_seed(0))
        emp = res.x.double().flatten(1)
        err = (emp.mean(0) - mean).norm() / prior_err
        ratio = emp.std(0) / cov.diagonal().sqrt()
        assert err < bound, (name, params, float(err))
        assert ((ratio[~observed] > 0.6) & (ratio[~observed] < 1.3)).all(), (name, params, ratio)
        assert ((ratio[observed] >= obs_std[0]) & (ratio[observed] <= obs_std[1])).all(), (name, params, ratio)


# ------------------------------------------------------------------ batch = singles
@pytest.mark.parametrize("name,params", [("ddrm", dict(steps=5)), ("pigdm", dict(steps=5)),
                                         ("diffpir", dict(steps=6))])
def test_batch_equals_single_runs(name, params):
    """Per-image generators: image i of a batch is what a run of image i alone gives."""
    from ipsolve import datasets

    prior = load_prior("bundled:phantom-ddpm")
    x = torch.cat([datasets.heldout_phantoms(2, 32), datasets.shepp_logan(32)])
    for op in (make_operator("super_resolution", scale=4), make_operator("inpainting", missing=[0.5, 0.7])):
        y = op.measure(x, 0.01, generator=torch.Generator().manual_seed(0))
        s = make_solver(name, progress=False, **params)
        batch = solve(y, op, prior, s, sigma=0.01, generator=[torch.Generator().manual_seed(i) for i in range(3)])
        one = solve(y[2:], op, prior, s, sigma=0.01, generator=[torch.Generator().manual_seed(2)]) \
            if not getattr(op, "per_image", False) else None
        if one is None:  # per-image masks: image 2 alone must be keyed "2" as in the batch
            op.set_images(["2"])
            one = solve(y[2:], op, prior, s, sigma=0.01, generator=[torch.Generator().manual_seed(2)])
            op.set_images(None)
        assert (batch.x[2:] - one.x).abs().max() < 1e-4, (name, type(op).__name__)
        assert batch.info[0]["nfe"] == one.info[0]["nfe"]


def test_search_spaces_contain_the_reference_values():
    """The log ranges the ground-truth-free calibration searches hold the reference values."""
    from ipsolve.solvers import DDRM, DiffPIR, PiGDM
    from ipsolve.solvers.diffpir import TASKS

    assert DDRM.search_space == {}  # no guidance strength (η, η_b are mixing weights in [0, 1])
    lo, hi = PiGDM.search_space["weight"]
    assert 0 < lo < 1.0 < hi
    for _, lam, zeta in TASKS.values():
        assert DiffPIR.search_space["lam"][0] <= lam <= DiffPIR.search_space["lam"][1]
        assert DiffPIR.search_space["zeta"][0] <= zeta <= DiffPIR.search_space["zeta"][1]


# ------------------------------------------------------------------ command line
def test_cli_runs_the_cpu_presets(tmp_path):
    """The three CPU presets from the command line, one sweep process, a 3-step budget."""
    import csv
    from test_cli import ipsolve as run_cli

    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "solver=ddrm_cpu,pigdm_cpu,diffpir_cpu", "++solver.steps=3", "data.max_images=1",
                   "progress=false", f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader(open(sweep / "sweep_summary.csv")))
    assert sorted(r["solver"] for r in rows) == ["ddrm", "diffpir", "pigdm"]
    assert all(r["psnr"] not in ("", "n/a") for r in rows)


def test_a_steps_count_the_reference_grid_does_not_run_is_said(caplog, monkeypatch):
    """``range(0, T, T // steps)`` (DDRM, ΠGDM, RED-diff) runs steps + 1 or more where steps does not
    divide T (the reference's rule, kept): said once, with the count run."""
    from ipsolve.solvers import svd_common
    from ipsolve.solvers.svd_common import skip_grid

    monkeypatch.setattr(svd_common, "_NOTED", set())  # (said once per process: not after another test's)

    with caplog.at_level("WARNING", logger="ipsolve"):
        assert len(skip_grid(1000, 20)) == 20 and len(skip_grid(1000, 300)) == 334
        assert len(skip_grid(1000, 300)) == 334  # the second time: not said again
    said = [r.getMessage() for r in caplog.records]
    assert said == ["steps=300 runs 334 steps on the reference's grid range(0, 1000, 3) (steps dividing 1000 run "
                    "as asked)"]
