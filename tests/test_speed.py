"""Speed options keep the results: host-sync-free bookkeeping, bf16 autocast, channels_last and
torch.compile agree with the plain fp32 runs; the paper-scale benchmark runs its code path on a CPU
with tiny stand-in networks and writes the table the GPU run writes."""
import csv
import importlib.util
from pathlib import Path

import pytest
import torch

from ipsolve import datasets, load_prior, make_operator, make_solver, solve
from ipsolve.solvers.base import generators_on

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def gens(n):
    return [torch.Generator().manual_seed(i) for i in range(n)]


@pytest.fixture(scope="module")
def problem():
    op = make_operator("super_resolution", scale=4)
    x = datasets.heldout_phantoms(3, 32)
    return op, x, op.measure(x, 0.05, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name,source", [("dmplug", "bundled:phantom-ddpm"), ("fmplug", "bundled:phantom-flow")])
def test_stopping_bookkeeping_every_k_iterations_changes_nothing(problem, name, source):
    """The plug-in solvers look at their per-image stop decisions only every ``sync_every``
    iterations (on an accelerator, to avoid waiting for the device): stopped images are frozen, so
    the returned images, stop iterations and reasons equal the check-every-iteration run."""
    op, _, y = problem
    prior = load_prior(source)
    params = dict(iterations=25, window=3, patience=2, tau=2.0, combine="first", progress=False,
                  **({"warm_start": 0.25, "ddim_steps": 2} if name == "dmplug" else {}))
    every = solve(y, op, prior, make_solver(name, sync_every=1, **params), sigma=0.05, generator=gens(3))
    sparse = solve(y, op, prior, make_solver(name, sync_every=7, **params), sigma=0.05, generator=gens(3))
    assert torch.equal(every.x, sparse.x)
    assert [(i["iterations"], i["stop_reason"]) for i in every.info] == \
           [(i["iterations"], i["stop_reason"]) for i in sparse.info]
    assert any(i["stop_reason"] != "budget" for i in every.info)


def test_bf16_autocast_agrees_with_fp32(problem):
    """bf16 autocast around the network: its ε and DMPlug's deterministic reverse map R(z) stay within
    bf16 rounding of fp32 (a stochastic sampler amplifies any difference over its steps — DPS's
    output moved 13 % after 4 steps — so it is compared on the deterministic parts)."""
    op, _, y = problem
    prior = load_prior("bundled:phantom-ddpm")
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([200, 800])
    with torch.no_grad():
        fp32 = prior.eps(x, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = prior.eps(x, t).float()
    err = float((bf16 - fp32).norm() / fp32.norm())
    solver = make_solver("dmplug", ddim_steps=2)
    with torch.no_grad():
        r32 = solver.reverse(prior, x)
        solver.autocast = True
        r16 = solver.reverse(prior, x)
    err_r = float((r16 - r32).norm() / r32.norm())
    print(f"relative difference bf16 vs fp32: ε {err:.2e}, R(z) {err_r:.2e}")
    # bf16 keeps 8 mantissa bits (≈ 4e-3 per rounding): ε measured 3e-3; R(z) divides by √ᾱ of
    # its first, noisiest step, which amplifies it about tenfold (measured 3.5e-2)
    assert 0 < err < 1e-2 and 0 < err_r < 8e-2


def test_channels_last_and_compile_keep_the_network_outputs():
    """Prior.optimize: channels_last (the bundled UNet) and torch.compile (an analytic network,
    quick to compile) give the plain network's outputs to float rounding."""
    prior = load_prior("bundled:phantom-ddpm")
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([300, 700])
    with torch.no_grad():
        plain = prior.eps(x, t)
        prior.optimize(channels_last=True)
        torch.testing.assert_close(prior.eps(x, t), plain, atol=1e-4, rtol=1e-4)
    gauss = load_prior("gaussian", image_size=4, channels=1, std=0.5, correlation=0.5)
    z = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = gauss.eps(z, t)
        gauss.optimize(compile=True)
        assert type(gauss.network).__name__ == "OptimizedModule"
        torch.testing.assert_close(gauss.eps(z, t), ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="compile must be"):
        gauss.optimize(compile="fastest")


def test_generators_stay_on_the_cpu():
    g = gens(2)
    assert generators_on(g, "cpu") is g


def test_scale_benchmark_smoke(tmp_path):
    """``scripts/scale_benchmark.py --scale tiny --device cpu``: the paper-scale code path with tiny
    networks writes scale.csv (every column), performance.md (with the targets) and env.json, and
    --merge combines runs."""
    spec = importlib.util.spec_from_file_location("scale_benchmark", SCRIPTS / "scale_benchmark.py")
    sb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sb)
    rows = sb.main(["--scale", "tiny", "--device", "cpu", "--size", "32", "--budget", "2", "--batches", "1",
                    "--precisions", "fp32", "--sections", "sd3", "--out", str(tmp_path / "a")])
    assert {r["options"] for r in rows} == {"checkpointing", "plain"}
    with open(tmp_path / "a" / "scale.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == sb.COLUMNS and all(float(r["s_per_image"]) > 0 and float(r["peak_gib"]) > 0 for r in table)
    text = (tmp_path / "a" / "performance.md").read_text()
    assert "DPS-1000 with the ADM ≤ 15 s/image at batch 16: not measured" in text
    merged = sb.main(["--merge", str(tmp_path / "a"), str(tmp_path / "a"), "--out", str(tmp_path / "m")])
    assert len(merged) == len(rows) and (tmp_path / "m" / "scale.png").is_file()
    assert sb.resample_plan() == {"steps": 500, "pixel": 17, "latent": 16}
