"""DiffPIR: denoising diffusion models for plug-and-play image restoration (Zhu et al., CVPRW
2023), as yuanzhi-zhu/DiffPIR implements it (``main_ddpir_sisr.py``, ``main_ddpir_deblur.py``,
``main_ddpir_inpainting.py``)."""
from __future__ import annotations

import math

import numpy as np
import torch
from tqdm.auto import tqdm

from ..notices import shown
from ..operators import SuperResolution
from ..operators.base import operator_label
from ..operators.decomposition import NotDecomposable, prox_cg
from .base import Result, Solver, autocast_context, check_steps, randn_like_batch, residual_ratio, timer

# (steps, λ, ζ) of the reference scripts per task (yuanzhi-zhu/DiffPIR @ 111d26e):
# SR: main_ddpir_sisr.py L38 (100 iterations), L482-486 (λ swept over 2, 3, …, 12 with ζ = 0.25:
#     ipsolve takes λ = 7, the sweep's middle and the deblurring value); configs/sisr.yaml the same;
# deblurring: main_ddpir_deblur.py L38, L440-443 (λ = 1·7, ζ = 0.1·3), configs/deblur.yaml;
# inpainting: main_ddpir_inpainting.py L34 (20 iterations), L385-389 (λ = 1, ζ = 1.0).
TASKS = {"super_resolution": (100, 7.0, 0.25), "deblur": (100, 7.0, 0.3), "inpainting": (20, 1.0, 1.0)}


def task_of(operator) -> str:
    """The reference script for ``operator.task``: inpainting's for both mask kinds, deblurring's
    for every task the reference has no script for (CT, MRI, phase retrieval, deepinv physics)."""
    task = getattr(operator, "task", None)
    task = task if isinstance(task, str) else ""
    if task.startswith("inpainting"):
        return "inpainting"
    return "super_resolution" if task == "super_resolution" else "deblur"


def timestep_sequence(num_timesteps: int, steps: int, skip_type: str = "quad") -> list[int]:
    """The reference's ``seq`` (``main_ddpir_sisr.py`` L266-274): ``quad``: ⌊√linspace(0, T², steps)⌋
    with the last entry T − 1; ``uniform``: 0, T//steps, … plus T − 1.  Entry j means timestep
    T − 1 − j (the noise level ``sigmas[j] = reduced_alpha_cumprod[T − 1 − j]``, L229, L281-283)."""
    check_steps(steps, num_timesteps)  # uniform's skip T//steps would be 0
    if skip_type == "quad":
        seq = [int(v) for v in np.sqrt(np.linspace(0, num_timesteps ** 2, steps))]
        seq[-1] = seq[-1] - 1
        return seq
    skip = num_timesteps // steps
    seq = [i * skip for i in range(steps)]
    return seq + [num_timesteps - 1] if skip > 1 else seq


class DiffPIR(Solver):
    """Half-quadratic splitting inside DDIM.  From t = T − 1, per iteration (``main_ddpir_deblur.py``
    L257-357):

    1. x̂0 = clamp(x0(x_t), −1, 1) (the network's ``pred_xstart`` with ``clip_denoised=True``);
    2. data step: x̂0 ← argmin_x ‖y − A(x)‖² + ρ_t ‖x − x̂0‖² with ρ_t = λ σ_n² / σ̄_t²,
       σ̄_t² = (1 − ᾱ_t)/ᾱ_t, σ_n = max(0.001, σ/2) (L206-217: the reference's σ_n is the noise
       std on [0, 1] while σ̄_t is on [−1, 1]);
    3. ε̂ = (x_t − √ᾱ_t x̂0)/√(1 − ᾱ_t) and
       x_{t'} = √ᾱ_{t'} x̂0 + √(1 − ζ)(√(1 − ᾱ_{t'} − σ_η²) ε̂ + σ_η z₁) + √ζ √(1 − ᾱ_{t'}) z₂,
       σ_η = η √(1 − ᾱ_{t'})/√(1 − ᾱ_t) √β_t (L339-347).

    The reference's last iteration evaluates the network and discards the result: the output is
    x at t = 0 (L339, L360, L378).  ipsolve skips that call (same output, ``steps`` − 1 NFE).

    Data step: exact through the operator's SVD where it has one (super-resolution, inpainting,
    Gaussian blur, single-coil MRI, decomposable deepinv physics):
    ``V((s Uᵀ(y − b) + ρ Vᵀx̂0)/(s² + ρ))`` — for inpainting this is the reference's
    ``(mask·y + ρ x̂0)/(mask + ρ)`` (``main_ddpir_inpainting.py`` L267); the reference's FFT
    solutions for SR and deblurring (``utils/utils_sisr.py`` L65-75) solve the same problem for
    circular boundaries, ipsolve's for its operators' own (Matlab-style resizer, reflection
    padding).  Linear operators without an SVD (CT, motion blur, multi-coil MRI): ``prox_iters``
    conjugate-gradient iterations from x̂0.  Nonlinear operators: the reference's first-order
    step x̂0 − ∇½‖y − A(x̂0)‖²/ρ_t (``sub_1_analytic=False``, ``main_ddpir_sisr.py`` L337-344).

    Start (``warm_start`` = t_start/(T − 1), default T − 1 as the reference, L93-96; iterations
    with t > t_start are skipped, L285-286): super-resolution √ᾱ g + √(1 − ᾱ) z with g the
    bicubic upsampling (L243-254); otherwise from the noise level of y, t_y = argmin |σ̄_t − σ|:
    √(ᾱ/ᾱ_{t_y}) g + √(1 − ᾱ − ᾱ/ᾱ_{t_y}(1 − ᾱ_{t_y})) z with g = the operator's initial guess
    (the reference uses y itself, holes −1 for inpainting; at t = 999 g is weighted by 0.006).

    ``steps``, ``lam``, ``zeta`` None: the reference's per task (:data:`TASKS`; 100 iterations for
    SR and deblurring, 20 for inpainting); ``eta=0``, ``skip_type="quad"``, ``guidance_scale=1``
    (x̂0 + s(x̂0' − x̂0)) as the reference.  ``search_space``: λ and ζ on log ranges."""

    name = "diffpir"
    accepts = ("diffusion",)
    search_space = {"lam": (0.5, 50.0), "zeta": (0.03, 1.0)}

    def __init__(self, steps: int | None = None, lam: float | None = None, zeta: float | None = None,
                 eta: float = 0.0, skip_type: str = "quad", guidance_scale: float = 1.0, prox_iters: int = 10, **kw):
        super().__init__(**kw)
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 2):
            raise ValueError(f"steps must be null (per task) or an integer >= 2, got {shown(steps)}")
        if lam is not None and not lam > 0:
            raise ValueError(f"lam must be > 0, got {lam}")
        if zeta is not None and not 0.0 <= zeta <= 1.0:
            raise ValueError(f"zeta must be in [0, 1], got {zeta}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        if skip_type not in ("quad", "uniform"):
            raise ValueError(f"skip_type must be 'quad' or 'uniform', got {shown(skip_type)}")
        if prox_iters < 1:
            raise ValueError(f"prox_iters must be >= 1, got {prox_iters}")
        self.steps, self.lam, self.zeta, self.eta = steps, lam, zeta, eta
        self.skip_type, self.guidance_scale, self.prox_iters = skip_type, guidance_scale, prox_iters

    def settings(self, operator) -> tuple[int, float, float]:
        """(steps, λ, ζ) for this operator: given values override the reference's per task."""
        steps, lam, zeta = TASKS[task_of(operator)]
        return (self.steps or steps, float(self.lam if self.lam is not None else lam),
                float(self.zeta if self.zeta is not None else zeta))

    def check(self, operator, prior) -> None:
        """Nonlinear operators are refused: the reference's first-order data step
        x̂0 − ∇½‖y − A(x̂0)‖²/ρ_t (``sub_1_analytic=False``) has the step 1/ρ_t = σ̄_t²/(λσ²), which at
        σ = 0.01 throws the iterate far off (audit 2026-12-05: non-linear blur 6.75 dB against the
        blurred image's 12.98, phase retrieval 4.55 against HIO's 21.54)."""
        super().check(operator, prior)
        if not operator.is_linear:
            raise ValueError(f"solver 'diffpir' needs a linear operator (a proximal data step by SVD or conjugate "
                             f"gradients): {operator_label(operator)} is nonlinear, and the reference's first-order step "
                             f"diverges at this noise level")

    def default_value(self, name: str, operator, prior=None):
        """What a parameter left as None means on ``operator``: the reference's per task (:data:`TASKS`)."""
        steps, lam, zeta = TASKS[task_of(operator)]
        return {"steps": steps, "lam": lam, "zeta": zeta}.get(name)

    def data_step(self, dec, operator, y, x0, rho) -> torch.Tensor:
        if dec is not None:
            return dec.prox(y, x0, rho)
        if operator.is_linear:
            return prox_cg(operator, y, x0, rho, self.prox_iters)
        with torch.enable_grad():  # the reference's first-order step (sub_1_analytic=False)
            v = x0.detach().requires_grad_()
            (grad,) = torch.autograd.grad(0.5 * (y - operator(v)).pow(2).sum(), v)
        return x0 - grad / rho

    def run(self, y, operator, prior, gens, sigma: float, callback=None) -> Result:
        start = timer()
        b = y.shape[0]
        shape = (b, *prior.shape)
        steps, lam, zeta = self.settings(operator)
        try:
            dec = operator.svd(shape)
        except NotDecomposable:
            dec = None
        big_t = prior.num_timesteps
        table = prior.alphas_cumprod.detach().double().cpu()
        reduced = ((1 - table) / table).sqrt()  # σ̄_t, the noise level on [-1, 1] of x_t/√ᾱ_t
        sigma_n = max(0.001, float(sigma) / 2)
        seq = timestep_sequence(big_t, steps, self.skip_type)
        ts = [big_t - 1 - j for j in seq]
        t_start = self.start_timestep(big_t)
        ts = [t for t in ts if t <= t_start]
        if len(ts) < 2:
            raise ValueError(f"warm_start {self.warm_start} leaves fewer than 2 of the {steps} iterations")
        a_start = float(table[t_start])
        with torch.no_grad():
            guess = operator.initial_guess(y).to(torch.float32)
            noise = randn_like_batch(shape, gens, y.device)
            if isinstance(operator, SuperResolution):  # main_ddpir_sisr.py L243-254
                x = math.sqrt(a_start) * guess + math.sqrt(1 - a_start) * noise
            else:  # main_ddpir_deblur.py L228-231, main_ddpir_inpainting.py L190-193
                t_y = int(torch.argmin((reduced - float(sigma)).abs()))
                a_y = float(table[t_y])
                eff = math.sqrt(a_start / a_y)
                x = eff * guess + math.sqrt(max((1 - a_start) - eff ** 2 * (1 - a_y), 0.0)) * noise
        abar, reduced_host = table.tolist(), reduced.tolist()  # Python numbers: no tensor read per step
        for i, t in enumerate(tqdm(ts[:-1], desc=self.name, disable=not self.show_progress, leave=False)):
            t_next = ts[i + 1]
            a, a_next = abar[t], abar[t_next]
            beta = 1 - a / (abar[t - 1] if t > 0 else 1.0)
            rho = lam * sigma_n ** 2 / reduced_host[t] ** 2
            with torch.no_grad(), autocast_context(self.autocast, y.device):
                eps_net = prior.eps(x, int(t)).to(x.dtype)
            with torch.no_grad():
                x0 = ((x - math.sqrt(1 - a) * eps_net) / math.sqrt(a)).clamp(-1, 1)
                x0 = x0 + self.guidance_scale * (self.data_step(dec, operator, y, x0, rho) - x0)
                eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
                eta_sigma = self.eta * math.sqrt(1 - a_next) / math.sqrt(1 - a) * math.sqrt(beta)
                z1 = randn_like_batch(shape, gens, y.device)
                z2 = randn_like_batch(shape, gens, y.device)
                x = math.sqrt(a_next) * x0 + math.sqrt(1 - zeta) * (
                    math.sqrt(max(1 - a_next - eta_sigma ** 2, 0.0)) * eps + eta_sigma * z1) \
                    + math.sqrt(zeta) * math.sqrt(1 - a_next) * z2
            if callback is not None:
                callback(i, {"x": x0.detach(), "t": t, "x_next": x.detach()})
        with torch.no_grad():
            final = x.clamp(-1, 1)
            res = residual_ratio(y, operator(final), sigma).cpu()
        seconds = timer() - start
        nfe = len(ts) - 1
        info = [{"nfe": nfe, "iterations": nfe, "stop_reason": "budget", "residual": float(res[i]), "seconds": seconds,
                 "settings": f"lam {lam:g}, zeta {zeta:g}, {steps} steps",
                 "data_step": "exact (SVD)" if dec is not None else f"conjugate gradients ({self.prox_iters})"}
                for i in range(b)]
        return Result(x=final, info=info)
