"""RED-diff, PnP-Flow, D-Flow and FlowDPS: closed forms on analytic Gaussian priors, batch = single
runs, latent priors (tiny SD3 pipeline, the bundled latent prior), the command line, errors.
(Agreement with the reference code: ``test_flow_solvers_reference.py``.)"""
from __future__ import annotations

import pytest
import torch

from ipsolve import datasets, load_prior, make_operator, make_solver, solve
from ipsolve.runner.progress import iteration_budget
from ipsolve.solvers import DFlow
from ipsolve.solvers.linalg import gram_solve, pseudo_inverse
from test_solvers import gaussian_posterior  # the closed-form posterior the DPS test uses

SIGMA = 0.05
_PRIORS: dict = {}


def bundled(source: str):
    """A bundled prior, loaded once for this module (loading dominates these tests' time)."""
    if source not in _PRIORS:
        _PRIORS[source] = load_prior(source)
    return _PRIORS[source]




def gaussian_case(kind):
    """2×2 Gaussian prior (std 0.5, correlation 0.8), 50 % inpainting, σ = 0.05 (the DPS/DAPS test's)."""
    prior = load_prior("gaussian", image_size=2, channels=1, mean=0.0, std=0.5, correlation=0.8, kind=kind)
    op = make_operator("inpainting", missing=0.5, seed=1)
    x = torch.tensor([[[[0.4, 0.3], [0.2, 0.1]]]])
    y = op.measure(x, SIGMA, generator=torch.Generator().manual_seed(0))
    mean, cov = gaussian_posterior(prior, op, y, SIGMA)
    return prior, op, y, mean, cov, op.mask_for(x.shape).flatten().bool()


def gens(n, base=0):
    return [torch.Generator().manual_seed(base + i) for i in range(n)]


# ---- closed forms -----------------------------------------------------------------------------------
def test_dflow_flow_map_and_inversion_are_the_gaussians_exact_transport():
    """For x ~ N(μ, Σ) and x_t = t x + (1 − t) z the flow is x_t = t μ + (t²Σ + (1 − t)² I)^½ z, so
    T(z) = μ + Σ^½ z exactly; D-Flow's midpoint map converges to it (O(h²)) and its dopri5
    inversion returns z — this checks the time convention end to end."""
    prior = load_prior("gaussian", image_size=2, channels=1, mean=0.1, std=0.5, correlation=0.8, kind="flow")
    dist = prior.distribution
    z = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(0)).double()
    exact = (dist.mean + (z.flatten(1) @ dist.u) * dist.lam.sqrt() @ dist.u.T).view_as(z)
    for steps, tol in ((11, 2e-3), (41, 1.5e-4)):
        got = DFlow(steps=steps).forward_flow(prior, z)
        assert (got - exact).abs().max() < tol, (steps, float((got - exact).abs().max()))
    for tol, err in ((1e-5, 3e-3), (1e-9, 1e-6)):  # measured 1.0e-3 at the reference's 1e-5, 1.2e-7 at 1e-9
        back, nfe = DFlow(inversion_tol=tol).invert(prior, exact)
        assert (back - z).abs().max() < err and min(nfe) > 6


@pytest.mark.parametrize("name, kind, params, n, mean_tol", [
    # output ≈ the posterior mean (MMSE-like): measured 0.024 of the prior mean's error
    ("pnp_flow", "flow", dict(steps=100, num_samples=5), 8, 0.1),
    # measured 0.04 (1000 steps), 0.07 (200 steps)
    ("reddiff", "diffusion", dict(steps=200), 8, 0.15),
    # a posterior sampler: the mean of 256 samples, measured 0.02 (step 2; the reference's 15 is for SD3 latents)
    ("flowdps", "flow", dict(steps=28, step_size=2.0), 256, 0.1),
])
def test_solvers_near_the_exact_gaussian_posterior_mean(name, kind, params, n, mean_tol):
    """Error of the (mean) output relative to the prior mean's error from the exact posterior mean."""
    prior, op, y1, mean, cov, observed = gaussian_case(kind)
    y = y1.expand(n, -1, -1, -1).contiguous()
    res = solve(y, op, prior, make_solver(name, progress=False, **params), sigma=SIGMA, generator=gens(n))
    emp = res.x.double().flatten(1)
    prior_err = (prior.distribution.mean - mean).norm()
    err = float((emp.mean(0) - mean).norm() / prior_err)
    print(f"{name}: |mean − posterior mean| / |prior mean − posterior mean| = {err:.3f}")
    assert err < mean_tol
    if name == "flowdps":  # unobserved pixels spread like the posterior (measured std ratio 0.76–0.78)
        ratio = emp.std(0) / cov.diagonal().sqrt()
        assert ((ratio[~observed] > 0.5) & (ratio[~observed] < 1.3)).all(), ratio


def test_dflow_fits_the_observed_pixels_and_samples_the_rest():
    """D-Flow on the Gaussian flow prior: observed pixels fit y (λ small), the unobserved ones keep
    the randomness of the start, spread like the posterior (measured std ratio 0.83–0.89)."""
    prior, op, y1, mean, cov, observed = gaussian_case("flow")
    n = 16
    y = y1.expand(n, -1, -1, -1).contiguous()
    solver = make_solver("dflow", max_iter=3, lbfgs_iter=10, inversion="midpoint", inversion_steps=20, progress=False)
    calls = []
    res = solve(y, op, prior, solver, sigma=SIGMA, generator=gens(n), callback=lambda i, state: calls.append(i))
    # the progress log's budget bounds the callbacks (it read the ODE's `steps`: "iteration 200/6")
    assert 0 < len(calls) <= iteration_budget(solver) == 3 * (12 + 2)
    assert calls == list(range(len(calls)))  # step indices, as every solver's (were evaluations summed over the batch)
    emp = res.x.double().flatten(1)
    assert (emp[:, observed] - y1.double().flatten()[observed]).abs().max() < 2e-3
    ratio = emp.std(0) / cov.diagonal().sqrt()
    assert ((ratio[~observed] > 0.4) & (ratio[~observed] < 1.6)).all(), ratio


def test_dflow_stop_reasons_are_names():
    """With a stopping rule, each image's stop reason is a name from STOP_CODES (not a code tensor)."""
    prior, op, y1, mean, cov, observed = gaussian_case("flow")
    y = y1.expand(2, -1, -1, -1).contiguous()
    res = solve(y, op, prior, make_solver("dflow", max_iter=4, lbfgs_iter=3, stop=["discrepancy"], tau=50.0,
                                          progress=False), sigma=SIGMA, generator=gens(2))
    assert all(isinstance(i["stop_reason"], str) for i in res.info)
    assert {i["stop_reason"] for i in res.info} <= {"budget", "discrepancy"}
    assert any(i["stop_reason"] == "discrepancy" for i in res.info), res.info


def without_svd(op):
    """``op`` with its fast SVD hidden: the solvers' conjugate-gradient paths."""
    from ipsolve.operators.decomposition import not_decomposable

    def svd(shape):
        raise not_decomposable("this test's operator")
    op.svd = svd
    return op


def test_pseudo_inverse_and_gram_solve_by_cg():
    """CGLS gives A⁺y (minimum norm) for an operator without an SVD; (AAᵀ)⁻¹ by CG; a batch
    equals single images (each image stops on its own)."""
    op = without_svd(make_operator("super_resolution", scale=4))
    x = datasets.heldout_phantoms(2, 16)
    y = op(x)
    a = torch.stack([op(e.view(1, 1, 16, 16)).flatten() for e in torch.eye(256)], 1).double()
    ref = (torch.linalg.pinv(a) @ y.double().flatten(1).T).T.view_as(x)
    got = pseudo_inverse(op, y.double(), x.shape, iters=200, tol=1e-12)
    assert (got - ref).abs().max() < 1e-8
    u = gram_solve(op, y.double(), x.shape)
    assert (u.flatten(1) - torch.linalg.solve(a @ a.T, y.double().flatten(1).T).T).abs().max() < 1e-6
    one = gram_solve(op, y.double()[1:], x[1:].shape)
    assert torch.equal(one, u[1:]) or (one - u[1:]).abs().max() < 1e-12


@pytest.mark.parametrize("name, params", [("super_resolution", dict(scale=4)),
                                          ("super_resolution", dict(scale=2, kernel="avgpool")),
                                          ("inpainting", dict(missing=0.5, seed=3))])
def test_gram_solve_through_the_svd_is_the_dense_inverse(name, params):
    """Where the operator has a fast SVD, (AAᵀ)⁻¹r comes from it exactly (FlowDPS's pseudo-inverse
    metric on super-resolution): equal to the dense solve, on the operator's measurement layout."""
    op = make_operator(name, **params)
    x = datasets.heldout_phantoms(2, 16).double()
    y = op(x)
    cols = torch.stack([op(e.view(1, 1, 16, 16)).flatten() for e in torch.eye(256, dtype=torch.float64)], 1)
    rows = cols.abs().sum(1) > 0  # inpainting: the measurement keeps zeros where pixels are missing
    a = cols[rows]
    u = gram_solve(op, y, x.shape).flatten(1)
    dense = torch.linalg.solve(a @ a.T, y.flatten(1)[:, rows].T).T
    assert (u[:, rows] - dense).abs().max() < 1e-10 * dense.abs().max()
    if (~rows).any():  # (AAᵀ)⁺ is 0 on the entries A never measures
        assert u[:, ~rows].abs().max() == 0


def test_reddiff_starts_at_the_references_truncated_pseudo_inverse_on_a_blur():
    """RED-diff's ``init="pinv"`` on a Gaussian blur is the reference's ``H_pinv(y)``: DDRM's
    ``Deblurring`` SVD with 1-D singular values below 3e-2 cut and those coordinates keeping
    ``Uᵀy`` (``utils/degredations.py`` L68-78) — dense here, in float64; not the exact pseudo-inverse,
    which would amplify the noise by the smallest singular value's inverse."""
    import numpy as np

    from ipsolve.operators.blur import correlation_matrix, gaussian_kernel_1d
    from ipsolve.solvers import REDDiff

    n = 16
    op = make_operator("gaussian_blur", size=9, std=1.0)
    x = datasets.heldout_phantoms(2, n).double()
    y = op.measure(x, 0.01, generator=torch.Generator().manual_seed(0)).double()
    h = correlation_matrix(gaussian_kernel_1d(9, 1.0), n)  # one axis of the blur, reflection padding included
    u, s, vt = np.linalg.svd(h)
    s = np.where(s < 3e-2, 0.0, s)
    assert (s == 0).any()  # the cut matters at this size
    s2 = s[:, None] * s[None, :]
    ref = []
    for img in y[:, 0].numpy():
        z = u.T @ img @ u
        ref.append(vt.T @ np.where(s2 > 0, z / np.where(s2 > 0, s2, 1.0), z) @ vt)
    ref = torch.from_numpy(np.stack(ref))[:, None]
    got, how = REDDiff().initial(y, op, x.shape)
    assert how == "pinv" and (got - ref).abs().max() < 1e-8
    exact, _ = REDDiff(svd_cutoff=0.0).initial(y, op, x.shape)
    assert (exact - ref).abs().max() > 1.0  # without the cut the noise is amplified: a different start


def test_flowdps_svd_and_cg_metrics_give_the_same_reconstruction():
    """FlowDPS on super-resolution (the pseudo-inverse space): the metric from the operator's SVD
    and by CG to 1e-10 give the same images (float64), so the exact path changes only the cost."""
    torch.manual_seed(0)
    prior = load_prior("gaussian", image_size=16, channels=1, mean=0.0, std=0.5, correlation=0.8, kind="flow")
    x = datasets.heldout_phantoms(2, 16).double()
    runs = []
    for op in (make_operator("super_resolution", scale=4), without_svd(make_operator("super_resolution", scale=4))):
        y = op.measure(x, SIGMA, generator=torch.Generator().manual_seed(0)).double()
        solver = make_solver("flowdps", steps=6, progress=False)
        runs.append(solver.run(y, op, prior, gens(2), SIGMA).x)
    assert (runs[0] - runs[1]).abs().max() < 1e-8, (runs[0] - runs[1]).abs().max()


# ---- batch = singles, bundled priors ---------------------------------------------------------------
@pytest.fixture(scope="module")
def phantom_case():
    x = torch.cat([datasets.heldout_phantoms(2, 32), datasets.shepp_logan(32)])
    op = make_operator("inpainting")
    return x, op, op.measure(x, 0.01, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name, source, params", [
    ("reddiff", "bundled:phantom-ddpm", dict(steps=4)),
    ("pnp_flow", "bundled:phantom-flow", dict(steps=3, num_samples=2)),
    ("flowdps", "bundled:phantom-flow", dict(steps=4)),
    ("dflow", "bundled:phantom-flow", dict(steps=2, max_iter=2, lbfgs_iter=3, inversion="midpoint", inversion_steps=3,
                                           stop=["discrepancy"])),
])
def test_batch_equals_single_runs(phantom_case, name, source, params):
    """Image 1 of a batch of 3 equals its single run with the same generator.  float32: the batch's
    other summation order differs by ~1e-7; RED-diff's Adam normalises near-zero gradients, which
    turns that into up to 3e-4 on a few pixels (in float64 the two agree to 1e-9; measured).
    D-Flow runs in float64: its L-BFGS line search can turn the network's float32 batch-vs-single
    rounding (1e-6–1e-5, more with oneDNN's channels-last convolutions at 8 threads) into a different
    step — 0.08 apart at 8 threads, measured — where float64 agrees exactly."""
    x, op, y = phantom_case
    prior = load_prior(source, dtype=torch.float64) if name == "dflow" else bundled(source)
    solver = make_solver(name, progress=False, **params)
    batch = solve(y, op, prior, solver, sigma=0.01, generator=gens(3))
    one = solve(y[1:2], op, prior, solver, sigma=0.01, generator=gens(1, base=1))
    assert (batch.x[1:2] - one.x).abs().max() < (1e-3 if name == "reddiff" else 1e-4)
    assert batch.info[1]["nfe"] == one.info[0]["nfe"] > 0
    assert torch.isfinite(batch.x).all() and not torch.equal(batch.x[0], batch.x[1])


# ---- latent priors ------------------------------------------------------------------------------------
def test_flow_solvers_on_a_tiny_sd3_pipeline(tmp_path):
    """The three flow solvers on a latent flow prior (SD3 layout): run end to end through the decoder."""
    from tiny_pipelines import IMAGE_SIZE, make_sd3

    prior = load_prior(str(make_sd3(tmp_path / "sd3")), prompt="a cat", image_size=IMAGE_SIZE)
    op = make_operator("super_resolution", scale=4)
    x = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = op.measure(x, 0.03, generator=torch.Generator().manual_seed(0))
    for name, params in (("flowdps", dict(steps=3)), ("pnp_flow", dict(steps=2, num_samples=1, power_iters=3)),
                         ("dflow", dict(steps=2, max_iter=1, lbfgs_iter=2, inversion="euler", inversion_steps=2))):
        res = solve(y, op, prior, make_solver(name, progress=False, **params), sigma=0.03, generator=0)
        assert res.x.shape == x.shape and torch.isfinite(res.x).all(), name
        assert all(i["nfe"] > 0 for i in res.info)


def test_reddiff_on_a_latent_diffusion_prior():
    x = datasets.heldout_phantoms(1, 32)
    op = make_operator("super_resolution", scale=4)
    y = op.measure(x, 0.01, generator=torch.Generator().manual_seed(0))
    res = solve(y, op, bundled("bundled:phantom-latent"), make_solver("reddiff", steps=5, progress=False), sigma=0.01)
    assert torch.isfinite(res.x).all() and res.info[0]["nfe"] == 5 and res.info[0]["init"] == "pinv"


# ---- command line, errors ----------------------------------------------------------------------------
def test_command_line_runs_a_new_preset(tmp_path):
    from test_cli import check_ok, ipsolve as run_cli

    proc = run_cli("prior=phantom_flow", "solver=flowdps_cpu", "solver.steps=3", "data.max_images=2", "data.batch_size=2",
                   "progress=false", "hydra.run.dir=run", cwd=tmp_path)
    check_ok(proc)
    assert len(list((tmp_path / "run" / "recon").glob("*.png"))) == 2


def test_wrong_prior_kinds_and_bad_settings_are_one_line_errors():
    flow, ddpm = load_prior("gaussian", image_size=2, kind="flow"), load_prior("gaussian", image_size=2)
    op = make_operator("inpainting")
    y = torch.zeros(1, 1, 2, 2)
    for name, prior, kind in (("reddiff", flow, "flow"), ("pnp_flow", ddpm, "diffusion"), ("dflow", ddpm, "diffusion"),
                              ("flowdps", ddpm, "diffusion")):
        with pytest.raises(ValueError, match=f"solver '{name}' cannot use a {kind} prior") as err:
            solve(y, op, prior, name)
        assert "\n" not in str(err.value)
    bad = [("reddiff", dict(weighting="cubic"), "weighting must be one of"), ("reddiff", dict(init="zeros"), "init must be"),
           ("pnp_flow", dict(gamma_style="fast"), "gamma_style must be one of"), ("pnp_flow", dict(warm_start=0.5), "no warm start"),
           ("dflow", dict(steps=1), "steps must be >= 2"), ("dflow", dict(stop=["oracle"]), "unknown stopping rule"),
           ("dflow", dict(inversion="rk4"), "inversion must be"), ("flowdps", dict(loss_space="latent"), "loss_space must be")]
    for name, params, message in bad:
        with pytest.raises(ValueError, match=message) as err:
            make_solver(name, **params)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="needs a linear operator"):
        make_solver("flowdps", loss_space="adjoint").space(make_operator("phase_retrieval"))
    assert make_solver("flowdps").space(make_operator("phase_retrieval")) == "measurement"


@pytest.mark.parametrize("preset, values", [
    ("reddiff", dict(steps=1000, lam=0.25, lr=0.1, sigma_x0=0.0, weighting="linear", init="pinv")),
    ("pnp_flow", dict(steps=100, lr=1.0, gamma_style="alpha_1_minus_t", alpha=None, num_samples=5)),
    ("dflow", dict(steps=6, lam=0.01, alpha=0.1, max_iter=20, lbfgs_iter=20, init="adjoint", inversion="dopri5")),
    ("flowdps", dict(steps=28, step_size=15.0, dc_steps=3, shift=4.0, loss_space="auto")),
])
def test_paper_presets_are_the_reference_defaults(preset, values):
    """conf/solver/<name>.yaml and the class defaults both carry the reference's values (docs/fidelity.md)."""
    from ipsolve.runner import load_preset
    from ipsolve.solvers import SOLVERS

    conf, solver = dict(load_preset("solver", preset)), SOLVERS[preset]()
    for key, value in values.items():
        assert conf[key] == value and getattr(solver, key) == value, key
    assert set(SOLVERS[preset].search_space) <= set(vars(solver))
    for key, (low, high) in SOLVERS[preset].search_space.items():  # log ranges holding the papers' and CPU values
        for p in (conf, dict(load_preset("solver", f"{preset}_cpu"))):
            assert 0 < low < p[key] < high, (preset, key)
