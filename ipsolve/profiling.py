"""Timing and memory measurement shared by the benchmarks (``scripts/benchmark.py``,
``scripts/scale_benchmark.py``): device-synchronised wall clocks, peak memory, and the cost of
one network call — the unit of the overhead ratio wall ÷ (NFE × network)."""
from __future__ import annotations

import resource
import time

import torch


def synchronize(device=None) -> None:
    """Wait for the accelerator, so that host timers measure its work (a no-op on a CPU)."""
    device = torch.device(device) if device is not None else None
    if (device is None or device.type == "cuda") and torch.cuda.is_available():
        torch.cuda.synchronize(device)


def reset_peak_memory(device) -> None:
    """Reset CUDA's peak-allocation counter (what :func:`peak_memory_bytes` reads); a no-op on other
    devices, whose peak (the process's resident set) counts from the process's start."""
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device) -> int:
    """``torch.cuda.max_memory_allocated`` on CUDA; the process's peak resident set elsewhere."""
    if torch.device(device).type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def timed(fn, device, repeats: int = 3, warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls, the device
    synchronised around each call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def denoiser_call(prior, batch: int, backward: bool, time_grad: bool = False):
    """A function running one call of ``prior``'s denoising network (the inner one of a latent
    prior) on a random batch at its shape — with a backward pass to the input if ``backward``,
    as the guided solvers do, and also to the time if ``time_grad`` (FMPlug learns its start
    time) — and the device it runs on."""
    inner = getattr(prior, "inner", prior)
    device = prior.device
    x = torch.randn(batch, *inner.shape, device=device)
    t0 = torch.full((batch,), 500 if inner.kind == "diffusion" else 0.5, device=device)
    net = (lambda v, t: inner.eps(v, t)) if inner.kind == "diffusion" else (lambda v, t: inner.velocity(v, t))

    def call():
        v = x.clone().requires_grad_(backward)
        t = t0.clone().requires_grad_(backward and time_grad)
        with torch.set_grad_enabled(backward):
            out = net(v, t)
            if backward:
                out.float().sum().backward()
        return out

    return call, device


def sustained_seconds(fn, device, calls: int, warmup: int = 1) -> float:
    """Mean wall seconds per call of ``calls`` back-to-back calls of ``fn()`` after ``warmup``
    calls, the device synchronised before and after the loop only: the cost of a call inside a
    loop that does nothing else — what a solver's network calls would cost without the solver."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    synchronize(device)
    return (time.perf_counter() - t0) / calls


def network_seconds(prior, batch: int, backward: bool = True, repeats: int = 5, autocast: bool = False,
                    time_grad: bool = False) -> float:
    """Seconds per network call (+ backward; to the time too with ``time_grad``) at ``batch``,
    sustained over ``repeats`` back-to-back calls — the denominator of the overhead ratio
    (optionally under bf16 autocast, as a solver with ``autocast=True`` runs it).  Not the median
    of separately synchronised calls: that left out the slow calls a long loop also meets (3–5 %
    at 32 px on a CPU) and, on a GPU, timed launch latency that a solver's unsynchronised loop hides."""
    call, device = denoiser_call(prior, batch, backward, time_grad)

    def run():
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=autocast):
            call()

    return sustained_seconds(run, device, calls=repeats, warmup=1)


def autoencoder_seconds(prior, batch: int, repeats: int = 3) -> dict[str, float]:
    """Median seconds of a latent prior's autoencoder calls at ``batch``: ``decoder_backward``
    (decode + backward to the latent), ``decoder_forward`` and ``encoder`` — the units ReSample
    reports beside its NFE (``info``'s counts of the same names); ``{}`` for a pixel prior."""
    if getattr(prior, "autoencoder", None) is None:
        return {}
    inner, device = prior.inner, prior.device
    z = torch.randn(batch, inner.channels, inner.image_size, inner.image_size, device=device)
    x = torch.rand(batch, *prior.shape, device=device) * 2 - 1

    def decode_backward():
        v = z.clone().requires_grad_()
        prior.decode(v).float().sum().backward()

    def decode_forward():
        with torch.no_grad():
            prior.decode(z)

    def encode():
        with torch.no_grad():
            prior.encode(x)

    return {name: timed(fn, device, repeats=repeats) for name, fn in
            (("decoder_backward", decode_backward), ("decoder_forward", decode_forward), ("encoder", encode))}


def graph_breaks(prior, batch: int = 1) -> tuple[int, list[str]]:
    """``(graphs, break reasons)`` of the module ``prior.optimize(compile=...)`` compiles, traced by
    ``torch._dynamo.explain`` on one denoiser call at ``batch`` (the call's real arguments are
    captured by a forward pre-hook).  One graph and no reasons: ``torch.compile`` sees the whole
    network; every break splits it and adds a return to Python per call."""
    import torch._dynamo

    owner, attr = prior.compile_target()
    module = getattr(owner, attr)
    captured = {}
    hook = module.register_forward_pre_hook(lambda m, args, kwargs: captured.update(args=args, kwargs=kwargs),
                                            with_kwargs=True)
    try:
        with torch.no_grad():
            denoiser_call(prior, batch, backward=False)[0]()
    finally:
        hook.remove()
    explained = torch._dynamo.explain(module)(*captured["args"], **captured["kwargs"])
    return explained.graph_count, [str(r.reason) for r in explained.break_reasons]
