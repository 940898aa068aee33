"""The centred orthonormal 2-D FFT of fastMRI (``fastmri/fftc.py``), shared by MRI, its SVD
(:class:`~ipsolve.operators.decomposition.HermitianFourierDecomposition`) and phase retrieval.
torch's own ``fft2`` with fastMRI's shifts: the convention the MRI papers' k-space uses."""
from __future__ import annotations

import torch


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal centred 2-D FFT, fastMRI's ``fft2c_new``: ``fftshift(fft2(ifftshift(x)), norm="ortho")``."""
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft2c` (fastMRI's ``ifft2c_new``)."""
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))
