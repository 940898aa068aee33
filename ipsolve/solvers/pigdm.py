"""ΠGDM: pseudoinverse-guided diffusion models (Song et al., ICLR 2023), as the authors'
implementation in NVlabs/RED-diff (``algos/pgdm.py``) does it."""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from ..notices import shown
from ..operators.base import operator_label
from ..operators.decomposition import NotDecomposable, cg_solve, linear_part, pinv_cg
from .base import Result, Solver, autocast_context, randn_like_batch, residual_ratio, timer
from .svd_common import skip_grid


class PiGDM(Solver):
    """DDIM with pseudo-inverse guidance.  Per step t → s (``pgdm.py`` L36-99):
    x̂0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t (not clipped), the vector-Jacobian product
    ``g = ∇_{x_t} ⟨sg(A⁺(y − A(x̂0))), x̂0⟩`` (L51-63; A⁺ the pseudo-inverse of the linear part,
    so A⁺y − A⁺A x̂0 of the reference), and

        x_s = √ᾱ_s x̂0 + c1 z + c2 ε̂ + √ᾱ_s √ᾱ_t w g,
        c1 = η √((1 − ᾱ_t/ᾱ_s)(1 − ᾱ_s)/(1 − ᾱ_t)),  c2 = √(1 − ᾱ_s − c1²)

    (L41-42, L70-73, L96; ``awd=False``: the factor √ᾱ_s becomes √ᾱ_s − c2 √ᾱ_t/√(1−ᾱ_t), L71-72).
    x_T = √ᾱ_T A⁺y + √(1−ᾱ_T) z (``initialize``, L103-112).  One network forward and one backward
    per step.

    Noisy measurements: the reference adds σ_y noise to y and otherwise ignores it — its
    guidance has neither the paper's r_t² nor σ_y (``guidance="reference"``, the default).
    ``guidance="noisy"`` (ipsolve's option) replaces A⁺ by the paper's
    ``r_t² Aᵀ(r_t² AAᵀ + σ_y² I)⁻¹`` with r_t² = 1 − ᾱ_t (the VP form of σ_t²/(1 + σ_t²); on the
    SVD: r_t² s/(r_t² s² + σ_y²) instead of 1/s), which equals the reference at σ_y = 0 except on
    coordinates whose singular value was cut (see below).

    A⁺: through the operator's SVD (:meth:`~ipsolve.operators.Operator.svd`, singular values below
    ``svd_cutoff`` = 3e-2 zeroed per 1-D factor, as the reference's ``SRConv``/``Deblurring``,
    RED-diff ``utils/degredations.py`` L455-456, L582-583), as the reference uses it: the residual
    is the truncated operator's (``H.H`` multiplies by the cut singular values) and ``H_pinv``
    (L68-78) divides the nonzero singular values only, so a cut coordinate of A⁺y and of the
    guidance keeps ``Uᵀ(y − A x̂0)`` unscaled (``noisy``: 0 there, the paper's formula on the
    truncated operator); for linear operators without one (CT,
    multi-coil MRI, motion blur) by ``pinv_iters`` conjugate-gradient iterations on the normal
    equations (``noisy``: on ``(r_t² AAᵀ + σ_y² I) v = y − A(x̂0)``).  Nonlinear operators (phase
    retrieval, nonlinear blur) have no pseudo-inverse here: ΠGDM's h† for them would have to pick
    one of the true ambiguities (translation, twin image) consistently at every step.

    Defaults: 100 steps on RED-diff's grid ``range(0, 1000, 10)`` (``utils/functions.py`` L20-24)
    with η = 1.0 — its ΠGDM commands (``sample_test.sh`` L21, L45: η 1, 100 steps; every ΠGDM
    command there and ``sample_batch.sh`` L5 use η = 1; the yaml defaults are 50 steps,
    ``_configs/exp/default.yaml`` L9, and η = 0, ``_configs/algo/pgdm.yaml`` L9); ``weight`` =
    ``grad_term_weight`` 1, ``awd`` True (``pgdm.yaml`` L5, L7).  An image whose state turns
    non-finite (too large a ``weight``) keeps its last finite x̂0 and reports ``stop_reason="nan"``
    (the reference would carry NaN).
    ``search_space``: the guidance weight w on a log range around 1."""

    name = "pigdm"
    accepts = ("diffusion",)
    search_space = {"weight": (0.1, 10.0)}

    def __init__(self, steps: int = 100, eta: float = 1.0, weight: float = 1.0, awd: bool = True,
                 guidance: str = "reference", svd_cutoff: float = 3e-2, pinv_iters: int = 20, **kw):
        super().__init__(**kw)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {shown(steps)}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        if guidance not in ("reference", "noisy"):
            raise ValueError(f"guidance must be 'reference' (RED-diff's A⁺) or 'noisy' (r_t², σ_y), got {shown(guidance)}")
        if pinv_iters < 1 or svd_cutoff < 0:
            raise ValueError(f"need pinv_iters >= 1 and svd_cutoff >= 0, got {pinv_iters}, {svd_cutoff}")
        if self.warm_start is not None:
            raise ValueError("pigdm starts from its own warm start √ᾱ_T A⁺y + noise; warm_start is not supported")
        self.steps, self.eta, self.weight, self.awd, self.guidance = steps, eta, weight, awd, guidance
        self.svd_cutoff, self.pinv_iters = svd_cutoff, pinv_iters

    def check(self, operator, prior) -> None:
        super().check(operator, prior)
        try:
            operator.svd((1, *prior.shape))
        except NotDecomposable:
            if not operator.is_linear:
                raise ValueError(f"solver 'pigdm' needs a pseudo-inverse: {operator_label(operator)} is nonlinear and "
                                 f"has none; use an operator with a fast SVD or a linear one (pseudo-inverse by CG)") from None
        except ValueError:
            pass

    def gain(self, dec, operator, r: torch.Tensor, r2: float, sigma: float) -> torch.Tensor:
        """The guidance direction for the residual ``r = y − A(x̂0)``: A⁺r (``reference``; on an
        SVD, ``H_pinv``'s: cut singular values, 0 inside the support, leave ``Uᵀr`` unscaled) or
        r_t² Aᵀ(r_t² AAᵀ + σ²)⁻¹ r (``noisy``)."""
        if dec is not None:
            s = dec.singulars(r)
            z = dec.Ut(r)
            if self.guidance == "reference":
                w = torch.where(s > 0, 1 / torch.where(s > 0, s, torch.ones_like(s)), torch.ones_like(s))
            else:
                w = torch.where(s > 0, r2 * s / (r2 * s * s + sigma ** 2), torch.zeros_like(s))
            return dec.V(w * z)
        if self.guidance == "reference":
            return pinv_cg(operator, r, self.pinv_iters, offset=False)
        forward, adjoint, _ = linear_part(operator, operator.input_shape(r.shape), r)
        v = cg_solve(lambda u: r2 * forward(adjoint(u)) + sigma ** 2 * u, r, torch.zeros_like(r), self.pinv_iters)
        return r2 * adjoint(v)

    def run(self, y, operator, prior, gens, sigma: float, callback=None) -> Result:
        start = timer()
        b = y.shape[0]
        shape = (b, *prior.shape)
        try:
            dec = operator.svd(shape)
            dec = dec.truncated(self.svd_cutoff) if self.svd_cutoff else dec
        except NotDecomposable:
            dec = None
        abar = prior.alpha_bar_value  # float64 numbers on the host: no device sync per step
        ts = skip_grid(prior.num_timesteps, self.steps)
        ss = [-1] + ts[:-1]
        with torch.no_grad():  # x_T = √ᾱ_T A⁺y + √(1 − ᾱ_T) z  (initialize, L103-112)
            a_big = abar(ts[-1])
            pinv_y = dec.pinv(y, keep_cut=True) if dec is not None else pinv_cg(operator, y, self.pinv_iters)
            x = math.sqrt(a_big) * pinv_y + math.sqrt(1 - a_big) * randn_like_batch(shape, gens, y.device)
        steps = list(zip(reversed(ts), reversed(ss)))
        x0 = x
        last_good = x.detach().clone()  # per image: the last finite x̂0 (a diverging image keeps it)
        alive = torch.ones(b, dtype=torch.bool, device=y.device)
        for i, (t, s_) in enumerate(tqdm(steps, desc=self.name, disable=not self.show_progress, leave=False)):
            a_t, a_s = abar(t), abar(s_)
            c1 = math.sqrt(max((1 - a_t / a_s) * (1 - a_s) / (1 - a_t), 0.0)) * self.eta
            c2 = math.sqrt(max((1 - a_s) - c1 ** 2, 0.0))
            x = x.detach().requires_grad_()
            with autocast_context(self.autocast, y.device):
                eps = prior.eps(x, int(t)).to(x.dtype)
            x0 = (x - eps * math.sqrt(1 - a_t)) / math.sqrt(a_t)
            with torch.no_grad():
                alive &= torch.isfinite(x0.detach()).flatten(1).all(1)
                last_good = torch.where(alive.view(-1, 1, 1, 1), x0.detach(), last_good)  # no host sync
                x0_safe = last_good
                fit = dec.forward(x0_safe) if dec is not None else operator(x0_safe)  # truncated, as H.H
                mat = self.gain(dec, operator, y - fit, 1 - a_t, float(sigma))
                mat = torch.where(alive.view(-1, 1, 1, 1), mat, torch.zeros_like(mat))
            (g,) = torch.autograd.grad((mat * x0).sum(), x)
            coeff = math.sqrt(a_s) if self.awd else math.sqrt(a_s) - c2 * math.sqrt(a_t) / math.sqrt(1 - a_t)
            coeff = coeff * math.sqrt(a_t) * self.weight
            with torch.no_grad():
                z = randn_like_batch(shape, gens, y.device)
                x = math.sqrt(a_s) * x0.detach() + c1 * z + c2 * eps.detach() + coeff * g
                alive &= torch.isfinite(x).flatten(1).all(1)
                x = torch.where(alive.view(-1, 1, 1, 1), x, last_good)  # a diverged image stays at its last x̂0
            if callback is not None:
                callback(i, {"x": x0.detach(), "t": t, "x_next": x.detach()})
        with torch.no_grad():
            final = torch.where(alive.view(-1, 1, 1, 1), x.detach(), last_good).clamp(-1, 1)
            res = residual_ratio(y, operator(final), sigma).cpu()
        seconds = timer() - start
        info = [{"nfe": len(ts), "iterations": len(ts), "stop_reason": "budget" if alive[i] else "nan",
                 "residual": float(res[i]), "seconds": seconds} for i in range(b)]
        return Result(x=final, info=info)
