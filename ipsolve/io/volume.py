"""A 3-D volume with its geometry, the intensity window that maps it to ipsolve's [-1, 1], and
its slices at the prior's size.

Geometry: ``affine`` maps voxel indices ``(row, column, slice)`` of ``data`` to millimetres in
the NIfTI world (RAS+: x to the patient's left→right, y posterior→anterior, z inferior→superior).
DICOM's patient coordinates are LPS+; :data:`LPS_TO_RAS` converts (nibabel's convention, see
``nibabel/nicom/dicomwrappers.py``, ``Wrapper.affine``).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ..notices import shown

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
AUTO_PERCENTILES = (0.5, 99.5)  # data.window=auto: robust range of the whole volume
NAMED_WINDOWS = {"ct_soft_tissue": (40.0, 400.0)}  # level, width in HU: [L − W/2, L + W/2] = [−160, 240]


@dataclass
class Volume:
    """One volume: ``data`` ``(rows, columns, slices)`` float64 in the file's physical units
    (HU for CT after RescaleSlope/Intercept), ``affine`` as above, where it came from
    (``kind``: dicom | nifti | fastmri; ``files``: never written to), ``meta`` (modality, series,
    units, warnings ...) and, for DICOM, the slice headers (pixel data removed) that a DICOM
    series output copies its patient and study from."""

    name: str
    data: np.ndarray
    affine: np.ndarray
    kind: str
    files: list[Path] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    headers: list | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    def voxel_sizes(self) -> list[float]:
        """The voxel's sides: the in-plane columns' lengths, and the slice spacing along the slices'
        normal (a gantry tilt's sheared slice axis is longer than the spacing)."""
        axes = np.asarray(self.affine[:3, :3], float)
        sizes = np.linalg.norm(axes, axis=0)
        normal = np.cross(axes[:, 0], axes[:, 1])
        if np.linalg.norm(normal) > 0:
            sizes[2] = abs(float(np.dot(axes[:, 2], normal / np.linalg.norm(normal))))
        return [float(v) for v in sizes]


@dataclass(frozen=True)
class Window:
    """The intensity window ``[lo, hi]`` (physical units) mapped to [-1, 1]: ``x = 2 (v − lo)/(hi − lo) − 1``,
    clipped.  ``spec`` is what the user asked for (``auto``, ``ct_soft_tissue`` or ``[lo, hi]``)."""

    spec: str
    lo: float
    hi: float

    def apply(self, values: np.ndarray) -> np.ndarray:
        return np.clip((values - self.lo) / (self.hi - self.lo), 0.0, 1.0) * 2 - 1

    def invert(self, x: np.ndarray) -> np.ndarray:
        """[-1, 1] → physical units (the inverse of :meth:`apply` inside the window)."""
        return self.lo + (np.asarray(x, dtype=np.float64) + 1) / 2 * (self.hi - self.lo)

    def scale(self, x: np.ndarray) -> np.ndarray:
        """A spread (a standard deviation) on the [-1, 1] scale → physical units."""
        return np.asarray(x, dtype=np.float64) * (self.hi - self.lo) / 2

    def record(self) -> dict:
        return {"spec": self.spec, "lo": self.lo, "hi": self.hi}


def parse_window(spec) -> str | tuple[float, float]:
    """``auto``, a named window (``ct_soft_tissue``) or ``[lo, hi]`` (lo < hi, finite), checked; a
    :class:`ValueError` (one line) otherwise."""
    if isinstance(spec, str):
        text = spec.strip()
        if text == "auto" or text in NAMED_WINDOWS:
            return text
        parts = text.strip("[]()").split(",")
        if len(parts) != 2:
            raise ValueError(f"data.window must be auto, {', '.join(NAMED_WINDOWS)} or [lo, hi], got {shown(spec)}")
        spec = parts
    try:
        lo, hi = (float(v) for v in spec)
    except (TypeError, ValueError):
        raise ValueError(f"data.window must be auto, {', '.join(NAMED_WINDOWS)} or [lo, hi] (two numbers), "
                         f"got {shown(spec)}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
        raise ValueError(f"data.window=[{lo:g}, {hi:g}] is empty: expected [lo, hi] with lo < hi "
                         f"(in the volume's units, e.g. HU for CT)")
    return lo, hi


def resolve_window(spec, volume: Volume) -> Window:
    """The window of ``volume`` (one per volume, never per slice, so that its slices stay comparable)."""
    parsed = parse_window(spec)
    if parsed == "auto":
        lo, hi = (float(v) for v in np.percentile(volume.data, AUTO_PERCENTILES))
        if not hi > lo:
            raise ValueError(f"data.window=auto: volume {volume.name} is constant ({lo:g}) between its "
                             f"{AUTO_PERCENTILES[0]} and {AUTO_PERCENTILES[1]} % percentiles; give data.window=[lo, hi]")
        return Window("auto", lo, hi)
    if isinstance(parsed, str):
        level, width = NAMED_WINDOWS[parsed]
        units = volume.meta.get("units")
        if units != "HU":
            raise ValueError(f"data.window={parsed} is in Hounsfield units, but volume {volume.name} is "
                             f"{volume.meta.get('modality') or volume.kind} data without HU (units: {units or 'none'}); "
                             f"use data.window=auto or [lo, hi]"
                             + (f" (a NIfTI file does not record HU; if its values are HU, give data.units=HU, or "
                                f"data.window=[{level - width / 2:g}, {level + width / 2:g}], the same window)"
                                if volume.kind == "nifti" else ""))
        return Window(parsed, level - width / 2, level + width / 2)
    return Window(f"[{parsed[0]:g}, {parsed[1]:g}]", *parsed)


# a window that clips more than this fraction of a volume's voxels is said: a CT soft-tissue window is meant to clip
# air and bone (pydicom's CT_small: 32 %; at 0.5 an audit's series built from it, 62 %, was told its slices were
# nearly constant), an MR volume read as HU through it clipped 99.85 %
CLIPPED_NOTE = 0.9


def window_clip_note(volume: Volume, window: Window) -> str | None:
    """One line when ``window`` clips most of ``volume`` (its slices then read nearly constant: an MR
    volume through a CT soft-tissue window clipped 99.85 % of its voxels, silently), else None."""
    if window.spec == "auto":
        return None
    data = volume.data
    outside = float(np.mean((data < window.lo) | (data > window.hi)))
    if outside <= CLIPPED_NOTE:
        return None
    lo, hi = (float(v) for v in np.percentile(data, AUTO_PERCENTILES))
    return (f"the window {window.spec} ({window.lo:g} to {window.hi:g}) clips {100 * outside:.1f} % of volume "
            f"{volume.name}'s voxels (its {AUTO_PERCENTILES[0]}–{AUTO_PERCENTILES[1]} % range is {lo:.4g} to {hi:.4g}): "
            f"its slices are nearly constant; data.window=auto fits the volume")


def select_slices(volume: Volume, slices) -> tuple[int, int]:
    """``[first, last]`` (inclusive) slice indices to reconstruct from ``data.slices`` (None: all)."""
    n = volume.shape[2]
    if slices is None:
        return 0, n - 1
    try:
        first, last = (int(v) for v in slices)
    except (TypeError, ValueError):
        raise ValueError(f"data.slices must be [first, last] (inclusive slice indices) or null, got {shown(slices)}") from None
    if first > last:
        raise ValueError(f"data.slices=[{first}, {last}] is reversed: give [first, last] with first <= last "
                         f"(inclusive indices, 0 … {n - 1} for volume {volume.name})")
    if not 0 <= first <= last < n:
        raise ValueError(f"data.slices=[{first}, {last}] is outside volume {volume.name}'s {n} slice(s) "
                         f"(0 … {n - 1})")
    return first, last


def resized_affine(affine: np.ndarray, crop: tuple[int, int, int], size: int, first_slice: int = 0) -> np.ndarray:
    """The affine of slices centre-cropped to ``crop = (row0, col0, side)`` and resized to
    ``size`` (:func:`ipsolve.io.images.square_crop_resize`), starting at slice ``first_slice``:
    output voxel ``(i, j, k)`` is input voxel ``(row0 + (i + ½)f − ½, col0 + (j + ½)f − ½,
    first_slice + k)`` with ``f = side/size``."""
    r0, c0, m = crop
    f = m / size
    t = np.eye(4)
    t[0, 0] = t[1, 1] = f
    t[:3, 3] = [r0 + 0.5 * f - 0.5, c0 + 0.5 * f - 0.5, first_slice]
    return np.asarray(affine, dtype=np.float64) @ t


def slice_images(volume: Volume, window: Window, size: int, first: int, last: int):
    """Slices ``first … last`` windowed to [-1, 1] and resized to ``size`` (the runner's rule):
    ``(tensor (n, 1, size, size), crop)``."""
    import torch

    from .images import square_crop_resize

    out, crop = [], None
    for k in range(first, last + 1):
        img = (window.apply(volume.data[:, :, k]) + 1) / 2  # [0, 1], as load_image resizes
        img, crop = square_crop_resize(img, size)
        out.append(np.clip(img, 0, 1) * 2 - 1)
    return torch.from_numpy(np.stack(out)[:, None].astype(np.float32)), crop


def check_not_inputs(targets, protected) -> None:
    """ValueError if any of ``targets`` is (the same file as) one of ``protected`` (the inputs):
    nothing ipsolve writes may replace an input file."""
    protected = [Path(p) for p in protected]
    resolved = {p.resolve() for p in protected}
    for t in targets:
        t = Path(t)
        if t.resolve() in resolved or (t.exists() and any(p.exists() and os.path.samefile(t, p) for p in protected)):
            raise ValueError(f"refusing to write {t}: it is an input file; choose another output directory "
                             f"(hydra.run.dir=... on the command line, output_dir=... in Python)")
