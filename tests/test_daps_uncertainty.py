"""DAPS against arrays recorded from the reference code (zhangbingliang2019/DAPS), DAPS and DPS
against the exact Gaussian posterior, samples=k, the reliability score and risk–coverage."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ipsolve import datasets, load_prior, make_operator, make_solver, solve
from ipsolve.selective import review_decisions, risk_coverage, tied_at_cut
from ipsolve.solvers.daps import annealing_sigmas, karras_sigmas, lr_multiplier, vp_timestep
from test_solvers import gaussian_posterior  # the closed-form posterior the DPS test uses

FIXTURES = Path(__file__).parent / "fixtures"
# Recorded by running the reference's cores/scheduler.py, cores/mcmc.py and model/precond.py
# (main branch 098df6b) in isolation: annealing grids, per-level ODE grids, step-size multipliers
# and VPPrecond's fractional timesteps.
REF = np.load(FIXTURES / "daps_reference.npz")
PRESETS = {"daps1k": (200, 5, 100.0, 0.1, 0.01), "daps4k_unverified": (400, 10, 100.0, 0.1, 0.01),
           "latent100": (50, 2, 10.0, 0.1, 0.001)}


@pytest.mark.parametrize("tag", list(PRESETS))
def test_daps_schedules_match_reference(tag):
    n, n_ode, smax, smin, ode_min = PRESETS[tag]
    sig = annealing_sigmas(n, smax, smin)
    assert np.allclose(sig, REF[f"{tag}_anneal_sigma_steps"], rtol=1e-6, atol=1e-7)  # float32 in the reference
    assert np.allclose(sig[:n], REF[f"{tag}_anneal_sigmas_used"], rtol=1e-6)
    for which, s in (("first", sig[0]), ("last", sig[n - 1])):
        assert np.allclose(karras_sigmas(s, ode_min, n_ode + 1), REF[f"{tag}_ode_grid_{which}"], rtol=1e-5)
    mult = [lr_multiplier(k, n, 0.01) for k in range(n)]
    assert np.allclose(mult, REF[f"{tag}_lr_multiplier"], rtol=1e-6)


def test_daps_vp_timesteps_match_reference():
    ours = [vp_timestep(s) for s in REF["vp_probe_sigma"]]
    # the reference computes in float32: log(1 + σ²) at σ = 0.01 loses ~1e-4 of the timestep
    assert np.allclose(ours, REF["vp_probe_cnoise"], rtol=1e-5, atol=1e-3)


# ------------------------------------------------------------- Gaussian prior, exact posterior
def test_daps_and_dps_against_the_exact_gaussian_posterior():
    """2×2 Gaussian prior (std 0.5, correlation 0.8), 50 % inpainting, σ = 0.05, 512 samples.
    Measured (2026-11-25): DPS (200 steps, ζ 0.1) mean error 0.064 of the prior-mean error,
    std ratios observed/missing 0.50 / 0.90, covariance error 24 %; DAPS (50 × 2, 100 Langevin
    steps, the reference's τ = 0.01) 0.084, 0.15 / 0.88, 26 % (200 × 5: 0.078, 0.15 / 0.97, 9 %).
    DAPS's observed pixels are narrower by design: the reference's likelihood exp(−‖Ax − y‖²/τ²)
    is that of noise std τ/√2 = 0.007, not σ = 0.05, so their std ratio is ≈ τ/(σ√2) = 0.14."""
    prior = load_prior("gaussian", image_size=2, channels=1, mean=0.0, std=0.5, correlation=0.8)
    op = make_operator("inpainting", missing=0.5, seed=1)
    x = torch.tensor([[[[0.4, 0.3], [0.2, 0.1]]]])
    sigma = 0.05
    y1 = op.measure(x, sigma, generator=torch.Generator().manual_seed(0))
    y = y1.expand(512, -1, -1, -1).contiguous()
    mean, cov = gaussian_posterior(prior, op, y1, sigma)
    prior_err = (prior.distribution.mean - mean).norm()
    observed = op.mask_for(x.shape).flatten().bool()
    res = solve(y, op, prior, make_solver("daps", annealing_steps=50, ode_steps=2, mcmc_steps=100, progress=False),
                sigma=sigma, generator=torch.Generator().manual_seed(0))
    emp = res.x.double().flatten(1)
    assert (emp.mean(0) - mean).norm() < 0.15 * prior_err
    ratio = emp.std(0) / cov.diagonal().sqrt()
    assert ((ratio[~observed] > 0.7) & (ratio[~observed] < 1.3)).all(), ratio
    expected = 0.01 / (sigma * 2 ** 0.5)
    assert ((ratio[observed] > 0.5 * expected) & (ratio[observed] < 2 * expected)).all(), ratio


# ------------------------------------------------------------- samples = k
@pytest.fixture(scope="module")
def phantom_case():
    x = torch.cat([datasets.heldout_phantoms(2, 32), datasets.shepp_logan(32)])
    op = make_operator("super_resolution", scale=4)
    y = op.measure(x, 0.01, generator=torch.Generator().manual_seed(0))
    return x, op, y, load_prior("bundled:phantom-ddpm")


@pytest.mark.parametrize("solver,params", [("dps", dict(steps=10)), ("dmplug", dict(iterations=3, ddim_steps=2, warm_start=0.25)),
                                           ("daps", dict(annealing_steps=3, ode_steps=1, mcmc_steps=2))])
def test_samples_batched_equal_single_and_reliability(phantom_case, solver, params):
    x, op, y, prior = phantom_case
    s = make_solver(solver, progress=False, **params)
    gens = lambda idx: [torch.Generator().manual_seed(i) for i in idx]  # noqa: E731
    res = solve(y, op, prior, s, sigma=0.01, generator=gens(range(3)), samples=3)
    assert res.samples.shape == (3, 3, 1, 32, 32) and res.std.shape == (3, 1, 32, 32)
    assert torch.allclose(res.x, res.samples.mean(1)) and (res.std > 0).any()
    assert not torch.equal(res.samples[:, 0], res.samples[:, 1])  # independent samples
    one = solve(y[1:2], op, prior, s, sigma=0.01, generator=gens([1]), samples=3)
    assert (one.samples[0] - res.samples[1]).abs().max() < 1e-4  # per-image seeds: batching does not matter
    for term in ("prior_consistency", "disagreement", "feasibility"):  # nor for the reliability score
        assert one.info[0]["reliability_terms"][term] == pytest.approx(res.info[1]["reliability_terms"][term], abs=1e-3)
    plain = solve(y, op, prior, s, sigma=0.01, generator=gens(range(3)))
    assert (plain.x - res.samples[:, 0]).abs().max() < 1e-4  # sample 0 is the plain run
    for info, info1 in zip(res.info, plain.info):
        assert info["nfe"] == 3 * info1["nfe"] and len(info["sample_residuals"]) == 3
        terms = info["reliability_terms"]
        assert set(terms) == {"feasibility", "disagreement", "prior_consistency"}
        assert all(v is not None and v >= 0 for v in terms.values())
        assert info["reliability"] == pytest.approx(-sum(terms.values()))
        assert info1["reliability_terms"]["disagreement"] is None  # samples=1: no disagreement term
    with pytest.raises(ValueError, match="samples must be an integer >= 1"):
        solve(y, op, prior, s, sigma=0.01, samples=0)
    with pytest.raises(ValueError, match="samples must be an integer >= 1"):
        solve(y, op, prior, s, sigma=0.01, samples=1.5)
    whole = solve(y, op, prior, s, sigma=0.01, samples=1.0, generator=gens(range(3)))  # as the command line takes 1.0
    assert torch.equal(whole.x, plain.x)


def test_selective_decisions_and_risk_coverage():
    scores = [-0.1, -3.0, -0.5, -2.0]
    assert review_decisions(scores, threshold=-1.0) == ["accept", "review", "accept", "review"]
    assert review_decisions(scores, coverage=0.5) == ["accept", "review", "accept", "review"]
    # never more than the fraction asked (0.6 of 4 accepted 3 when it rounded up), at least one image
    assert review_decisions(scores, coverage=0.6).count("accept") == 2
    assert review_decisions(scores, coverage=0.1).count("accept") == 1
    assert review_decisions(scores) == ["accept"] * 4
    # a tie across the cut is reviewed together, whatever the listing order (was: the first listed accepted)
    assert review_decisions([0.0, -1.0, 0.0, 0.0], coverage=0.5) == ["review"] * 4
    assert review_decisions([-1.0, 0.0, 0.0, -2.0], coverage=0.5) == ["review", "accept", "accept", "review"]
    assert tied_at_cut([0.0, -1.0, 0.0, 0.0], 0.5) == 2 and tied_at_cut(scores, 0.5) == 0 and tied_at_cut(scores, None) == 0
    assert review_decisions([0.0] * 4, coverage=1.0) == ["accept"] * 4
    with pytest.raises(ValueError, match="not both"):
        review_decisions(scores, -1.0, 0.5)
    cov, risk, aurc = risk_coverage(scores, [1.0, 4.0, 2.0, 3.0])  # a perfect ranking
    assert cov == [0.25, 0.5, 0.75, 1.0] and risk == [1.0, 1.5, 2.0, 2.5] and aurc == pytest.approx(1.75)
    _, _, worst = risk_coverage([-s for s in scores], [1.0, 4.0, 2.0, 3.0])
    assert worst > aurc
    # a score that cannot tell the images apart (a term that is 0 everywhere) is a random order: flat
    # at the mean risk, whatever order the images came in — not the area of their listing order
    _, flat, blind = risk_coverage([0.0] * 4, [1.0, 4.0, 2.0, 3.0])
    assert flat == [2.5] * 4 and blind == pytest.approx(2.5)
    _, _, half = risk_coverage([1.0, 1.0, 0.0, 0.0], [1.0, 3.0, 5.0, 7.0])  # within a tie: its mean
    assert half == pytest.approx((2.0 + 2.0 + 10 / 3 + 4.0) / 4)


def test_cli_samples_write_uncertainty_outputs(tmp_path):
    from test_cli import ipsolve as run_cli

    run = tmp_path / "run"
    proc = run_cli("solver=dps_cpu", "solver.steps=5", "samples=2", "data.max_images=3", "review_coverage=0.5",
                   "progress=false", f"hydra.run.dir={run}", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = sorted(p.stem for p in (run / "recon").glob("*.png"))
    assert len(names) == 3
    for folder in ("mean", "std"):
        assert sorted(p.stem for p in (run / folder).glob("*.png")) == names
    assert len(list((run / "samples").glob("*.png"))) == 6
    summary = json.loads((run / "summary.json").read_text())
    # review_coverage=0.5 accepts at most half of 3 (one: it rounds down) and flags the two least reliable;
    # 5-step reconstructions that fit worse than the initial guess are flagged too (never accepted)
    flagged = summary["review"]["num_flagged"]
    assert summary["samples"] == 2 and flagged >= 2
    worse = set(summary["worse_than_initial"])
    assert worse <= set(summary["review"]["flagged"]) and max(2, len(worse)) <= flagged <= 2 + len(worse)
    assert set(summary["review"]["risk_coverage"]) >= {"reliability", "feasibility", "disagreement", "prior_consistency"}
    assert (run / "risk_coverage.png").is_file() and (run / "risk_coverage.csv").is_file()
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert {"reliability", "reliability_reason", "decision"} <= set(rows[0])
    for row in rows:  # the score is minus the sum of its terms, each in the csv (samples=2: all three present)
        terms = [float(row[k]) for k in ("feasibility", "disagreement", "prior_consistency")]
        assert float(row["reliability"]) == pytest.approx(-sum(terms), rel=1e-4, abs=1e-5)
    assert f"review: {flagged} of 3 image(s) flagged" in proc.stdout


# ------------------------------------------------------------- evidence (held-out data only)
def test_uncertainty_and_reliability_evidence():
    """DPS (60 steps, ζ rescaled), 3 samples, SR ×4, σ = 0.01 on held-out phantoms (3 blobs +
    Shepp–Logan) and inputs the phantom prior was never meant for (2 grey photos, 2 phantoms with
    unseen textures).  Nothing in the score reads the ground truth; only the checks here do.
    Measured (2026-11-25): Spearman ρ(per-pixel std,
    |error|) on the phantoms 0.75; mean reliability phantoms −1.66, the others −3.58 (the two
    textured phantoms and one photo least reliable); PSNR of all 19.26 dB, of the most reliable
    half 20.49 dB (+1.23).  Asserted: ρ > 0.5, the others' mean below the phantoms', +0.5 dB."""
    from scipy.stats import spearmanr

    from ipsolve.metrics import psnr

    phantoms = torch.cat([datasets.heldout_phantoms(3, 32), datasets.shepp_logan(32)])
    x = torch.cat([phantoms, datasets.grey_photo("camera"), datasets.grey_photo("coins"),
                   datasets.unseen_structures(2)])
    op = make_operator("super_resolution", scale=4)
    y = op.measure(x, 0.01, generator=torch.Generator().manual_seed(1234))
    res = solve(y, op, load_prior("bundled:phantom-ddpm"), make_solver("dps", steps=60, rescale_zeta=True,
                                                                        progress=False),
                sigma=0.01, generator=[torch.Generator().manual_seed(i) for i in range(len(x))], samples=3)
    n = len(phantoms)
    rho = spearmanr(res.std[:n].flatten().numpy(), (res.x - x)[:n].abs().flatten().numpy()).statistic
    rel = torch.tensor([i["reliability"] for i in res.info])
    p = psnr(res.x, x)
    half = rel.argsort(descending=True)[:len(x) // 2]
    print(f"rho {rho:.3f}; reliability phantoms {rel[:n].tolist()} others {rel[n:].tolist()}; "
          f"PSNR all {p.mean():.2f}, most reliable half {p[half].mean():.2f}")
    assert rho > 0.5
    assert rel[:n].mean() > rel[n:].mean()  # out-of-distribution inputs rank as less reliable on average
    assert p[half].mean() > p.mean() + 0.5


def test_samples_that_mostly_do_not_fit_are_flagged_though_their_mean_fits():
    """samples=k: the mean of k unconverged samples can fit y (their misfits partly cancel): an audit
    had samples at 6.28 / 6.16 / 5.21× the noise level, their mean at 2.25×, ranked most reliable and
    accepted.  An image is flagged when its returned x or the median of its samples is above 5×."""
    from ipsolve.io import load_image
    from ipsolve.solvers.base import RESIDUAL_WARNING, sample_residual_median, samples_warning

    info = {"residual": 2.25, "sample_residuals": [6.28, 6.16, 5.21]}
    assert sample_residual_median(info) == 6.16
    assert samples_warning(info) == ("the samples fit the measurement only at 6.2× the noise level (median of 3; their "
                                     "mean at 2.2×): the solver did not converge in most samples (check its steps, step "
                                     "size or guidance, sigma and the operator's settings)")
    assert samples_warning({"residual": 2.25, "sample_residuals": [6.28, 4.9, 5.21]}) is not None  # median 5.21
    assert samples_warning({"residual": 2.25, "sample_residuals": [6.28, 4.9, 4.8]}) is None
    assert samples_warning({"residual": 2.25, "sample_residuals": None}) is None  # σ = 0
    # select=residual returns the best-fitting sample itself: its fit is real (phase retrieval's best of 4)
    assert samples_warning({**info, "residual": 1.1, "selected_sample": 0}) is None
    # what solve() adds (finish): the warning, the review's "unfit", and one ResidualWarning naming the median
    from ipsolve.solvers import finish
    from ipsolve.solvers.base import Result, ResidualWarning

    y0 = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.1
    stub = Result(x=torch.zeros(2, 1, 8, 8), info=[{**info, "nfe": 3, "iterations": 1, "stop_reason": "budget"},
                                                   {"residual": 1.0, "sample_residuals": [1.1, 0.9, 1.0], "nfe": 3,
                                                    "iterations": 1, "stop_reason": "budget"}])
    with pytest.warns(ResidualWarning, match=r"1 of 2 image\(s\) \(index 0\) fit y only at 6\.2× the noise level"):
        finish(stub, y0, load_prior("gaussian", image_size=8, channels=1), make_solver("dps", progress=False), 0.1)
    assert stub.info[0]["warning"] == samples_warning(info) and "warning" not in stub.info[1]
    root = Path(__file__).parent.parent / "ipsolve" / "demo_data" / "phantom"
    x = torch.cat([load_image(root / f"blobs_{i}.png") for i in range(4)])
    op, prior = make_operator("super_resolution"), load_prior("bundled:phantom-ddpm")
    y = op.measure(x, sigma=0.01, generator=torch.Generator().manual_seed(0))
    with pytest.warns(Warning):
        res = solve(y, op, prior, make_solver("dps_cpu", steps=20, progress=False), sigma=0.01, samples=3,
                    generator=[0, 1, 2, 3])
    for info in res.info:  # a real run: the flag is exactly "the mean or most samples above 5×"
        unfit = info["residual"] > RESIDUAL_WARNING or sample_residual_median(info) > RESIDUAL_WARNING
        assert ("warning" in info) == unfit, info


def test_feasibility_counts_the_entries_the_residual_counts():
    """A measurement read from elsewhere has its inpainting holes at exactly 0: the residual leaves them
    out (residual_ratio), and so does the feasibility term's χ² level τ (it took every entry)."""
    from ipsolve.solvers.base import Result
    from ipsolve.solvers.sampling import feasibility_term, reliability

    prior = load_prior("gaussian", image_size=8, channels=1)
    y = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.1
    y[0].view(-1)[:45] = 0  # 45 of 64 entries are holes in image 0
    res = Result(x=torch.zeros(2, 1, 8, 8), info=[{"residual": 1.2}, {"residual": 1.2}])
    rel = reliability(y, prior, res, sigma=0.1)
    assert rel[0]["reliability_terms"]["feasibility"] == pytest.approx(float(feasibility_term(torch.tensor([1.2]), 19)))
    assert rel[1]["reliability_terms"]["feasibility"] == pytest.approx(float(feasibility_term(torch.tensor([1.2]), 64)))
    assert rel[0]["reliability_terms"]["feasibility"] < rel[1]["reliability_terms"]["feasibility"]  # τ grows as m falls
