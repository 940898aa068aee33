"""Forward models ``A`` and measurement noise (the bottom layer: knows no priors or solvers)."""
from __future__ import annotations

from .base import Operator, check_image
from .blur import BlindBlur, GaussianBlur, MotionBlur, convolve, gaussian_kernel, motion_kernel
from .inpainting import Inpainting, harmonic_fill
from .nonlinear import NonlinearBlur
from .resize import SuperResolution, resize_matrix

OPERATORS = {
    "super_resolution": SuperResolution,
    "inpainting": Inpainting,
    "gaussian_blur": GaussianBlur,
    "motion_blur": MotionBlur,
    "nonlinear_blur": NonlinearBlur,
    "blind_blur": BlindBlur,
}


def make_operator(name: str, **params) -> Operator:
    """Build an operator by its registry name (the same names as ``conf/operator/*.yaml``)."""
    if name not in OPERATORS:
        raise ValueError(f"unknown operator {name!r}; known operators: {', '.join(sorted(OPERATORS))}")
    try:
        return OPERATORS[name](**params)
    except TypeError as err:  # an unknown keyword: say which ones exist
        import inspect

        known = [p for p in inspect.signature(OPERATORS[name]).parameters]
        raise TypeError(f"bad parameters for operator {name!r}: {err}; it takes {', '.join(known)}") from None


__all__ = ["OPERATORS", "Operator", "make_operator", "check_image", "SuperResolution", "Inpainting",
           "GaussianBlur", "MotionBlur", "NonlinearBlur", "BlindBlur", "convolve", "gaussian_kernel",
           "motion_kernel", "harmonic_fill", "resize_matrix"]
