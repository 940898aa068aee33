"""FMPlug (flow-matching plug-in; code sun-umn/FMPlug, paper and line-by-line ledger in docs/fidelity.md §4):
time-adaptive warm start and sharp Gaussianity."""
from __future__ import annotations

import math

import torch

from ..priors import LatentPrior
from ..tensors import per_image
from .base import randn_like_batch
from .plug import PlugSolver


class FMPlug(PlugSolver):
    """``G(z, t0)``: start the ODE at a learnable time ``t0`` from ``t0·ŷ + (1−t0)·z`` (ŷ = the
    operator's image-space initial guess, encoded for latent priors) and integrate to t = 1 in
    ``ode_steps`` Euler steps (3); minimise ``ℓ(y, A(G(z, t0)))`` over ``(z, t0)`` by Adam.  After
    every step ``z`` is projected onto the shell ``(1−ε)√d ≤ ‖z‖ ≤ (1+ε)√d`` (ε = 0.025).
    ``warm_start`` initialises ``t0`` (default 0.5, ipsolve's choice); ``t0`` is kept in
    [0, ``max_time``].

    Time grid: uniform from ``t0`` to 1, also for priors that sample on a shifted grid (SD3's
    ``shift``, FLUX's resolution shift; :meth:`FlowPrior.time_grid`): the FMPlug code runs SD3 on
    ``linspace(1000, 0, N+1)`` with no shift (``fmplug/tasks/super_resolution_v3.py``), and the
    learnable start ``t0`` already chooses where the few steps are spent."""

    name = "fmplug"
    search_space = {"lr": (1e-3, 1e-1)}  # Adam lr 1e-2 (FMPlug's code); the iteration count by calibration's held-out curve
    accepts = ("flow", "latent-flow")

    def uses_initial_guess(self) -> bool:
        return True  # the Euler steps start from t0 between the guess and the seed

    def __init__(self, iterations: int = 5000, ode_steps: int = 3, time_lr: float = 1e-2, shell_eps: float = 0.025,
                 max_time: float = 0.95, warm_start: float | None = 0.5, **kw):
        super().__init__(iterations=iterations, warm_start=warm_start, **kw)
        if ode_steps < 1:
            raise ValueError(f"ode_steps must be >= 1, got {ode_steps}")
        self.ode_steps, self.time_lr, self.shell_eps, self.max_time = ode_steps, time_lr, shell_eps, max_time
        self.network_calls = ode_steps

    def init_params(self, y, operator, prior, gens):
        inner = prior.inner if isinstance(prior, LatentPrior) else prior
        self._inner = inner
        with torch.no_grad():
            guess = self.start_image(operator, y)
            self._y_hat = prior.encode(guess) if isinstance(prior, LatentPrior) else guess
        self._z = randn_like_batch(self._y_hat.shape, gens, y.device)
        self.project()
        self._z.requires_grad_()
        t0 = 0.0 if self.warm_start is None else float(self.warm_start)
        self._t0 = torch.full((y.shape[0],), min(t0, self.max_time), device=y.device, requires_grad=True)
        return [{"params": [self._z], "lr": self.lr}, {"params": [self._t0], "lr": self.time_lr}]

    def project(self):
        """Sharp Gaussianity: rescale ``z`` onto the shell around √d; clamp ``t0``."""
        with torch.no_grad():
            d = self._z[0].numel()
            norm = self._z.flatten(1).norm(dim=1).clamp_min(1e-12)
            target = norm.clamp((1 - self.shell_eps) * math.sqrt(d), (1 + self.shell_eps) * math.sqrt(d))
            self._z.mul_(per_image(target / norm, self._z))
            if hasattr(self, "_t0"):
                self._t0.clamp_(0.0, self.max_time)

    def generate(self, prior):
        t0 = per_image(self._t0, self._z)
        x = t0 * self._y_hat + (1 - t0) * self._z
        for k in range(self.ode_steps):
            t = self._t0 + (1 - self._t0) * k / self.ode_steps
            t_next = self._t0 + (1 - self._t0) * (k + 1) / self.ode_steps
            v = self.network(self._inner.velocity, x, t)
            x = self._inner.ode_step(x, t, t_next, v)
        if isinstance(prior, LatentPrior):
            x = prior.decode(x)
        return x.clamp(-1, 1)
