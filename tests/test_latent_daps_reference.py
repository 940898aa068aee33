"""LatentDAPS's data gradient and a short LatentDAPS loop against outputs recorded from the
reference code (zhangbingliang2019/DAPS, main branch 098df6b).

How tests/fixtures/daps_latent_reference.npz was produced
---------------------------------------------------------
A generation script (kept outside the repository) extracted with ``git show`` the reference's
``sampler.py`` (``LatentDAPS``), ``cores/mcmc.py`` (``MCMCSampler``), ``cores/scheduler.py``
(``EDMScheduler``, ``DiffusionPFODE``; torchdiffeq 0.2.5 for its Euler ``odeint``),
``cores/trajectory.py``, ``forward_operator/__init__.py`` (``Operator``, ``LatentWrapper``) and
``model/precond.py`` (``VPPrecond``) and ran them on CPU (torch 2.14) in float64: torch's default
dtype float64, ``VPPrecond``'s float32 casts (L43-57) replaced by float64 in that class's text, and
``LatentWrapper.loss``'s ``decoded.float()`` (L394) left out — nothing else changed.  Stand-ins
(defined identically below): an ε-network, a nonlinear decoder, a linear operator (a subclass of
the reference's ``Operator``, whose ``loss`` is the per-image summed squared error, L77-88), a
latent model as the reference's ``LDM`` (``model/__init__.py`` L128-161: ``tweedie`` =
``VPPrecond(net)(z, σ)``, ``score`` = (tweedie − z)/σ²).  The weights (``mix_eps``, ``mix_dec``,
``A``), y and all inputs come from ``Generator().manual_seed(20261201)``.

* ``grad_*``: ``LatentWrapper.gradient(z, y)`` (``forward_operator/__init__.py`` L396-405): the
  gradient of Σ‖A(D(z)) − y‖² with respect to the *latent* z, clamped to [−1, 1] (L402); also the
  same gradient unclamped.  Three (2, 3, 4, 4) latents: the clamp binds on 50 %, 54 % and 0 % of
  the entries.
* ``run_*``: ``LatentDAPS.sample`` (``sampler.py`` L144-199): 4 annealing levels (EDM poly-7,
  σ 10 → 0.1), 2 Euler PF-ODE steps to 0.001, HMC (``cores/mcmc.py``) 5 steps, lr 2e-5,
  lr_min_ratio 0.023, momentum 0.86, τ 0.01, ``prior_solver='gaussian'``; z_start given; every
  ``torch.randn_like`` draw recorded (28: per level the HMC velocity, 5 step noises and the
  re-noising, the last one multiplied by σ = 0).  Recorded: the decoded x0y of each level and the
  final image.  The clamp binds on 95 % of the gradient entries at the first HMC step, 43 % at the
  last (``run_clamp_fraction``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ipsolve.solvers.daps as daps_mod
from ipsolve.priors import DiffusionPrior, LatentPrior, linear_alphas_cumprod
from ipsolve.solvers import DAPS

FIX = dict(np.load(Path(__file__).parent / "fixtures" / "daps_latent_reference.npz", allow_pickle=False))
T = {k: torch.from_numpy(v) for k, v in FIX.items() if v.dtype.kind in "fiu"}
MIX_EPS, MIX_DEC, A, Y = T["mix_eps"], T["mix_dec"], T["A"], T["y"]




class StandInEps(nn.Module):
    """ε(z, t) = (0.3 + 0.5 s) M z + 0.2 tanh(z) + 0.05 s, s = t/1000 (no parameters: runs in the input's dtype)."""

    def forward(self, z, t):
        s = t.to(z.dtype).view(-1, 1, 1, 1) / 1000
        return (0.3 + 0.5 * s) * torch.einsum("oc,bchw->bohw", MIX_EPS.to(z.dtype), z) + 0.2 * torch.tanh(z) + 0.05 * s


class StandInDecoder(nn.Module):
    """decode: nearest ×2 upsampling of 0.6 C z + 0.4 tanh(2z)."""

    def __init__(self):
        super().__init__()
        self.unit = nn.Parameter(torch.ones((), dtype=torch.float64), requires_grad=False)  # LatentPrior reads the dtype

    def decode(self, z):
        h = 0.6 * torch.einsum("oc,bchw->bohw", MIX_DEC.to(z.dtype), z) + 0.4 * torch.tanh(2 * z)
        return self.unit * F.interpolate(h, scale_factor=2, mode="nearest")


def operator(x):
    return x.flatten(1) @ A.T.to(x.dtype)


def latent_prior() -> LatentPrior:
    # the VP timestep uses only the table's length (1000); DAPS's reference assumes DDPM's schedule
    inner = DiffusionPrior(StandInEps(), linear_alphas_cumprod(), image_size=4, channels=3)
    return LatentPrior(StandInDecoder(), inner, image_size=8, channels=3)


def assert_close(got, expected, what, tol):
    got, expected = got.detach().double(), torch.as_tensor(expected).double()
    assert got.shape == expected.shape, f"{what}: shape {tuple(got.shape)} vs {tuple(expected.shape)}"
    err = (got - expected).abs().max().item()
    bound = tol * max(1.0, expected.abs().max().item())
    print(f"{what}: max |ipsolve - reference| = {err:.3g} (tol {bound:.3g})")
    assert err <= bound, f"{what}: max |ipsolve - reference| = {err:.3g} > {bound:.3g}"


def test_fixture_provenance():
    assert str(FIX["reference_commit"]).startswith("098df6b")
    assert "LatentWrapper.gradient" in str(FIX["description"])


@pytest.mark.parametrize("case", range(3))
def test_latent_data_gradient_is_clamped_in_latent_space(case):
    """``DAPS.data_gradient`` for a latent prior = the reference's ``LatentWrapper.gradient``
    (float64, the same formula: 1e-12), and the fixture separates it from clamping the
    image-space gradient (ipsolve's behaviour before 2026-12: differs by O(1) where the clamp binds)."""
    z = T["grad_z"][case]
    got = DAPS().data_gradient(z, Y, operator, latent_prior(), latent=True)
    assert_close(got, T["grad_ref"][case], f"latent gradient, case {case}", 1e-12)
    unclamped = T["grad_unclamped"][case]
    binding = unclamped.abs() > 1
    assert torch.equal(T["grad_ref"][case][binding].abs(), torch.ones(int(binding.sum()), dtype=torch.float64))
    # the former image-space clamp, for contrast
    prior = latent_prior()
    v = z.clone().requires_grad_()
    image = prior.decode(v)
    img = image.detach().requires_grad_()
    (g_img,) = torch.autograd.grad((operator(img) - Y).pow(2).sum(), img)
    (image_clamped,) = torch.autograd.grad(image, v, grad_outputs=g_img.clamp(-1, 1))
    if binding.any():
        assert (image_clamped - T["grad_ref"][case]).abs().max() > 0.5
    else:  # neither clamp binds here
        assert_close(image_clamped, T["grad_ref"][case], "unclamped case", 1e-12)


def _run(monkeypatch, **options):
    noise = [T["run_z_start"] / 10.0] + [T["run_noise"][k] for k in range(len(T["run_noise"]))]

    def reference_noise(shape, gens, device, dtype=torch.float32):
        assert tuple(shape) == (2, 3, 4, 4)
        return noise.pop(0)

    monkeypatch.setattr(daps_mod, "randn_like_batch", reference_noise)
    # the MCMC steps' noise (drawn ahead in chunks in ipsolve), handed out one step at a time
    monkeypatch.setattr(daps_mod, "randn_steps", lambda shape, gens, device, steps: (
        reference_noise(shape, gens, device) for _ in range(steps)))
    n, n_ode, hmc, smax, smin, ode_min, lr, ratio, momentum, tau = FIX["run_config"].tolist()
    settings = dict(annealing_steps=int(n), ode_steps=int(n_ode), sigma_max=smax, sigma_min=smin, ode_sigma_min=ode_min,
                    mcmc="hmc", mcmc_steps=int(hmc), lr=lr, lr_min_ratio=ratio, momentum=momentum, tau=tau)
    solver = DAPS(**{**settings, **options}, progress=False)
    levels = []
    result = solver.run(Y, operator, latent_prior(), None, sigma=0.05,
                        callback=lambda k, state: levels.append(state["x"]))
    return result, torch.stack(levels), noise


# The reference builds its schedules in float32 (``cores/scheduler.py`` ``tensorize``: the annealing
# levels, the ODE grid) and ipsolve in float64 (both checked against the recorded reference grids in
# test_daps_uncertainty.py): σ's that differ by ≤ 6e-8 relative.  Through 4 levels × (2 ODE + 5 HMC
# steps) that moved the decoded iterates by 5.6e-7 here, 2.2e-8 of their largest value (26); ipsolve's
# float32 network timestep (``DAPS.denoise``) adds less (5.6e-7 → 4.7e-7 with a float64 one).  Other
# CPUs change those float32 roundings only in the last bits.  1e-6 of the largest value keeps a 45×
# margin; the image-space clamp (the former behaviour) or a 1 % change of lr moves the trace by
# > 1e-3 of it (``test_loop_detects_changes``).
RUN_TOL = 1e-6


def test_latent_daps_loop_matches_reference(monkeypatch):
    """``DAPS.run`` with a latent prior and HMC against ``LatentDAPS.sample``: same annealing levels,
    ODE, HMC updates (velocity drawn per level, ``cores/mcmc.py`` L81-92), latent-space clamped data
    gradient, re-noising.  Compared: every level's decoded x0 (callback) and the final image (ipsolve
    clamps it to [−1, 1], the reference only when saving).  The reference's last re-noising draw
    (× σ = 0) is the one draw ipsolve does not take."""
    result, levels, noise = _run(monkeypatch)
    assert len(noise) == 1, f"ipsolve drew {len(T['run_noise']) + 1 - len(noise)} of the reference's {len(T['run_noise']) + 1} - 1"
    assert 0.4 < FIX["run_clamp_fraction"].min() and FIX["run_clamp_fraction"].max() < 1  # the clamp binds, not everywhere
    scale = T["run_x0y"].abs().max().item()
    assert_close(levels, T["run_x0y"], "decoded x0 per level", RUN_TOL)
    assert_close(result.x, T["run_final"].clamp(-1, 1), "final image", RUN_TOL * scale)


def test_loop_detects_changes(monkeypatch):
    """Sensitivity of ``test_latent_daps_loop_matches_reference``: the image-space clamp (ipsolve before
    this fix) and a 1 % larger HMC step size both move the trace by far more than ``RUN_TOL``."""
    def image_space_clamp(self, x0, y, operator, prior, latent):
        with torch.enable_grad():
            v = x0.detach().requires_grad_()
            image = prior.decode(v)
            img = image.detach().requires_grad_()
            (g_img,) = torch.autograd.grad((operator(img) - y).pow(2).sum(), img)
            (grad,) = torch.autograd.grad(image, v, grad_outputs=g_img.clamp(-1, 1))
        return grad

    errors = {}
    with monkeypatch.context() as m:
        m.setattr(DAPS, "data_gradient", image_space_clamp)
        errors["image-space clamp"] = (_run(m)[1] - T["run_x0y"]).abs().max().item()
    with monkeypatch.context() as m:
        errors["lr × 1.01"] = (_run(m, lr=float(FIX["run_config"][6]) * 1.01)[1] - T["run_x0y"]).abs().max().item()
    scale = T["run_x0y"].abs().max().item()
    print({k: f"{v:.3g} ({v / scale:.2g} of the largest value)" for k, v in errors.items()})
    assert all(e > 1e3 * RUN_TOL * scale for e in errors.values()), errors
