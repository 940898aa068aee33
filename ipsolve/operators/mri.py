"""Cartesian MRI: undersampled k-space of a magnitude image, single- or multi-coil, with the
fastMRI conventions (facebookresearch/fastMRI ``fastmri/fftc.py`` and ``fastmri/data/subsample.py``).

Written in torch rather than wrapped from deepinv: the operator is one centred FFT and a column
selection, and the fastMRI masks (which deepinv draws differently) are the convention the MRI
papers' numbers use.  deepinv's ``MRI``/``MultiCoilMRI`` still work through
:func:`ipsolve.operators.from_deepinv`.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..notices import shown
from ..tensors import cached_on
from .base import Operator, display_scaled
from .decomposition import HermitianFourierDecomposition, not_decomposable
from .fourier import fft2c, ifft2c

log = logging.getLogger("ipsolve")

MASK_KINDS = ("random", "equispaced", "equispaced_fraction")


def column_mask(width: int, acceleration: float, center_fraction: float, kind: str = "random",
                seed: int = 0) -> np.ndarray:
    """A boolean column mask of length ``width`` — fastMRI 0.3's ``RandomMaskFunc``,
    ``EquiSpacedMaskFunc`` or ``EquispacedMaskFractionFunc`` (``fastmri/data/subsample.py``) called
    with ``seed`` — the ``round(width · center_fraction)`` central columns plus: columns kept with
    probability ``(width / acceleration − low) / (width − low)`` (random); every
    ``acceleration``-th column from a random offset (equispaced, GRAPPA-style: more than
    ``width / acceleration`` in all); or every ``adjusted``-th, rounded, with ``adjusted`` chosen
    so that the total is ``width / acceleration`` (equispaced_fraction)."""
    rng = np.random.RandomState(seed)
    rng.randint(1)  # MaskFunc.choose_acceleration draws its (center_fraction, acceleration) pair first
    low = round(width * center_fraction)
    if low >= width:  # fully sampled (fastMRI's formulas divide by width − low)
        return np.ones(width, dtype=bool)
    if kind == "random":
        mask = rng.uniform(size=width) < (width / acceleration - low) / (width - low)
    elif kind == "equispaced":
        offset = rng.randint(0, high=round(acceleration))
        mask = np.zeros(width, dtype=bool)
        mask[offset::int(acceleration)] = True
    else:
        adjusted = (acceleration * (low - width)) / (low * acceleration - width)
        offset = rng.randint(0, high=round(adjusted))
        mask = np.zeros(width, dtype=bool)
        mask[np.around(np.arange(offset, width - 1, adjusted)).astype(np.uint)] = True
    pad = (width - low + 1) // 2
    mask[pad:pad + low] = True
    return mask


def check_sensitivities(s: torch.Tensor, what: str, coils: int = 1) -> None:
    """Coil maps ``(coils, H, W)`` as the operator needs them: finite, not all zero, as many coils as
    ``coils`` asks for (1: any), and Σ_c |S_c|² = 1 where the object is (its maximum within 10 %:
    ESPIRiT-style maps; ×5 maps made the zero-filled guess 5× too bright) — a ``ValueError`` naming
    ``what`` (maps of NaN were blamed on y, all-zero maps measured pure noise and fitted it)."""
    if not torch.isfinite(torch.view_as_real(s)).all():
        raise ValueError(f"sensitivities {what} hold NaN or inf values")
    power = s.abs().pow(2).sum(0)
    if not float(power.max()) > 0:
        raise ValueError(f"sensitivities {what} are all zero: every coil would measure nothing but noise")
    if coils != 1 and coils != s.shape[0]:
        raise ValueError(f"coils={coils} but sensitivities {what} hold {s.shape[0]} coil(s): give one of them")
    if abs(float(power.max()) - 1) > 0.1:
        raise ValueError(f"sensitivities {what} are not normalised: Σ_c |S_c|² reaches {float(power.max()):.3g}, "
                         f"expected 1 where the object is (divide the maps by the square root of their sum of squares)")


def synthetic_sensitivities(coils: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth complex coil sensitivities ``(coils, size, size)``: coil c sits on a circle of
    radius 1.5 (the image spans [-1, 1]²) at angle 2πc/coils, with a Gaussian magnitude profile
    (width 1.2) and a smooth linear phase drawn from ``seed``; normalised so that
    Σ_c |S_c|² = 1 at every pixel (then the root-sum-of-squares of the coil images is |x|)."""
    g = torch.Generator().manual_seed(seed)
    lin = (torch.arange(size, dtype=torch.float64) + 0.5) / size * 2 - 1
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    maps = []
    for c in range(coils):
        a = 2 * np.pi * c / coils
        mag = torch.exp(-((xx - 1.5 * np.cos(a)) ** 2 + (yy - 1.5 * np.sin(a)) ** 2) / (2 * 1.2 ** 2))
        kx, ky, p0 = (torch.rand(3, generator=g, dtype=torch.float64) * 2 - 1) * torch.tensor([1.0, 1.0, np.pi])
        maps.append(mag * torch.exp(1j * (kx * xx + ky * yy + p0)))
    s = torch.stack(maps)
    return (s / s.abs().pow(2).sum(0, keepdim=True).sqrt()).to(torch.complex64)


# POCS of the guess from part of the k-space (MRI.initial_guess_from_part): at most this many rounds, stopped when one
# changes the samples by less than this fraction of their norm (4 slices of 320 px, 15 coils: 0.3 s a round on 2 cores)
GUESS_FILL_ROUNDS = 50
GUESS_FILL_TOLERANCE = 1e-3


class MRI(Operator):
    """Cartesian k-space undersampling: ``y = M · F(S_c · x₀₁)``.

    The real image ``x`` in [-1, 1] is the magnitude image ``x₀₁ = (x + 1) / 2`` ≥ 0 with zero
    phase; coil ``c`` sees ``S_c · x₀₁`` (single-coil: S = 1); ``F`` is the orthonormal centred FFT
    (:func:`fft2c`) and ``M`` keeps the columns of a fixed mask (phase encodes along the width).
    Complex data are stored as real channels: ``y`` is ``(B, 2·coils, H, K)`` — channel
    ``2c`` the real and ``2c + 1`` the imaginary part of coil ``c`` — holding only the ``K``
    sampled columns (the unsampled ones carry no data, so ``sigma`` and the discrepancy
    rules count only measured values); ``kspace(y)`` gives the zero-filled full k-space.

    ``mask``: ``random`` or ``equispaced`` (fastMRI, :func:`column_mask`, drawn from ``seed`` once
    for ``image_size`` or the first width seen), or the path of a ``.npy`` boolean column mask.
    ``coils``: 1, or the number of synthetic smooth coils (:func:`synthetic_sensitivities`);
    ``sensitivities``: a ``.npy`` file of complex maps ``(coils, H, W)`` instead.
    ``initial_guess`` = zero-filled inverse FFT, its magnitude (root-sum-of-squares over coils).
    Per-image maps (each slice of a scan has its own, e.g. estimated from a fastMRI file's
    calibration columns): :meth:`set_sensitivity_maps`, selected by the image names the runner
    sets (:meth:`set_images`).
    """

    task = "mri"
    is_linear = True
    measurement_is_image = False
    holdout_fill = "zero"  # held-out k-space samples: zero-filled, like the unsampled ones
    # measured (docs/calibration.md, transfer): DPS on grey photo crops lost 1.32 dB to zero-filling, and with zeros
    # in the held-out samples scored below the guess on the choosing split (with POCS: above it, warned)
    # measured (2026-12-07, DPS 100 steps, 20 % of y held out, split seeds 1 and 2, σ 0.01 and 0.05, blobs and textured
    # phantoms): the zero-filled guess from the kept samples lost 3.49 dB where DPS lost 2.07; with the held-out
    # samples filled by POCS (initial_guess_from_part) it loses 0.34-1.49 dB where DPS loses 0.38-1.65
    holdout_guess_handicap = ("the held-out k-space samples are blind to the lines never sampled, and their differences "
                              "are heavy-tailed (a few centre samples carry most of the energy): the comparison's "
                              "standard error is unreliable and a 'better' would not mean the image is (the zero-filled "
                              "guess from part of y, its held-out samples filled by POCS, loses about as much as a "
                              "solve does: docs/calibration.md)")
    holdout_blind_spot = ("held-out entries come from the sampled k-space lines (many in the fully sampled centre): "
                          "errors at the lines never sampled, where most of an undersampled image's error is, change "
                          "neither the score nor the comparison with the zero-filled initial guess, so neither "
                          "'better' nor the absence of a warning means the solver beats zero-filling (the "
                          "comparison's outcome also changed with the split seeds on phantom MRI: docs/calibration.md)")

    def __init__(self, acceleration: float = 4, center_fraction: float = 0.08, mask: str = "random",
                 coils: int = 1, sensitivities: str | None = None, image_size: int | None = None, seed: int = 0):
        super().__init__()
        if isinstance(acceleration, bool) or not isinstance(acceleration, (int, float)) or not acceleration >= 1:
            raise ValueError(f"acceleration must be a number >= 1 (1 = fully sampled), got {shown(acceleration)}")
        if isinstance(center_fraction, bool) or not isinstance(center_fraction, (int, float)) or not 0 < center_fraction <= 1:
            raise ValueError(f"center_fraction must be in (0, 1], got {shown(center_fraction)}")
        if center_fraction * acceleration > 1 + 1e-9:
            raise ValueError(f"center_fraction {center_fraction} keeps more than 1/acceleration = "
                             f"{1 / acceleration:.3f} of the columns; expected center_fraction <= 1/acceleration")
        if mask == "equispaced" and float(acceleration) != int(acceleration):  # (every 2nd column for 2.5: 1.78×)
            raise ValueError(f"an equispaced mask takes every acceleration-th column: acceleration must be a whole "
                             f"number, got {shown(acceleration)} (mask=equispaced_fraction or random take fractions)")
        if mask not in MASK_KINDS and not Path(str(mask)).is_file():
            raise FileNotFoundError(f"mask must be 'random', 'equispaced', 'equispaced_fraction' or the path of a .npy "
                                    f"column mask; "
                                    f"no file at {mask!r}")
        if isinstance(coils, bool) or not isinstance(coils, int) or coils < 1:
            raise ValueError(f"coils must be an integer >= 1, got {shown(coils)}")
        self.acceleration, self.center_fraction, self.kind, self.seed = float(acceleration), center_fraction, mask, seed
        self.params = {"acceleration": acceleration, "center_fraction": center_fraction, "mask": mask,
                       "coils": coils, "seed": seed}
        self.register_buffer("mask", None)
        self.register_buffer("sens", None)
        self.coils = coils
        self._image_sens: dict = {}
        self._keys: list | None = None
        if mask not in MASK_KINDS:
            m = np.load(mask)
            if m.ndim == 2:
                if not (m == m[:1]).all():
                    raise ValueError(f"mask {mask} is 2-D but not constant along each column; expected a "
                                     f"Cartesian column mask (1-D, length W, or 2-D with identical rows)")
                m = m[0]
            if m.ndim != 1:
                raise ValueError(f"mask {mask} has shape {m.shape}; expected a 1-D column mask of length W")
            if not (m != 0).any():
                raise ValueError(f"mask {mask} samples no column: the measurement would be empty")
            self.mask = torch.as_tensor(m != 0)
        elif image_size is not None:
            self.mask = torch.as_tensor(self._draw(image_size))
        if sensitivities is not None:
            s = torch.as_tensor(np.load(sensitivities))
            if not s.is_complex() or s.ndim != 3:
                raise ValueError(f"sensitivities {sensitivities} must be a complex array (coils, H, W), "
                                 f"got {s.dtype} {tuple(s.shape)}")
            check_sensitivities(s, str(sensitivities), coils)
            self.sens, self.coils = s.to(torch.complex64), s.shape[0]
            # the file is part of the operator (summary.json, the fingerprint with its contents, the operator a
            # read-back rebuilds): an absolute path, so measurements read from elsewhere find it
            self.params.update(coils=self.coils, sensitivities=str(Path(sensitivities).resolve()))

    # -- geometry -------------------------------------------------------------------
    def mask_for(self, shape) -> torch.Tensor:
        h, w = shape[-2:]
        if self.mask is None:
            if round(w * self.center_fraction) == 0:
                log.warning("MRI center_fraction %g keeps no central column at %d px: the k-space centre is sampled "
                            "only by chance", self.center_fraction, w)
            self.mask = torch.as_tensor(self._draw(w))
        if self.mask.shape[0] != w:
            raise ValueError(f"the MRI mask has {self.mask.shape[0]} columns but the image is {w} px wide; "
                             f"expected a mask of the image width")
        if self.sens is not None and tuple(self.sens.shape[-2:]) != (h, w):
            raise ValueError(f"the coil sensitivities are {tuple(self.sens.shape[-2:])} but the image is {(h, w)}")
        return self.mask

    def _draw(self, w: int) -> np.ndarray:
        """The mask drawn for width ``w``, checked once on the host (not at every call: no device read)."""
        drawn = column_mask(w, self.acceleration, self.center_fraction, self.kind, self.seed)
        if not drawn.any():
            raise ValueError(f"the MRI mask samples no column of {w} (acceleration {self.acceleration:g}, "
                             f"center_fraction {self.center_fraction:g}): the measurement would be empty; lower "
                             f"the acceleration")
        return drawn

    def realised_sampling(self) -> dict | None:
        """The mask as drawn (``summary.json`` ``operator_realised``): a random mask at a small width
        keeps more or fewer columns than ``width / acceleration`` (at 32 px the 4× preset keeps 6,
        5.33×; the 8× one 3, 10.67×).  None before the mask is drawn."""
        if self.mask is None:
            return None
        n, w = int(self.mask.sum()), int(self.mask.numel())
        return {"sampled_columns": n, "columns": w, "acceleration": round(w / max(n, 1), 2)}

    def set_sensitivity_maps(self, maps: dict, description: str = "per-image") -> None:
        """Per-image coil maps: image name → complex ``(coils, H, W)`` (Σ_c |S_c|² = 1), used for the
        images named by :meth:`set_images`."""
        coils = {int(m.shape[0]) for m in maps.values()}
        if len(coils) != 1:
            raise ValueError(f"per-image sensitivities must all have the same number of coils, got {sorted(coils)}")
        self._image_sens = {k: torch.as_tensor(m).to(torch.complex64) for k, m in maps.items()}
        self.coils = coils.pop()
        self.params["coils"] = self.coils
        self.params["sensitivities"] = description

    def set_images(self, keys) -> None:
        self._keys = None if keys is None else list(keys)

    def image_names(self) -> list[str] | None:
        return None if self._keys is None else list(self._keys)

    def sensitivities(self, h: int, w: int, device) -> torch.Tensor | None:
        if self._image_sens:
            if self._keys is None or any(k not in self._image_sens for k in self._keys):
                missing = "no images named (set_images)" if self._keys is None else \
                    f"none for {[k for k in self._keys if k not in self._image_sens][:3]}"
                raise ValueError(f"MRI has per-image coil sensitivities but {missing}")
            batch = tuple(self._keys)
            if getattr(self, "_batch_sens", (None,))[0] != batch:  # the same tensor while the batch stays
                self._batch_sens = (batch, torch.stack([self._image_sens[k] for k in self._keys]))
            s = self._batch_sens[1]
            if tuple(s.shape[-2:]) != (h, w):
                raise ValueError(f"the coil sensitivities are {tuple(s.shape[-2:])} but the image is {(h, w)}")
            return cached_on(self, "image_sensitivities", s, device)
        if self.coils == 1 and self.sens is None:
            return None
        if self.sens is None:
            if h != w:
                raise ValueError(f"synthetic coil sensitivities need square images, got {h}×{w}")
            self.sens = synthetic_sensitivities(self.coils, h, self.seed)
        if self.sens.device != torch.device(device):
            self.sens = self.sens.to(device)  # kept there: no copy per operator call
        return self.sens

    def output_shape(self, shape):
        if shape[1] != 1:
            raise ValueError(f"MRI takes single-channel (magnitude) images, got {shape[1]} channels")
        # the count from the host's column indices: the mask's own sum would wait for the device at every call
        return (shape[0], 2 * self.coils, shape[-2], self.host_columns(shape).numel())

    def input_shape(self, y_shape):
        if self.mask is None:
            raise ValueError("MRI cannot tell the image width before its mask is drawn; apply it to an image first")
        return (y_shape[0], 1, y_shape[-2], self.mask.shape[0])

    # -- complex ↔ real channels ----------------------------------------------------
    def coil_images(self, x01: torch.Tensor) -> torch.Tensor:
        """``(B, coils, H, W)`` complex coil images of the magnitude image ``x01`` ``(B, 1, H, W)``."""
        s = self.sensitivities(*x01.shape[-2:], x01.device)
        xc = x01.to(torch.complex128 if x01.dtype == torch.float64 else torch.complex64)
        if s is not None and s.ndim == 4 and s.shape[0] != xc.shape[0]:
            raise ValueError(f"{s.shape[0]} images are named (set_images) but the batch holds {xc.shape[0]}")
        return xc if s is None else xc * s.to(xc.dtype)[None if s.ndim == 3 else slice(None)]

    def apply(self, x):
        k = fft2c(self.coil_images((x + 1) / 2))[..., self.sampled_columns(x.shape, x.device)]
        return torch.stack([k.real, k.imag], 2).flatten(1, 2)

    def host_columns(self, shape) -> torch.Tensor:
        """Indices of the sampled k-space columns on the host, found once per mask (``nonzero``
        of a device mask waits for the device)."""
        mask = self.mask_for(shape)
        if getattr(self, "_columns", (None,))[0] is not mask:
            self._columns = (mask, mask.cpu().nonzero().squeeze(1))
        return self._columns[1]

    def sampled_columns(self, shape, device) -> torch.Tensor:
        """:meth:`host_columns` on ``device``, copied once per mask (see ``cached_on``)."""
        return cached_on(self, "columns", self.host_columns(shape), device)

    def kspace(self, y: torch.Tensor) -> torch.Tensor:
        """Zero-filled complex k-space ``(B, coils, H, W)`` from ``y``."""
        b, _, h, _ = y.shape
        w = self.mask.shape[0]
        k = torch.zeros(b, self.coils, h, w, dtype=torch.complex128 if y.dtype == torch.float64 else torch.complex64,
                        device=y.device)
        yc = y.reshape(b, self.coils, 2, h, -1)
        k[..., cached_on(self, "mask", self.mask, y.device)] = torch.complex(yc[:, :, 0], yc[:, :, 1]).to(k.dtype)
        return k

    def initial_guess(self, y):
        """Zero-filled reconstruction: |F⁻¹(zero-filled k-space)|, root-sum-of-squares over coils."""
        magnitude = ifft2c(self.kspace(y)).abs().pow(2).sum(1, keepdim=True).sqrt()
        return (magnitude.to(y.dtype) * 2 - 1).clamp(-1, 1)

    def initial_guess_from_part(self, filled, known, rounds: int = GUESS_FILL_ROUNDS):
        """The zero-filled guess from the ``known`` k-space samples only, its other samples filled by
        alternating projections (POCS, Youla & Webb 1982): ``rounds`` times the unknown samples :=
        ``A(guess)`` — the k-space of the magnitude image in [-1, 1] the current samples give — then the
        guess, until a round changes the samples by less than :data:`GUESS_FILL_TOLERANCE` of their norm.
        Zeros there (the held-out samples treated as unsampled) lost 3.49 dB from 20 % held out where DPS
        lost 2.07 (4 phantoms); POCS's fixed point −1.47 / −0.79 dB (two splits), stopped at 10⁻³ −1.50 /
        −0.79 after 40 / 15 rounds (docs/calibration.md, "A handicapped initial guess")."""
        with torch.no_grad():
            for _ in range(rounds):
                previous, filled = filled, torch.where(known, filled, self.apply(self.initial_guess(filled)).to(filled))
                if float((filled - previous).norm()) <= GUESS_FILL_TOLERANCE * float(filled.norm()):
                    break  # (a host read per round: this runs once per split, not inside a solver's loop)
        return self.initial_guess(filled)

    def svd(self, shape):
        """Single coil: the exact real-linear SVD of x ↦ sampled columns of fft2c((x + 1)/2) as
        [real, imag] (:class:`~ipsolve.operators.decomposition.HermitianFourierDecomposition`).
        Multi-coil: none — the sensitivities mix every pixel into every coil, so AᵀA is not
        diagonal in any fixed fast basis; :meth:`pinv` uses conjugate gradients."""
        self.output_shape(shape)
        if self.coils != 1 or self.sens is not None or self._image_sens:
            raise not_decomposable(f"MRI with {self.coils} coil(s) and sensitivities",
                                   "the sensitivities couple the pixels (pinv uses conjugate gradients)")
        with torch.no_grad():
            offset = self.apply(torch.zeros(1, *shape[1:], dtype=torch.float64))
        return HermitianFourierDecomposition(shape, self.mask_for(shape).cpu(), offset)

    # set where the mask file was drawn from this operator's own settings (a padded fastMRI file: its
    # acceleration, centre fraction and seed made it), so they are used
    mask_drawn_from_settings = False

    def unused_settings(self):
        if self.kind in MASK_KINDS or self.mask_drawn_from_settings:
            return {}
        unused = {k: f"mask={' or '.join(MASK_KINDS)} (a mask file decides)" for k in ("acceleration", "center_fraction")}
        if self.coils == 1 or self.sens is not None:  # the seed also draws synthetic coil maps
            unused["seed"] = "a drawn mask or synthetic coil maps (coils > 1)"
        return unused

    def seeded_state(self):
        return f"its {self.kind} column mask" if self.kind in MASK_KINDS else None

    def display(self, y, size):
        """log(1 + |k|) of the zero-filled k-space (root-sum-of-squares over coils), min–max scaled."""
        return display_scaled(self.kspace(y).abs().pow(2).sum(1, keepdim=True).sqrt().log1p(), size)
