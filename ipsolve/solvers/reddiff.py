"""RED-diff (Mardani, Song, Kautz & Vahdat, "A variational perspective on solving inverse problems
with diffusion models", ICLR 2024), as NVlabs/RED-diff @ 66482f2 implements it (``algos/reddiff.py``,
``_configs/algo/reddiff.yaml``)."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..notices import shown
from ..operators.decomposition import NotDecomposable
from .base import Result, Solver, autocast_context, check_steps, prior_parts, randn_like_batch, residual_ratio, timer
from .linalg import pseudo_inverse
from .svd_common import skip_grid

# denoiser weightings of the reference (reddiff.py L92-105), applied to snr_inv = √(1−ᾱ_t)/√ᾱ_t
WEIGHTINGS = {
    "linear": lambda s: s,
    "sqrt": lambda s: s ** 0.5,
    "square": lambda s: s ** 2,
    "log": lambda s: torch.log(torch.as_tensor(s + 1.0)).item(),
    "trunc_linear": lambda s: min(s, 1.0),
    "power2over3": lambda s: s ** (2 / 3),
    "const": lambda s: 1.0,
}


class REDDiff(Solver):
    """Variational optimisation of the image ``μ`` by Adam (lr ``lr``, betas (0.9, 0.99)), one step
    per timestep of a descending schedule.  Per step (``reddiff.py`` L55-116), with fresh noises
    ``ε₀``, ``ε``: ``x̂0 = μ + σ_x0 ε₀``, ``x_t = √ᾱ_t x̂0 + √(1−ᾱ_t) ε``,
    ``ε̂ = ε_θ(x_t, t)`` (no gradient through the network: one forward per step), and

        loss = λ·w(snr⁻¹_t)·mean((ε̂ − ε)·x̂0) + obs_weight·mean((y − A(x̂0))²)/2,

    ``snr⁻¹_t = √(1−ᾱ_t)/√ᾱ_t``, ``w`` = ``weighting`` (``"linear"``: the identity).  The means
    are over one image's entries (the reference runs them over the batch; at B = 1 the same; here
    every image has its own loss, so a batch equals single runs up to float32 rounding).  Defaults:
    ``_configs/algo/reddiff.yaml`` (λ = ``grad_term_weight`` 0.25, lr 0.1, σ_x0 0, obs_weight 1,
    ``linear``); ``steps`` 1000 as ``sample_batch.sh`` (the config default ``exp.num_steps`` is 50).

    Time: the reference's (= ipsolve's) DDPM index; the grid is ``get_timesteps``
    (``utils/functions.py`` L20-24): ``range(0, T, T // steps)`` visited from the top, so a
    ``steps`` that does not divide T gives ⌈T / (T // steps)⌉ steps, as there; ``warm_start`` =
    the reference's ``exp.start_step`` as a fraction of T.  ``μ`` starts at ``H_pinv(y)``
    (``init="pinv"``, L132-141: :func:`~.linalg.pseudo_inverse`; for nonlinear operators the
    operator's initial guess) or ``init="initial_guess"``.  The result is ``x̂0`` of the last step,
    i.e. ``μ`` before the last Adam update (+ σ_x0 noise), as ``main.py`` L108-110 takes it;
    ``output="mu"`` returns the final ``μ``.  Latent priors (ipsolve's extension): ``μ`` is the
    latent (started at ``E(init)``) and the data term is ``A(D(x̂0))``."""

    name = "reddiff"
    accepts = ("diffusion", "latent-diffusion")
    search_space = {"lam": (0.025, 2.5), "lr": (0.01, 1.0)}  # reference values: λ 0.25 / 1.0, lr 0.1 / 0.25 / 0.5

    def uses_initial_guess(self) -> bool:
        return self.init == "initial_guess"

    def __init__(self, steps: int = 1000, lam: float = 0.25, lr: float = 0.1, sigma_x0: float = 0.0,
                 obs_weight: float = 1.0, weighting: str = "linear", betas=(0.9, 0.99), init: str = "pinv",
                 init_iters: int = 50, output: str = "x0_pred", svd_cutoff: float = 3e-2, **kw):
        super().__init__(**kw)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {shown(weighting)}")
        if init not in ("pinv", "initial_guess"):
            raise ValueError(f"init must be 'pinv' (the reference's H_pinv(y)) or 'initial_guess', got {shown(init)}")
        if output not in ("x0_pred", "mu"):
            raise ValueError(f"output must be 'x0_pred' (the reference) or 'mu', got {shown(output)}")
        if lr <= 0 or sigma_x0 < 0:
            raise ValueError(f"need lr > 0 and sigma_x0 >= 0, got lr={lr}, sigma_x0={sigma_x0}")
        self.steps, self.lam, self.lr, self.sigma_x0, self.obs_weight = steps, lam, lr, sigma_x0, obs_weight
        if svd_cutoff < 0:
            raise ValueError(f"svd_cutoff must be >= 0, got {svd_cutoff}")
        self.weighting, self.betas, self.init, self.init_iters, self.output = weighting, tuple(betas), init, init_iters, output
        self.svd_cutoff = svd_cutoff

    def timesteps(self, inner) -> list[int]:
        """The reference's grid, highest first (``get_timesteps``; ``reversed(ts)`` in ``sample``)."""
        total = inner.num_timesteps
        if self.warm_start is None:
            check_steps(self.steps, total)
            return skip_grid(total, self.steps)[::-1]
        start = max(1, round(self.warm_start * total))  # exp.start_step: an exclusive bound
        return skip_grid(start, min(self.steps, start))[::-1]  # one step per timestep left at most

    def initial(self, y, operator, image_shape) -> tuple[torch.Tensor, str]:
        """``H_pinv(y)`` (L132-141) where the operator is linear: through its SVD with 1-D singular
        values below ``svd_cutoff`` cut, their coordinates keeping ``Uᵀy`` (the reference's DDRM
        ``Deblurring``/``SRConv`` with ``ZERO = 3e-2``, ``H_pinv`` L68-78), else CGLS; otherwise the
        operator's initial guess."""
        if self.init == "pinv" and getattr(operator, "is_linear", False):
            try:
                dec = operator.svd(tuple(image_shape))
            except NotDecomposable:
                return pseudo_inverse(operator, y, image_shape, iters=self.init_iters), "pinv"
            dec = dec.truncated(self.svd_cutoff) if self.svd_cutoff else dec
            return dec.pinv(y, keep_cut=True), "pinv"
        with torch.no_grad():
            return self.start_image(operator, y), "initial_guess" if self.start == "initial_guess" else "classical"

    def run(self, y, operator, prior, gens, sigma: float, callback=None) -> Result:
        start = timer()
        latent, inner, decode = prior_parts(prior)
        b = y.shape[0]
        init, how = self.initial(y, operator, (b, *prior.shape))
        with torch.no_grad():
            mu0 = prior.encode(init) if latent else init
        mu = mu0.detach().clone().requires_grad_()
        opt = torch.optim.Adam([mu], lr=self.lr, betas=self.betas, weight_decay=0.0)  # reddiff.py L52
        ts = self.timesteps(inner)
        weight = WEIGHTINGS[self.weighting]
        x0_pred = mu.detach()
        for i, t in enumerate(tqdm(ts, desc=self.name, disable=not self.show_progress, leave=False)):
            noise_x0 = randn_like_batch(mu.shape, gens, mu.device).to(mu.dtype)  # drawn even if σ_x0 = 0 (L64)
            noise_xt = randn_like_batch(mu.shape, gens, mu.device).to(mu.dtype)
            a = inner.alpha_bar(t, mu)
            x0_pred = mu + self.sigma_x0 * noise_x0
            xt = a.sqrt() * x0_pred + (1 - a).sqrt() * noise_xt
            with torch.no_grad(), autocast_context(self.autocast, y.device):
                et = inner.eps(xt.detach(), int(t)).to(mu.dtype)
            image = decode(x0_pred)
            loss_obs = (y - operator(image)).pow(2).flatten(1).mean(1) / 2
            loss_noise = ((et - noise_xt) * x0_pred).flatten(1).mean(1)
            a0 = inner.alpha_bar_value(t)  # read on the host: reading it from `a` would wait for the device at every step
            w_t = self.lam * weight(((1 - a0) ** 0.5) / (a0 ** 0.5))
            loss = (w_t * loss_noise + self.obs_weight * loss_obs).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if callback is not None:
                callback(i, {"x": image.detach(), "loss": (2 * loss_obs).detach(), "t": t})
        with torch.no_grad():
            final = x0_pred.detach() if self.output == "x0_pred" else mu.detach()
            image = decode(final).clamp(-1, 1)
            res = residual_ratio(y, operator(image), sigma).cpu()
        seconds = timer() - start
        info = [{"nfe": len(ts), "iterations": len(ts), "stop_reason": "budget", "residual": float(res[i]),
                 "seconds": seconds, "init": how} for i in range(b)]
        return Result(x=image, info=info)
