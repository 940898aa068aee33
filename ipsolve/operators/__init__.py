"""Forward models ``A`` and measurement noise (the bottom layer: knows no priors or solvers)."""
from __future__ import annotations

from ..parameters import parameter_type_message, unknown_parameters_message
from .base import Operator, check_image
from .ct import CT, filtered_back_projection
from .deepinv_adapter import DeepinvOperator, from_deepinv
from .fourier import fft2c, ifft2c
from .mri import MRI, column_mask
from .phase_retrieval import PhaseRetrieval, hio_er
from .blur import BlindBlur, Blur, GaussianBlur, MotionBlur, convolve, gaussian_kernel, motion_kernel
from .inpainting import Inpainting, harmonic_fill
from .nonlinear import NonlinearBlur
from .resize import SuperResolution, resize_matrix

OPERATORS = {
    "super_resolution": SuperResolution,
    "inpainting": Inpainting,
    "gaussian_blur": GaussianBlur,
    "blur": Blur,
    "motion_blur": MotionBlur,
    "nonlinear_blur": NonlinearBlur,
    "blind_blur": BlindBlur,
    "ct": CT,
    "mri": MRI,
    "phase_retrieval": PhaseRetrieval,
}


def make_operator(name: str, **params) -> Operator:
    """Build an operator by its registry name (the same names as ``conf/operator/*.yaml``)."""
    if name not in OPERATORS:
        raise ValueError(f"unknown operator {name!r}; known operators: {', '.join(sorted(OPERATORS))}")
    message = (unknown_parameters_message("operator", name, OPERATORS[name], params)
               or parameter_type_message("operator", name, OPERATORS[name], params))
    if message:
        raise TypeError(message)
    return OPERATORS[name](**params)

__all__ = ["OPERATORS", "Operator", "make_operator", "check_image", "SuperResolution", "Inpainting",
           "GaussianBlur", "Blur", "MotionBlur", "NonlinearBlur", "BlindBlur", "convolve", "gaussian_kernel",
           "motion_kernel", "harmonic_fill", "resize_matrix", "CT", "MRI", "PhaseRetrieval", "filtered_back_projection",
           "column_mask", "fft2c", "ifft2c", "hio_er", "DeepinvOperator", "from_deepinv"]
