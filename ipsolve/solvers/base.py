"""What every solver shares: the result record, per-image randomness, warm starts,
residuals and the stopping rules (ES-WMV, discrepancy principle, budget)."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import torch

from ..operators import Operator
from ..operators import BlindBlur
from ..priors import LatentPrior, Prior


@dataclass
class Result:
    """``x``: ``(B, C, H, W)`` reconstructions in [-1, 1] (with ``samples=k``: the mean of the
    samples); ``info``: one dict per image with ``nfe``, ``iterations``, ``stop_reason``,
    ``residual`` (‖y − A(x)‖ / (σ√m)), ``seconds``, ``reliability`` (see
    :func:`ipsolve.solvers.sampling.reliability`) and, if asked for, ``loss_trace``; ``kernel``:
    the estimated kernels of blind solvers; ``samples``: ``(B, k, C, H, W)`` and ``std``: the
    per-pixel standard deviation ``(B, C, H, W)`` when k > 1 samples were drawn."""

    x: torch.Tensor
    info: list[dict] = field(default_factory=list)
    kernel: torch.Tensor | None = None
    samples: torch.Tensor | None = None
    std: torch.Tensor | None = None


def generators_for(generator, batch: int) -> list[torch.Generator] | torch.Generator:
    """A list of per-image generators (the diffusers convention) or one shared generator."""
    if generator is None:
        return torch.Generator().manual_seed(0)
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch:
            raise ValueError(f"got {len(generator)} generators for a batch of {batch} images; expected one per image")
        return list(generator)
    if isinstance(generator, int):
        return torch.Generator().manual_seed(generator)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, a list of them, or an int seed, got {type(generator).__name__}")
    return generator


def randn_like_batch(shape, gens, device, dtype=torch.float32) -> torch.Tensor:
    """Standard normal ``(B, ...)`` noise: image i from ``gens[i]`` when a list is given, so a
    batch run draws exactly what single runs with the same generators draw."""
    if isinstance(gens, list):
        return torch.cat([torch.randn((1, *shape[1:]), generator=g, device=g.device, dtype=dtype) for g in gens]).to(device)
    return torch.randn(shape, generator=gens, device=gens.device, dtype=dtype).to(device)


def residual_ratio(y, ax, sigma: float) -> torch.Tensor:
    """‖y − A(x)‖ / (σ √m) per image (≈ 1 when the fit is at the noise level)."""
    m = y[0].numel()
    r = (y - ax).flatten(1).norm(dim=1)
    return r / (max(sigma, 1e-12) * math.sqrt(m))


def discrepancy_tau(m: int, level: float = 0.95) -> float:
    """Morozov's factor τ for ``‖y − A(x)‖ ≤ τ σ √m``, chosen so that the true image passes with
    probability ``level``: ‖n‖²/σ² ~ χ²_m, hence τ = √(χ²_m quantile(level) / m)
    (≈ 1 + 1.645/√(2m) for large m; 1.14 for m = 64, 1.04 for m = 3072).  τ = 1 rejects the
    true image about half the time, since ‖n‖ ≈ σ√m (1 ± √(2/m))."""
    from scipy.stats import chi2

    if m < 1 or not 0 < level < 1:
        raise ValueError(f"need m >= 1 and 0 < level < 1, got m={m}, level={level}")
    return math.sqrt(float(chi2.ppf(level, m)) / m)


def prior_key(prior: Prior) -> str:
    """``diffusion``, ``flow``, ``latent-diffusion`` or ``latent-flow``."""
    return f"latent-{prior.inner.kind}" if isinstance(prior, LatentPrior) else prior.kind


class ESWMV:
    """Early stopping by windowed moving variance (Wang et al., "Early stopping for deep image
    prior", TMLR 2023; cited by DMPlug): the variance of the last ``window`` iterates,
    ``VAR_t = 1/W Σ_i ‖x_i − x̄‖² / d``; stop when it has not reached a new minimum for
    ``patience`` iterations and return the iterate at the minimum.  Batched: one state per image."""

    def __init__(self, batch: int, window: int = 100, patience: int = 1000):
        if window < 2 or patience < 1:
            raise ValueError(f"ES-WMV needs window >= 2 and patience >= 1, got {window}, {patience}")
        self.window, self.patience = window, patience
        self.buffer: list[torch.Tensor] = []
        self.best = torch.full((batch,), math.inf)
        self.best_iter = torch.zeros(batch, dtype=torch.long)
        self.wait = torch.zeros(batch, dtype=torch.long)
        self.best_x: torch.Tensor | None = None

    def update(self, x: torch.Tensor, it: int) -> torch.Tensor:
        """Add iterate ``x``; returns a bool ``(B,)`` of images whose patience ran out."""
        x = x.detach()
        self.buffer.append(x)
        if len(self.buffer) > self.window:
            self.buffer.pop(0)
        if self.best_x is None:
            self.best_x = x.clone()
        if len(self.buffer) < self.window:
            return torch.zeros(x.shape[0], dtype=torch.bool)
        stack = torch.stack(self.buffer)
        var = (stack - stack.mean(0)).pow(2).flatten(2).mean(2).mean(0).cpu()
        better = var < self.best
        self.best = torch.where(better, var, self.best)
        self.best_iter = torch.where(better, torch.full_like(self.best_iter, it), self.best_iter)
        self.wait = torch.where(better, torch.zeros_like(self.wait), self.wait + 1)
        self.best_x[better.to(x.device)] = x[better.to(x.device)]
        return self.wait >= self.patience


def autocast_context(enabled: bool, device: torch.device):
    """bf16 autocast around network calls when asked for."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


class Solver:
    """Base class.  Subclasses set ``name``, ``accepts`` (prior kinds) and implement ``run``."""

    name = ""
    accepts: tuple[str, ...] = ()
    blind_capable = False

    def __init__(self, warm_start: float | None = None, autocast: bool = False, progress: bool = True,
                 record_trace: bool = False):
        if warm_start is not None and not 0.0 < float(warm_start) <= 1.0:
            raise ValueError(f"warm_start must be None (cold start) or a fraction in (0, 1], got {warm_start!r}")
        self.warm_start, self.autocast, self.progress, self.record_trace = warm_start, autocast, progress, record_trace

    def check(self, operator: Operator, prior: Prior) -> None:
        """Reject a prior kind or operator this solver cannot use, before any work."""
        kind = prior_key(prior)
        if kind not in self.accepts:
            raise ValueError(f"solver {self.name!r} cannot use a {kind.replace('-', ' ')} prior ({prior.source}); "
                             f"it accepts: {', '.join(a.replace('-', ' ') for a in self.accepts)} priors")
        if isinstance(operator, BlindBlur) and not self.blind_capable:
            raise ValueError(f"solver {self.name!r} does not estimate blur kernels; use dps, dmplug or fmplug for blind_blur")

    def run(self, y, operator, prior, gens, sigma: float, callback=None) -> Result:
        raise NotImplementedError

    def params(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


def timer() -> float:
    return time.perf_counter()
