"""Analytic priors whose denoiser is exact: a Gaussian and an isotropic Gaussian mixture.

For ``x_t = a·x + b·ε`` (diffusion: a = √ᾱ_t, b = √(1-ᾱ_t); flow: a = t, b = 1 - t):

* Gaussian N(μ, Σ = U diag(λ) Uᵀ): ``E[x | x_t] = μ + a Σ (a²Σ + b²I)⁻¹ (x_t - aμ)``.
* Mixture Σ_k π_k N(μ_k, s_k² I): responsibilities ``w_k ∝ π_k N(x_t; aμ_k, (a²s_k² + b²) I)``
  and ``E[x | x_t] = Σ_k w_k (μ_k + a s_k² / (a²s_k² + b²) (x_t - aμ_k))``.

They are wrapped as networks so that ``DiffusionPrior`` / ``FlowPrior`` use them like a UNet,
which lets solvers be validated against closed-form posteriors.
"""
from __future__ import annotations


import torch
from torch import nn
from ..notices import shown


class GaussianDistribution(nn.Module):
    """N(μ, Σ) on flattened images: ``mean`` (d,), ``cov`` (d, d) positive semi-definite, kept in
    float64 with its eigendecomposition Σ = U diag(λ) Uᵀ (module docstring)."""

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor):
        super().__init__()
        d = mean.numel()
        if cov.shape != (d, d):
            raise ValueError(f"cov must be ({d}, {d}) for a mean of {d} entries, got {tuple(cov.shape)}")
        lam, u = torch.linalg.eigh(cov.double())
        if lam.min() < -1e-10:
            raise ValueError("cov must be positive semi-definite")
        self.register_buffer("mean", mean.double().reshape(-1))
        self.register_buffer("cov", cov.double())
        self.register_buffer("lam", lam.clamp_min(0))
        self.register_buffer("u", u)

    def posterior_mean(self, x_t: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Tweedie's E[x0 | x_t] for ``x_t = a·x0 + b·ε``, in closed form: ``μ + U g ⊙ Uᵀ(x_t − aμ)``
        with ``g = aλ/(a²λ + b²)``, i.e. ``μ + aΣ(a²Σ + b²I)⁻¹(x_t − aμ)``; ``a``, ``b`` one per image
        (or scalars), computed in float64, returned in ``x_t``'s shape and dtype."""
        xf = x_t.double().reshape(x_t.shape[0], -1)
        a, b = a.double().reshape(-1, 1), b.double().reshape(-1, 1)
        r = (xf - a * self.mean) @ self.u
        gain = a * self.lam / (a ** 2 * self.lam + b ** 2)
        return (self.mean + (gain * r) @ self.u.T).reshape(x_t.shape).to(x_t.dtype)

    def sample(self, n: int, generator=None) -> torch.Tensor:
        """``n`` draws ``μ + U diag(√λ) z``, z ~ N(0, I): ``(n, d)`` float64."""
        z = torch.randn(n, self.mean.numel(), generator=generator, dtype=torch.float64)
        return self.mean + (z * self.lam.sqrt()) @ self.u.T


class GaussianMixtureDistribution(nn.Module):
    """Σ_k π_k N(μ_k, s_k² I) on flattened images: ``means`` (K, …) flattened to (K, d), ``stds``
    s_k > 0 and ``weights`` π_k ≥ 0 of shape (K,), the weights normalised to sum 1; float64."""

    def __init__(self, means: torch.Tensor, stds: torch.Tensor, weights: torch.Tensor):
        super().__init__()
        k = means.shape[0]
        if stds.shape != (k,) or weights.shape != (k,):
            raise ValueError(f"a mixture of {k} components needs stds and weights of shape ({k},)")
        if (stds <= 0).any() or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("mixture stds must be > 0 and weights >= 0 with a positive sum")
        self.register_buffer("means", means.double().reshape(k, -1))
        self.register_buffer("stds", stds.double())
        self.register_buffer("weights", weights.double() / weights.sum())

    def posterior_mean(self, x_t, a, b):
        """Tweedie's E[x0 | x_t] for ``x_t = a·x0 + b·ε``, in closed form: ``Σ_k w_k (μ_k + a s_k²/v_k
        (x_t − aμ_k))`` with v_k = a²s_k² + b² and responsibilities ``w_k ∝ π_k N(x_t; aμ_k, v_k I)``
        (a softmax of log-densities); float64 inside, ``x_t``'s shape and dtype out."""
        xf = x_t.double().reshape(x_t.shape[0], 1, -1)
        a, b = a.double().reshape(-1, 1, 1), b.double().reshape(-1, 1, 1)
        var = a ** 2 * self.stds.view(1, -1, 1) ** 2 + b ** 2  # (B, K, 1)
        diff = xf - a * self.means[None]
        d = xf.shape[-1]
        logw = (self.weights.log()[None] - 0.5 * (diff ** 2).sum(-1) / var[..., 0] - 0.5 * d * var[..., 0].log())
        w = torch.softmax(logw, -1)[..., None]
        comp = self.means[None] + a * self.stds.view(1, -1, 1) ** 2 / var * diff
        return (w * comp).sum(1).reshape(x_t.shape).to(x_t.dtype)

    def sample(self, n: int, generator=None) -> torch.Tensor:
        """``n`` draws: a component k ~ π, then ``μ_k + s_k z``, z ~ N(0, I): ``(n, d)`` float64."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        return self.means[k] + self.stds[k, None] * z


class AnalyticDiffusionNetwork(nn.Module):
    """ε̂(x_t, t) = (x_t - √ᾱ_t E[x | x_t]) / √(1-ᾱ_t): the exact noise predictor."""

    def __init__(self, dist: nn.Module, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.dist = dist
        self.register_buffer("ac", alphas_cumprod.double())

    def forward(self, x_t, t):
        # fractional t (EDM-style samplers such as DAPS): ᾱ interpolated log-linearly between entries
        t = torch.as_tensor(t, device=self.ac.device).double().reshape(-1).clamp(0, len(self.ac) - 1)
        i0 = t.floor().long()
        i1 = (i0 + 1).clamp(max=len(self.ac) - 1)
        w = t - i0
        ac = torch.exp((1 - w) * self.ac[i0].log() + w * self.ac[i1].log()).to(x_t.device)
        a, b = ac.sqrt(), (1 - ac).sqrt()
        x0 = self.dist.posterior_mean(x_t, a, b)
        return (x_t - a.view(-1, 1, 1, 1).to(x_t.dtype) * x0) / b.view(-1, 1, 1, 1).to(x_t.dtype)


class AnalyticFlowNetwork(nn.Module):
    """v̂(x_t, t) = (E[x | x_t] - x_t) / (1 - t), taking ``t·1000`` (ipsolve convention)."""

    def forward(self, x_t, t1000):
        t = (t1000.double() / 1000).clamp(0, 1 - 1e-6).to(x_t.device)
        x1 = self.dist.posterior_mean(x_t, t, 1 - t)
        return (x1 - x_t) / (1 - t).view(-1, 1, 1, 1).to(x_t.dtype)

    def __init__(self, dist: nn.Module):
        super().__init__()
        self.dist = dist


def linear_alphas_cumprod(steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """ᾱ of DDPM's linear β schedule (the default of every prior in the papers)."""
    return torch.cumprod(1 - torch.linspace(beta_start, beta_end, steps, dtype=torch.float64), 0)


def make_analytic_prior(name: str, image_size: int = 4, channels: int = 1, kind: str = "diffusion",
                        mean=0.0, std=0.5, correlation: float = 0.0, means=None, stds=None, weights=None,
                        components: int = 2, seed: int = 0):
    """``gaussian``: N(mean, std² C) with C the exponential correlation ``correlation^|i-j|``
    between pixel positions (0: isotropic).  ``gmm``: ``components`` isotropic Gaussians with
    given or seeded means (in [-0.8, 0.8]), ``stds`` (default 0.1) and ``weights``."""
    from .base import DiffusionPrior, FlowPrior

    d = channels * image_size * image_size
    if name == "gaussian":
        idx = torch.arange(d, dtype=torch.float64)
        cov = (std ** 2) * (correlation ** (idx[:, None] - idx[None]).abs()) if correlation else std ** 2 * torch.eye(d, dtype=torch.float64)
        mu = torch.as_tensor(mean, dtype=torch.float64).expand(d) if not torch.is_tensor(mean) or mean.numel() == 1 else mean
        dist = GaussianDistribution(mu.reshape(-1), cov)
    elif name == "gmm":
        g = torch.Generator().manual_seed(seed)
        means = torch.as_tensor(means, dtype=torch.float64) if means is not None else (torch.rand(components, d, generator=g) * 1.6 - 0.8).double()
        k = means.shape[0]
        stds = torch.as_tensor(stds if stds is not None else [0.1] * k, dtype=torch.float64)
        weights = torch.as_tensor(weights if weights is not None else [1.0 / k] * k, dtype=torch.float64)
        dist = GaussianMixtureDistribution(means.reshape(k, d), stds, weights)
    else:
        raise ValueError(f"unknown analytic prior {name!r}; expected 'gaussian' or 'gmm'")
    if kind == "diffusion":
        prior = DiffusionPrior(AnalyticDiffusionNetwork(dist, linear_alphas_cumprod()), linear_alphas_cumprod(),
                               image_size, channels)
    elif kind == "flow":
        prior = FlowPrior(AnalyticFlowNetwork(dist), image_size, channels, network_convention="ipsolve")
    else:
        raise ValueError(f"kind must be 'diffusion' or 'flow', got {shown(kind)}")
    prior.distribution = dist
    prior.source = name
    return prior


