"""DDRM: denoising diffusion restoration models (Kawar et al., NeurIPS 2022), as
bahjat-kawar/ddrm implements it (``functions/denoising.py`` ``efficient_generalized_steps``)."""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from ..notices import shown
from ..operators.decomposition import NotDecomposable
from .base import Result, Solver, autocast_context, randn_like_batch, residual_ratio, timer
from .svd_common import decomposition, skip_grid


class DDRM(Solver):
    """DDIM-like sampling in the operator's SVD space (``A = U diag(s) Vᵀ``, see
    :mod:`ipsolve.operators.decomposition`).  With x̄ = x_t/√ᾱ_t, σ_t = √(1−ᾱ_t)/√ᾱ_t and
    x̂0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t (L62), each V coordinate of x̄_{t−1} is drawn by its case
    (``denoising.py`` L64-100; σ_y = ``sigma``, ȳ = Uᵀ(y − b)):

    * not seen (s = 0, or no left singular vector): ``Vᵀx̂0 + √(1−η²) σ_{t−1} Vᵀε̂ + η σ_{t−1} z``;
    * less noisy than y (s σ_{t−1} < σ_y): ``Vᵀx̂0 + √(1−η²) σ_{t−1} (ȳ − s Vᵀx̂0)/σ_y + η σ_{t−1} z``;
    * noisier than y (s σ_{t−1} > σ_y): ``η_b ȳ/s + (1 − η_b) Vᵀx̂0 + √(σ_{t−1}² − η_b² σ_y²/s²) z``;

    then x_{t−1} = √ᾱ_{t−1} V x̄_{t−1}.  x_T is drawn from p(x_T | y) as the reference does
    (L20-39: ȳ/s where s σ_T > σ_y, plus noise to σ_T, divided by σ_T).  One network call per
    step, no gradients; the output is the last step's x̂0.

    Defaults are the reference's: ``steps=20`` on its grid ``range(0, 1000, 1000 // steps)``
    (``runners/diffusion.py`` L334-338; 950, 900, …, 0), ``eta=0.85`` and ``eta_b=1``
    (``main.py`` L70-73), and ``svd_cutoff=3e-2``: singular values below it count as 0 — for
    separable operators (super-resolution, Gaussian blur) per 1-D factor, as the reference's
    ``SRConv``/``Deblurring`` (``functions/svd_replacement.py`` L341-342, L417-418) do.  σ_y is
    the measurement noise on the [-1, 1] scale, as the reference's ``2 · sigma_0`` (L271).

    ``search_space`` is empty: DDRM has no guidance strength — η and η_b are mixing weights in
    [0, 1] (not scales to search on a log range), and the data weight is set by σ_y itself."""

    name = "ddrm"
    accepts = ("diffusion",)
    search_space: dict = {}

    def __init__(self, steps: int = 20, eta: float = 0.85, eta_b: float = 1.0, svd_cutoff: float = 3e-2, **kw):
        super().__init__(**kw)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {shown(steps)}")
        if not 0.0 <= eta <= 1.0 or not 0.0 <= eta_b <= 1.0:
            raise ValueError(f"eta and eta_b must be in [0, 1], got {eta}, {eta_b}")
        if svd_cutoff < 0:
            raise ValueError(f"svd_cutoff must be >= 0, got {svd_cutoff}")
        if self.warm_start is not None:
            raise ValueError("ddrm starts from p(x_T | y) (its own use of the measurement); warm_start is not supported")
        self.steps, self.eta, self.eta_b, self.svd_cutoff = steps, eta, eta_b, svd_cutoff

    def check(self, operator, prior) -> None:
        super().check(operator, prior)
        try:
            operator.svd((1, *prior.shape))
        except NotDecomposable:
            decomposition(self.name, operator, (1, *prior.shape))
        except ValueError:  # shape- or key-dependent problems surface in run with the batch's shape
            pass

    def run(self, y, operator, prior, gens, sigma: float, callback=None) -> Result:
        start = timer()
        b = y.shape[0]
        shape = (b, *prior.shape)
        dec = decomposition(self.name, operator, shape, self.svd_cutoff)
        s = dec.singulars(y)
        sup = dec.support.to(y.device)
        safe = torch.where(s > 0, s, torch.ones_like(s))
        sig0 = float(sigma)
        uty = dec.Ut(dec.minus_offset(y))
        seq = skip_grid(prior.num_timesteps, self.steps)
        abar = prior.alpha_bar_value  # float64 numbers on the host: no device sync per step
        # x_T ~ p(x_T | y) (denoising.py L20-39)
        a_big = abar(seq[-1])
        sig_big = math.sqrt(1 - a_big) / math.sqrt(a_big)
        large = sup & (s * sig_big > sig0)
        inv = torch.where(large, sig0 / safe, torch.zeros_like(s))
        z = randn_like_batch(shape, gens, y.device).flatten(1)
        init = torch.where(large, uty / safe, torch.zeros_like(uty)) + (sig_big ** 2 - inv ** 2).clamp_min(0).sqrt() * z
        x = dec.V(init / sig_big)
        ts = list(reversed(seq))
        nexts = list(reversed([-1] + seq[:-1]))
        x0 = x
        for i, (t, t_next) in enumerate(tqdm(list(zip(ts, nexts)), desc=self.name, disable=not self.show_progress, leave=False)):
            a, a_next = abar(t), abar(t_next)
            with torch.no_grad(), autocast_context(self.autocast, y.device):
                eps = prior.eps(x, int(t)).to(x.dtype)
            with torch.no_grad():
                x0 = (x - eps * math.sqrt(1 - a)) / math.sqrt(a)
                sig_next = math.sqrt(1 - a_next) / math.sqrt(a_next)
                v_x0, v_eps = dec.Vt(x0), dec.Vt(eps)
                before = sup & (s * sig_next > sig0)
                after = sup & (s * sig_next < sig0)
                std = sig_next * self.eta
                tilde = math.sqrt(max(sig_next ** 2 - std ** 2, 0.0))
                diff_b = (sig_next ** 2 - sig0 ** 2 / safe ** 2 * self.eta_b ** 2).clamp_min(0).sqrt()
                z = randn_like_batch((b, dec.n), gens, y.device)
                new = v_x0 + tilde * v_eps + std * z  # not seen
                new = torch.where(after, v_x0 + tilde * (uty - s * v_x0) / max(sig0, 1e-30) + std * z, new)
                new = torch.where(before, uty / safe * self.eta_b + (1 - self.eta_b) * v_x0 + diff_b * z, new)
                x = math.sqrt(a_next) * dec.V(new)
            if callback is not None:
                callback(i, {"x": x0.detach(), "t": t, "x_next": x.detach()})
        with torch.no_grad():
            final = x.clamp(-1, 1)
            res = residual_ratio(y, operator(final), sigma).cpu()
        seconds = timer() - start
        info = [{"nfe": len(seq), "iterations": len(seq), "stop_reason": "budget", "residual": float(res[i]),
                 "seconds": seconds} for i in range(b)]
        return Result(x=final, info=info)
