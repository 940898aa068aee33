"""RED-diff, PnP-Flow, D-Flow and FlowDPS against outputs recorded from their reference code.

How the fixtures were recorded
------------------------------
A generation script kept outside the repository extracted each reference repository with
``git archive`` and ran the reference's own sampler — not a re-implementation — on the CPU in
float64, with the stand-in networks, decoder and dense linear operators defined below (their
constants are stored in the fixtures).  The fixtures' ``description`` and ``reference_commit``
say, per solver, which function ran, at which commit, and what was replaced:

* ``reddiff_reference.npz``: NVlabs/RED-diff @ 66482f2, ``algos/reddiff.py`` ``REDDIFF.sample``
  (with ``initialize``), ``ClassifierGuidanceModel`` and ``get_timesteps``; the diffusion table
  rebuilt in float64 without ``.cuda()``; ``H`` = a dense 8×16 matrix with ``torch.linalg.pinv``
  as ``H_pinv``; ``REDDIFF.__init__`` bypassed (it builds a degradation from its config).
* ``pnp_flow_reference.npz`` / ``dflow_reference.npz``: annegnx/PnP-Flow @ ee5b159,
  ``PNP_FLOW.solve_ip`` and ``D_FLOW.solve_ip`` (torchdiffeq 0.2.5 for D-Flow's inversion) with
  model ``"ot"`` = the stand-in velocity and ``H``/``H_adj`` = the matrix and its transpose;
  ``pnpflow.utils`` replaced by recorders (``save_images`` keeps the restored image).
* ``flowdps_reference.npz``: FlowDPS-Inverse/FlowDPS @ 8361843, ``SD3FlowDPS.sample`` with the
  pinned diffusers 0.30.1 ``FlowMatchEulerDiscreteScheduler(1000, shift=3.0)`` (SD3-medium's) and
  the sampler's ``config.shift = 4.0``; transformer, VAE and operator stand-ins; ``Tensor.half``
  and ``Tensor.float`` made identities during the run (ipsolve does not round the gradient to
  fp16 nor the decoded image to float32 — the only intended differences).

Random numbers: ``torch.randn_like`` was replaced by float32 normals of a seeded
``torch.Generator`` cast to float64 — what ipsolve's per-image generators draw — in the order the
reference asks for them (the measurement noise from its own generator).  ipsolve runs the same
problems through ``Solver.run`` in float64 with a generator of the same seed; agreement is to
float64 rounding (1e-10 relative), so any difference in a formula, a schedule or the order of
random draws fails.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ipsolve.solvers.flowdps as flowdps_mod
from ipsolve.operators import Operator
from ipsolve.priors import DiffusionPrior, FlowPrior, LatentPrior
from ipsolve.solvers import DFlow, FlowDPS, PnPFlow, REDDiff
from ipsolve.solvers.flowdps import flowdps_sigmas

FIX = Path(__file__).parent / "fixtures"
RED = dict(np.load(FIX / "reddiff_reference.npz"))
PNP = dict(np.load(FIX / "pnp_flow_reference.npz"))
DFL = dict(np.load(FIX / "dflow_reference.npz"))
FDPS = dict(np.load(FIX / "flowdps_reference.npz"))
REL = 1e-10  # float64 against float64: the same computation up to rounding


def t64(a) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a)).double()


# ---- stand-ins, identical to the generation script's ------------------------------------------------
class StandInEps(nn.Module):
    """ε(x, t) = (0.3 + 0.5 s)·(K * x) + 0.2 tanh(x) + 0.05 s, s = t/1000 (no parameters: runs in x's dtype)."""

    def forward(self, x, t):
        s = t.to(x.dtype).view(-1, 1, 1, 1) / 1000
        return (0.3 + 0.5 * s) * F.conv2d(x, t64(RED["K_eps"]), padding=1) + 0.2 * torch.tanh(x) + 0.05 * s


def velocity(x, t, kernel):
    """v(x, t) (data − noise) = (0.8 − 0.6 t)(K * x) − 0.3 tanh(x) + 0.2 t."""
    t = t.to(x.dtype).view(-1, 1, 1, 1)
    return (0.8 - 0.6 * t) * F.conv2d(x, kernel, padding=1) - 0.3 * torch.tanh(x) + 0.2 * t


class StandInVelocity(nn.Module):
    """ipsolve convention, ``timestep_scale=1``: called with t ∈ [0, 1]."""

    def __init__(self, kernel):
        super().__init__()
        self.kernel = kernel

    def forward(self, x, t):
        return velocity(x, t, self.kernel)


class StandInSD3(nn.Module):
    """SD3 convention: timestep σ·1000, output noise − data.  ``table``: the reference's float32
    network timesteps; a timestep within 1e-3 of one of them is replaced by it (the reference rounds
    σ and σ·1000 to float32 separately, so its network sees fl32(σ·1000), not 1000·fl32(σ))."""

    def __init__(self, table=()):
        super().__init__()
        self.table = torch.as_tensor(np.asarray(table), dtype=torch.float64)

    def forward(self, x, timestep):
        timestep = timestep.to(x.dtype)
        if len(self.table):
            near = (timestep[:, None] - self.table[None]).abs()
            hit = near.min(1)
            assert bool((hit.values < 1e-3).all()), "a timestep the reference never used"
            timestep = self.table[hit.indices]
        return -velocity(x, 1 - timestep / 1000, t64(FDPS["K_lat"]))


class StandInVAE(nn.Module):
    """decode: channel mix then nearest ×2 (the reference's VAE stand-in, after its shift/scale)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros((), dtype=torch.float64), requires_grad=False)

    def decode(self, z):
        return (F.interpolate(torch.einsum("oc,bchw->bohw", t64(FDPS["dec_mix"]), z), scale_factor=2, mode="nearest"),)


class MatrixOperator(Operator):
    """``A(x) = M x`` on the flattened image, measurements ``(B, 1, 1, m)``; ``pinv`` exact."""

    is_linear = True

    def __init__(self, m: torch.Tensor, image_shape):
        super().__init__()
        self.m, self.image_shape = m, tuple(image_shape)

    def apply(self, x):
        return (x.flatten(1) @ self.m.T.to(x.dtype)).view(x.shape[0], 1, 1, -1)

    def output_shape(self, shape):
        return (shape[0], 1, 1, self.m.shape[0])

    def input_shape(self, y_shape):
        return (y_shape[0], *self.image_shape)

    def pinv(self, y):
        return (y.flatten(1) @ torch.linalg.pinv(self.m).T.to(y.dtype)).view(y.shape[0], *self.image_shape)


def assert_close(got, expected, what, rel=REL):
    got, expected = got.detach().double(), t64(expected)
    assert got.shape == expected.shape, f"{what}: shape {tuple(got.shape)} vs {tuple(expected.shape)}"
    err = float((got - expected).abs().max())
    tol = rel * max(1.0, float(expected.abs().max()))
    print(f"{what}: max |ipsolve − reference| = {err:.3g} (tol {tol:.3g})")
    assert err <= tol, f"{what}: max |ipsolve − reference| = {err:.3g} > {tol:.3g}"


def gen(seed):
    return [torch.Generator().manual_seed(seed)]




# ---- RED-diff --------------------------------------------------------------------------------------
@pytest.mark.parametrize("tag, params", [
    ("default", dict(steps=20)),  # the reference config's λ 0.25, lr 0.1, σ_x0 0, linear weighting
    ("variant", dict(steps=30, lam=1.0, lr=0.25, sigma_x0=1e-2, weighting="sqrt")),
])
def test_reddiff_matches_reference(tag, params):
    assert str(RED["reference_commit"]).startswith("66482f2")
    prior = DiffusionPrior(StandInEps(), t64(RED["alphas_cumprod"]), image_size=4, channels=1)
    op = MatrixOperator(t64(RED["A"]), (1, 4, 4))
    y = t64(RED["y"]).view(1, 1, 1, -1)
    solver = REDDiff(progress=False, output="x0_pred", **params)
    assert solver.timesteps(prior) == RED[f"{tag}_ts"][::-1].tolist()
    res = solver.run(y, op, prior, gen(11), 0.01)
    assert_close(res.x, np.clip(RED[f"{tag}_x0_pred"], -1, 1), f"reddiff {tag} x0_pred")
    mu = REDDiff(progress=False, output="mu", **params).run(y, op, prior, gen(11), 0.01)
    assert_close(mu.x, np.clip(RED[f"{tag}_mu"], -1, 1), f"reddiff {tag} mu")
    assert res.info[0]["nfe"] == len(RED[f"{tag}_ts"]) and res.info[0]["init"] == "pinv"


# ---- PnP-Flow ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("tag, params", [
    ("default", dict(steps=20, alpha=1.0)),  # the config: lr 1, alpha_1_minus_t, α = 1, 5 samples
    ("sr_task", dict(steps=15, alpha=0.3, num_samples=2)),
])
def test_pnp_flow_matches_reference(tag, params):
    assert str(PNP["reference_commit"]).startswith("ee5b159")
    prior = FlowPrior(StandInVelocity(t64(PNP["K_vel"])), 4, 1, network_convention="ipsolve", timestep_scale=1.0)
    op = MatrixOperator(t64(PNP["A"]), (1, 4, 4))
    res = PnPFlow(progress=False, lipschitz=False, **params).run(t64(PNP[f"{tag}_y"]), op, prior, gen(21), 0.05)
    assert_close(res.x, np.clip(PNP[f"{tag}_final"], -1, 1), f"pnp_flow {tag}")


# ---- D-Flow -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("tag, params", [
    ("default", dict(steps=6, lam=0.01, alpha=0.1, max_iter=3, lbfgs_iter=5)),
    ("variant", dict(steps=4, lam=0.001, alpha=0.3, max_iter=2, lbfgs_iter=8, start_time=0.2)),
])
def test_dflow_matches_reference(tag, params):
    assert str(DFL["reference_commit"]).startswith("ee5b159")
    prior = FlowPrior(StandInVelocity(t64(DFL["K_vel"])), 4, 1, network_convention="ipsolve", timestep_scale=1.0)
    op = MatrixOperator(t64(DFL["A"]), (1, 4, 4))
    y = t64(DFL[f"{tag}_y"])
    solver = DFlow(progress=False, **params)
    z_inv, _ = solver.invert(prior, op.adjoint(y))
    assert_close(z_inv, DFL[f"{tag}_z_inv"], f"dflow {tag} inversion (dopri5)")
    assert_close(solver.forward_flow(prior, t64(DFL[f"{tag}_z_probe"])), DFL[f"{tag}_forward_probe"],
                 f"dflow {tag} forward map")
    res = solver.run(y, op, prior, gen(31), 0.05)
    assert_close(res.x, np.clip(DFL[f"{tag}_final"], -1, 1), f"dflow {tag}", rel=1e-8)


# ---- FlowDPS ----------------------------------------------------------------------------------------
def test_flowdps_sigma_grid_matches_the_pinned_scheduler():
    """The reference's grid is float32 (diffusers' ``timesteps``); ipsolve's float64 grid agrees to that."""
    for tag in ("sr", "deblur"):
        ref = FDPS[f"{tag}_sigmas"]
        ours = flowdps_sigmas(len(ref))
        assert np.allclose(ours[:-1], ref, rtol=1e-7, atol=0) and ours[-1] == 0
        assert np.allclose(FDPS[f"{tag}_network_timesteps"], ref * 1000, rtol=1e-7)


@pytest.mark.parametrize("tag, space", [("sr", "pinv"), ("deblur", "adjoint")])
def test_flowdps_matches_reference(tag, space, monkeypatch):
    assert str(FDPS["reference_commit"]).startswith("8361843")
    ref_sigmas = np.concatenate([FDPS[f"{tag}_sigmas_used"], [0.0]])  # the grid the reference ran on
    monkeypatch.setattr(flowdps_mod, "flowdps_sigmas", lambda *a, **k: ref_sigmas)
    inner = FlowPrior(StandInSD3(FDPS[f"{tag}_network_timesteps"]), 4, 2, network_convention="diffusers", timestep_scale=1000.0)
    prior = LatentPrior(StandInVAE(), inner, image_size=8, channels=1, scaling_factor=float(FDPS["scaling_factor"]),
                        shift_factor=float(FDPS["shift_factor"]))
    op = MatrixOperator(t64(FDPS["A"]), (1, 8, 8))
    y = t64(FDPS["y"]).view(1, 1, 1, -1)
    solver = FlowDPS(steps=int(FDPS[f"{tag}_nfe"]), step_size=float(FDPS[f"{tag}_step_size"]), loss_space=space, lipschitz=False,
                     progress=False)
    res = solver.run(y, op, prior, gen(51), 0.03)
    assert_close(res.x, np.clip(FDPS[f"{tag}_image"], -1, 1), f"flowdps {tag} ({space})")
