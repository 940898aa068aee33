"""Non-linear blur: BKSE's learned blur network (the papers' task) or a weight-free
blur followed by a saturating camera response."""
from __future__ import annotations

import math

import torch

from ..notices import shown
from .base import Operator
from .blur import convolve, gaussian_kernel, kernel_noise_note, motion_kernel


class NonlinearBlur(Operator):
    """``model="camera"`` (default, offline): ``y = 2·crf(k ⋆ (x+1)/2) − 1`` with the
    saturating response ``crf(u) = tanh(gain·u) / tanh(gain)`` and a seeded motion (or
    Gaussian) kernel.  ``model="bkse"``: the learned blur of Tran et al. (CVPR 2021) as used
    by DPS/DMPlug — ``y = clamp(2·G((x+1)/2, c) − 1)`` with the network ``G`` loaded strictly
    from ``checkpoint`` (``GOPRO_wVAE.pth``) and the kernel code ``c ~ 1.2·N(0, I)`` of shape
    ``(1, 512, H/128, W/128)`` drawn once per image size from ``seed``."""

    task = "nonlinear_blur"
    # the initial guess from 80 % of y loses no more than a solve does (4 phantoms, 32 px, DPS 100 steps; guess /
    # DPS, dB): the camera model, 9 px, −0.01 / +0.49; "better" is still withheld: the guess y misfits every entry as
    # much as the held-out ones (solvers.calibration.guess_misfit_handicap)
    holdout_guess_handicap = None

    def __init__(self, model: str = "camera", checkpoint: str | None = None, kernel: str = "motion",
                 size: int = 61, std: float = 3.0, intensity: float = 0.5, gain: float = 2.0,
                 code_scale: float = 1.2, seed: int = 0):
        super().__init__()
        self.model, self.seed, self.code_scale, self.gain = model, seed, code_scale, gain
        self.params = {"model": model, "seed": seed}
        if model == "camera":
            if kernel not in ("motion", "gaussian"):
                raise ValueError(f"kernel must be 'motion' or 'gaussian', got {shown(kernel)}")
            if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not gain > 0:
                raise ValueError(f"gain must be a number > 0 (crf(u) = tanh(gain·u)/tanh(gain)), got {shown(gain)}")
            k = motion_kernel(size, intensity, seed) if kernel == "motion" else gaussian_kernel(size, std)
            self.register_buffer("kernel", k)
            # every setting that shapes y (the resume fingerprint and the measurements' provenance check)
            self.params.update(kernel=kernel, size=size, gain=gain,
                               **({"intensity": intensity} if kernel == "motion" else {"std": std}))
        elif model == "bkse":
            if checkpoint is None:
                raise ValueError("nonlinear_blur(model='bkse') needs checkpoint=<path to GOPRO_wVAE.pth>")
            from .bkse import load_bkse_checkpoint

            self.params.update(checkpoint=str(checkpoint), code_scale=code_scale)  # the file counts by its contents
            self.net = load_bkse_checkpoint(checkpoint).requires_grad_(False)
            self.channels = self.net.input_nc
            self.codes: dict[tuple[int, int], torch.Tensor] = {}
        else:
            raise ValueError(f"model must be 'camera' or 'bkse', got {shown(model)}")

    def unused_settings(self):
        if self.model == "bkse":
            return {k: "model=camera" for k in ("kernel", "size", "std", "intensity", "gain")}
        kernel = self.params["kernel"]
        return {"checkpoint": "model=bkse", "code_scale": "model=bkse",
                **({"std": "kernel=gaussian"} if kernel == "motion" else
                   {"intensity": "kernel=motion", "seed": "kernel=motion or model=bkse"})}

    def noise_estimate_note(self):
        """The camera model: as its kernel blurs (the response bends values, not detail); BKSE's
        learned blur (GOPRO motion) is taken to blur."""
        return None if self.model == "bkse" else kernel_noise_note(self.kernel)

    def seeded_state(self):
        if self.model == "bkse":
            return "its BKSE kernel code"
        return "its motion kernel" if self.params["kernel"] == "motion" else None

    def output_shape(self, shape):
        if self.model == "bkse":
            self.net.kernel_code_shape(shape[-2], shape[-1])
        else:
            k = self.kernel.shape[-1]
            if k // 2 >= min(shape[-2:]):
                raise ValueError(f"image size {shape[-2]}x{shape[-1]} is too small for the {k}x{k} blur kernel; "
                                 f"expected images larger than {k // 2} pixels")
        return tuple(shape)

    def code_for(self, h: int, w: int, like: torch.Tensor | None = None) -> torch.Tensor:
        """The kernel code for ``h × w`` images, drawn on the host from ``seed`` and kept on
        ``like``'s device and dtype (a host copy inside a solver's loop would wait for the device)."""
        if (h, w) not in self.codes:
            g = torch.Generator().manual_seed(self.seed)
            self.codes[(h, w)] = self.code_scale * torch.randn(self.net.kernel_code_shape(h, w), generator=g)
        code = self.codes[(h, w)]
        if like is not None and (code.device, code.dtype) != (like.device, like.dtype):
            code = self.codes[(h, w)] = code.to(like)
        return code

    def apply(self, x):
        u = (x + 1) / 2
        if self.model == "bkse":
            code = self.code_for(*x.shape[-2:], like=x)
            return (self.net.adaptKernel(u, code) * 2 - 1).clamp(-1, 1)
        blurred = convolve(u, self.kernel)
        return 2 * torch.tanh(self.gain * blurred) / math.tanh(self.gain) - 1
