"""Prior interfaces: stateless maps a solver writes its loop on (no ``scheduler.step()``).

* ``DiffusionPrior`` — ε-network + ``alphas_cumprod`` (``x_t = √ᾱ_t x + √(1-ᾱ_t) ε``).
* ``FlowPrior`` — velocity network, ipsolve convention t = 0 noise, t = 1 data,
  ``x_t = t·x + (1-t)·z``, ``v = x - z``.
* ``LatentPrior`` — an autoencoder around an inner diffusion or flow prior on latents.
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from ..notices import shown
from ..tensors import on_device


def _network_output(out) -> torch.Tensor:
    """The tensor of a diffusers ``BaseOutput`` / tuple / plain tensor."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "sample"):
        return out.sample
    return out[0]


class Prior(nn.Module):
    """Common part: image shape, device/dtype handling and input checks."""

    kind: str = ""

    def __init__(self, image_size: int, channels: int):
        super().__init__()
        self.image_size, self.channels = int(image_size), int(channels)
        self.source = ""

    @property
    def device(self) -> torch.device:
        for t in list(self.parameters()) + list(self.buffers()):
            return t.device
        return torch.device("cpu")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    def check_image(self, x: torch.Tensor, name: str = "x") -> None:
        """Reject images this prior cannot take, naming what it expects."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"{name} must be a (B, C, H, W) tensor, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"{name} has shape {tuple(x.shape)}, but the prior {self.source or type(self).__name__} "
                             f"takes images of shape (B, {self.channels}, {self.image_size}, {self.image_size})")
        if x.device.type != self.device.type:
            raise ValueError(f"{name} is on {x.device} but the prior is on {self.device}; move it with .to()")

    def extra_repr(self) -> str:
        return f"source={self.source!r}, kind={self.kind}, shape={self.shape}"

    def networks(self) -> list[tuple[nn.Module, str]]:
        """``(owner, attribute)`` of each network module this prior calls (the denoiser; an
        autoencoder for latent priors)."""
        return [(self, name) for name in ("network", "autoencoder") if isinstance(getattr(self, name, None), nn.Module)]

    def optimize(self, channels_last: bool | str = False, compile: bool | str = False) -> "Prior":
        """Speed options for the networks (docs/performance.md), applied in place; outputs agree with the
        plain networks' to float rounding.  ``channels_last``: NHWC memory format for the
        convolutional networks (a convolution with a channels-last weight returns channels-last
        activations, so inputs need no conversion; ``False``: the plain layout, ``None``: unchanged);
        ``"auto"`` (:func:`load_prior`'s default): on where the prior's networks are on a CPU
        (oneDNN's convolutions: the bundled UNets' calls 5–17 % faster), off on a GPU (the ADM was
        slower in bf16 on the H200), and it follows the prior through ``.to(device)``.
        ``compile``: ``torch.compile`` the denoising network (``True``: the default mode, or a mode
        name: ``"max-autotune"``, ``"reduce-overhead"`` for CUDA graphs); the first calls compile
        (tens of seconds at paper scale).  A text-conditioned network compiles its diffusers model."""
        if compile not in (False, True, None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
            raise ValueError(f"compile must be true/false or a torch.compile mode (default, reduce-overhead, "
                             f"max-autotune), got {shown(compile)}")
        if channels_last not in (True, False, None, "auto"):
            raise ValueError(f"channels_last must be true, false or auto, got {shown(channels_last)}")
        self._channels_last_auto = channels_last == "auto"
        if self._channels_last_auto:
            channels_last = self.device.type == "cpu"
        if channels_last is not None:  # False: back to the plain (contiguous) layout
            self._memory_format(torch.channels_last if channels_last else torch.contiguous_format)
        if compile:
            target, attr = self.compile_target()
            mode = None if compile in (True, "default") else compile
            setattr(target, attr, torch.compile(getattr(target, attr), mode=mode, dynamic=False))
        return self

    @property
    def memory_format(self) -> str:
        """``"channels_last"`` when the networks' convolutions are NHWC (:meth:`optimize`), else
        ``"contiguous"`` (recorded in a run's ``summary.json``)."""
        for owner, name in self.networks():
            for m in getattr(owner, name).modules():  # (1 input channel or a 1×1 kernel: both layouts alike)
                if isinstance(m, nn.Conv2d) and m.in_channels > 1 and m.kernel_size != (1, 1):
                    w = m.weight
                    nhwc = w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
                    return "channels_last" if nhwc else "contiguous"
        return "contiguous"

    def _memory_format(self, memory_format: torch.memory_format) -> None:
        for owner, name in self.networks():
            getattr(owner, name).to(memory_format=memory_format)

    def _apply(self, fn, recurse=True):
        """``nn.Module``'s ``.to`` / ``.cuda`` / ``.cpu`` / ``.half``; with ``channels_last="auto"`` the
        layout follows the device (NHWC on a CPU only)."""
        out = super()._apply(fn, recurse)
        if getattr(self, "_channels_last_auto", False):
            self._memory_format(torch.channels_last if self.device.type == "cpu" else torch.contiguous_format)
        return out

    def compile_target(self) -> tuple[nn.Module, str]:
        """``(owner, attribute)`` of the module ``optimize(compile=...)`` compiles: the denoising
        network, or the diffusers model inside a text-conditioned wrapper (the wrapper only adds the
        fixed text embeddings); :func:`ipsolve.profiling.graph_breaks` checks it traces whole."""
        owner = getattr(self, "inner", self)
        module = getattr(owner, "network", None)
        if not isinstance(module, nn.Module):
            raise TypeError(f"{type(self).__name__} has no denoising network to compile")
        return (module, "network") if isinstance(getattr(module, "network", None), nn.Module) else (owner, "network")


class DiffusionPrior(Prior):
    """A noise-prediction network with its ``alphas_cumprod`` table (DDPM, Ho et al. 2020).

    ``network(x_t, t)`` may predict ``epsilon``, ``sample`` (x0) or ``v_prediction``
    (``prediction_type`` from the scheduler config); a learned-sigma output (2C channels, ADM)
    uses its first C channels for ε and its last C for the learned-range variance
    (:meth:`eps_and_variance`, ``ddpm_posterior(..., variance_output=v)``)."""

    kind = "diffusion"

    def __init__(self, network: nn.Module, alphas_cumprod: torch.Tensor, image_size: int, channels: int,
                 prediction_type: str = "epsilon", variance_type: str | None = "learned_range"):
        super().__init__(image_size, channels)
        if prediction_type not in ("epsilon", "sample", "v_prediction"):
            raise ValueError(f"unsupported prediction_type {prediction_type!r}")
        # variance_type: what a 2C-channel output's second half means; only "learned_range" (ADM;
        # diffusers' scheduler config) is used as a variance, anything else is ignored
        self.network, self.prediction_type, self.variance_type = network, prediction_type, variance_type
        self.register_buffer("alphas_cumprod", torch.as_tensor(alphas_cumprod, dtype=torch.float64))

    @property
    def num_timesteps(self) -> int:
        return len(self.alphas_cumprod)

    def alpha_bar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """ᾱ_t broadcast to ``like``; ``t = -1`` means ᾱ = 1 (the clean image)."""
        shape = (-1, *([1] * (like.ndim - 1)))
        if isinstance(t, numbers.Integral):  # from the host table, filled in on the device (see on_device)
            return on_device(self.alpha_bar_value(t), like).view(shape)
        t = torch.as_tensor(t, device=self.alphas_cumprod.device).long().reshape(-1)
        a = torch.where(t >= 0, self.alphas_cumprod[t.clamp_min(0)], torch.ones_like(self.alphas_cumprod[0]))
        return a.to(like.dtype).to(like.device).view(shape)

    def alphas_cumprod_host(self) -> torch.Tensor:
        """The ᾱ table on the host (float64, cached), so that a solver's loop reads schedule values
        without waiting for the device."""
        if getattr(self, "_alphas_cumprod_host", None) is None:
            self._alphas_cumprod_host = self.alphas_cumprod.detach().to("cpu", torch.float64)
        return self._alphas_cumprod_host

    def alpha_bar_value(self, t: int) -> float:
        """ᾱ_t as a Python number (``t = -1``: 1), from :meth:`alphas_cumprod_host` (kept as a
        list: reading it dispatches no tensor operation)."""
        if int(t) < 0:
            return 1.0
        if getattr(self, "_alpha_bar_values", None) is None:
            self._alpha_bar_values = self.alphas_cumprod_host().tolist()
        return self._alpha_bar_values[int(t)]

    def _timesteps(self, t, batch: int, device) -> torch.Tensor:
        if isinstance(t, numbers.Integral):  # no host-to-device copy (see on_device)
            return torch.full((batch,), int(t), dtype=torch.long, device=device)
        t = torch.as_tensor(t, device=device).long().reshape(-1)
        return t.expand(batch) if t.numel() == 1 else t

    def eps(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """ε̂(x_t, t) — one network call for the whole batch."""
        return self.eps_and_variance(x_t, t)[0]

    def eps_and_variance(self, x_t: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(ε̂, v)`` from ONE network call: ``v`` is the learned-sigma half of a 2C-channel
        output (ADM ``learn_sigma=True``; split as DPS ``guided_diffusion/gaussian_diffusion.py``
        L215-217), ``None`` when the network has C output channels or its second half is not
        a learned-range variance (``variance_type``).  ``v`` feeds
        ``ddpm_posterior(..., variance_output=v)``."""
        t = self._timesteps(t, x_t.shape[0], x_t.device)
        p = next(self.network.parameters(), None)
        dtype = p.dtype if p is not None else x_t.dtype
        full = _network_output(self.network(x_t.to(dtype), t))
        c = x_t.shape[1]
        v = full[:, c:].to(x_t.dtype) if full.shape[1] == 2 * c and self.variance_type == "learned_range" else None
        eps = full[:, :c].to(x_t.dtype)
        if self.prediction_type != "epsilon":
            eps = self._eps_from_output(x_t, self.alpha_bar(t, x_t), eps)
        return eps, v

    def eps_at(self, x_t: torch.Tensor, t: float, alpha_bar: float) -> torch.Tensor:
        """ε̂ at a real-valued timestep ``t`` whose ᾱ is ``alpha_bar`` (one network call): EDM's
        VPPrecond as DAPS uses it, which calls the network between the integer timesteps."""
        p = next(self.network.parameters(), None)
        dtype = p.dtype if p is not None else x_t.dtype
        tt = torch.full((x_t.shape[0],), float(t), device=x_t.device, dtype=torch.float32)
        out = _network_output(self.network(x_t.to(dtype), tt))[:, :x_t.shape[1]].to(x_t.dtype)
        return out if self.prediction_type == "epsilon" else self._eps_from_output(x_t, alpha_bar, out)

    def _eps_from_output(self, x_t, a, out) -> torch.Tensor:
        """ε̂ from an x0- or v-prediction ``out`` at ᾱ = ``a`` (a float or a broadcastable tensor):
        ``sample``: ε = (x_t − √ᾱ x0)/√(1 − ᾱ); ``v_prediction``: ε = √ᾱ v + √(1 − ᾱ) x_t
        (v = √ᾱ ε − √(1 − ᾱ) x0)."""
        root, root_rest = (a.sqrt(), (1 - a).sqrt()) if torch.is_tensor(a) else (math.sqrt(a), math.sqrt(1 - a))
        if self.prediction_type == "sample":
            return (x_t - root * out) / root_rest
        return root * out + root_rest * x_t

    def x0_from_eps(self, x_t, t, eps) -> torch.Tensor:
        """Tweedie: x̂0 = (x_t - √(1-ᾱ_t) ε̂) / √ᾱ_t."""
        if isinstance(t, numbers.Integral):  # one timestep for the batch: two tensor operations
            a = self.alpha_bar_value(t)
            return torch.sub(x_t, eps, alpha=math.sqrt(1 - a)) / math.sqrt(a)
        a = self.alpha_bar(t, x_t)
        return (x_t - (1 - a).sqrt() * eps) / a.sqrt()

    def x0(self, x_t, t) -> torch.Tensor:
        return self.x0_from_eps(x_t, t, self.eps(x_t, t))

    def add_noise(self, x0, t, noise) -> torch.Tensor:
        """q(x_t | x0): √ᾱ_t x0 + √(1-ᾱ_t) ε."""
        a = self.alpha_bar(t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def ddim_step(self, x_t, t, t_next, eps, eta: float = 0.0, noise=None, clip_x0: bool = False) -> torch.Tensor:
        """DDIM update (Song et al. 2021, eq. 12) from t to t_next < t (t_next = -1: x0).
        ``clip_x0``: clamp x̂0 to [-1, 1] and re-derive ε from the clamped x̂0, as diffusers'
        ``DDIMScheduler(clip_sample=True).step(..., use_clipped_model_output=True)``."""
        if isinstance(t, numbers.Integral) and isinstance(t_next, numbers.Integral):
            return self._ddim_step_at(x_t, int(t), int(t_next), eps, eta, noise, clip_x0)
        a, a_next = self.alpha_bar(t, x_t), self.alpha_bar(t_next, x_t)
        x0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
        if clip_x0:
            x0 = x0.clamp(-1, 1)
            eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        sigma = eta * ((1 - a_next) / (1 - a) * (1 - a / a_next)).clamp_min(0).sqrt()
        x_next = a_next.sqrt() * x0 + (1 - a_next - sigma ** 2).clamp_min(0).sqrt() * eps
        if eta > 0:
            x_next = x_next + sigma * noise
        return x_next

    def _ddim_step_at(self, x_t, t: int, t_next: int, eps, eta, noise, clip_x0):
        """:meth:`ddim_step` for one timestep of the whole batch (DMPlug's and ReSample's loops): the
        same update with ᾱ_t, ᾱ_t' as host float64 numbers — four tensor operations (six with the
        clip) instead of some twenty on 1-element tensors."""
        a, a_next = self.alpha_bar_value(t), self.alpha_bar_value(t_next)
        x0 = torch.sub(x_t, eps, alpha=math.sqrt(1 - a)) / math.sqrt(a)
        if clip_x0:
            x0 = x0.clamp(-1, 1)
            eps = torch.sub(x_t, x0, alpha=math.sqrt(a)) / math.sqrt(1 - a)
        sigma = eta * math.sqrt(max((1 - a_next) / (1 - a) * (1 - a / a_next), 0.0))
        x_next = torch.add(x0 * math.sqrt(a_next), eps, alpha=math.sqrt(max(1 - a_next - sigma ** 2, 0.0)))
        if eta > 0:
            x_next = x_next + sigma * noise
        return x_next

    def ddpm_posterior(self, x_t, t, x0, t_prev=None, variance_output=None, t_next=None):
        """Mean and std of q(x_{t'} | x_t, x0) (Ho et al. 2020, eq. 7), t' = ``t_prev`` (default
        t − 1); for strided steps β = 1 − ᾱ_t/ᾱ_{t'} (respaced DDPM, Nichol & Dhariwal 2021).

        ``variance_output`` (the v of :meth:`eps_and_variance`): the std is the learned-range one
        of DPS's ``model_var_type: learned_range`` (``guided_diffusion/posterior_mean_variance.py``
        L211-242; Nichol & Dhariwal 2021, eq. 15): ``frac = (v + 1)/2``,
        ``log σ² = frac·log β + (1 − frac)·log β̃`` with the step's (respaced, ``SpacedDiffusion``
        ``gaussian_diffusion.py`` L310-317) β and posterior variance β̃, std ``exp(½ log σ²)``
        (``DDPM.p_sample`` L371).  ``log β̃`` is clipped as ``posterior_log_variance_clipped``
        (L224-228): at the chain's first step (``t_prev`` = −1, β̃ = 0) it is β̃ of the next
        step, t_next → t, with ``t_next`` the next timestep of the chain (default t + 1; the
        sampler adds no noise there anyway).  These terms are computed in float64."""
        if all(isinstance(v, numbers.Integral) for v in (t, t_prev, t_next) if v is not None):
            return self._ddpm_posterior_at(x_t, int(t), x0, t_prev, variance_output, t_next)
        t = self._timesteps(t, x_t.shape[0], x_t.device)
        t_prev = t - 1 if t_prev is None else self._timesteps(t_prev, x_t.shape[0], x_t.device)
        a, a_prev = self.alpha_bar(t, x_t), self.alpha_bar(t_prev, x_t)
        beta = 1 - a / a_prev
        mean = (a_prev.sqrt() * beta / (1 - a)) * x0 + ((1 - beta).sqrt() * (1 - a_prev) / (1 - a)) * x_t
        if variance_output is None:
            var = beta * (1 - a_prev) / (1 - a)
            return mean, var.clamp_min(0).sqrt()
        v = variance_output.to(device=x_t.device, dtype=torch.float64)
        a, a_prev = self.alpha_bar(t, v), self.alpha_bar(t_prev, v)
        beta = 1 - a / a_prev
        t_next = t + 1 if t_next is None else self._timesteps(t_next, x_t.shape[0], x_t.device)
        a_next = self.alpha_bar(t_next.clamp_max(self.num_timesteps - 1), v)
        first = t_prev.view(-1, *([1] * (v.ndim - 1))) < 0
        var_next = (1 - a_next / a) * (1 - a) / (1 - a_next)  # β̃ of the step t_next → t
        min_log = torch.where(first, var_next, beta * (1 - a_prev) / (1 - a)).log()
        frac = (v + 1) / 2
        log_var = frac * beta.log() + (1 - frac) * min_log
        return mean, (0.5 * log_var).exp().to(x_t.dtype)

    def _ddpm_posterior_at(self, x_t, t: int, x0, t_prev, variance_output, t_next):
        """:meth:`ddpm_posterior` for one timestep of the whole batch (a solver's loop): the same
        formulas with the schedule terms as host float64 numbers, so a step costs two tensor
        operations for the mean and five for a learned std instead of some fifty on 1-element
        tensors (each a kernel launch on a GPU)."""
        t_prev = t - 1 if t_prev is None else int(t_prev)
        a, a_prev = self.alpha_bar_value(t), self.alpha_bar_value(t_prev)
        beta = 1 - a / a_prev
        mean = torch.add(x0 * (math.sqrt(a_prev) * beta / (1 - a)), x_t, alpha=math.sqrt(1 - beta) * (1 - a_prev) / (1 - a))
        shape = (1,) * x_t.ndim
        if variance_output is None:
            return mean, on_device(math.sqrt(max(beta * (1 - a_prev) / (1 - a), 0.0)), x_t).view(shape)
        if t_prev < 0:  # β̃ of the step t_next → t (posterior_log_variance_clipped)
            a_next = self.alpha_bar_value(min(t + 1 if t_next is None else int(t_next), self.num_timesteps - 1))
            min_log = math.log((1 - a_next / a) * (1 - a) / (1 - a_next))
        else:
            min_log = math.log(beta * (1 - a_prev) / (1 - a))
        # ½ log σ² = ½ (frac·log β + (1 − frac)·min_log), frac = (v + 1)/2
        half_log_var = variance_output.to(device=x_t.device, dtype=torch.float64).add(1) \
            .mul_(0.25 * (math.log(beta) - min_log)).add_(0.5 * min_log)
        return mean, half_log_var.exp_().to(x_t.dtype)

    def timesteps(self, steps: int, start: int | None = None) -> list[int]:
        """``steps`` evenly spaced timesteps from ``start`` (default T-1) down to 0."""
        start = self.num_timesteps - 1 if start is None else int(start)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return torch.linspace(start, 0, steps).round().long().tolist() if steps > 1 else [start]

    @torch.no_grad()
    def sample(self, n: int, steps: int = 50, generator: torch.Generator | None = None, eta: float = 0.0,
               clip_x0: bool = False):
        """Unconditional DDIM samples, ``(n, C, H, W)``.  ``clip_x0``: clamp every step's x̂0 to
        [-1, 1] (:meth:`ddim_step`; diffusers' ``clip_sample``).  Off by default, as the bundled
        priors' scheduler configs say; on a small prior it keeps 50-step samples on the training
        family's range (measured on ``bundled:phantom-ddpm``, η = 1: per-image means −0.74 to −0.26
        against the training phantoms' −0.71 to −0.46 (quartiles); unclipped −1.21 to 0.31)."""
        x = randn((n, *self.shape), generator, self.device)
        ts = self.timesteps(steps)
        for t, t_next in zip(ts, ts[1:] + [-1]):
            eps = self.eps(x, t)
            noise = randn(x.shape, generator, self.device) if eta > 0 else None
            x = self.ddim_step(x, t, t_next, eps, eta, noise, clip_x0=clip_x0)
        return x


class FlowPrior(Prior):
    """A rectified-flow / flow-matching velocity network (Liu et al. 2023; Lipman et al. 2023).

    ipsolve's convention: t = 0 noise, t = 1 data, ``x_t = t·x + (1-t)·z``, ``v = x - z``.
    ``network_convention="diffusers"``: the network follows diffusers' flow matching
    (``FlowMatchEulerDiscreteScheduler``): it takes timestep ``σ·1000`` with ``σ = 1 - t`` and
    predicts ``z - x``; ``"ipsolve"``: it takes ``t·1000`` and predicts ``x - z``."""

    kind = "flow"

    def __init__(self, network: nn.Module, image_size: int, channels: int, network_convention: str = "diffusers",
                 timestep_scale: float = 1000.0, sigma_schedule=None):
        super().__init__(image_size, channels)
        if network_convention not in ("diffusers", "ipsolve"):
            raise ValueError(f"network_convention must be 'diffusers' or 'ipsolve', got {shown(network_convention)}")
        self.network, self.network_convention, self.timestep_scale = network, network_convention, timestep_scale
        self.sigma_schedule = sigma_schedule  # steps -> diffusers σ grid (1 → 0), e.g. SD3's shifted grid

    def time_grid(self, steps: int) -> list[float]:
        """``steps + 1`` ipsolve times from 0 (noise) to 1 (data) for sampling: the pipeline's own
        σ grid (``t = 1 − σ``; SD3's ``shift``, FLUX's resolution-dependent shift) when the prior
        came from one, else uniform."""
        if self.sigma_schedule is None:
            return torch.linspace(0, 1, steps + 1).tolist()
        return (1 - torch.as_tensor(self.sigma_schedule(steps), dtype=torch.float64)).tolist()

    def velocity(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """v̂(x_t, t) ≈ E[x - z | x_t] — one network call for the whole batch."""
        t = on_device(t, x_t).expand(x_t.shape[0])
        p = next(self.network.parameters(), None)
        dtype = p.dtype if p is not None else x_t.dtype
        # the timestep stays float32, as StableDiffusion3Pipeline passes scheduler.timesteps (in bf16 σ·1000 would
        # be rounded to multiples of 4 above 512: SD3's time embedding 17–41 % off; FLUX's wrapper casts as its pipeline)
        t_dtype = torch.float64 if dtype == torch.float64 else torch.float32  # (a float64 network keeps float64)
        if self.network_convention == "diffusers":
            out = _network_output(self.network(x_t.to(dtype), ((1 - t) * self.timestep_scale).to(t_dtype)))
            return -out[:, :x_t.shape[1]].to(x_t.dtype)
        return _network_output(self.network(x_t.to(dtype), (t * self.timestep_scale).to(t_dtype)))[:, :x_t.shape[1]].to(x_t.dtype)

    @staticmethod
    def x1_from_velocity(x_t, t, v) -> torch.Tensor:
        """Data estimate x̂ = x_t + (1 - t)·v (one fused operation at a Python-number t)."""
        if isinstance(t, numbers.Real):
            return torch.add(x_t, v, alpha=1 - float(t))
        t = on_device(t, x_t).reshape(-1, *([1] * (x_t.ndim - 1)))
        return x_t + (1 - t) * v

    @staticmethod
    def ode_step(x_t, t, t_next, v) -> torch.Tensor:
        """Euler step of dx/dt = v from t to t_next (one fused operation at Python-number times)."""
        if isinstance(t, numbers.Real) and isinstance(t_next, numbers.Real):
            return torch.add(x_t, v, alpha=float(t_next) - float(t))
        dt = on_device(t_next, x_t) - on_device(t, x_t)
        return x_t + dt.reshape(-1, *([1] * (x_t.ndim - 1))) * v

    @torch.no_grad()
    def sample(self, n: int, steps: int = 50, generator: torch.Generator | None = None):
        """Euler integration from noise (t = 0) to data (t = 1)."""
        x = randn((n, *self.shape), generator, self.device)
        ts = self.time_grid(steps)
        for t, t_next in zip(ts[:-1], ts[1:]):
            x = self.ode_step(x, t, t_next, self.velocity(x, t))
        return x


class LatentPrior(Prior):
    """An autoencoder (``AutoencoderKL`` / ``VQModel`` or identity) around an inner prior on
    latents (Rombach et al. 2022).  ``encode`` returns ``(z − shift_factor) · scaling_factor``
    and ``decode`` inverts it, as the diffusers pipelines do (SD3/FLUX have a shift, SD none)."""

    kind = "latent"

    def __init__(self, autoencoder: nn.Module | None, inner: Prior, image_size: int, channels: int,
                 scaling_factor: float = 1.0, shift_factor: float = 0.0):
        super().__init__(image_size, channels)
        self.autoencoder, self.inner = autoencoder, inner
        self.scaling_factor, self.shift_factor = float(scaling_factor), float(shift_factor or 0.0)

    def networks(self) -> list[tuple[nn.Module, str]]:
        return self.inner.networks() + super().networks()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.autoencoder is None:
            return x
        p = next(self.autoencoder.parameters())
        enc = self.autoencoder.encode(x.to(p.dtype))
        z = enc.latent_dist.mean if hasattr(enc, "latent_dist") else _network_output(getattr(enc, "latents", enc))
        return ((z - self.shift_factor) * self.scaling_factor).to(x.dtype)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.autoencoder is None:
            return z
        p = next(self.autoencoder.parameters())
        z = z / self.scaling_factor + self.shift_factor
        return _network_output(self.autoencoder.decode(z.to(p.dtype))).to(z.dtype)

    @torch.no_grad()
    def sample(self, n: int, steps: int = 50, generator: torch.Generator | None = None):
        return self.decode(self.inner.sample(n, steps, generator)).clamp(-1, 1)


def randn(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Standard normal noise from an explicit generator (on the generator's device)."""
    gdev = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=gdev).to(device)
