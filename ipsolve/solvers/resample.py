"""ReSample (Song et al., ICLR 2024): latent diffusion with hard data consistency and
stochastic resampling."""
from __future__ import annotations

import logging

import torch
from tqdm.auto import tqdm

from ..notices import shown
from ..tensors import host_reads_are_free, per_image
from .base import Result, Solver, autocast_context, check_steps, prior_parts, randn_like_batch, residual_ratio, timer
from .stopping import discrepancy_tau

log = logging.getLogger("ipsolve")
_NOTED: set = set()  # grid notes already logged in this process


FIT_STOPS = ("reference", "noise_level")


def fit_measurement(init, forward, y, lr: float, max_iters: int, stop: str, target: torch.Tensor,
                    stagnation: int | None = None, sync_every: int = 25,
                    taken: torch.Tensor | None = None, progress: str | None = None) -> torch.Tensor:
    """AdamW (lr ``lr``, torch's default weight decay as the reference) on each image's
    ``mean((y − forward(v))²)`` from ``init``, at most ``max_iters`` steps, each image frozen when
    it stops.  ``stop="reference"`` (soominkwon/resample ``ddim.py`` ``pixel_optimization`` /
    ``latent_optimization``): the loss is below 1e-6 (reached where the fit absorbs the noise, e.g. SR
    ×4 after 100–600 pixel steps, never on inpainting or blur: docs/fidelity.md §2) or, with ``stagnation=W``,
    the loss exceeds the loss W iterations earlier (checked after the step, as the reference).
    ``stop="noise_level"`` (ipsolve's option): ‖y − forward(v)‖² is at or below ``target`` (τ²σ²m).
    ``taken``: a per-image integer tensor to which the optimiser steps each image took are added
    (on the device, no synchronisation).  ``progress``: a bar's label (None: no bar)."""
    if stop not in FIT_STOPS:
        raise ValueError(f"unknown stop {stop!r}; expected one of {FIT_STOPS}")
    v = init.detach().clone().requires_grad_()
    opt = torch.optim.AdamW([v], lr=lr)
    b, m = v.shape[0], y[0].numel()
    active = torch.ones(b, dtype=torch.bool, device=v.device)
    history: list[torch.Tensor] = []
    for it in tqdm(range(max_iters), desc=progress, disable=progress is None, leave=False):
        sse = (y - forward(v)).pow(2).flatten(1).sum(1)
        mse = sse.detach() / m
        active = active & torch.isfinite(mse)
        if stop == "noise_level":
            active = active & (sse.detach() > target)
        # leave once every image has stopped; on an accelerator only every `sync_every` iterations
        # (frozen images do not change, so the extra iterations alter nothing)
        if (host_reads_are_free(v.device) or it % sync_every == 0) and not bool(active.any()):
            break
        opt.zero_grad(set_to_none=True)
        (torch.where(active, sse, torch.zeros_like(sse)) / m).sum().backward()
        saved = v.detach().clone()
        opt.step()
        with torch.no_grad():
            v.copy_(torch.where(per_image(active, v), v, saved))
            if taken is not None:
                taken += active
        if stop == "reference":
            done = mse < 1e-6
            if stagnation is not None:
                history.append(mse)
                if it >= stagnation:
                    done = done | (history.pop(0) < mse)
            active = active & ~done
    return v.detach()


class ReSample(Solver):
    """ReSample, as soominkwon/resample's ``DDIMSampler.resample_sampling`` runs it (ddim.py):
    DDIM (``steps`` = 500, η = 0) on latents with a latent DPS step at every step,
    ``z ← z − 0.5·ᾱ_t ∇_z ‖y − A(D(ẑ0))‖``; at step index ``k = n−1−i`` with
    ``0 < k ≤ n − n//3`` and ``k % hdc_every == 0`` *hard data consistency*: a look-ahead of
    ``lookahead`` (5) unconditional DDIM steps along the grid gives ẑ0, which is fitted to ``y`` —
    in pixel space while ``k ≥ n//3`` (AdamW lr 1e-2, ``pixel_iters`` = 2000, then re-encoded),
    in latent space below (AdamW lr 5e-3, ≤ ``latent_iters`` = 500, 200-iteration stagnation
    rule) — then *stochastic resampling* back to the current time:
    ``z ~ N((γ√ᾱ' ẑ0 + (1−ᾱ') z')/(γ + 1 − ᾱ'), 1/(1/γ + 1/(1−ᾱ')))``,
    ``γ = 40 (1−ᾱ')/(1−ᾱ_t) (1 − ᾱ_t/ᾱ')``, ᾱ' = ᾱ of the next step; after the loop the final
    latent gets one more latent fit (``final_fit``) before decoding.

    Reference details kept by default, each with ipsolve's alternative as an option:
    ``x0_estimate="reference"`` — the code's x̂0 = (z − (1−ᾱ)ε)/√ᾱ (not Tweedie's
    √(1−ᾱ)), used in the DPS term and for ẑ0, whose look-ahead steps evaluate the network at
    the next timestep with ᾱ of the current one (an off-by-one of the code); ``"tweedie"``:
    Tweedie's x̂0 and ``lookahead`` ordinary DDIM steps from the next time to t = 0.
    ``fit_stop="reference"`` (MSE < 1e-6, budget, stagnation: :func:`fit_measurement`) or ``"noise_level"``
    (stop at ‖y − A(x)‖ ≤ τσ√m).  ``clamp_decoded=False`` (the code does not clamp D(ẑ0)).
    ``final_fit=True``.  ``grid="reference"``: LDM's DDIM grid (``util.py`` ``make_ddim_timesteps``
    "uniform": ``range(0, T, T // steps) + 1`` descending, so 999, 997, …, 1 for 500 steps; the
    last step goes to ᾱ_0, ``util.py`` L66); ``"uniform"``: ipsolve's evenly spaced grid from
    ``T−1`` (or the warm start) to 0 with a last step to ᾱ = 1 — warm starts always use it.
    A pixel diffusion prior runs with an identity autoencoder."""

    name = "resample"
    search_space = {"gamma_scale": (4.0, 400.0)}  # the reference's γ factor 40
    accepts = ("latent-diffusion", "diffusion")

    def uses_initial_guess(self) -> bool:
        return self.warm_start is not None  # (where warm_start draws x_t around it)

    def __init__(self, steps: int = 500, hdc_every: int = 10, lookahead: int = 5, pixel_lr: float = 1e-2,
                 pixel_iters: int = 2000, latent_lr: float = 5e-3, latent_iters: int = 500, gamma_scale: float = 40.0,
                 dps_scale: float = 0.5, x0_estimate: str = "reference", fit_stop: str = "reference",
                 stagnation: int | None = 200, clamp_decoded: bool = False, final_fit: bool = True, grid: str = "reference",
                 **kw):
        super().__init__(**kw)
        if steps < 3:
            raise ValueError(f"steps must be >= 3, got {steps}")
        if grid not in ("reference", "uniform"):
            raise ValueError(f"grid must be 'reference' (LDM's DDIM grid) or 'uniform', got {shown(grid)}")
        if x0_estimate not in ("reference", "tweedie"):
            raise ValueError(f"x0_estimate must be 'reference' or 'tweedie', got {shown(x0_estimate)}")
        if fit_stop not in FIT_STOPS:
            raise ValueError(f"fit_stop must be one of {FIT_STOPS}, got {shown(fit_stop)}")
        if lookahead < 1:
            raise ValueError(f"lookahead must be >= 1, got {lookahead}")
        self.steps, self.hdc_every, self.lookahead = steps, hdc_every, lookahead
        self.pixel_lr, self.pixel_iters, self.latent_lr, self.latent_iters = pixel_lr, pixel_iters, latent_lr, latent_iters
        self.gamma_scale, self.dps_scale, self.x0_estimate, self.fit_stop = gamma_scale, dps_scale, x0_estimate, fit_stop
        self.stagnation, self.clamp_decoded, self.final_fit, self.grid = stagnation, clamp_decoded, final_fit, grid

    def timesteps(self, inner, t_start: int) -> tuple[list[int], int]:
        """The DDIM grid and the timestep its last step goes to (0: ᾱ_0; −1: ᾱ = 1)."""
        if self.grid == "reference" and self.warm_start is None:
            check_steps(self.steps, inner.num_timesteps)
            c = inner.num_timesteps // self.steps
            # as LDM: ⌈T/c⌉ points, so e.g. 12 steps give 13; a point at T (c | T−1, e.g. 3 steps)
            # would index past the schedule (the reference fails there) and is dropped
            grid = [k + 1 for k in range(0, inner.num_timesteps, c) if k + 1 < inner.num_timesteps]
            return grid[::-1], 0
        return inner.timesteps(min(self.steps, t_start + 1), start=t_start), -1  # one step per timestep at most

    def hdc_kind(self, i: int, n: int) -> str | None:
        """What step ``i`` of ``n`` does after its DPS step: hard data consistency in ``"pixel"`` or
        ``"latent"`` space, or nothing (ddim.py: index ``k = n−1−i``, ``0 < k ≤ n − n//3``,
        ``k % hdc_every == 0``; pixel space while ``k ≥ n//3``)."""
        index, split = n - 1 - i, n // 3
        if not (0 < index <= n - split and index % self.hdc_every == 0):
            return None
        return "pixel" if index >= split else "latent"

    def x0_hat(self, inner, z, t, eps):
        """ReSample's x̂0 (``pseudo_x0``, ddim.py ``p_sample_ddim``) or Tweedie's."""
        a = inner.alpha_bar(t, z)
        coeff = (1 - a) if self.x0_estimate == "reference" else (1 - a).sqrt()
        return (z - coeff * eps) / a.sqrt()

    def lookahead_x0(self, inner, z, ts, i):
        """ẑ0 for hard data consistency from the post-DPS latent ``z`` (at ``ts[i+1]``), and the NFE spent."""
        eps_at = lambda v, s: inner.eps(v, int(s))  # noqa: E731
        if self.x0_estimate == "reference":  # the code's "time travel" (ddim.py L274-285)
            zz, nfe = z, 0
            for k in range(i, min(i + self.lookahead, len(ts) - 1)):
                eps = eps_at(zz, ts[k + 1])  # network at the next timestep, ᾱ of this one
                x0 = self.x0_hat(inner, zz, ts[k], eps)
                a_prev = inner.alpha_bar(ts[k + 1], zz)
                zz = a_prev.sqrt() * ((zz - (1 - inner.alpha_bar(ts[k], zz)).sqrt() * eps)
                                      / inner.alpha_bar(ts[k], zz).sqrt()) + (1 - a_prev).sqrt() * eps
                nfe += 1
            return x0, nfe
        sub = inner.timesteps(self.lookahead, start=ts[i + 1])
        zz = z
        for s, s_next in zip(sub, sub[1:] + [-1]):
            zz = inner.ddim_step(zz, s, s_next, eps_at(zz, s))
        return zz, len(sub)

    def run(self, y, operator, prior, gens, sigma: float, callback=None) -> Result:
        start = timer()
        latent, inner, _ = prior_parts(prior)
        calls = {"decoder_backward": 0, "decoder_forward": 0, "encoder": 0}  # autoencoder work beside the NFE

        def counted(fn, what):
            def call(v):
                if latent:
                    calls[what if what == "encoder" else
                          "decoder_backward" if torch.is_grad_enabled() and v.requires_grad else "decoder_forward"] += 1
                return fn(v)
            return call

        encode = counted(prior.encode if latent else (lambda v: v), "encoder")
        decode_raw = counted(prior.decode if latent else (lambda v: v), "decoder")
        decode = (lambda v: decode_raw(v).clamp(-1, 1)) if self.clamp_decoded else decode_raw
        b = y.shape[0]
        t_start = self.start_timestep(inner.num_timesteps)
        ts, t_last = self.timesteps(inner, t_start)
        grid_note = self.grid_note(len(ts))
        shape = (b, inner.channels, inner.image_size, inner.image_size)
        z = randn_like_batch(shape, gens, y.device)
        if self.warm_start is not None:
            with torch.no_grad():
                z = inner.add_noise(encode(self.start_image(operator, y)), t_start, z)
        m = y[0].numel()  # noise_level fits stop at ‖y − A(x)‖ ≤ τσ√m, τ from the χ²_m 95 % quantile
        target = torch.full((b,), (discrepancy_tau(m) * sigma) ** 2 * m, device=y.device)

        # optimiser steps of each image's fits, pixel and latent (info: how far the fit budgets were used)
        fit_steps = {kind: torch.zeros(b, dtype=torch.long, device=y.device) for kind in ("pixel", "latent")}

        def latent_fit(init, progress=None):
            return fit_measurement(init, lambda v: operator(decode(v)), y, self.latent_lr, self.latent_iters,
                                   self.fit_stop, target, self.stagnation, taken=fit_steps["latent"], progress=progress)

        nfe, n = 0, len(ts)
        for i, t in enumerate(tqdm(ts, desc=self.name, disable=not self.show_progress, leave=False)):
            t_next = ts[i + 1] if i + 1 < n else t_last
            z = z.detach().requires_grad_()
            with autocast_context(self.autocast, y.device):
                eps = inner.eps(z, int(t)).float()
            nfe += 1
            z0 = self.x0_hat(inner, z, t, eps)
            norm = (y - operator(decode(z0))).flatten(1).norm(dim=1)
            (grad,) = torch.autograd.grad(norm.sum(), z)
            with torch.no_grad():
                a_t = inner.alpha_bar(t, z)
                z_next = inner.ddim_step(z, t, t_next, eps) - self.dps_scale * a_t * grad
            kind = self.hdc_kind(i, n)
            if kind is not None:
                with torch.no_grad():
                    zz, spent = self.lookahead_x0(inner, z_next, ts, i)
                nfe += spent
                with torch.enable_grad():
                    if kind == "pixel":  # pixel space, then re-encode
                        x_fit = fit_measurement(decode(zz), operator, y, self.pixel_lr, self.pixel_iters,
                                                self.fit_stop, target, taken=fit_steps["pixel"])
                        with torch.no_grad():
                            z0_hat = encode(x_fit)
                    else:  # latent space, through the decoder
                        z0_hat = latent_fit(zz)
                with torch.no_grad():
                    a_prev = inner.alpha_bar(t_next, z)
                    gamma = self.gamma_scale * (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
                    mean = (gamma * a_prev.sqrt() * z0_hat + (1 - a_prev) * z_next) / (gamma + 1 - a_prev)
                    var = 1 / (1 / gamma + 1 / (1 - a_prev))
                    z_next = mean + var.sqrt() * randn_like_batch(shape, gens, y.device)
            z = z_next
            if callback is not None:
                callback(i, {"x": decode_raw(z0.detach()).clamp(-1, 1), "loss": norm.detach() ** 2 / m})
        if self.final_fit:  # the reference ends with a latent fit of the final latent (ddim.py L329-332)
            with torch.enable_grad():  # (a bar: up to latent_iters decoder back-propagations, minutes at 512 px)
                z = latent_fit(z.detach(), f"{self.name}: final latent fit" if self.show_progress else None)
        with torch.no_grad():
            x = decode_raw(z).clamp(-1, 1)
            res = residual_ratio(y, operator(x), sigma).cpu()
            finite = torch.isfinite(x).flatten(1).all(1)
            steps_taken = {kind: v.tolist() for kind, v in fit_steps.items()}
        seconds = timer() - start
        # nfe: denoiser calls; the autoencoder calls are counted apart (decoder_backward: forward +
        # backward, in the DPS steps and the latent fits); *_fit_iterations: each image's optimiser
        # steps over all its pixel / latent fits (the budgets: pixel_iters / latent_iters per fit)
        info = [{"nfe": nfe, "iterations": n, "stop_reason": "budget" if finite[i] else "nan",
                 "residual": float(res[i]), "seconds": seconds, **(calls if latent else {}),
                 "pixel_fit_iterations": steps_taken["pixel"][i], "latent_fit_iterations": steps_taken["latent"][i],
                 **({"grid_note": grid_note} if grid_note else {})}
                for i in range(b)]
        return Result(x=x, info=info)

    def grid_note(self, n: int) -> str | None:
        """What a ``steps`` setting silently changes in the reference's rules (audit 2026-12-05),
        logged once per setting: a grid with no hard data-consistency step (``steps`` ≤ 10 at
        ``hdc_every`` 10 — then latent DPS plus the final fit), or one longer than asked (LDM's grid
        c = T // steps: 400 steps run 500, 600 run 999)."""
        hdc = sum(self.hdc_kind(i, n) is not None for i in range(n))
        parts = []
        if hdc == 0:
            parts.append(f"no hard data-consistency step in its {n}-step grid (hdc_every {self.hdc_every}): it runs as "
                         f"latent DPS plus the final fit")
        if abs(n - self.steps) > 1:
            parts.append(f"steps={self.steps} runs {n} DDIM steps on the reference's grid (every T // steps timesteps)")
        if not parts:
            return None
        note = "ReSample: " + "; ".join(parts)
        if note not in _NOTED:
            _NOTED.add(note)
            log.warning("%s", note)
        return note
