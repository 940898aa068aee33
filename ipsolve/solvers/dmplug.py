"""DMPlug (Wang et al., NeurIPS 2024): the reverse process as a function of its seed."""
from __future__ import annotations

import torch

from ..priors import LatentPrior
from .base import prior_parts, randn_like_batch
from .plug import PlugSolver


class DMPlug(PlugSolver):
    """``x = clamp(R(z), −1, 1)`` with ``R`` the deterministic DDIM (η = 0) through ``ddim_steps``
    timesteps (3: t = 666, 333, 0 of 1000, diffusers' "leading" spacing), decoded for latent
    priors; minimise ``ℓ(y, A(R(z)))`` over the seed ``z`` by Adam (lr 1e-2, 5000 iterations as the
    released script; the paper says 10000 for non-linear blur).  ``warm_start=s``: ``R`` starts at
    t0 = s·(T−1) with ``ddim_steps`` evenly spaced steps and ``z`` is the operator's initial
    guess noised to t0.  Blind: ``(z, kernel logits)`` jointly (kernel lr 0.1).

    ``clip_x0=True`` (the reference, sun-umn/DMPlug ``ddim_sampler.py``: diffusers' DDIM with
    ``clip_sample=True``, ``use_clipped_model_output=True``): every DDIM step clamps x̂0 to
    [-1, 1] and re-derives ε from it — that clipped map *is* the R the paper optimises.
    Latent priors are never clipped (latents are not images in [-1, 1])."""

    name = "dmplug"
    search_space = {"lr": (1e-3, 1e-1)}  # Adam lr 1e-2 in the reference; the iteration count by calibration's held-out curve
    accepts = ("diffusion", "latent-diffusion")

    def uses_initial_guess(self) -> bool:
        return self.warm_start is not None  # (where warm_start draws x_t around it)

    def __init__(self, iterations: int = 5000, ddim_steps: int = 3, clip_x0: bool = True, **kw):
        super().__init__(iterations=iterations, **kw)
        if ddim_steps < 1:
            raise ValueError(f"ddim_steps must be >= 1, got {ddim_steps}")
        self.ddim_steps, self.clip_x0 = ddim_steps, clip_x0
        self.network_calls = ddim_steps

    def reverse_timesteps(self, num_timesteps: int) -> list[int]:
        if self.warm_start is None:
            stride = num_timesteps // self.ddim_steps
            return [i * stride for i in reversed(range(self.ddim_steps))]
        key = (num_timesteps, self.warm_start, self.ddim_steps)
        if getattr(self, "_reverse_key", None) != key:  # once per run, not at every iteration
            t0 = self.start_timestep(num_timesteps)
            self._reverse_key = key
            self._reverse_ts = torch.linspace(t0, 0, self.ddim_steps).round().long().tolist() if self.ddim_steps > 1 else [t0]
        return list(self._reverse_ts)

    def init_params(self, y, operator, prior, gens):
        inner = prior.inner if isinstance(prior, LatentPrior) else prior
        first_t = self.reverse_timesteps(inner.num_timesteps)[0]
        with torch.no_grad():
            if isinstance(prior, LatentPrior):
                init_image = self.start_image(operator, y) if self.warm_start is not None else None
                shape = (y.shape[0], inner.channels, inner.image_size, inner.image_size)
                init = prior.encode(init_image) if init_image is not None else None
            else:
                shape = (y.shape[0], *prior.shape)
                init = self.start_image(operator, y) if self.warm_start is not None else None
            noise = randn_like_batch(shape, gens, y.device)
            z = noise if init is None else inner.add_noise(init, first_t, noise)
        self._z = z.requires_grad_()
        return [{"params": [self._z], "lr": self.lr}]

    def generate(self, prior):
        return self.reverse(prior, self._z)

    def reverse(self, prior, z: torch.Tensor) -> torch.Tensor:
        """``R(z)``, the function DMPlug optimises: deterministic DDIM (η = 0) from the seed ``z``
        through :meth:`reverse_timesteps` (x̂0 clipped per step for pixel priors, see the class
        docstring), decoded for latent priors, clamped to [-1, 1]."""
        latent, inner, _ = prior_parts(prior)
        x = z
        ts = self.reverse_timesteps(inner.num_timesteps)
        for t, t_next in zip(ts, ts[1:] + [-1]):
            eps = self.network(inner.eps, x, int(t))
            x = inner.ddim_step(x, t, t_next, eps, clip_x0=self.clip_x0 and not latent)
        if latent:
            x = prior.decode(x)
        return x.clamp(-1, 1)
