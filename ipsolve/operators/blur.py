"""Convolutional blurs: Gaussian, motion and blind (kernel as an argument)."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .base import Operator


def gaussian_kernel(size: int = 61, std: float = 3.0, truncate: float = 4.0) -> torch.Tensor:
    """The ``size×size`` Gaussian-filtered delta of DPS's ``Blurkernel``:
    ``scipy.ndimage.gaussian_filter(delta, std, mode="reflect", truncate=truncate)``, computed by
    scipy itself (float64).  At every size it sums to 1: where the window is smaller than the
    Gaussian's support (size < 2·int(truncate·std + 0.5) + 1), scipy's reflecting boundary
    folds the outside mass back in — a hand-written truncation would lose it (0.75 at 9 px, std 3)."""
    from scipy import ndimage

    if int(size) != size or size < 1 or not std > 0:
        raise ValueError(f"need an integer size >= 1 and std > 0, got size={size}, std={std}")
    delta = np.zeros((int(size), int(size)))
    delta[size // 2, size // 2] = 1.0
    return torch.from_numpy(ndimage.gaussian_filter(delta, std, mode="reflect", truncate=truncate)).float()


def motion_kernel(size: int = 61, intensity: float = 0.5, seed: int = 0, steps: int = 400) -> torch.Tensor:
    """A random camera-shake trajectory rendered as a ``size×size`` kernel (sums to 1).

    A point moves with a velocity that turns randomly; ``intensity`` in [0, 1] sets how
    erratic the path is (0: a straight line, 1: a tangled path) in the spirit of the
    ``motionblur`` package DPS uses.  The path is scaled to fit 3/4 of the kernel,
    splatted bilinearly, centred on its centre of mass and lightly smoothed."""
    if not 0.0 <= intensity <= 1.0:
        raise ValueError(f"intensity must be in [0, 1], got {intensity}")
    g = torch.Generator().manual_seed(seed)
    angle = torch.rand(1, generator=g).item() * 2 * math.pi
    turn = intensity * 0.6 * torch.randn(steps, generator=g)
    turn = turn + 0.15 * intensity * torch.randn(1, generator=g)  # slight drift: curved paths
    angles = angle + torch.cumsum(turn, 0)
    pos = torch.cumsum(torch.stack([torch.cos(angles), torch.sin(angles)], 1), 0)
    pos = pos - pos.mean(0)
    extent = pos.abs().max().clamp_min(1e-6)
    pos = pos / extent * (0.375 * (size - 1)) + (size - 1) / 2
    k = torch.zeros(size, size, dtype=torch.float64)
    i0, j0 = pos[:, 1].floor().long(), pos[:, 0].floor().long()
    fi, fj = pos[:, 1] - i0, pos[:, 0] - j0
    for di, dj, wgt in ((0, 0, (1 - fi) * (1 - fj)), (1, 0, fi * (1 - fj)), (0, 1, (1 - fi) * fj), (1, 1, fi * fj)):
        ii, jj = (i0 + di).clamp(0, size - 1), (j0 + dj).clamp(0, size - 1)
        k.index_put_((ii, jj), wgt.double(), accumulate=True)
    k = F.conv2d(F.pad(k[None, None], (1, 1, 1, 1)), gaussian_kernel(3, 0.5).double()[None, None])[0, 0]
    return (k / k.sum()).float()


def convolve(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Correlate each image with a kernel (``(k,k)`` shared, or ``(B,k,k)`` one per image) with
    reflection padding (``scipy.ndimage.correlate(mode="mirror")``), so the size is kept."""
    b, c, h, w = x.shape
    kh, kw = kernel.shape[-2:]
    pad = (kw // 2, kw - 1 - kw // 2, kh // 2, kh - 1 - kh // 2)
    if max(pad) >= min(h, w):
        raise ValueError(f"image size {h}x{w} is too small for a {kh}x{kw} kernel with reflection padding; "
                         f"expected images larger than {max(pad)} pixels per side")
    xp = F.pad(x, pad, mode="reflect")
    kernel = kernel.to(x)
    if kernel.ndim == 2:
        return F.conv2d(xp, kernel.expand(c, 1, kh, kw), groups=c)
    if kernel.shape[0] != b:
        raise ValueError(f"got {kernel.shape[0]} kernels for {b} images; expected one per image")
    out = F.conv2d(xp.reshape(1, b * c, *xp.shape[-2:]), kernel.repeat_interleave(c, 0)[:, None], groups=b * c)
    return out.view(b, c, h, w)


class _KernelBlur(Operator):
    is_linear = True

    def output_shape(self, shape):
        kh, kw = self.kernel.shape[-2:]
        if max(kw // 2, kh // 2) >= min(shape[-2:]):
            raise ValueError(f"image size {shape[-2]}x{shape[-1]} is too small for the {kh}x{kw} blur kernel "
                             f"with reflection padding; expected images larger than {max(kh, kw) // 2} pixels")
        return tuple(shape)

    def apply(self, x):
        return convolve(x, self.kernel)


class GaussianBlur(_KernelBlur):
    """Gaussian blur, ``size×size`` kernel of std ``std`` (DPS: 61, 3.0), reflection padding."""

    def __init__(self, size: int = 61, std: float = 3.0):
        super().__init__()
        self.params = {"size": size, "std": std}
        self.register_buffer("kernel", gaussian_kernel(size, std))


class MotionBlur(_KernelBlur):
    """Motion blur with a seeded random-trajectory kernel (DPS: 61×61, intensity 0.5)."""

    def __init__(self, size: int = 61, intensity: float = 0.5, seed: int = 0):
        super().__init__()
        self.params = {"size": size, "intensity": intensity, "seed": seed}
        self.register_buffer("kernel", motion_kernel(size, intensity, seed))

    def seeded_state(self):
        return "its motion kernel"


class BlindBlur(_KernelBlur):
    """Blur with an unknown kernel: ``A(x; k)``.  ``forward(x, kernel=None)`` uses the true
    kernel (``true_kernel="gaussian"|"motion"``, for simulating measurements) unless a kernel
    ``(k,k)`` or ``(B,k,k)`` is given; blind solvers estimate a ``kernel_size`` kernel."""

    is_linear = True  # linear in x for a fixed kernel

    def __init__(self, true_kernel: str = "motion", size: int = 61, std: float = 3.0, intensity: float = 0.5,
                 seed: int = 0, kernel_size: int | None = None):
        super().__init__()
        if true_kernel == "gaussian":
            k = gaussian_kernel(size, std)
        elif true_kernel == "motion":
            k = motion_kernel(size, intensity, seed)
        else:
            raise ValueError(f"true_kernel must be 'gaussian' or 'motion', got {true_kernel!r}")
        self.kernel_size = kernel_size or size
        self.params = {"true_kernel": true_kernel, "size": size, "seed": seed, "kernel_size": self.kernel_size}
        self.register_buffer("kernel", k)

    def forward(self, x, kernel: torch.Tensor | None = None):
        if kernel is None:
            return super().forward(x)
        from .base import check_image

        check_image(x, "x")
        return convolve(x, kernel)
