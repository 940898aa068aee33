"""Any deepinv ``Physics`` as an ipsolve operator (deepinv is the field's physics library;
``pip install "ipsolve[deepinv]"``)."""
from __future__ import annotations

import torch

from ..notices import shown, warn
from .base import Operator, display_scaled
from .decomposition import DeepinvDecomposition, not_decomposable


class DeepinvOperator(Operator):
    """``A(x) = physics.A(u)`` with ``u = lo + (x + 1) / 2 · (hi − lo)``: ipsolve's [-1, 1] image
    mapped onto deepinv's ``image_range`` (most deepinv physics expect [0, 1]).

    ``complex_image=True`` for physics that take complex images as two channels (deepinv's
    ``MRI``, ``MultiCoilMRI``: ``(B, 2, H, W)``): the real image is the real part and the
    imaginary part is zero; reconstructions from those channels are taken back as the magnitude.
    A complex ``y`` (``torch.cfloat``) is stored as real channels ``[real, imag]``.
    The physics' own noise model is not used (ipsolve adds ``sigma`` noise, on ``y``'s scale).
    ``initial_guess``: ``"A_dagger"`` (deepinv's pseudo-inverse: FBP for ``Tomography``,
    zero-filled for ``MRI``), ``"A_adjoint"`` or ``"zeros"`` (mid-grey)."""

    measurement_is_image = False

    def __init__(self, physics, image_range=(0.0, 1.0), complex_image: bool = False,
                 initial_guess: str = "A_dagger"):
        super().__init__()
        try:
            import deepinv
        except ImportError:
            raise ImportError('from_deepinv needs deepinv: pip install "ipsolve[deepinv]"') from None
        if not isinstance(physics, deepinv.physics.Physics):
            raise TypeError(f"physics must be a deepinv.physics.Physics, got {type(physics).__name__}")
        lo, hi = (float(v) for v in image_range)
        if not hi > lo:
            raise ValueError(f"image_range must be (low, high) with high > low, got {shown(image_range)}")
        if initial_guess not in ("A_dagger", "A_adjoint", "zeros"):
            raise ValueError(f"initial_guess must be 'A_dagger', 'A_adjoint' or 'zeros', got {shown(initial_guess)}")
        if initial_guess == "A_adjoint" and not isinstance(physics, deepinv.physics.LinearPhysics):
            raise ValueError(f"{type(physics).__name__} is not linear: it has no A_adjoint; "
                             f"use initial_guess='A_dagger' or 'zeros'")
        noise = getattr(physics, "noise_model", None)
        if noise is not None and not isinstance(noise, getattr(deepinv.physics, "ZeroNoise", ())):
            from .base import InputWarning

            warn(f"the physics' noise model ({type(noise).__name__}) is not used: ipsolve adds Gaussian noise of std "
                 f"sigma on y's scale as the physics computes it (image-domain physics: [0, 1], so a sigma is twice "
                 f"the relative noise it is on ipsolve's own [-1, 1] operators) in measure(x, sigma), and solvers take "
                 f"sigma as given", InputWarning)
        self.physics, self.lo, self.hi = physics, lo, hi
        self.complex_image, self.guess = complex_image, initial_guess
        self.is_linear = isinstance(physics, deepinv.physics.LinearPhysics)
        self.params = {"physics": type(physics).__name__, "image_range": [lo, hi],
                       "complex_image": complex_image, "initial_guess": initial_guess}
        self._complex_y = False
        self._shapes: dict[tuple, tuple] = {}

    def to_physics(self, x: torch.Tensor) -> torch.Tensor:
        u = self.lo + (x + 1) / 2 * (self.hi - self.lo)
        return torch.cat([u, torch.zeros_like(u)], 1) if self.complex_image else u

    def from_physics(self, u: torch.Tensor) -> torch.Tensor:
        if self.complex_image:
            c = u.shape[1] // 2
            u = (u[:, :c] ** 2 + u[:, c:] ** 2).sqrt()
        elif u.is_complex():
            u = u.abs()
        return (u - self.lo) / (self.hi - self.lo) * 2 - 1

    def apply(self, x):
        y = self.physics.A(self.to_physics(x))
        if y.is_complex():
            self._complex_y = True
            y = torch.cat([y.real, y.imag], 1)
        return y

    def to_physics_measurement(self, y: torch.Tensor) -> torch.Tensor:
        if self._complex_y:
            c = y.shape[1] // 2
            return torch.complex(y[:, :c], y[:, c:])
        return y

    def output_shape(self, shape):
        key = tuple(shape[1:])
        if key not in self._shapes:
            with torch.no_grad():
                probe = self.apply(torch.zeros(1, *key))
            self._shapes[key] = tuple(probe.shape[1:])
            self._input = key
        return (shape[0], *self._shapes[key])

    def input_shape(self, y_shape):
        for image, meas in self._shapes.items():
            if meas == tuple(y_shape[1:]):
                return (y_shape[0], *image)
        raise ValueError(f"{type(self.physics).__name__}: no image shape known for measurements of shape "
                         f"{tuple(y_shape)}; apply the operator to an image first")

    def svd(self, shape):
        """deepinv's own SVD where the physics is a ``DecomposablePhysics`` (``A = U·mask·Vᵀ``)
        whose ``V_adjoint`` is a real orthogonal transform of the image (checked on a random
        probe) with a real mask: Inpainting, Denoising, SinglePixelCamera.  None otherwise:
        ``Decolorize`` (its V maps 3 channels to 1), ``BlurFFT`` (its V is a half-spectrum rfft),
        ``complex_image=True`` (the real image embedded in a complex one)."""
        import deepinv

        name = f"deepinv {type(self.physics).__name__}"
        if not isinstance(self.physics, deepinv.physics.DecomposablePhysics):
            raise not_decomposable(name, "it is not a deepinv DecomposablePhysics")
        if self.complex_image:
            raise not_decomposable(name, "complex_image=True restricts its SVD to real images")
        mask = torch.as_tensor(self.physics.mask)
        if mask.is_complex():
            raise not_decomposable(name, "its singular values (mask) are complex")
        self.output_shape(shape)
        g = torch.Generator().manual_seed(0)
        probe = torch.randn(1, *shape[1:], generator=g).to(mask.device)
        with torch.no_grad():
            coeff = self.physics.V_adjoint(probe)
            back = self.physics.V(coeff) if not coeff.is_complex() else None
        if coeff.is_complex() or coeff.numel() != probe.numel() or back is None or \
                not torch.allclose(back, probe, atol=1e-4 * float(probe.abs().max())) or \
                abs(float(coeff.norm() / probe.norm()) - 1) > 1e-4:
            raise not_decomposable(name, "its V is not a real orthogonal transform of the image")
        scale = (self.hi - self.lo) / 2
        with torch.no_grad():
            offset = self.physics.A(torch.full((1, *shape[1:]), self.lo + (self.hi - self.lo) / 2, device=mask.device))
        return DeepinvDecomposition(shape, self.physics, scale, offset, coeff.shape[1:])

    def _inpainting_mask(self) -> torch.Tensor | None:
        """deepinv ``Inpainting``'s mask (``(1 or B, C, H, W)``, 0 where a pixel is missing), else None."""
        import deepinv

        if self.complex_image or not isinstance(self.physics, deepinv.physics.Inpainting) or \
                getattr(self.physics, "mask", None) is None:
            return None
        mask = torch.as_tensor(self.physics.mask)
        return None if mask.is_complex() else mask if mask.ndim == 4 else mask[None]

    def observed_mask(self, y_shape):
        """Inpainting physics: 1 at the observed pixels (the holes are zeros in y, not data), per image."""
        mask = self._inpainting_mask()
        return None if mask is None else (mask != 0).to(torch.float32).expand(mask.shape[0], *y_shape[1:])

    def observed_entries(self, y_shape):
        """Inpainting physics: the pixels observed in at least one image (only those are held out)."""
        mask = self.observed_mask(y_shape)
        return None if mask is None else mask.amax(0).flatten().cpu() > 0

    def initial_guess(self, y):
        if self.guess == "zeros":
            return torch.zeros(self.input_shape(y.shape), dtype=y.dtype, device=y.device)
        fn = getattr(self.physics, self.guess)
        return self.from_physics(fn(self.to_physics_measurement(y))).clamp(-1, 1)

    def display(self, y, size):
        v = y.float()
        if v.shape[1] > 1:
            v = v.pow(2).sum(1, keepdim=True).sqrt()
        return display_scaled(v, size)


def from_deepinv(physics, image_range=(0.0, 1.0), complex_image: bool = False,
                 initial_guess: str = "A_dagger") -> DeepinvOperator:
    """Wrap a deepinv ``Physics`` so that ipsolve's solvers and runner can use it (see
    :class:`DeepinvOperator` for the range and complex-data mapping)."""
    return DeepinvOperator(physics, image_range=image_range, complex_image=complex_image,
                           initial_guess=initial_guess)
