"""FlowDPS (Kim, Kim, Chung & Ye, "FlowDPS: flow-driven posterior sampling for inverse problems",
ICCV 2025), as FlowDPS-Inverse/FlowDPS @ 8361843 implements it (``sd3_sampler.py`` ``SD3FlowDPS``,
``solve.py``)."""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..notices import shown
from ..operators import SuperResolution
from ..operators.base import operator_label
from .base import Result, Solver, autocast_context, prior_parts, randn_like_batch, residual_ratio, timer
from .linalg import gram_inverse, gram_norm, jacobian_map

LOSS_SPACES = ("auto", "pinv", "adjoint", "measurement")


def flowdps_sigmas(steps: int, shift: float = 4.0, train_shift: float = 3.0, train_steps: int = 1000) -> np.ndarray:
    """The σ grid of ``SD3FlowDPS.sample`` (sd3_sampler.py L298-301, L316) under the pinned
    diffusers 0.30.1: ``FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)`` (SD3's
    scheduler config) gives σ_max = 1 and σ_min = shift₃(1/1000); ``config.shift = 4.0`` then
    ``set_timesteps(steps)`` maps ``linspace(σ_max, σ_min, steps)`` by ``4σ/(1 + 3σ)``; a final
    σ = 0 is appended (L316).  (From diffusers 0.31 on, ``set_timesteps`` reads ``scheduler.shift``,
    not ``config.shift``: the reference's override then silently has no effect; ipsolve follows
    the pinned version.)  Returns ``steps + 1`` values, 1 → 0."""
    def shifted(s, k):
        return k * s / (1 + (k - 1) * s)

    sigma_min = shifted(1.0 / train_steps, train_shift)
    base = np.linspace(1.0 * train_steps, sigma_min * train_steps, steps) / train_steps
    return np.concatenate([shifted(base, shift), [0.0]])


class FlowDPS(Solver):
    """Flow-driven posterior sampling.  On the σ grid of :func:`flowdps_sigmas` (σ = 1 − t in
    ipsolve's convention, t = 0 noise, t = 1 data; the network's SD3 output is noise − data), per
    step (sd3_sampler.py L305-329), from ``v = velocity(x, t)``:

    * x̂1 = x + (1 − t) v (``z0t``: the data estimate) and ε̂ = x − t v (``z1t``: the noise estimate);
    * data consistency (``data_consistency``, L248-260): ``dc_steps`` (3) gradient steps
      ``x̂1 ← x̂1 − step_size ∇ ℓ(x̂1)`` with ``ℓ`` the *unsquared* norm of the residual in the
      reference's space: ``‖A⁺(y − A(x̂1))‖`` for super-resolution, ``‖Aᵀ(y − A(x̂1))‖`` otherwise
      (``loss_space="auto"``; ``"measurement"``: ‖y − A(x̂1)‖, the only choice for nonlinear
      operators, which ``auto`` then takes); latent priors differentiate through the decoder;
    * x̂1_y = (1 − σ) x̂1 + σ x̂1_dc;  the next state ``x = (1 − σ') x̂1_y + σ' n`` with
      ``n = √σ' ε̂ + √(1 − σ') ξ``, ξ fresh noise.

    One network evaluation per step (two with the prior's classifier-free guidance: ``solve.py``
    runs SD3 with ``cfg_scale`` 2 and a prompt, in ipsolve ``prior.guidance_scale=2`` with
    ``prior.prompt``: equal prompts are refused, their guidance being the unguided result).  Defaults: ``solve.py``
    (28 steps, ``step_size`` 15, σ = 0.03 there), shift 4.  Differences from the code: the gradient
    is not rounded to fp16 (``.half()``, L257: the reference runs SD3 in fp16); ``A⁺`` enters
    through ``(JJᵀ)⁻¹``, exact through the operator's SVD (super-resolution) or by CG to 1e-10
    (:func:`~.linalg.gram_inverse`) — the gradient of ``‖J⁺r‖``
    is ``−Jᵀ(JJᵀ)⁻¹r / ‖J⁺r‖``; the norm is per image (the reference takes it over the batch tensor
    and runs B = 1).  In the adjoint space the gradient, which scales with L = ‖JᵀJ‖, is divided
    by L (``lipschitz=True``, power iteration): the reference's adjoint-space operators (Gaussian
    and motion blur, inpainting) have L = 1, so this changes nothing there and keeps the step size's
    meaning on ipsolve's CT (L ≈ 0.12) and MRI (0.25); ``lipschitz=False``: as is.  (The pinv
    space is scale-free.)  The result is clamped to [−1, 1]."""

    name = "flowdps"
    accepts = ("flow", "latent-flow")
    search_space = {"step_size": (0.1, 100.0)}  # reference: 15 (solve.py) / 30 (sample's default)

    def __init__(self, steps: int = 28, step_size: float = 15.0, dc_steps: int = 3, shift: float = 4.0,
                 train_shift: float = 3.0, loss_space: str = "auto", cg_iters: int = 100, lipschitz: bool = True,
                 power_iters: int = 20, **kw):
        super().__init__(**kw)
        if steps < 1 or dc_steps < 0:
            raise ValueError(f"need steps >= 1 and dc_steps >= 0, got {steps}, {dc_steps}")
        if loss_space not in LOSS_SPACES:
            raise ValueError(f"loss_space must be one of {', '.join(LOSS_SPACES)}, got {shown(loss_space)}")
        if shift <= 0 or train_shift <= 0:
            raise ValueError(f"shift and train_shift must be > 0, got {shift}, {train_shift}")
        if self.warm_start is not None:
            raise ValueError("flowdps has no warm start (it starts from noise at σ = 1, as the reference)")
        self.steps, self.step_size, self.dc_steps, self.shift, self.train_shift = steps, step_size, dc_steps, shift, train_shift
        self.loss_space, self.cg_iters, self.lipschitz, self.power_iters = loss_space, cg_iters, lipschitz, power_iters

    def space(self, operator) -> str:
        if self.loss_space != "auto":
            if self.loss_space != "measurement" and not getattr(operator, "is_linear", False):
                raise ValueError(f"loss_space={self.loss_space!r} needs a linear operator; {operator_label(operator)} "
                                 f"is not (use loss_space=measurement or auto)")
            return self.loss_space
        if not getattr(operator, "is_linear", False):
            return "measurement"
        return "pinv" if isinstance(operator, SuperResolution) else "adjoint"

    def data_gradient(self, x0, y, operator, decode, space: str, scale=None, gram=None) -> torch.Tensor:
        """∇ of the unsquared residual norm in ``space`` w.r.t. ``x0`` (the latent for latent priors):
        with ``r = y − A(x)`` and a fixed metric M (I, JJᵀ or (JJᵀ)⁻¹), ∇‖r‖_M = −Jᵀ M r / ‖r‖_M,
        taken by autograd on the surrogate ⟨r, (M r)⟩ / ‖r‖_M with M r and the norm held fixed.
        ``gram``: ``r ↦ (JJᵀ)⁻¹ r`` (:func:`~.linalg.gram_inverse`, built once per run)."""
        with torch.enable_grad():
            v = x0.detach().requires_grad_()
            image = decode(v)
            r = y - operator(image)
            if space == "measurement":
                loss = r.flatten(1).norm(dim=1).sum()
            else:
                with torch.no_grad():
                    rd = r.detach()
                    if space == "pinv":  # M r = (JJᵀ)⁻¹ r, so ⟨r, M r⟩ = ‖J⁺r‖²
                        gram = gram or gram_inverse(operator, image.shape, self.cg_iters)
                        mr = gram(rd)
                    else:  # adjoint: M r = J Jᵀ r
                        jv, jt, _ = jacobian_map(operator, image.shape, rd)
                        mr = jv(jt(rd))
                    norm = (rd * mr).flatten(1).sum(1).clamp_min(0).sqrt().clamp_min(1e-30)
                if scale is not None:
                    norm = norm / scale  # ∇ / L
                loss = ((r * mr).flatten(1).sum(1) / norm).sum()
            (grad,) = torch.autograd.grad(loss, v)
        return grad

    def run(self, y, operator, prior, gens, sigma: float, callback=None) -> Result:
        start = timer()
        latent, inner, decode = prior_parts(prior)
        b = y.shape[0]
        shape = (b, *inner.shape)
        space = self.space(operator)
        scale = None
        if space == "adjoint" and self.lipschitz:
            scale = 1 / gram_norm(operator, (b, *prior.shape), y, self.power_iters)
        gram = gram_inverse(operator, (b, *prior.shape), self.cg_iters) if space == "pinv" else None
        sigmas = flowdps_sigmas(self.steps, self.shift, self.train_shift)
        x = randn_like_batch(shape, gens, y.device).to(y.dtype)  # initialize_latent (L106-114)
        for i in tqdm(range(self.steps), desc=self.name, disable=not self.show_progress, leave=False):
            s, s_next = float(sigmas[i]), float(sigmas[i + 1])
            t = 1.0 - s
            with torch.no_grad(), autocast_context(self.autocast, y.device):
                v = inner.velocity(x, t).to(x.dtype)
            x1 = inner.x1_from_velocity(x, t, v)  # z0t = z − σ·v_sd3
            eps = x - t * v  # z1t = z + (1 − σ)·v_sd3
            x1_dc = x1
            for _ in range(self.dc_steps):
                x1_dc = x1_dc - self.step_size * self.data_gradient(x1_dc, y, operator, decode, space, scale, gram)
            x1_y = (1 - s) * x1 + s * x1_dc
            noise = s_next ** 0.5 * eps + (1 - s_next) ** 0.5 * randn_like_batch(shape, gens, y.device).to(x.dtype)
            x = x1_y + s_next * (noise - x1_y)  # z0y + (σ − δ)(noise − z0y), σ − δ = σ'
            if callback is not None:
                callback(i, {"x": decode(x1_y).detach() if latent else x1_y, "t": t})
        with torch.no_grad():
            image = decode(x).clamp(-1, 1)
            res = residual_ratio(y, operator(image), sigma).cpu()
        seconds = timer() - start
        info = [{"nfe": self.steps, "iterations": self.steps, "stop_reason": "budget", "residual": float(res[i]),
                 "seconds": seconds, "loss_space": space,
                 "lipschitz_constant": None if scale is None else float(1 / scale[i])} for i in range(b)]
        return Result(x=image, info=info)
