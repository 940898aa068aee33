"""DPS: diffusion posterior sampling (Chung et al., ICLR 2023)."""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from ..notices import shown
from ..operators import BlindBlur
from ..operators.base import operator_label
from .base import (Result, Solver, autocast_context, check_steps, prior_parts, randn_like_batch, residual_ratio,
                   timer)
from .plug import kernel_logits_init
from ..tensors import per_image


def project_simplex(k: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of ``(B, n)`` onto the probability simplex
    (Duchi et al., ICML 2008)."""
    u, _ = torch.sort(k, dim=1, descending=True)
    css = u.cumsum(1) - 1
    idx = torch.arange(1, k.shape[1] + 1, device=k.device, dtype=k.dtype)
    rho = ((u - css / idx) > 0).to(k.dtype).mul(idx).argmax(1, keepdim=True)
    theta = css.gather(1, rho) / (rho + 1).to(k.dtype)
    return (k - theta).clamp_min(0)


def kernel_from_state(k: torch.Tensor) -> torch.Tensor:
    """BlindDPS's kernel from a kernel-prior state in [-1, 1]: ``(k + 1)/2`` normalised to sum 1 per
    image (gaussian_diffusion.py L441-444), ``(B, 1, K, K)`` → ``(B, K, K)``."""
    k = (k[:, 0] + 1) / 2
    return k / k.sum((-2, -1), keepdim=True).clamp_min(1e-12)


TASK_ZETA = {"inpainting_random": 0.5, "inpainting_box": 0.5, "ct": 1.0, "mri": 0.6}  # 0.3 for the other tasks


def default_zeta(operator) -> float:
    """ζ for 1000 steps when none is given (see :class:`DPS`), per ``operator.task``."""
    task = getattr(operator, "task", None)
    if task == "phase_retrieval":
        # DPS's 1.0 belongs to its signed operator; on (x+1)/2, 5.0 gives DPS's median step (fidelity.md §1)
        return 1.0 if getattr(operator, "signed", True) else 5.0
    return TASK_ZETA.get(task, 0.3)


class DPS(Solver):
    """DDPM ancestral sampling with a measurement gradient step (Algorithm 1 of the paper):
    ``x̂0 = clamp(x0(x_t))``, ``x'_{t−1} ~ q(x_{t−1} | x_t, x̂0)``,
    ``x_{t−1} = x'_{t−1} − ζ ∇_{x_t} ‖y − A(x̂0)‖₂`` (unsquared norm).  One network forward and
    one backward per step.  ``steps`` < 1000 uses respaced DDPM.  ``zeta`` defaults per operator
    (:func:`default_zeta`, for 1000 steps): the reference configs — 0.5 inpainting, 1.0 phase retrieval
    on DPS's operator (``signed``; on ipsolve's (x+1)/2 operator 5.0, which gives DPS's median step), 0.3
    otherwise — and, where the paper has none, values set from a sweep (held-out phantoms, σ = 0.01, 250 steps
    rescaled; ground-truth PSNR, so an oracle for those images): MRI 0.6, the best of 4× 1.2 / 2.4 / 4.8 →
    +3.5 / +4.8 / +2.5 dB over zero-filled; CT 1.0 (ζ·4 = 4), between the two best of 16 views ζ·4 = 1.2 / 3 /
    6 / 12 → −3.9 / +1.2 / +4.5 / +2.8 dB over FBP, not the best (6, ζ 1.5) — ``calibrate=true`` chooses ζ from
    the measurement instead (1.69 on the calibration study's CT images, +1.31 dB: docs/calibration.md).  ``rescale_zeta``:
    multiply ζ by 1000/``steps`` (ipsolve's option): ζ is a step size per DDPM step, so with k×
    fewer steps the same total guidance needs k× larger steps.  Latent priors: the same on latents
    with ``A(D(ẑ0))``.

    Blind deblurring, ``kernel_prior`` given — BlindDPS (Chung et al., CVPR 2023; BlindDPS/blind-dps
    ``guided_diffusion/gaussian_diffusion.py`` L410-466, ``blind_condition_methods.py``): the
    kernel is a second diffusion state ``k_t`` under its own prior (a 1-channel pixel diffusion
    prior whose image size is the kernel size, e.g. ``bundled:kernel-ddpm``), reverse-diffused
    jointly with the image; its x̂0 is clipped and mapped to a kernel ``K = (k̂0 + 1)/2``
    normalised to sum 1; the loss is ``‖y − A(x̂0; K)‖ + kernel_reg·‖K‖_ord`` (run_deblur.sh:
    ord 1, weight 1.0 — for a normalised non-negative kernel ‖K‖₁ = 1, so that term has no
    gradient, as in the reference) and both states step by ``−scale·∇`` with
    ``scale = √ᾱ_t`` (the reference's "gradually increasing scale", which replaces ζ; times
    1000/``steps`` with ``rescale_zeta``; times ``blind_step``, 1 in the reference — the factor
    calibration searches).  ``blind_scale="zeta"`` uses ζ instead (ipsolve's
    option).  Without ``kernel_prior`` (ipsolve's own blind DPS, from no paper): the kernel takes
    simplex-projected gradient steps (lr ``kernel_lr``) from a centred bump.

    ``variance``: the std of the image's ancestral step.  ``"learned"`` (default, the reference's
    ``model_var_type: learned_range``, ``configs/diffusion_config.yaml`` L5): when the network
    outputs learned sigma (2C channels, e.g. ADM checkpoints such as ffhq_10m.pt), the
    learned-range std of :meth:`DiffusionPrior.ddpm_posterior`, from the same network call as ε;
    networks without learned sigma fall back to fixed.  ``"fixed"``: the posterior std √β̃
    (ipsolve's earlier behaviour)."""

    name = "dps"
    accepts = ("diffusion", "latent-diffusion")
    blind_capable = True
    search_space = {"zeta": (0.05, 5.0)}  # the papers' 0.3 / 0.5 / 1.0 (per 1000 steps; ×1000/steps with rescale_zeta)
    weakest_within_one_se = ("zeta",)  # a tie at σ 0.05 on SR ×4 (ζ 0.86 / 1.69) cost 0.83 dB (docs/calibration.md)
    accepts_penalty = True  # z-coupling: ‖y − A(x̂0)‖ becomes √(‖y − A(x̂0)‖² + penalty(x̂0))

    def uses_initial_guess(self) -> bool:
        return self.warm_start is not None  # (where warm_start draws x_t around it)

    def __init__(self, steps: int = 1000, zeta: float | None = None, rescale_zeta: bool = False,
                 kernel_lr: float = 1e-3, kernel_size: int | None = None, kernel_prior=None,
                 kernel_reg: float = 1.0, kernel_reg_ord: int = 1, blind_scale: str = "sqrt_alpha_bar",
                 blind_step: float = 1.0, variance: str = "learned", **kw):
        super().__init__(**kw)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if variance not in ("learned", "fixed"):
            raise ValueError(f"variance must be 'learned' (learned range when the network has it) or 'fixed', got {shown(variance)}")
        self.variance = variance
        if blind_scale not in ("sqrt_alpha_bar", "zeta"):
            raise ValueError(f"blind_scale must be 'sqrt_alpha_bar' (BlindDPS) or 'zeta', got {shown(blind_scale)}")
        self.steps, self.zeta, self.rescale_zeta, self.kernel_lr, self.kernel_size = \
            steps, zeta, rescale_zeta, kernel_lr, kernel_size
        self.kernel_prior, self.kernel_reg, self.kernel_reg_ord, self.blind_scale = \
            kernel_prior, kernel_reg, kernel_reg_ord, blind_scale
        if not blind_step > 0:
            raise ValueError(f"blind_step must be > 0 (a factor on BlindDPS's step), got {shown(blind_step)}")
        self.blind_step = blind_step
        self._kernel_prior = None

    def kernel_prior_for(self, operator, device):
        """The kernel diffusion prior (loaded once), checked against the kernel size to estimate."""
        from ..priors import DiffusionPrior, Prior, load_prior

        if self._kernel_prior is None:
            spec = self.kernel_prior
            if isinstance(spec, Prior):
                kp = spec
            else:  # a source, or {source: ..., **load_prior options} (e.g. an ADM kernel model's config)
                spec = dict(spec) if hasattr(spec, "keys") else {"source": spec}
                source = str(spec.pop("source"))
                try:
                    kp = load_prior(source, **spec)
                except FileNotFoundError:  # (the ADM loader's hint named DPS's image model, ffhq_10m.pt)
                    raise ValueError(f"kernel_prior: no file at {source!r}; BlindDPS's kernel model is "
                                     f"models/kernel_checkpoint.pt of BlindDPS/blind-dps (its README's download), or "
                                     f"use bundled:kernel-ddpm (8-px kernels, for 32-px images)") from None
            if not isinstance(kp, DiffusionPrior) or kp.channels != 1:
                raise ValueError(f"kernel_prior must be a 1-channel pixel diffusion prior (e.g. bundled:kernel-ddpm), "
                                 f"got a {kp.kind} prior of shape {kp.shape}")
            self._kernel_prior = kp
        kp = self._kernel_prior.to(device)
        size = self.kernel_size or operator.kernel_size
        if size != kp.image_size:
            raise ValueError(f"the kernel prior makes {kp.image_size}×{kp.image_size} kernels but {size}×{size} kernels are "
                             f"to be estimated; set operator.kernel_size={kp.image_size} (or solver.kernel_size)")
        return kp

    def params(self) -> dict:
        out = super().params()
        if not isinstance(out.get("kernel_prior"), (str, dict, type(None))):
            out["kernel_prior"] = getattr(self.kernel_prior, "source", type(self.kernel_prior).__name__)
        return out

    def default_value(self, name: str, operator, prior=None):
        """What a parameter left as None means on ``operator`` (``zeta``: :func:`default_zeta`)."""
        return default_zeta(operator) if name == "zeta" else None

    def residual_hint(self) -> str:
        """ζ is the papers' per-1000-step value: at fewer steps without ``rescale_zeta`` the guidance
        sums to steps/1000 of theirs (20 steps: 10–14 dB against initial guesses of 18–24, audit s22)."""
        if self.steps >= 1000 or self.rescale_zeta:
            return ""
        return (f"DPS at {self.steps} steps with ζ per 1000 steps guides {1000 / self.steps:.0f}× weaker than the paper: "
                f"rescale_zeta=True scales ζ by 1000/steps (as the dps_cpu preset)")

    def step_size(self, operator, steps: int | None = None) -> float:
        """ζ, per 1000 steps of the ``steps`` run (default ``self.steps``) with ``rescale_zeta``."""
        zeta = float(self.zeta) if self.zeta is not None else default_zeta(operator)
        return zeta * 1000 / (steps or self.steps) if self.rescale_zeta else zeta

    def run(self, y, operator, prior, gens, sigma: float, callback=None) -> Result:
        start = timer()
        latent, inner, decode = prior_parts(prior)
        check_steps(self.steps, inner.num_timesteps)
        b = y.shape[0]
        t_start = self.start_timestep(inner.num_timesteps)
        # warm_start leaves t_start + 1 timesteps: at most one step each; ζ (and BlindDPS's √ᾱ scale) rescaled by
        # the steps run
        ts = inner.timesteps(min(self.steps, t_start + 1), start=t_start)
        zeta = self.step_size(operator, len(ts))
        shape = (b, inner.channels, inner.image_size, inner.image_size)
        x = randn_like_batch(shape, gens, y.device)
        if self.warm_start is not None:
            with torch.no_grad():
                init = self.start_image(operator, y)
                x = inner.add_noise(prior.encode(init) if latent else init, t_start, x)
        blind = isinstance(operator, BlindBlur)
        kprior = self.kernel_prior_for(operator, y.device) if blind and self.kernel_prior is not None else None
        kernel = kx = None
        if kprior is not None:  # BlindDPS: the kernel's own diffusion state, x_start = randn
            kshape = (b, 1, kprior.image_size, kprior.image_size)
            kx = randn_like_batch(kshape, gens, y.device)
        elif blind:
            size = self.kernel_size or operator.kernel_size
            kernel = torch.softmax(kernel_logits_init(b, size, y.device).flatten(1), 1).view(b, size, size)
        last_image = None
        for i, t in enumerate(tqdm(ts, desc=self.name, disable=not self.show_progress, leave=False)):
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            x = x.detach().requires_grad_()
            with autocast_context(self.autocast, y.device):
                eps, var_out = inner.eps_and_variance(x, int(t))
                eps = eps.float()
            var_out = var_out.detach().float() if var_out is not None and self.variance == "learned" else None
            x0 = inner.x0_from_eps(x, t, eps)
            if not latent:
                x0 = x0.clamp(-1, 1)  # DPS's clip_denoised
            image = decode(x0).clamp(-1, 1) if latent else x0
            if kprior is not None:
                kx = kx.detach().requires_grad_()
                k0 = kprior.x0(kx, int(t)).clamp(-1, 1)
                kernel = kernel_from_state(k0)
            elif blind:
                kernel = kernel.detach().requires_grad_()
            ax = operator(image, kernel=kernel) if blind else operator(image)
            norm = (y - ax).flatten(1).norm(dim=1)
            if self._penalty is not None:  # ipsolve.solvers.coupling: the augmented residual's norm
                norm = torch.sqrt(norm.pow(2) + self._penalty(image))
            if kprior is not None and self.kernel_reg:
                norm = norm + self.kernel_reg * torch.linalg.vector_norm(kernel.flatten(1), ord=self.kernel_reg_ord, dim=1)
            wrt = [x] + ([kx] if kprior is not None else [kernel] if blind else [])
            grads = torch.autograd.grad(norm.sum(), wrt)
            with torch.no_grad():
                if t_prev >= 0:
                    mean, std = inner.ddpm_posterior(x, t, x0, t_prev, variance_output=var_out)
                    x_prev = mean + std * randn_like_batch(shape, gens, y.device)
                else:
                    x_prev = x0
                if kprior is not None:
                    scale = self.blind_step * (zeta if self.blind_scale == "zeta" else
                                               math.sqrt(inner.alpha_bar_value(t)) * (1000 / len(ts) if self.rescale_zeta else 1))
                    x = x_prev - scale * grads[0]
                    if t_prev >= 0:
                        kmean, kstd = kprior.ddpm_posterior(kx, t, k0, t_prev)
                        kx = kmean + kstd * randn_like_batch(kshape, gens, y.device) - scale * grads[1]
                    else:
                        kx = k0 - scale * grads[1]
                    kernel = kernel_from_state(kx.clamp(-1, 1))
                else:
                    x = x_prev - zeta * grads[0]
                if blind and kprior is None:
                    kernel = project_simplex((kernel - self.kernel_lr * grads[1]).flatten(1)).view_as(kernel)
                finite = torch.isfinite(x).flatten(1).all(1)
                last_image = image.detach() if last_image is None else \
                    torch.where(per_image(finite, image), image.detach(), last_image)
            if callback is not None:
                callback(i, {"x": image.detach(), "loss": norm.detach() ** 2 / y[0].numel()})
        with torch.no_grad():
            final = (decode(x) if latent else x).clamp(-1, 1)
            finite = torch.isfinite(final).flatten(1).all(1)
            final = torch.where(per_image(finite, final), final, last_image.clamp(-1, 1))
            finite = finite.cpu()
            k_out = kernel.detach() if blind else None
            res = residual_ratio(y, operator(final, kernel=k_out) if blind else operator(final), sigma).cpu()
        seconds = timer() - start
        info = [{"nfe": len(ts), "iterations": len(ts), "stop_reason": "budget" if finite[i] else "nan",
                 "residual": float(res[i]), "seconds": seconds} for i in range(b)]
        return Result(x=final, info=info, kernel=k_out)


class BlindDPS(DPS):
    """BlindDPS (Chung et al., CVPR 2023): :class:`DPS` on ``blind_blur`` with a kernel diffusion
    prior, which is required — image and kernel reverse-diffused jointly, kernel x̂0 mapped
    ``(k̂0 + 1)/2`` and normalised, ``kernel_reg``·‖K‖₁, step scale √ᾱ_t (see :class:`DPS`).
    ``kernel_prior``: ``bundled:kernel-ddpm`` (8-px motion kernels, for 32-px images) or BlindDPS's
    ``kernel_checkpoint.pt`` as ``{source: PATH, grayscale: true, image_size: 64, ...}``
    (``conf/solver/blind_dps.yaml``)."""

    name = "blind_dps"
    search_space = {"blind_step": (0.1, 10.0)}  # a factor on the reference's √ᾱ_t step (1.0)

    @classmethod
    def takes(cls, operator, prior) -> bool:
        """Whether it takes ``operator`` with ``prior`` without its kernel prior (a bare instance needs one)."""
        from .base import prior_key

        return isinstance(operator, BlindBlur) and prior_key(prior) in cls.accepts

    def __init__(self, kernel_prior=None, steps: int = 1000, **kw):
        if kernel_prior is None:
            raise ValueError("blind_dps needs a kernel_prior: bundled:kernel-ddpm (8-px kernels) or BlindDPS's "
                             "kernel_checkpoint.pt with its ADM config (conf/solver/blind_dps.yaml)")
        super().__init__(steps=steps, kernel_prior=kernel_prior, **kw)

    def check(self, operator, prior) -> None:
        super().check(operator, prior)
        if not isinstance(operator, BlindBlur):
            raise ValueError(f"blind_dps estimates a blur kernel and takes only blind_blur, not {operator_label(operator)}; "
                             f"use dps for other operators")
        self.kernel_prior_for(operator, "cpu")  # loaded (once) before any work: a missing file is said up front
