"""ReSample (Song et al., ICLR 2024): latent diffusion with hard data consistency and
stochastic resampling."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..priors import LatentPrior
from .base import Result, Solver, autocast_context, discrepancy_tau, randn_like_batch, residual_ratio, timer


def fit_measurement(init, forward, y, lr: float, max_iters: int, target: torch.Tensor) -> torch.Tensor:
    """AdamW on ``‖y − forward(v)‖²`` per image from ``init``, each image stopping once its
    squared residual is below ``target`` (τ²σ²m, the noise level) or after ``max_iters``."""
    v = init.detach().clone().requires_grad_()
    opt = torch.optim.AdamW([v], lr=lr)
    active = torch.ones(v.shape[0], dtype=torch.bool, device=v.device)
    for _ in range(max_iters):
        err = (y - forward(v)).pow(2).flatten(1).sum(1)
        active &= (err.detach() > target) & torch.isfinite(err.detach())
        if not active.any():
            break
        opt.zero_grad(set_to_none=True)
        err[active].sum().backward()
        saved = v.detach()[~active].clone()
        opt.step()
        with torch.no_grad():
            v[~active] = saved
    return v.detach()


class ReSample(Solver):
    """DDIM (``steps`` = 500, η = 0) on latents with a latent DPS step every step
    (``z ← z − 0.5·ᾱ_t ∇_z ‖y − A(D(ẑ0))‖``); every ``hdc_every``-th step outside the first
    third, *hard data consistency*: predict ẑ0 with ``pred_steps`` unconditional DDIM steps,
    fit it to ``y`` — in pixel space in the middle third (AdamW lr 1e-2, ≤ 2000 iterations,
    then re-encode), in latent space in the last third (AdamW lr 5e-3, ≤ 500 iterations) —
    then *stochastic resampling* back to the current time:
    ``z ~ N((γ√ᾱ ẑ0 + (1−ᾱ) z')/(γ + 1 − ᾱ), 1/(1/γ + 1/(1−ᾱ)))``,
    ``γ = 40 (1−ᾱ_prev)/(1−ᾱ_t) (1 − ᾱ_t/ᾱ_prev)``.  A pixel diffusion prior runs with an
    identity autoencoder."""

    name = "resample"
    accepts = ("latent-diffusion", "diffusion")

    def __init__(self, steps: int = 500, hdc_every: int = 10, pred_steps: int = 3, pixel_lr: float = 1e-2,
                 pixel_iters: int = 2000, latent_lr: float = 5e-3, latent_iters: int = 500, gamma_scale: float = 40.0,
                 dps_scale: float = 0.5, **kw):
        super().__init__(**kw)
        if steps < 3:
            raise ValueError(f"steps must be >= 3, got {steps}")
        self.steps, self.hdc_every, self.pred_steps = steps, hdc_every, pred_steps
        self.pixel_lr, self.pixel_iters, self.latent_lr, self.latent_iters = pixel_lr, pixel_iters, latent_lr, latent_iters
        self.gamma_scale, self.dps_scale = gamma_scale, dps_scale

    def run(self, y, operator, prior, gens, sigma: float, callback=None) -> Result:
        start = timer()
        latent = isinstance(prior, LatentPrior)
        inner = prior.inner if latent else prior
        encode = prior.encode if latent else (lambda v: v)
        decode = prior.decode if latent else (lambda v: v)
        b = y.shape[0]
        t_start = inner.num_timesteps - 1 if self.warm_start is None else round(self.warm_start * (inner.num_timesteps - 1))
        ts = inner.timesteps(self.steps, start=t_start)
        shape = (b, inner.channels, inner.image_size, inner.image_size)
        z = randn_like_batch(shape, gens, y.device)
        if self.warm_start is not None:
            with torch.no_grad():
                z = inner.add_noise(encode(operator.initial_guess(y)), t_start, z)
        m = y[0].numel()  # fits stop at the noise level: ‖y − A(x)‖ ≤ τσ√m, τ from the χ²_m 95 % quantile
        target = torch.full((b,), (discrepancy_tau(m) * sigma) ** 2 * m, device=y.device)
        nfe = 0
        n = len(ts)
        for i, t in enumerate(tqdm(ts, desc=self.name, disable=not self.progress, leave=False)):
            t_next = ts[i + 1] if i + 1 < n else -1
            z = z.detach().requires_grad_()
            with autocast_context(self.autocast, y.device):
                eps = inner.eps(z, torch.full((b,), t, device=y.device)).float()
            nfe += 1
            z0 = inner.x0_from_eps(z, t, eps)
            norm = (y - operator(decode(z0).clamp(-1, 1))).flatten(1).norm(dim=1)
            (grad,) = torch.autograd.grad(norm.sum(), z)
            with torch.no_grad():
                a_t = inner.alpha_bar(t, z)
                z_next = inner.ddim_step(z, t, t_next, eps) - self.dps_scale * a_t * grad
            if t_next >= 0 and i % self.hdc_every == 0 and i >= n // 3:
                with torch.no_grad():  # ẑ0: a few unconditional DDIM steps from t_next
                    sub = inner.timesteps(self.pred_steps, start=t_next)
                    zz = z_next
                    for s, s_next in zip(sub, sub[1:] + [-1]):
                        zz = inner.ddim_step(zz, s, s_next, inner.eps(zz, torch.full((b,), s, device=y.device)))
                        nfe += 1
                with torch.enable_grad():
                    if i < 2 * n // 3:  # middle third: pixel space, then re-encode
                        x_fit = fit_measurement(decode(zz).clamp(-1, 1), operator, y, self.pixel_lr, self.pixel_iters, target)
                        with torch.no_grad():
                            z0_hat = encode(x_fit)
                    else:  # last third: latent space, through the decoder
                        z0_hat = fit_measurement(zz, lambda v: operator(decode(v)), y, self.latent_lr, self.latent_iters,
                                                 target)
                with torch.no_grad():
                    a_prev, a_cur = inner.alpha_bar(t_next, z), a_t
                    gamma = self.gamma_scale * (1 - a_prev) / (1 - a_cur) * (1 - a_cur / a_prev)
                    mean = (gamma * a_prev.sqrt() * z0_hat + (1 - a_prev) * z_next) / (gamma + 1 - a_prev)
                    var = 1 / (1 / gamma + 1 / (1 - a_prev))
                    z_next = mean + var.sqrt() * randn_like_batch(shape, gens, y.device)
            z = z_next
            if callback is not None:
                callback(i, {"x": decode(z0.detach()).clamp(-1, 1), "loss": norm.detach() ** 2 / y[0].numel()})
        with torch.no_grad():
            x = decode(z).clamp(-1, 1)
            res = residual_ratio(y, operator(x), sigma).cpu()
            finite = torch.isfinite(x).flatten(1).all(1)
        seconds = timer() - start
        info = [{"nfe": nfe, "iterations": n, "stop_reason": "budget" if finite[i] else "nan",
                 "residual": float(res[i]), "seconds": seconds} for i in range(b)]
        return Result(x=x, info=info)
