"""Raw k-space in fastMRI's HDF5 layout (h5py), made ready for :class:`ipsolve.operators.MRI`.

A fastMRI file (facebookresearch/fastMRI ``fastmri/data/mri_data.py``, ``SliceDataset``) holds
``kspace`` — ``(slices, coils, H, W)`` complex (multi-coil) or ``(slices, H, W)`` (single-coil),
readout along H, phase encodes (the undersampled direction) along W — and optionally
``reconstruction_rss`` (multi-coil) / ``reconstruction_esc`` (single-coil) targets, a ``mask``
(test sets) and the ``ismrmrd_header`` XML.

To reach the prior's ``size×size`` grid without breaking the Cartesian column mask, every step
acts along one axis at a time and is exact for the data that exist:

1. the readout axis (fully sampled) is cropped or zero-padded in image space to W rows (a square
   field of view; fastMRI's 2× readout oversampling is removed);
2. the central ``size×size`` of k-space is kept (or k-space is zero-padded): an ideal low-pass /
   sinc resampling of the whole field of view, scaled by ``size/W`` so image intensities keep
   their units; the mask keeps its central ``size`` columns.

Coil sensitivities are estimated from the fully sampled centre (the auto-calibration columns
found as in fastMRI's ``fastmri/models/varnet.py`` ``SensitivityModel.get_pad_and_num_low_freqs``):
the coil images of the centre alone, divided by their root-sum-of-squares — the classical
initial estimate of fastMRI's VarNet sensitivity model, without its learned U-Net refinement
(ESPIRiT would be sharper; it is not used, to avoid a sigpy dependency).  The maps satisfy
Σ_c |S_c|² = 1 at every pixel, the MRI operator's convention (``ipsolve/operators/mri.py``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .optional import require

SUFFIXES = (".h5", ".hdf5")
TARGETS = ("reconstruction_rss", "reconstruction_esc")


@dataclass
class KSpaceFile:
    """One fastMRI file: the open ``kspace`` dataset's shape, whether it is multi-coil, the file's
    mask (or None), the target dataset's name (or None) and header facts."""

    name: str
    path: Path
    shape: tuple
    multicoil: bool
    mask: np.ndarray | None
    target: str | None
    target_shape: tuple | None
    header: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)

    @property
    def coils(self) -> int:
        """Receiver coils (1 for a single-coil file)."""
        return int(self.shape[1]) if self.multicoil else 1

    @property
    def slices(self) -> int:
        """Slices in the file."""
        return int(self.shape[0])

    @property
    def height(self) -> int:
        """H: k-space rows (the fully sampled readout axis)."""
        return int(self.shape[-2])

    @property
    def width(self) -> int:
        """W: k-space columns (the phase encodes, the undersampled axis)."""
        return int(self.shape[-1])


def fastmri_files(path) -> list[Path]:
    """``[path]`` for a file (whatever its suffix), else the folder's ``.h5``/``.hdf5`` files (not
    recursive, hidden ones left out), sorted; FileNotFoundError when ``path`` is neither."""
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no fastMRI file (.h5) or folder at {path}")
    return sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES and not p.name.startswith("."))


def _header(xml: str) -> dict:
    """Encoded / recon matrix and field of view (mm) from the ismrmrd header XML."""
    import xml.etree.ElementTree as ET

    out = {}
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return out
    strip = lambda tag: tag.split("}", 1)[-1]  # noqa: E731 - the ismrmrd namespace
    for enc in root.iter():
        if strip(enc.tag) != "encoding":
            continue
        for space in enc:
            key = strip(space.tag)
            if key not in ("encodedSpace", "reconSpace"):
                continue
            for part in space:
                sub = strip(part.tag)
                if sub in ("matrixSize", "fieldOfView_mm"):
                    out[f"{key}.{sub}"] = {strip(c.tag): float(c.text) for c in part if c.text}
        break
    return out


def open_fastmri(path: Path) -> KSpaceFile:
    """The facts of one fastMRI file (the k-space itself is read slice by slice later)."""
    h5py = require("h5py")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"not a readable HDF5 file ({err})") from None
    with f:
        if "kspace" not in f:
            raise ValueError(f"no 'kspace' dataset (found: {', '.join(sorted(f.keys())) or 'nothing'}); "
                             f"expected fastMRI's layout (kspace (slices, coils, H, W) complex)")
        ks = f["kspace"]
        if ks.ndim not in (3, 4) or not np.issubdtype(ks.dtype, np.complexfloating):
            raise ValueError(f"'kspace' is {ks.dtype} {tuple(ks.shape)}; expected complex (slices, coils, H, W) "
                             f"(multi-coil) or (slices, H, W) (single-coil)")
        mask = np.asarray(f["mask"][()]).astype(bool).reshape(-1) if "mask" in f else None
        if mask is not None and mask.size != ks.shape[-1]:
            raise ValueError(f"'mask' has {mask.size} entries but the k-space is {ks.shape[-1]} columns wide")
        target = next((t for t in TARGETS if t in f), None)
        header = {}
        if "ismrmrd_header" in f:
            raw = f["ismrmrd_header"][()]
            header = _header(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw))
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
        name = re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem) or "kspace"
        return KSpaceFile(name=name, path=path, shape=tuple(ks.shape), multicoil=ks.ndim == 4, mask=mask,
                          target=target, target_shape=tuple(f[target].shape) if target else None, header=header,
                          attrs=attrs)


def read_fastmri(path) -> tuple[list[KSpaceFile], list[dict]]:
    """The fastMRI files of ``path`` (a file or a folder of ``.h5``): ``(files, skipped)``."""
    require("h5py")
    files, skipped = [], []
    for p in fastmri_files(path):
        try:
            files.append(open_fastmri(p))
        except ValueError as err:
            skipped.append({"file": str(p), "reason": str(err)})
    if not files:
        detail = "; ".join(f"{Path(s['file']).name}: {s['reason']}" for s in skipped)
        raise ValueError(f"no fastMRI k-space files in {path}" + (f" ({detail})" if detail else ""))
    return files, skipped


def read_slice(kf: KSpaceFile, index: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``(k-space (coils, H, W) complex128, target (h, w) or None)`` of one slice."""
    h5py = require("h5py")
    with h5py.File(kf.path, "r") as f:
        k = np.asarray(f["kspace"][index], dtype=np.complex128)
        target = np.asarray(f[kf.target][index], dtype=np.float64) if kf.target else None
    return (k if kf.multicoil else k[None]), target


# ----------------------------------------------------------------------------------------
# k-space → the prior's grid (numpy, float64): see the module docstring
# ----------------------------------------------------------------------------------------
def fft2c_numpy(x: np.ndarray, axes=(-2, -1)) -> np.ndarray:
    """Orthonormal centred FFT (fastMRI's ``fft2c``; numpy, for files — the operators' torch one is
    :func:`ipsolve.operators.fft2c`), along ``axes``."""
    return np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(x, axes=axes), axes=axes, norm="ortho"), axes=axes)


def ifft2c_numpy(k: np.ndarray, axes=(-2, -1)) -> np.ndarray:
    """Orthonormal centred inverse FFT (fastMRI's ``ifft2c``; the inverse of :func:`fft2c_numpy`), numpy,
    along ``axes``."""
    return np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(k, axes=axes), axes=axes, norm="ortho"), axes=axes)


def _centre(n_from: int, n_to: int) -> tuple[int, int]:
    """``(start in the source, start in the target)`` of a centred crop or pad (the FFT centre
    ``n // 2`` stays the centre)."""
    if n_to <= n_from:
        return n_from // 2 - n_to // 2, 0
    return 0, n_to // 2 - n_from // 2


def _crop_or_pad(a: np.ndarray, n: int, axis: int) -> np.ndarray:
    src, dst = _centre(a.shape[axis], n)
    length = min(a.shape[axis], n)
    shape = list(a.shape)
    shape[axis] = n
    out = np.zeros(shape, dtype=a.dtype)
    sl_src = [slice(None)] * a.ndim
    sl_dst = [slice(None)] * a.ndim
    sl_src[axis], sl_dst[axis] = slice(src, src + length), slice(dst, dst + length)
    out[tuple(sl_dst)] = a[tuple(sl_src)]
    return out


def square_kspace(k: np.ndarray, size: int) -> np.ndarray:
    """``(coils, H, W)`` k-space → ``(coils, size, size)`` on a square field of view (steps 1–2 of
    the module docstring)."""
    w = k.shape[-1]
    if k.shape[-2] != w:  # readout: image space along H only (fully sampled), crop/pad to W rows
        k = fft2c_numpy(_crop_or_pad(ifft2c_numpy(k, axes=(-2,)), w, -2), axes=(-2,))
    k = _crop_or_pad(_crop_or_pad(k, size, -2), size, -1)
    return k * (size / w)


def crop_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """The column mask of :func:`square_kspace`'s output (unsampled where k-space was padded)."""
    return _crop_or_pad(mask.astype(bool), size, 0)


def sampled_columns(k: np.ndarray) -> np.ndarray:
    """Columns (last axis) holding any non-zero sample in ``k`` ``(..., H, W)``."""
    return np.abs(k).reshape(-1, k.shape[-2], k.shape[-1]).max(axis=(0, 1)) > 0


def acs_columns(mask: np.ndarray) -> np.ndarray:
    """The fully sampled centre, as fastMRI finds it (``fastmri/models/varnet.py``
    ``SensitivityModel.get_pad_and_num_low_freqs``, lines 181-201): ``left`` / ``right`` = the
    sampled columns next to ``cent = W // 2`` on each side up to the first unsampled one (a running
    argmin), ``num_low = max(2 min(left, right), 1)`` (a symmetric centre), columns
    ``pad … pad + num_low`` with ``pad = (W − num_low + 1) // 2``.  A fully sampled mask gives every
    column (there fastMRI's argmin finds no zero and returns 1 column)."""
    mask = np.asarray(mask, dtype=bool)
    w = mask.size
    out = np.zeros(w, dtype=bool)
    if mask.all():
        out[:] = True
        return out
    cent = w // 2
    left, right = int(np.argmin(mask[:cent][::-1])), int(np.argmin(mask[cent:]))
    num_low = max(2 * min(left, right), 1)
    pad = (w - num_low + 1) // 2
    out[pad:pad + num_low] = True
    return out


def estimate_sensitivities(k: np.ndarray, acs: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """Coil maps ``(coils, H, W)`` complex from the auto-calibration columns ``acs`` of ``k``
    ``(coils, H, W)``: ``I_c / sqrt(Σ_c |I_c|² + ε)`` of the centre-only coil images (module
    docstring), renormalised to Σ_c |S_c|² = 1 where the centre holds no signal."""
    low = ifft2c_numpy(np.where(acs[None, None, :], k, 0))
    rss = np.sqrt((np.abs(low) ** 2).sum(0))
    maps = low / np.maximum(rss, floor * max(rss.max(), 1e-30))[None]
    norm = np.sqrt((np.abs(maps) ** 2).sum(0))
    flat = norm < 0.5  # no signal in the centre here: equal weights (any unit-norm map fits zeros)
    maps[:, flat] = 1 / np.sqrt(k.shape[0])
    return maps / np.sqrt((np.abs(maps) ** 2).sum(0))[None]


REAL_IMAGE_FRACTION = 0.02  # the centre image's imaginary energy (after a global phase) below which it is real


def single_coil_phase(k: np.ndarray, acs: np.ndarray) -> tuple[np.ndarray, str]:
    """The phase map ``(1, H, W)`` of one coil's image, the single-coil "sensitivity" (a scan's image
    is complex: a real model leaves its phase as misfit), and what it is.  From the centre-only
    image ``c`` of the calibration columns ``acs`` kept in mirror pairs ``±u``: when it is real up to a global phase
    ``φ₀ = ½ arg Σ c²`` (imaginary energy of ``e^{-iφ₀} c`` below :data:`REAL_IMAGE_FRACTION` of its
    energy) the map is that constant — a per-pixel phase would flip the sign where the low-pass
    image rings below zero (measured: 3.1 dB lost on a real image) — else ``c / |c|``
    (:func:`estimate_sensitivities` with one coil)."""
    w = acs.size
    mirror = (2 * (w // 2) - np.arange(w)) % w  # column u ↔ −u about the centre W // 2 (the centred FFT's DC)
    symmetric = acs & acs[mirror]  # a real image's centre is real only if both of each pair are kept
    low = ifft2c_numpy(np.where(symmetric[None, None, :], k, 0))[0]
    if not (np.abs(low) ** 2).sum() > 0:  # the centre holds no data (a mask without it): nothing to estimate
        return np.ones((1, *low.shape), dtype=complex), "zero phase (no data in the calibration columns)"
    phi0 = 0.5 * np.angle((low ** 2).sum())
    rotated = low * np.exp(-1j * phi0)
    if rotated.real.sum() < 0:  # the image is non-negative: the global phase that makes it positive
        phi0 += np.pi
        rotated = -rotated
    imaginary = float((rotated.imag ** 2).sum() / max((np.abs(rotated) ** 2).sum(), 1e-300))
    if imaginary < REAL_IMAGE_FRACTION:
        return np.full((1, *low.shape), np.exp(1j * phi0)), f"a global phase ({imaginary:.1%} imaginary energy)"
    return estimate_sensitivities(k, symmetric), f"the phase of the centre image ({imaginary:.1%} imaginary energy)"


def rss_image(k: np.ndarray) -> np.ndarray:
    """Root-sum-of-squares magnitude of the coil images of ``k`` ``(coils, H, W)`` (fastMRI's
    ``rss`` of ``ifft2c``, how ``reconstruction_rss`` is made before its centre crop)."""
    return np.sqrt((np.abs(ifft2c_numpy(k)) ** 2).sum(0))


def voxel_sizes(kf: KSpaceFile, size: int) -> tuple[float, float, float]:
    """Millimetres per pixel of the ``size×size`` grid (rows, columns) and the slice thickness,
    from the ismrmrd header's encoded field of view (1 mm when absent)."""
    fov = kf.header.get("encodedSpace.fieldOfView_mm") or {}
    fx, fy, fz = fov.get("x"), fov.get("y"), fov.get("z")
    if not fx or not fy:
        return 1.0, 1.0, float(fz or 1.0)
    # readout (x, along H) cropped to W rows: its field of view shrinks by W/H
    return fx * kf.width / kf.height / size, fy / size, float(fz or 1.0)


RAYLEIGH_MEAN_OVER_MEDIAN = float(np.sqrt(np.pi / 2) / np.sqrt(2 * np.log(2)))  # 1.0645 for pure noise
NOISE_ONLY_LIMIT = 1.2  # mean/median of the margin's magnitudes above which it holds object, not only noise


def kspace_noise_std(slices: list[np.ndarray]) -> tuple[float | None, str]:
    """``(σ, how)``: the std of one real or imaginary part of the k-space noise of ``slices`` (each
    ``(coils, H, W)``, readout along H), from the readout-oversampling margin — the rows of the
    readout image (inverse FFT along H, orthonormal, so white noise keeps its std) outside the
    central W that :func:`square_kspace` crops away.  Complex Gaussian noise has Rayleigh-distributed
    magnitudes: median σ√(2 ln 2), mean/median 1.0645.  The margin holds noise only when the object
    fits inside the reconstructed field of view (a head: yes; a knee's leg along the readout: no);
    where the mean/median of its magnitudes (over the sampled columns: zero columns carry no noise)
    is above :data:`NOISE_ONLY_LIMIT` it holds object and σ is None (measured: an object through the
    whole readout field of view gave 2.6 and a median 3.8× the noise; pure noise 1.05–1.07).  None
    too without oversampling (H ≤ W).  (MRI's classical estimate from a magnitude image's
    background, Sijbers et al. 1998, needs a background that a fastMRI crop often lacks.)"""
    margins = []
    for k in slices:
        h, w = k.shape[-2:]
        if h <= w:
            return None, f"no readout oversampling ({h} rows for {w} columns)"
        start, _ = _centre(h, w)
        cols = sampled_columns(k)
        hybrid = ifft2c_numpy(k[..., cols], axes=(-2,))
        margins.append(np.abs(np.concatenate([hybrid[:, :start], hybrid[:, start + w:]], axis=1)).ravel())
    values = np.concatenate(margins)
    median = float(np.median(values)) if values.size else 0.0
    if not median > 0:
        return None, "an empty readout margin (no noise in it)"
    ratio = float(values.mean()) / median
    if ratio > NOISE_ONLY_LIMIT:
        return None, (f"the readout-oversampling margin holds object, not only noise (mean/median of its magnitudes "
                      f"{ratio:.2f}; noise alone {RAYLEIGH_MEAN_OVER_MEDIAN:.3f})")
    return median / np.sqrt(2 * np.log(2)), f"the readout-oversampling margin (mean/median {ratio:.3f}: noise)"
