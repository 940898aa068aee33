"""What every solver shares: the result record, per-image randomness, warm starts,
residuals (the stopping rules are in :mod:`.stopping`)."""
from __future__ import annotations

import contextlib
import math
import statistics
import numbers
import time
from dataclasses import dataclass, field

import torch

from ..notices import bars_render, shown
from ..operators import Operator
from ..operators import BlindBlur
from ..operators.base import operator_label
from ..priors import LatentPrior, Prior
from ..tensors import seeded_generator


@dataclass
class Result:
    """``x``: ``(B, C, H, W)`` reconstructions in [-1, 1] (with ``samples=k``: their mean, or with
    ``select="residual"`` each image's sample of smallest residual); ``info``: one dict per image with
    ``nfe``, ``iterations``, ``stop_reason``, ``residual`` (‖y − A(x)‖ / (σ√m)), ``seconds``,
    ``reliability`` (:func:`ipsolve.solvers.sampling.reliability`) and, if asked for, ``loss_trace``;
    ``kernel``: the estimated kernels of blind solvers; ``samples``: ``(B, k, C, H, W)`` and ``std``:
    the per-pixel standard deviation ``(B, C, H, W)`` when k > 1 samples were drawn; ``sigma``: the
    noise level the solve and its residuals used (as given, or estimated from y by ``sigma="auto"``)."""

    x: torch.Tensor
    info: list[dict] = field(default_factory=list)
    kernel: torch.Tensor | None = None
    samples: torch.Tensor | None = None
    std: torch.Tensor | None = None
    calibration: object | None = None  # the Calibration that chose the solver's parameters, if any
    sigma: float | None = None  # the σ used (solve sets it: sigma="auto" gives its estimate here)


def generators_for(generator, batch: int) -> list[torch.Generator] | torch.Generator:
    """A list of per-image generators (the diffusers convention; int seeds among them are seeded
    generators) or one shared generator."""
    if generator is None:
        return torch.Generator().manual_seed(0)
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch:
            raise ValueError(f"got {len(generator)} generators for a batch of {batch} images; expected one per image")
        bad = [type(g).__name__ for g in generator if isinstance(g, bool)
               or not isinstance(g, (torch.Generator, numbers.Integral))]
        if bad:  # (an AttributeError deep in the solve before)
            raise TypeError(f"generator must be a torch.Generator, a list of them (or of int seeds), or an int seed, "
                            f"got a list holding {', '.join(sorted(set(bad)))}")
        return [g if isinstance(g, torch.Generator) else seeded_generator(g) for g in generator]
    if isinstance(generator, bool):
        raise TypeError("generator must be a torch.Generator, a list of them (or of int seeds), or an int seed, got a bool")
    if isinstance(generator, numbers.Integral):  # int, numpy integers
        return seeded_generator(generator)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, a list of them (or of int seeds), or an int seed, "
                        f"got {type(generator).__name__}")
    return generator


def generators_on(gens, device):
    """The same per-image randomness drawn where it is used: on an accelerator, each host
    generator seeds one on the device (a single draw from it, so the result is a function of the
    host generator's state).  Drawing every step's noise on the host and copying it over cost
    more than the network itself at 256 px (DAPS's Langevin steps, DPS at batch 16), so solvers
    draw on the device; on a CPU nothing changes."""
    device = torch.device(device)
    if device.type == "cpu":
        return gens

    def move(g):
        if g.device.type == device.type:
            return g
        seed = int(torch.randint(0, 2 ** 63 - 1, (1,), generator=g))
        return torch.Generator(device=device).manual_seed(seed)

    return [move(g) for g in gens] if isinstance(gens, list) else move(gens)


def randn_like_batch(shape, gens, device, dtype=torch.float32) -> torch.Tensor:
    """Standard normal ``(B, ...)`` noise: image i from ``gens[i]`` when a list is given, so a
    batch run draws exactly what single runs with the same generators draw."""
    if isinstance(gens, list):
        return torch.cat([torch.randn((1, *shape[1:]), generator=g, device=g.device, dtype=dtype) for g in gens]).to(device)
    return torch.randn(shape, generator=gens, device=gens.device, dtype=dtype).to(device)


NOISE_CHUNK_ELEMENTS = 2 ** 22  # per image: 16 MiB of float32 noise drawn ahead (256 MiB at batch 16)


def randn_steps(shape, gens, device, steps: int, dtype=torch.float32):
    """The noise of ``steps`` consecutive :func:`randn_like_batch` draws, yielded one step at a
    time but drawn in chunks of up to :data:`NOISE_CHUNK_ELEMENTS` per image: one generator call
    per image and chunk instead of one per image and step — DAPS's Langevin steps draw 100 per
    annealing level, and at batch 16 the per-image draws were most of a step's kernel launches.
    Each image's draws still come only from its own generator, in a chunking that does not depend
    on the batch size, so a batch run draws what single runs draw.  On a CPU the values equal the
    step-by-step draws when an image has a multiple of 16 entries (torch fills normals 16 at a
    time); on an accelerator, and otherwise, they are other draws of the same distribution."""
    per_step = math.prod(shape[1:])
    chunk = max(1, min(steps, NOISE_CHUNK_ELEMENTS // max(per_step, 1)))
    done = 0
    while done < steps:
        k = min(chunk, steps - done)
        if isinstance(gens, list):
            block = torch.cat([torch.randn((k, 1, *shape[1:]), generator=g, device=g.device, dtype=dtype)
                               for g in gens], 1).to(device)
        else:
            block = torch.randn((k, *shape), generator=gens, device=gens.device, dtype=dtype).to(device)
        yield from block.unbind(0)
        done += k


def residual_ratio(y, ax, sigma: float) -> torch.Tensor:
    """‖y − A(x)‖ / (σ √m) per image (≈ 1 when the fit is at the noise level).  ``m`` counts the
    entries that carry a measurement: an entry exactly 0 in both ``y`` and ``A(x)`` is a structural
    zero — an inpainting hole of a measurement read from elsewhere, whose holes are set to 0 —
    and has no noise (a noisy entry is never exactly 0); ipsolve's own inpainting measurement has
    noise in its holes, as DPS's, and counts them all.  Without this a foreign measurement read
    √(observed fraction) low (0.55 at 70 % missing)."""
    structural = ((y == 0) & (ax == 0)).flatten(1)
    m = (structural.shape[1] - structural.sum(1)).clamp_min(1).to(torch.float64)
    r = (y - ax).flatten(1).norm(dim=1)
    return r / (max(sigma, 1e-12) * m.sqrt().to(r))


# ‖y − A(x)‖/(σ√m) above this is far from the noise level (≈ 1 ± √(2/m) for the true image)
RESIDUAL_WARNING = 5.0


class ResidualWarning(UserWarning):
    """A reconstruction that does not fit its measurement (residual far above the noise level)."""


def residual_warning(residual) -> str | None:
    """The warning for an image whose ‖y − A(x̂)‖/(σ√m) exceeds :data:`RESIDUAL_WARNING`, else None."""
    if residual is None or not math.isfinite(residual) or residual <= RESIDUAL_WARNING:
        return None
    return (f"residual {residual:.1f}× the noise level: the reconstruction does not fit the measurement "
            f"(check sigma, the operator's settings — mask, kernel, scale — and the solver's steps, step size or "
            f"guidance; with all of them right, the prior cannot produce an image that fits: one trained on images "
            f"like these)")


def sample_residual_median(info: dict) -> float | None:
    """The median of an image's ``sample_residuals`` (``samples=k``, k ≥ 2, all finite), else None."""
    per = [r for r in info.get("sample_residuals") or () if r is not None]
    if len(per) < 2 or len(per) != len(info["sample_residuals"]) or not all(math.isfinite(r) for r in per):
        return None
    return statistics.median(per)


def samples_warning(info: dict) -> str | None:
    """With ``samples=k``: the warning for an image whose samples mostly leave a residual above
    :data:`RESIDUAL_WARNING` although the returned mean fits (averaging k unconverged samples cancels
    part of their misfit: an audit, 2026-12-07, had samples at 6.3, 6.2 and 5.2× the noise level and
    their mean at 2.3×, ranked the run's most reliable and accepted — with one sample it was reviewed)."""
    median = sample_residual_median(info)
    if median is None or median <= RESIDUAL_WARNING or "selected_sample" in info:  # select=residual returns the
        return None                                                                # best sample itself: its fit is real
    return (f"the samples fit the measurement only at {median:.1f}× the noise level (median of "
            f"{len(info['sample_residuals'])}; their mean at "
            f"{info['residual']:.1f}×): the solver did not converge in most samples (check its steps, step size or "
            f"guidance, sigma and the operator's settings)")


def check_steps(steps: int, num_timesteps: int) -> None:
    """The one error for a grid of more steps than the prior has timesteps (every sampler takes at
    most one step per timestep)."""
    if steps > num_timesteps:
        raise ValueError(f"steps={steps} is more than the prior's {num_timesteps} timesteps (at most one step per "
                         f"timestep); use steps <= {num_timesteps}")


def prior_parts(prior: Prior):
    """``(latent, inner, decode)``: whether ``prior`` is a latent prior, the prior the sampler runs
    (its inner latent prior, or itself) and the map from that prior's space to images."""
    latent = isinstance(prior, LatentPrior)
    return latent, (prior.inner if latent else prior), (prior.decode if latent else (lambda v: v))


def prior_key(prior: Prior) -> str:
    """``diffusion``, ``flow``, ``latent-diffusion`` or ``latent-flow``."""
    return f"latent-{prior.inner.kind}" if isinstance(prior, LatentPrior) else prior.kind


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
    # parameters ipsolve.calibrate may choose from the measurement: name -> (low, high), searched on
    # a log scale; the ranges contain the papers' values
    search_space: dict[str, tuple[float, float]] = {}
    # +1 where a larger value fits the data more strongly, −1 where weaker (default +1): the discrepancy
    # principle's search direction, and which candidate is weakest for ``weakest_within_one_se``
    guidance_direction: dict[str, int] = {}
    # one-parameter searches where calibration, among the candidates whose held-out error is within one
    # standard error of the best's, takes the weakest guidance (the textbook one-standard-error rule;
    # declared where measured: docs/calibration.md)
    weakest_within_one_se: tuple[str, ...] = ()
    auto_params: tuple[str, ...] = ()  # parameters given as "auto" (make_solver): chosen by solve()
    accepts_penalty = False  # adds ``_penalty(x)`` (per-image energy, e.g. z-coupling) to its data term
    _penalty = None

    def __init__(self, warm_start: float | None = None, autocast: bool = False, progress: bool = True,
                 record_trace: bool = False, start: str = "initial_guess"):
        if warm_start is not None and not 0.0 < float(warm_start) <= 1.0:
            raise ValueError(f"warm_start must be None (cold start) or a fraction in (0, 1], got {shown(warm_start)}")
        if start not in STARTS:
            raise ValueError(f"start must be one of {', '.join(STARTS)} (what a warm start begins from), got {shown(start)}")
        self.warm_start, self.autocast, self.progress, self.record_trace = warm_start, autocast, progress, record_trace
        self.start = start

    def uses_initial_guess(self) -> bool:
        """Whether this solver, as set, starts from the operator's initial guess (``start`` chooses what
        stands in for it); False for the solvers that never do (and where ``warm_start`` is off)."""
        return False

    def start_image(self, operator, y):
        """The image a warm start begins from: the operator's initial guess, or with
        ``start="classical"`` its classical estimate (a symmetric blur's Tikhonov deconvolution: y itself
        is the blur's guess; measured on 8 `blobs` + Shepp–Logan, 9-px Gaussian, σ 0.01: DMPlug's preset
        25.76 → 26.51 dB, FMPlug's 25.22 → 28.20, the deconvolution 27.02)."""
        if self.start == "classical":
            estimate = operator.classical_estimate(y)
            if estimate is None:
                raise ValueError(no_classical_start(operator))
            return estimate.clamp(-1, 1)
        return operator.initial_guess(y)

    @property
    def show_progress(self) -> bool:
        """``progress`` where a bar renders (:func:`ipsolve.notices.bars_render`: not into a log file)."""
        return bool(self.progress) and bars_render()

    def residual_hint(self) -> str:
        """A setting of this solver that commonly explains a residual far above the noise level
        (appended to the residual warning), or ""."""
        return ""

    def start_timestep(self, num_timesteps: int) -> int:
        """The DDPM timestep a sampler starts from: ``T − 1`` cold, ``round(warm_start·(T − 1))`` warm
        (x_t drawn around the operator's initial guess).  RED-diff's grid takes ``warm_start`` as
        the reference's exclusive bound ``start_step`` instead (:meth:`REDDiff.timesteps`)."""
        if self.warm_start is None:
            return num_timesteps - 1
        return round(self.warm_start * (num_timesteps - 1))

    def prior_mismatch(self, prior: Prior) -> str:
        """What is wrong with ``prior`` for this solver (its kind is not one it accepts)."""
        return (f"solver {self.name!r} cannot use a {prior_key(prior).replace('-', ' ')} prior ({prior.source}); "
                f"it accepts: {', '.join(a.replace('-', ' ') for a in self.accepts)} priors")

    def check(self, operator: Operator, prior: Prior) -> None:
        """Reject a prior kind or operator this solver cannot use, before any work."""
        kind = prior_key(prior)
        if kind not in self.accepts:
            from . import SOLVERS

            fits = [n for n, cls in SOLVERS.items() if kind in cls.accepts]
            raise ValueError(self.prior_mismatch(prior) + (f"; the solvers that take this prior: {', '.join(fits)}"
                                                           if fits else ""))
        if self.start == "classical":
            if not self.uses_initial_guess():
                raise ValueError(f"solver {self.name!r} as set does not start from the operator's initial guess"
                                 + (" (give warm_start, a fraction of T)" if self.warm_start is None else "")
                                 + ", so start=classical changes nothing; expected start=initial_guess")
            if getattr(operator, "classical_name", None) is None:
                raise ValueError(no_classical_start(operator))
        if isinstance(operator, BlindBlur) and not self.blind_capable:
            from . import SOLVERS  # the ones that estimate kernels with this kind of prior

            fits = [n for n, cls in SOLVERS.items() if getattr(cls, "blind_capable", False) and kind in cls.accepts]
            raise ValueError(f"solver {self.name!r} does not estimate blur kernels; with a {kind.replace('-', ' ')} "
                             f"prior use {', '.join(fits) or 'another prior: none of the solvers that do takes it'} "
                             f"for blind_blur")
        self.check_values()

    def check_values(self) -> None:
        """Reject a step size or weight of :attr:`search_space` that is negative or not finite (a typo),
        and a learning rate of 0 (an optimisation that never moves: DMPlug ran its 300 iterations from
        its start and lost 2.6 dB to bicubic, unsaid).  0 elsewhere means "no data term", an ablation.
        :func:`make_solver` calls it, as :meth:`check` does."""
        for name, (lo, hi) in self.search_space.items():
            value = getattr(self, name, None)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            least = "> 0" if name == "lr" else ">= 0"
            if not (math.isfinite(value) and (value > 0 if name == "lr" else value >= 0)):
                raise ValueError(f"solver {self.name!r}: {name} must be a finite number {least} (its calibration range "
                                 f"is {lo:g}–{hi:g}), got {shown(value)}")

    def run(self, y, operator, prior, gens, sigma: float, callback=None) -> Result:
        """The contract every solver implements (:func:`ipsolve.solvers.solve` calls it):

        * ``y``: ``(B, …)`` measurements, already checked (finite, on the [-1, 1] scale, the operator's
          shape); ``operator``, ``prior``: checked against :attr:`accepts` by :meth:`check`.
        * ``gens``: one ``torch.Generator`` per image (or None): draw each image's noise from its own
          (:func:`randn_like_batch`), so an image's result does not depend on its batch.
        * ``callback(i, state)``: once per iteration, ``state["x"]`` the current images in [-1, 1] and
          ``state["loss"]`` per image; optimisation solvers add ``residual``, ``active``, ``validation``.
          The progress log's budget is :func:`ipsolve.runner.progress.iteration_budget` (a solver whose
          callbacks are not its ``iterations``/``steps`` defines ``callback_budget()``).
        * Returns :class:`Result` with ``x`` in [-1, 1] and one ``info`` dict per image holding at least
          ``nfe``, ``iterations``, ``stop_reason``, ``residual`` (‖y − A(x)‖/(σ√m)) and ``seconds``."""
        raise NotImplementedError

    def params(self) -> dict:
        # (start at its default is left out: runs made before it existed keep their fingerprint)
        return {k: v for k, v in vars(self).items() if not k.startswith("_")
                and not (k == "start" and v == "initial_guess")}

    def __repr__(self) -> str:  # make_solver("dps_cpu") in a notebook: its name and settings, not an address
        shown = ", ".join(f"{k}={v!r}" for k, v in self.params().items() if k != "progress")
        return f"{type(self).__name__}({shown})"


STARTS = ("initial_guess", "classical")


def no_classical_start(operator) -> str:
    return (f"start=classical: {operator_label(operator)} has no classical estimate beside its initial guess (only "
            f"blurs whose kernel is symmetric along each axis have one, their Tikhonov deconvolution); expected "
            f"start=initial_guess")


def timer() -> float:
    return time.perf_counter()
