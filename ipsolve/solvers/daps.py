"""DAPS (Zhang et al., "Improving diffusion inverse problem solving with decoupled noise
annealing", CVPR 2025), as zhangbingliang2019/DAPS (main branch, 098df6b) implements it: at each
noise level σ_k, solve the probability-flow ODE from x_k to x̂0, run Langevin (or HMC) on x0
under ``exp(−‖A(x0) − y‖²/τ² − ‖x0 − x̂0‖²/(2σ_k²))``, and re-noise: x_{k+1} = x0 + σ_{k+1} ε."""
from __future__ import annotations

import math

import numpy as np
import torch
from tqdm.auto import tqdm

from ..notices import shown
from ..priors import LatentPrior
from .base import Result, Solver, autocast_context, prior_parts, randn_like_batch, randn_steps, residual_ratio, timer
from ..tensors import per_image

# Per-task MCMC settings of the reference configs (configs/task/*.yaml, mcmc_sampler_config):
# pixel priors, Langevin: (steps, lr); latent priors, HMC: (steps, lr, lr_min_ratio, momentum).
PIXEL_TASKS = {"phase_retrieval": (100, 5e-5), "super_resolution": (100, 1e-4), "inpainting_box": (100, 5e-5),
               "inpainting_random": (100, 1e-4), "gaussian_blur": (100, 1e-4), "motion_blur": (100, 5e-5),
               "nonlinear_blur": (200, 1e-5)}
LATENT_TASKS = {"phase_retrieval": (65, 2.1e-5, 0.12, 0.41), "super_resolution": (24, 1.35e-4, 0.023, 0.86),
                "inpainting_box": (15, 9.02e-6, 0.13, 0.74), "inpainting_random": (38, 8.40e-6, 0.013, 0.92),
                "gaussian_blur": (35, 2.70e-6, 0.95, 0.95), "motion_blur": (49, 2.4e-5, 0.041, 0.45),
                "nonlinear_blur": (80, 3.71e-6, 0.024, 0.91)}


def task_of(operator) -> str:
    """The reference config for ``operator.task``: a kernel of your own takes motion blur's (real
    blur kernels are camera shake), the tasks DAPS has no config for (CT, MRI, blind blur, deepinv
    physics, your own operator) super-resolution's."""
    task = getattr(operator, "task", None)  # any callable A serves (the reference tests pass a function)
    task = {"blur": "motion_blur"}.get(task, task)
    return task if task in PIXEL_TASKS else "super_resolution"


def karras_sigmas(sigma_max: float, sigma_min: float, points: int, rho: float = 7.0) -> np.ndarray:
    """``points`` noise levels from ``sigma_max`` to ``sigma_min``, EDM's polynomial (Karras et al.
    2022, eq. 5; DAPS ``cores/scheduler.py`` EDMScheduler, ``timestep='poly-7'``)."""
    r = np.linspace(0, 1, points)
    return (sigma_max ** (1 / rho) + r * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def annealing_sigmas(steps: int, sigma_max: float, sigma_min: float) -> np.ndarray:
    """The levels the sampler visits and the one after the last: ``steps + 1`` grid points with
    the last (σ_min itself) replaced by 0 (``Scheduler.discretize``: σ_min is never visited)."""
    grid = karras_sigmas(sigma_max, sigma_min, steps + 1)
    return np.concatenate([grid[:-1], [0.0]])


def lr_multiplier(step: int, steps: int, lr_min_ratio: float) -> float:
    """``1 + r (lr_min_ratio − 1)`` with r = step / (steps + 1) (``cores/mcmc.py`` get_lr; ``sampler.py`` L73)."""
    return 1 + step / (steps + 1) * (lr_min_ratio - 1)


def vp_timestep(sigma: float, beta_min: float = 0.1, beta_d: float = 19.9, steps: int = 1000) -> float:
    """The fractional network timestep of EDM's ``VPPrecond`` (``model/precond.py``):
    ``(M − 1) · t(σ)``, t(σ) = (√(β_min² + 2 β_d ln(1 + σ²)) − β_min) / β_d — the continuous VP
    schedule, ᾱ ≈ 1/(1 + σ²)."""
    t = (math.sqrt(beta_min ** 2 + 2 * beta_d * math.log1p(sigma ** 2)) - beta_min) / beta_d
    return (steps - 1) * t


def schedule_timestep(alphas_cumprod: torch.Tensor, sigma: float) -> float:
    """ipsolve's option: the fractional index at which the prior's *own* ᾱ equals 1/(1 + σ²)
    (linear interpolation of log ᾱ; clamped to the table)."""
    log_a = torch.log(alphas_cumprod.double().cpu())
    target = -math.log1p(sigma ** 2)
    if target >= log_a[0]:
        return 0.0
    if target <= log_a[-1]:
        return float(len(log_a) - 1)
    i = int(torch.searchsorted(-log_a, torch.tensor(-target, dtype=torch.float64)))  # log ᾱ decreases
    lo, hi = log_a[i - 1], log_a[i]
    return float(i - 1 + (lo - target) / (lo - hi))


class DAPS(Solver):
    """Decoupled annealing posterior sampling — defaults are the reference's DAPS-1K for pixel
    priors (``configs/sampler/edm_daps.yaml``, ``commands/pixel_*.sh``): 200 annealing levels
    (EDM ρ = 7 from ``sigma_max`` 100 to ``sigma_min`` 0.1), each with a 5-step Euler
    probability-flow ODE down to ``ode_sigma_min`` 0.01 (x̂0 is that ODE state: no final
    denoise) — 1000 network evaluations — then ``mcmc_steps`` Langevin steps on x0 with the
    score ``−∇‖A(x0) − y‖²/τ² + (x̂0 − x0)/σ_k²`` (τ = 0.01 in every reference config,
    independent of the true noise; those configs measure at σ = 0.05), step size ``lr · (1 + k/(K+1)(lr_min_ratio − 1))``.

    ``lr``, ``mcmc_steps``, ``lr_min_ratio``, ``momentum``: None = the reference's per-task values
    (:data:`PIXEL_TASKS`; latent priors :data:`LATENT_TASKS`, with HMC, as LatentDAPS).  The VP
    network is used through EDM's ``VPPrecond``: D(x, σ) = x − σ ε(x/√(1+σ²), t(σ)) with the
    fractional timestep of :func:`vp_timestep` (``timestep="vp"``, the reference for its pixel
    and LDM models, which assumes DDPM's linear β schedule) or ``timestep="schedule"`` (the prior's
    own ᾱ, :func:`schedule_timestep`: the reference's Stable Diffusion model; an option for the
    LDMs, whose schedules differ); ``"auto"`` picks as the reference does (:meth:`timestep_for`).  Latent priors: the
    ODE and the MCMC run on z, the data term on ``A(decode(z))`` with its gradient with respect
    to z clamped to [−1, 1] (``LatentWrapper.gradient``).  The output is clamped to [−1, 1] (the reference
    clamps only when saving); an image that turns NaN restarts as zeros, as the reference does."""

    name = "daps"
    accepts = ("diffusion", "latent-diffusion")
    # τ 0.01 in every reference config; Langevin lr 1e-5 … 1e-4 per task (PIXEL_TASKS)
    search_space = {"tau": (1e-3, 0.1), "lr": (1e-6, 1e-3)}
    guidance_direction = {"tau": -1, "lr": 1}  # a larger τ trusts the measurement less

    def __init__(self, annealing_steps: int = 200, ode_steps: int = 5, sigma_max: float = 100.0,
                 sigma_min: float = 0.1, ode_sigma_min: float = 0.01, mcmc: str | None = None,
                 mcmc_steps: int | None = None, lr: float | None = None, lr_min_ratio: float | None = None,
                 momentum: float | None = None, tau: float = 0.01, timestep: str = "auto", **kw):
        super().__init__(**kw)
        if annealing_steps < 1 or ode_steps < 1:
            raise ValueError(f"annealing_steps and ode_steps must be >= 1, got {annealing_steps}, {ode_steps}")
        if not sigma_max > sigma_min > 0 or not 0 < ode_sigma_min:
            raise ValueError(f"need sigma_max > sigma_min > 0 and ode_sigma_min > 0, got {sigma_max}, {sigma_min}, "
                             f"{ode_sigma_min}")
        if mcmc not in (None, "langevin", "hmc"):
            raise ValueError(f"mcmc must be 'langevin', 'hmc' or null (by prior kind), got {shown(mcmc)}")
        if timestep not in ("auto", "vp", "schedule"):
            raise ValueError(f"timestep must be 'auto', 'vp' (the reference's pixel and LDM models) or 'schedule', "
                             f"got {shown(timestep)}")
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.annealing_steps, self.ode_steps = annealing_steps, ode_steps
        self.sigma_max, self.sigma_min, self.ode_sigma_min = sigma_max, sigma_min, ode_sigma_min
        self.mcmc, self.mcmc_steps, self.lr, self.lr_min_ratio, self.momentum = mcmc, mcmc_steps, lr, lr_min_ratio, momentum
        self.tau, self.timestep = tau, timestep
        self._timestep = "vp" if timestep == "auto" else timestep  # run() resolves "auto" for its prior

    def default_value(self, name: str, operator, prior=None):
        """What a parameter left as None means on ``operator`` with ``prior``: the reference's per task."""
        return self.mcmc_settings(operator, isinstance(prior, LatentPrior)).get(name) if name == "lr" else None

    def mcmc_settings(self, operator, latent: bool) -> dict:
        """The MCMC settings for this operator and prior kind (given values override the table)."""
        task = task_of(operator)
        if latent:
            steps, lr, ratio, momentum = LATENT_TASKS[task]
            kind = "hmc"
        else:
            (steps, lr), ratio, momentum, kind = PIXEL_TASKS[task], 0.01, 0.0, "langevin"
        pick = lambda given, ref: ref if given is None else given  # noqa: E731
        return {"kind": pick(self.mcmc, kind), "steps": int(pick(self.mcmc_steps, steps)), "lr": float(pick(self.lr, lr)),
                "lr_min_ratio": float(pick(self.lr_min_ratio, ratio)), "momentum": float(pick(self.momentum, momentum))}

    def timestep_for(self, prior) -> str:
        """``timestep="auto"``: as the reference per model — ``vp`` (VPPrecond's constants) for its
        pixel and LDM models, the pipeline's own schedule for Stable Diffusion (DAPS
        ``model/__init__.py`` ``StableDiffusionModel``: VPScheduler from the pipeline's β, scaled_linear;
        VPPrecond's constants would tell SD's UNet t = 675 at σ = 10 where its schedule says 934)."""
        if self.timestep != "auto":
            return self.timestep
        return "schedule" if getattr(prior, "conditioning", None) else "vp"  # text-conditioned: Stable Diffusion

    def denoise(self, inner, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """EDM's VPPrecond denoiser D(x, σ) on a VE-scaled x (one network call)."""
        t = vp_timestep(sigma, steps=inner.num_timesteps) if self._timestep == "vp" else \
            schedule_timestep(inner.alphas_cumprod_host(), sigma)
        x_in = x / math.sqrt(sigma ** 2 + 1)  # VP-scaled: ᾱ = 1/(1 + σ²)
        return x - sigma * inner.eps_at(x_in, t, 1 / (1 + sigma ** 2))

    def ode_x0(self, inner, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """Euler steps of the probability-flow ODE dx/dσ = (x − D(x, σ))/σ over ``ode_steps + 1``
        EDM levels from σ to ``ode_sigma_min`` (``DiffusionPFODE``, solver 'euler')."""
        grid = karras_sigmas(sigma, self.ode_sigma_min, self.ode_steps + 1)
        for s, s_next in zip(grid[:-1], grid[1:]):
            x = x + (s_next - s) * (x - self.denoise(inner, x, float(s))) / s
        return x

    def data_gradient(self, x0, y, operator, prior, latent: bool) -> torch.Tensor:
        """∇‖A(x0) − y‖² (summed squared error, no ½, per image); latent priors: the gradient with
        respect to the latent, through the decoder, clamped to [−1, 1] elementwise — what the
        reference's ``LatentWrapper.gradient`` clamps (``forward_operator/__init__.py`` L396-402)."""
        with torch.enable_grad():
            v = x0.detach().requires_grad_()
            image = prior.decode(v) if latent else v
            loss = (operator(image) - y).pow(2).sum()
            (grad,) = torch.autograd.grad(loss, v)
        return grad.clamp(-1, 1) if latent else grad

    def run(self, y, operator, prior, gens, sigma: float, callback=None) -> Result:
        start = timer()
        latent, inner, _ = prior_parts(prior)
        shape = (y.shape[0], inner.channels, inner.image_size, inner.image_size)
        mc = self.mcmc_settings(operator, latent)
        self._timestep = self.timestep_for(prior)
        sigmas = annealing_sigmas(self.annealing_steps, self.sigma_max, self.sigma_min)
        x = randn_like_batch(shape, gens, y.device) * self.sigma_max
        nan_resets = torch.zeros(y.shape[0], dtype=torch.long, device=y.device)
        steps = range(self.annealing_steps)
        for k in tqdm(steps, desc="daps", leave=False, disable=not self.show_progress):
            s, s_next = float(sigmas[k]), float(sigmas[k + 1])
            with torch.no_grad(), autocast_context(self.autocast, y.device):
                x0_hat = self.ode_x0(inner, x, s).to(x.dtype)  # the state's dtype (float32 unless run in float64)
            lr = mc["lr"] * lr_multiplier(k, self.annealing_steps, mc["lr_min_ratio"])
            x0 = x0_hat.clone()
            velocity = randn_like_batch(shape, gens, y.device) if mc["kind"] == "hmc" else None
            m = mc["momentum"]
            # score = −∇‖A(x0) − y‖²/τ² + (x̂0 − x0)/s², folded into the updates' coefficients (three to
            # five fused kernels a step instead of eleven: at batch 16 on a GPU the steps are launch-bound)
            root_lr = math.sqrt(lr)
            for noise in randn_steps(shape, gens, y.device, mc["steps"]):
                grad = self.data_gradient(x0, y, operator, prior, latent)
                if velocity is None:  # Langevin (cores/mcmc.py L85-88): x0 + lr·score + √(2 lr)·ε
                    x0 = torch.lerp(x0, x0_hat, lr / s ** 2).add_(grad, alpha=-lr / self.tau ** 2) \
                        .add_(noise, alpha=math.sqrt(2 * lr))
                else:  # HMC (L89-92): v ← m·v + √lr·score + √(2(1 − m))·ε; x0 + √lr·v
                    velocity = (velocity * m).add_(x0_hat - x0, alpha=root_lr / s ** 2) \
                        .add_(grad, alpha=-root_lr / self.tau ** 2).add_(noise, alpha=math.sqrt(2 * (1 - m)))
                    x0 = x0.add(velocity, alpha=root_lr)
            bad = ~torch.isfinite(x0.flatten(1)).all(1)  # the reference restarts a NaN sample as zeros (mcmc.py L158-159)
            x0 = torch.where(per_image(bad, x0), torch.zeros_like(x0), x0)
            nan_resets = nan_resets + bad.long()
            x = x0 + s_next * randn_like_batch(shape, gens, y.device) if s_next > 0 else x0
            if callback is not None:
                callback(k, {"x": (prior.decode(x0) if latent else x0).detach(), "sigma": s})
        with torch.no_grad():
            image = (prior.decode(x) if latent else x).clamp(-1, 1)
            residual = residual_ratio(y, operator(image), sigma).cpu()
        nan_resets = nan_resets.cpu().tolist()
        secs = timer() - start
        nfe = self.annealing_steps * self.ode_steps
        info = [{"nfe": nfe, "iterations": self.annealing_steps, "stop_reason": "budget", "residual": float(residual[i]),
                 "seconds": secs, "mcmc": f"{mc['kind']} {mc['steps']} steps, lr {mc['lr']:g}",
                 "timestep": self._timestep,
                 # latent priors: a decoder forward+backward per MCMC step, the final decode (callback's excepted)
                 **({"decoder_backward": self.annealing_steps * mc["steps"], "decoder_forward": 1} if latent else {}),
                 "nan_resets": nan_resets[i]} for i in range(y.shape[0])]
        return Result(x=image.detach(), info=info)
