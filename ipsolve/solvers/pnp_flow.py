"""PnP-Flow (Martin, Gagneux, Delon & Mischler, "PnP-Flow: plug-and-play image restoration with flow
matching", ICLR 2025), as annegnx/PnP-Flow @ ee5b159 implements it (``pnpflow/methods/pnp_flow.py``,
``config/method_config/pnp_flow.yaml``, ``scripts/script_test.sh``)."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..notices import shown
from .base import Result, Solver, autocast_context, prior_parts, randn_like_batch, residual_ratio, timer

GAMMA_STYLES = ("1_minus_t", "sqrt_1_minus_t", "constant", "alpha_1_minus_t")
# α of ``scripts/script_test.sh`` per problem (the paper's tables); the config's 1.0 for the others
TASK_ALPHA = {"super_resolution": 0.3, "inpainting_random": 0.01, "inpainting_box": 0.5, "gaussian_blur": 0.01}
DEFAULT_ALPHA = 1.0  # config/method_config/pnp_flow.yaml


def task_alpha(operator) -> float:
    """The reference's α for ``operator.task`` (``alpha=None``): a kernel of your own takes the
    one blur the reference configures (Gaussian); tasks it has no script for, the config's α."""
    task = getattr(operator, "task", None)
    task = {"blur": "gaussian_blur"}.get(task, task)
    return TASK_ALPHA.get(task, DEFAULT_ALPHA)


def step_size(lr: float, t: float, style: str, alpha: float) -> float:
    """γ_t of ``learning_rate_strat`` (pnp_flow.py L29-37)."""
    if style == "1_minus_t":
        return lr * (1 - t)
    if style == "sqrt_1_minus_t":
        return lr * (1 - t) ** 0.5
    if style == "alpha_1_minus_t":
        return lr * (1 - t) ** alpha
    return lr


class PnPFlow(Solver):
    """Forward-backward splitting with the flow's denoiser, ``steps`` iterations (pnp_flow.py
    L103-121): at ``t_k = k/steps`` (k = 0 … steps−1),

        z = x − γ_k ∇ ½‖A(x) − y‖²,   γ_k = lr·(1 − t_k)^α,
        x ← mean over ``num_samples`` draws of D(t_k z + (1 − t_k) ε, t_k),   D(u, t) = u + (1 − t) v(u, t).

    The reference scales ``lr`` by σ² (L60-62) and divides the gradient by σ² (L41): they cancel,
    so γ does not depend on σ.  Time: the reference's t = 0 noise, t = 1 data, ``t z + (1 − t) ε``
    (L47-48) — ipsolve's convention, no mapping.  The start ``H_adj(1)`` (L93) is multiplied by
    t_0 = 0 in the first interpolation, so it never matters; ipsolve starts from zeros.  The
    gradient is autograd's VJP of the data term (``Aᵀ(Ax − y)`` for linear A).  Defaults:
    ``config/method_config/pnp_flow.yaml`` (100 steps, lr 1, ``alpha_1_minus_t``, 5 samples: 500
    NFE); ``alpha=None``: α per task as ``scripts/script_test.sh`` runs the paper's problems
    (:data:`TASK_ALPHA`: SR 0.3, random inpainting 0.01, box inpainting 0.5, Gaussian deblurring
    0.01; the config's 1.0 for operators it has no problem for).  Step size: the reference's
    operators all have ‖AᵀA‖ = 1 (decimation, masks, a normalised blur), where forward-backward
    needs γ < 2/L; ``lipschitz=True`` (default) divides γ by L = ‖JᵀJ‖, estimated per image by
    ``power_iters`` power iterations — the same γ on the reference's operators, and the same γ·L
    on ipsolve's bicubic SR ×4, whose L ≈ 0.1 (``lipschitz=False``: lr as is).  Latent flow
    priors (ipsolve's extension): x is the latent and the data term is ``A(decode(x))``.  The
    result is clamped to [−1, 1]."""

    name = "pnp_flow"
    accepts = ("flow", "latent-flow")
    search_space = {"lr": (0.1, 10.0)}  # reference: 1.0

    def __init__(self, steps: int = 100, lr: float = 1.0, gamma_style: str = "alpha_1_minus_t", alpha: float | None = None,
                 num_samples: int = 5, lipschitz: bool = True, power_iters: int = 20, **kw):
        super().__init__(**kw)
        if steps < 1 or num_samples < 1:
            raise ValueError(f"steps and num_samples must be >= 1, got {steps}, {num_samples}")
        if gamma_style not in GAMMA_STYLES:
            raise ValueError(f"gamma_style must be one of {', '.join(GAMMA_STYLES)}, got {shown(gamma_style)}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if self.warm_start is not None:
            raise ValueError("pnp_flow has no warm start: its first step replaces x by noise (t_0 = 0)")
        self.steps, self.lr, self.gamma_style, self.alpha, self.num_samples = steps, lr, gamma_style, alpha, num_samples
        self.lipschitz, self.power_iters = lipschitz, power_iters

    def data_gradient(self, x, y, operator, decode) -> torch.Tensor:
        """∇_x ½‖A(decode(x)) − y‖² per image."""
        with torch.enable_grad():
            v = x.detach().requires_grad_()
            loss = 0.5 * (operator(decode(v)) - y).pow(2).sum()
            (grad,) = torch.autograd.grad(loss, v)
        return grad

    def lipschitz_constant(self, x, y, operator, decode) -> torch.Tensor:
        """‖JᵀJ‖ per image by power iteration, started from fixed noise (the same for every image):
        on the data term's Hessian-vector products for a linear A (JᵀJ exactly); for a nonlinear A
        on Gauss–Newton products Jᵀ(Jv) — its Hessian need not be positive (phase retrieval at x = 0
        gave L ≤ 0, clamped to 1e-12: a step 10¹² times too long, NaN at every budget)."""
        g = torch.Generator().manual_seed(0)  # a fixed start: the images' own generators stay the reference's
        v = torch.randn(x.shape[1:], generator=g, dtype=torch.float32).to(x).expand_as(x).clone()
        lam = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        linear = getattr(operator, "is_linear", False)
        base = self.data_gradient(x, y, operator, decode) if linear else None
        for _ in range(self.power_iters):
            v = v / v.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *([1] * (x.ndim - 1)))
            hv = (self.data_gradient(x + v, y, operator, decode) - base if linear
                  else self.gauss_newton_product(x, v, operator, decode))
            lam = (hv * v).flatten(1).sum(1)
            v = hv
        return torch.where(torch.isfinite(lam) & (lam > 1e-12), lam, torch.ones_like(lam))  # no estimate: L = 1

    @staticmethod
    def gauss_newton_product(x, v, operator, decode, eps: float = 1e-3) -> torch.Tensor:
        """Jᵀ(J v) of A∘decode at x: J v by a forward difference, Jᵀ by autograd."""
        with torch.no_grad():
            jv = (operator(decode(x + eps * v)) - operator(decode(x))) / eps
        with torch.enable_grad():
            xx = x.detach().requires_grad_()
            (out,) = torch.autograd.grad(operator(decode(xx)), xx, grad_outputs=jv)
        return out

    def run(self, y, operator, prior, gens, sigma: float, callback=None) -> Result:
        start = timer()
        latent, inner, decode = prior_parts(prior)
        b = y.shape[0]
        shape = (b, *inner.shape)
        x = torch.zeros(shape, dtype=y.dtype, device=y.device)
        alpha = task_alpha(operator) if self.alpha is None else float(self.alpha)
        scale = torch.ones(b, dtype=y.dtype, device=y.device)
        if self.lipschitz:
            scale = 1 / self.lipschitz_constant(x, y, operator, decode)
        for k in tqdm(range(self.steps), desc=self.name, disable=not self.show_progress, leave=False):
            t = k / self.steps  # delta * iteration (L59, L107-108)
            gamma = step_size(self.lr, t, self.gamma_style, alpha) * scale.view(-1, 1, 1, 1)
            z = x - gamma * self.data_gradient(x, y, operator, decode)
            x_new = torch.zeros_like(x)
            with torch.no_grad():
                for _ in range(self.num_samples):
                    u = t * z + (1 - t) * randn_like_batch(shape, gens, y.device).to(z.dtype)  # interpolation_step
                    with autocast_context(self.autocast, y.device):
                        v = inner.velocity(u, t)
                    x_new = x_new + inner.x1_from_velocity(u, t, v.to(u.dtype))  # denoiser, L50-52
            x = x_new / self.num_samples
            if callback is not None:
                callback(k, {"x": decode(x).detach() if latent else x, "t": t})
        with torch.no_grad():
            image = decode(x).clamp(-1, 1)
            res = residual_ratio(y, operator(image), sigma).cpu()
        seconds = timer() - start
        nfe = self.steps * self.num_samples
        info = [{"nfe": nfe, "iterations": self.steps, "stop_reason": "budget", "residual": float(res[i]),
                 "seconds": seconds, "alpha": alpha,
                 "lipschitz_constant": float(1 / scale[i]) if self.lipschitz else None} for i in range(b)]
        return Result(x=image, info=info)
