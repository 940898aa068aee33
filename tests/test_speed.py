"""Speed options keep the results: host-sync-free bookkeeping, bf16 autocast, channels_last and
torch.compile agree with the plain fp32 runs; the paper-scale benchmark runs its code path on a CPU
with tiny stand-in networks and writes the table the GPU run writes."""
import csv
import importlib.util
import json
import sys
import traceback
from pathlib import Path

import pytest
import torch

from ipsolve import datasets, load_prior, make_operator, make_solver, solve
import ipsolve.solvers.base as solver_base
from ipsolve.solvers.base import generators_on, randn_like_batch, randn_steps
from torch.utils._python_dispatch import TorchDispatchMode

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
    quick to compile) give the plain network's outputs to float rounding; ``channels_last="auto"``
    (load_prior's default) is NHWC on a CPU and follows the prior to another device."""
    prior = load_prior("bundled:phantom-ddpm", channels_last=False)

    def nhwc(p):
        weights = [m.weight for m in p.modules()  # (1 input channel or a 1×1 kernel: both layouts alike)
                   if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1 and m.kernel_size != (1, 1)]
        layouts = {w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in weights}
        assert len(layouts) == 1, "every convolution in one layout"
        assert p.memory_format == ("channels_last" if next(iter(layouts)) else "contiguous")  # what summaries record
        return layouts.pop()

    assert not nhwc(prior)
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([300, 700])
    with torch.no_grad():
        plain = prior.eps(x, t)
        prior.optimize(channels_last=True)
        assert nhwc(prior)
        torch.testing.assert_close(prior.eps(x, t), plain, atol=1e-4, rtol=1e-4)
    prior.optimize(channels_last=False)
    assert not nhwc(prior)
    auto = load_prior("bundled:phantom-latent")  # the default: auto, on a CPU NHWC (denoiser and autoencoder)
    assert nhwc(auto)
    auto.to("meta")  # another device: the plain layout
    assert not nhwc(auto)
    with pytest.raises(ValueError, match="channels_last must be"):
        prior.optimize(channels_last="yes")
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


def test_noise_drawn_ahead_in_chunks_is_the_step_by_step_noise(monkeypatch):
    """``randn_steps`` (DAPS's MCMC noise): on a CPU, for images of a multiple of 16 entries, the
    chunked draws are exactly the per-step ``randn_like_batch`` draws, whatever the chunk size; the
    chunking depends on the image size only, so a batch draws what single images draw."""
    shape, steps = (3, 2, 8, 8), 7
    g = gens(3)
    step_by_step = torch.stack([randn_like_batch(shape, g, "cpu") for _ in range(steps)])
    for chunk_elements in (10 ** 6, 3 * 128, 1):  # all steps at once, 3 steps per chunk, one step per chunk
        monkeypatch.setattr(solver_base, "NOISE_CHUNK_ELEMENTS", chunk_elements)
        ahead = torch.stack(list(randn_steps(shape, gens(3), "cpu", steps)))
        assert torch.equal(ahead, step_by_step), chunk_elements
        single = torch.stack(list(randn_steps((1, *shape[1:]), gens(3)[1:2], "cpu", steps)))
        assert torch.equal(single[:, 0], ahead[:, 1])
    one = torch.Generator().manual_seed(5)  # one generator for the whole batch: steps in the order drawn
    expected = torch.stack([torch.randn(shape, generator=one) for _ in range(steps)])
    assert torch.equal(torch.stack(list(randn_steps(shape, torch.Generator().manual_seed(5), "cpu", steps))), expected)


def test_network_timing_differentiates_the_time_only_when_asked():
    """The overhead's denominator: forward + backward to the input; with ``time_grad`` (FMPlug's
    own call, which learns its start time) to the time as well; never without ``backward``."""
    from ipsolve.profiling import denoiser_call

    prior = load_prior("bundled:phantom-flow")
    seen, velocity = [], prior.velocity
    prior.velocity = lambda x, t: (seen.append((x.requires_grad, t.requires_grad)), velocity(x, t))[1]
    for backward, time_grad in ((True, True), (True, False), (False, True)):
        denoiser_call(prior, 2, backward, time_grad)[0]()
    assert seen == [(True, True), (True, False), (False, False)]


def test_scale_benchmark_smoke(tmp_path):
    """``scripts/scale_benchmark.py --scale tiny --device cpu``: the paper-scale code path with tiny
    networks writes scale.csv (every column), performance.md (with the targets) and env.json, and
    --merge combines runs.  The ADM (DPS, DMPlug, DAPS) and ReSample sections run too, so that a
    solver's changed signature fails here and not in a device session's one call."""
    spec = importlib.util.spec_from_file_location("scale_benchmark", SCRIPTS / "scale_benchmark.py")
    sb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sb)
    rows = sb.main(["--scale", "tiny", "--device", "cpu", "--size", "32", "--budget", "2", "--batches", "1",
                    "--precisions", "fp32", "--sections", "sd3", "adm", "resample", "--out", str(tmp_path / "a")])
    assert json.loads((tmp_path / "a" / "env.json").read_text())["failed"] == {}
    assert {r["options"] for r in rows} == {"checkpointing", "plain"}
    assert {r["solver"] for r in rows} == {"fmplug", "dps", "dmplug", "daps", "resample"}
    with open(tmp_path / "a" / "scale.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == sb.COLUMNS and all(float(r["s_per_image"]) > 0 and float(r["peak_gib"]) > 0 for r in table)
    text = (tmp_path / "a" / "performance.md").read_text()
    for target in ("DPS-1000 with the ADM ≤ 15 s/image at batch 16: best", "DAPS-1K ≤ 6 s/image at batch ≥ 10: best",
                   "ReSample (500 steps, SD 1.5 at 512 px) ≤ 60 s/image: best"):
        assert target in text
    merged = sb.main(["--merge", str(tmp_path / "a"), str(tmp_path / "a"), "--out", str(tmp_path / "m")])
    assert len(merged) == len(rows) and (tmp_path / "m" / "scale.png").is_file()
    assert sb.resample_plan() == {"steps": 500, "pixel": 17, "latent": 16}


@pytest.mark.parametrize("name", ["bundled:phantom-ddpm", "adm", "sd15", "sd3", "flux"])
def test_compiled_networks_trace_without_graph_breaks(name):
    """``prior.compile``: every network ipsolve compiles — the bundled UNet (the flow and latent
    priors' are the same diffusers class), DPS's ADM and the SD 1.5 / SD3 / FLUX networks behind
    their text-conditioning wrappers (tiny configurations of the same classes) — traces into one
    graph with no break (a break would return to Python in every call and cost the CUDA-graph
    mode its gain)."""
    from ipsolve.profiling import graph_breaks

    if name.startswith("bundled:"):
        prior = load_prior(name)
    else:
        spec = importlib.util.spec_from_file_location("scale_benchmark", SCRIPTS / "scale_benchmark.py")
        sb = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sb)
        prior = sb.build_prior(name, "tiny", 64, "cpu")
    graphs, reasons = graph_breaks(prior)
    assert (graphs, reasons) == (1, [])


class _HostTensorCounter(TorchDispatchMode):
    """Counts tensors made from Python data (``aten.lift_fresh``: ``torch.tensor`` /
    ``torch.as_tensor`` of numbers or lists).  On a GPU each is a host-to-device copy that waits
    for the device to finish its queued work."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func is torch.ops.aten.lift_fresh.default
        return func(*args, **(kwargs or {}))


LOOP_CASES = [  # (solver, budget parameter, prior, operator, extra parameters)
    ("dps", "steps", "bundled:phantom-ddpm", "super_resolution", {}),
    ("daps", "annealing_steps", "bundled:phantom-ddpm", "inpainting", dict(ode_steps=2, mcmc_steps=2)),
    ("daps", "annealing_steps", "bundled:phantom-latent", "super_resolution", dict(ode_steps=2, mcmc_steps=2)),
    ("dmplug", "iterations", "bundled:phantom-ddpm", "ct", dict(ddim_steps=2, stop=("eswmv", "discrepancy"), window=2)),
    ("fmplug", "iterations", "bundled:phantom-flow", "mri", dict(stop=("validation",))),
    ("resample", "steps", "bundled:phantom-latent", "super_resolution", dict(hdc_every=100, final_fit=False)),  # no fits
    # the fits' inner loops (each fit makes AdamW's host-side step counter once, not per iteration)
    ("resample", "pixel_iters", "bundled:phantom-latent", "super_resolution", dict(steps=6, hdc_every=2, latent_iters=3)),
    ("resample", "latent_iters", "bundled:phantom-latent", "super_resolution", dict(steps=6, hdc_every=2, pixel_iters=3,
                                                                                    stagnation=None)),
    ("reddiff", "steps", "bundled:phantom-ddpm", "gaussian_blur", {}),
    ("pnp_flow", "steps", "bundled:phantom-flow", "super_resolution", {}),
    ("flowdps", "steps", "bundled:phantom-flow", "inpainting", {}),
    ("ddrm", "steps", "bundled:phantom-ddpm", "super_resolution", {}),
    ("pigdm", "steps", "bundled:phantom-ddpm", "ct", {}),
    ("diffpir", "steps", "bundled:phantom-ddpm", "gaussian_blur", {}),
    ("dps", "steps", "bundled:phantom-ddpm", "nonlinear_blur", {}),
]


def _counts_over_steps(counter_class, name, budget, source, operator, extra, callback=None) -> list[int]:
    """What ``counter_class`` (a dispatch mode with a ``count``) counts over whole solves of 3 and
    5 steps of the named loop, on 2 held-out phantoms measured by ``operator`` (σ = 0.05)."""
    prior = load_prior(source)
    kw = {"ct": dict(views=16), "mri": dict(acceleration=4), "blind_blur": dict(kernel_size=8)}.get(operator, {})
    op = make_operator(operator, **kw)
    x = datasets.heldout_phantoms(2, 32).expand(-1, prior.shape[0], -1, -1)
    y = op.measure(x, 0.05, generator=torch.Generator().manual_seed(0))
    counts = []
    for steps in (3, 5):
        solver = make_solver(name, progress=False, **{budget: steps, **extra})
        with counter_class() as counter:
            solve(y, op, prior, solver, sigma=0.05, generator=gens(2), callback=callback)
        counts.append(counter.count)
    return counts


@pytest.mark.parametrize("name,budget,source,operator,extra", LOOP_CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2].split('-')[-1]}-{c[3]}" for c in LOOP_CASES])
def test_solver_loops_make_no_tensors_from_host_data(name, budget, source, operator, extra):
    """No host-to-device copy per step: a solver makes no tensor from Python data inside its loop
    (schedule values are filled in on the device), so doubling the steps adds none (counted on a
    CPU, where the copy is free; on a GPU each would stall the pipeline).  D-Flow is not here:
    torch's L-BFGS reads its scalars on the host by design."""
    counts = _counts_over_steps(_HostTensorCounter, name, budget, source, operator, extra)
    assert counts[0] == counts[1], f"{counts[1] - counts[0]} tensors from host data in 2 more steps"


class _HostReadCounter(TorchDispatchMode):
    """Counts reads of tensor values on the host — ``.item()``, ``bool``/``int``/``float`` of a
    tensor (``aten._local_scalar_dense``), ``nonzero``, boolean-mask indexing, ``equal`` — which
    on a GPU wait for every queued kernel.  torch's optimisers are left out: they keep their step
    counters on the host by design (not capturable), so reading those waits for nothing."""

    READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
             torch.ops.aten.is_nonzero.default, torch.ops.aten.equal.default, torch.ops.aten.masked_select.default}
    INDEXING = {torch.ops.aten.index.Tensor, torch.ops.aten.index_put.default, torch.ops.aten.index_put_.default}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        read = func in self.READS or (func in self.INDEXING and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or [])))
        if read and not any("/torch/optim/" in frame.filename for frame in traceback.extract_stack()):
            self.count += 1
        return func(*args, **(kwargs or {}))


READ_CASES = LOOP_CASES + [
    ("reddiff", "steps", "bundled:phantom-ddpm", "mri", {}),
    ("pigdm", "steps", "bundled:phantom-ddpm", "mri", {}),
    ("dps", "steps", "bundled:phantom-ddpm", "phase_retrieval", {}),
    ("blind_dps", "steps", "bundled:phantom-ddpm", "blind_blur", dict(kernel_prior="bundled:kernel-ddpm")),
    ("dmplug", "iterations", "bundled:phantom-ddpm", "blind_blur", {}),
]


@pytest.mark.parametrize("name,budget,source,operator,extra", READ_CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2].split('-')[-1]}-{c[3]}" for c in READ_CASES])
def test_solver_loops_read_the_device_only_every_sync_every(name, budget, source, operator, extra, monkeypatch):
    """No host–device synchronisation per step: run on a CPU through an accelerator's schedule
    (``host_reads_are_free`` patched to False wherever it is used: the plug-in solvers and
    ReSample's fits then read their stopping state every 25 iterations, the operators skip the
    finiteness checks a CPU makes for free), a solver's loop reads no tensor value on the host, so
    two more steps add none.  Found this way: RED-diff read ᾱ_t back from the device at every step,
    MRI's output shape summed its device mask at every operator call, the adjoint checked its input
    for NaNs (ΠGDM's conjugate gradients: 11 reads per step on CT)."""
    import ipsolve.tensors

    original = ipsolve.tensors.host_reads_are_free
    for module in [m for m in sys.modules.values() if getattr(m, "__name__", "").startswith("ipsolve")]:
        if getattr(module, "host_reads_are_free", None) is original:
            monkeypatch.setattr(module, "host_reads_are_free", lambda device: False)
    # with a callback, as the command line's progress lines pass one
    counts = _counts_over_steps(_HostReadCounter, name, budget, source, operator, extra,
                                callback=lambda iteration, state: None)
    assert counts[0] == counts[1], f"{counts[1] - counts[0]} host reads of device values in 2 more steps"
