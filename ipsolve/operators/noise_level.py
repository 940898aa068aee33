"""The noise level σ of a measurement, from the measurement alone (``sigma=auto``).

A blurred image's patches lie near a low-dimensional subspace: the kernel removes the fine detail
that would otherwise look like noise, so the smallest eigenvalues of the patch covariance are the
noise variance.  :func:`patch_pca_noise_std` is the estimator of Chen, Zhu & Heng, "An Efficient
Statistical Method for Image Noise Level Estimation" (ICCV 2015), as the authors' ``NoiseEstimation.m``
(G. Chen, MIT licence) runs it: the largest set of smallest eigenvalues whose mean splits it in half
(as many above as below the mean) is taken to be noise, and σ² is that mean.  Written here because scikit-image's ``estimate_sigma`` (a wavelet
median, Donoho & Johnstone 1994) needs PyWavelets, which ipsolve does not install, and is biased on
sharp images by the same detail; neither library has Chen's estimator.

Measured (``python scripts/noise_study.py``, docs/calibration.md): on blurred photos and phantoms
at 32 px the estimate is 0.90–1.55× the true σ for σ = 0.005–0.1 (Gaussian blurs of std 3 and 1, motion
blur; the worst at σ = 0.005), within 3 % at 256 px; below, detail a narrow kernel leaves reads as noise
(:data:`LOW_ESTIMATE`).  On unblurred measurements (super-resolution,
inpainting, an identity) the image's own fine detail counts as noise — 1.05–38× σ at σ = 0.005 on
32-px images — so only operators that blur give an estimate."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# patch side range and the largest patch dimension per sample (the authors' code takes the side as an
# argument, and patches at a stride of 3); with few patches the sample covariance's smallest eigenvalues spread
# (Marchenko–Pastur), and the estimate falls (measured: RGB 8-px patches at 32 px, 192 dimensions
# from 625 patches, 0.78×; at ≤ 0.04 dimensions per patch within 5 %)
PATCH_SIDES = range(8, 2, -1)
DIMENSIONS_PER_PATCH = 0.04
MAX_PATCHES = 50_000  # patches per image: a stride keeps larger images to about this many


def patch_side(channels: int, height: int, width: int) -> int | None:
    """The largest patch side in 8…3 whose dimension ``channels·p²`` is at most
    :data:`DIMENSIONS_PER_PATCH` of the number of patches (stride 1), or None (too small an image)."""
    for p in PATCH_SIDES:
        if channels * p * p <= DIMENSIONS_PER_PATCH * (height - p + 1) * (width - p + 1):
            return p
    return None


def smallest_image(channels: int) -> int:
    """The smallest square image side :func:`patch_pca_noise_std` takes for ``channels``."""
    side = 3
    while patch_side(channels, side, side) is None:
        side += 1
    return side


def patch_pca_noise_std(y: torch.Tensor) -> torch.Tensor:
    """Per image of ``y`` ``(B, C, H, W)``: σ̂ (float64, on the CPU) by Chen et al. 2015's rule on
    the eigenvalues of the covariance of all ``C·p×p`` patches (float64; a stride only above
    :data:`MAX_PATCHES`).  As ``NoiseEstimation.m``: the centred patches' covariance ``PPᵀ/n``,
    its eigenvalues ascending, and :func:`noise_eigenvalue_mean`."""
    if y.ndim != 4:
        raise ValueError(f"y must be (B, C, H, W), got shape {tuple(y.shape)}")
    b, c, h, w = y.shape
    p = patch_side(c, h, w)
    if p is None:
        side = smallest_image(c)
        raise ValueError(f"a {h}x{w} measurement with {c} channel(s) is too small to estimate its noise from "
                         f"(at least {side}x{side}): give sigma as a number")
    stride = max(1, math.ceil(math.sqrt((h - p + 1) * (w - p + 1) / MAX_PATCHES)))
    out = torch.empty(b, dtype=torch.float64)
    for i in range(b):
        patches = F.unfold(y[i:i + 1].detach().double().cpu(), p, stride=stride)[0]  # (C p², n)
        patches = patches - patches.mean(1, keepdim=True)
        eig = torch.linalg.eigvalsh(patches @ patches.T / patches.shape[1])  # ascending
        out[i] = math.sqrt(max(noise_eigenvalue_mean(eig), 0.0))
    return out


def noise_eigenvalue_mean(eig: torch.Tensor) -> float:
    """``NoiseEstimation.m``'s loop over ascending eigenvalues ``eig``: for ``count`` from all of them
    down to 1, the mean of the smallest ``count``; stop at the first whose set has as many
    eigenvalues above that mean as below it (else the last, the smallest eigenvalue)."""
    mean = eig.mean()
    for count in range(eig.numel(), 0, -1):
        mean = eig[:count].mean()
        if int((eig[:count] > mean).sum()) == int((eig[:count] < mean).sum()):
            break
    return float(mean)


# below this σ̂ (on [-1, 1]; 8-bit rounding alone is 2/255/√12 ≈ 0.0023) a measurement is noiseless or too flat
# for the estimator (a constant y gives 0): the run would go on with σ = 0, every residual check off
NOISELESS = 1e-4


def checked_estimate(value: float, what: str = "y") -> float:
    """``value`` (a σ̂ :func:`estimate_sigma` gave) or a ValueError when it is below :data:`NOISELESS`."""
    if not value >= NOISELESS:
        raise ValueError(f"sigma=auto estimated {value:.2g} from {what}: it looks noiseless, or too flat (constant or "
                         f"smooth) for the estimator to see its noise; give sigma as a number (0 for noiseless data)")
    return value


# below this σ̂ the estimate is an upper bound rather than an estimate: fine detail the kernel leaves reads as noise
# (scripts/noise_study.py, docs/calibration.md: at σ = 0.001–0.002 up to 6.0× the true σ at 32 px through the 9-px
# Gaussian blur of std 1, 4.0× through DPS's motion blur; up to 2.2× at 64 px, 1.3× at 256 px; 0.90–1.55× at σ >= 0.005
# — an audit, 2026-12-07): every estimate measured from σ <= 0.002 is below 0.0065
LOW_ESTIMATE = 0.0075


def low_estimate_note(value: float, what: str = "y") -> str | None:
    """What ``sigma=auto`` should say when its estimate ``value`` is below :data:`LOW_ESTIMATE` (None above)."""
    if not NOISELESS <= value < LOW_ESTIMATE:
        return None
    return (f"sigma=auto estimated {value:.2g} from {what}: below {LOW_ESTIMATE:g} the detail a blur leaves reads as "
            f"noise, and the estimate can be several times the true sigma (measured up to 6× at 32 px, 2.2× at 64 px, "
            f"1.3× at 256 px for sigma 0.001–0.002; docs/calibration.md): give sigma=VALUE if you know it")


def given_sigma_note(given: float, estimate: float, what: str = "y") -> str | None:
    """What to say about a ``sigma`` given as a number whose measurement is estimated at ``estimate``
    (None: nothing): more than 2× above it, or less than half of it where the estimate is at least
    :data:`LOW_ESTIMATE` (below, the estimate is an upper bound: a smaller σ may be right, down to a tenth)."""
    if not estimate >= NOISELESS or given == 0:  # (0: noiseless data, as the user says)
        return None
    # below LOW_ESTIMATE the estimate is an upper bound, but one measured at most 6× the true σ: far below it is said
    # too (0.0001 against 0.0041 was not: an audit, 2026-12-07)
    low = given < estimate / 2 if estimate >= LOW_ESTIMATE else given < estimate / 10
    if given > 2 * estimate or low:
        caveat = "" if given > 2 * estimate else \
            " (the estimate can exceed the true sigma where a narrow kernel keeps fine detail)"
        return (f"sigma is {given:g}, but the noise of {what} is estimated at {estimate:.4g}{caveat}: the residual "
                f"flags, the stopping rules and calibration assume the sigma given (sigma=auto takes the estimate)")
    return None


def estimate_sigma(y: torch.Tensor, operator) -> torch.Tensor:
    """σ̂ of each measurement in ``y`` (``(B,)`` float64 on the CPU) for an ``operator`` whose
    output is blurred (:meth:`~ipsolve.operators.base.Operator.noise_estimate_note` is None); a
    ``ValueError`` saying why for any other operator or too small a ``y``.  Noise on the [-1, 1]
    scale, as ``sigma`` everywhere: estimate before any rescaling of ``y``."""
    from .base import Operator, check_image

    check_image(y, "y")
    if not isinstance(operator, Operator):
        raise TypeError(f"operator must be an ipsolve Operator (make_operator(...)), got {type(operator).__name__}")
    why = operator.noise_estimate_note()
    if why is not None:
        scale = "the [-1, 1] image scale, e.g. 0.01" if operator.measurement_is_image else \
            "the scale of y as the operator computes it: README, What σ means here"
        raise ValueError(f"sigma=auto cannot estimate the noise of this measurement: {why}; give sigma as a number "
                         f"(the noise std on {scale})")
    return patch_pca_noise_std(y)
