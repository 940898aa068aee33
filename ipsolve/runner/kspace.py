"""fastMRI k-space files through the runner (``data=fastmri operator=mri``).

Each file is a volume and each of its slices an item.  ``data.mask``:

* ``file`` — the file's own sampling (its ``mask`` dataset, else the columns that hold data) is
  the measurement: the items are the sampled k-space columns as :class:`~ipsolve.operators.MRI`
  makes them (``data.measurements`` implied), the operator uses that mask;
* ``operator`` — the file must be fully sampled (zero columns at the edges are padding, not
  undersampling: :func:`edge_padding`): its images are the ground truth and the operator's own
  mask (``operator.acceleration``, ``center_fraction``; less any padding) is applied to the
  file's k-space — retrospective undersampling as fastMRI does it, with the scan's own noise (no
  noise is added: ``sigma`` is the level the solver assumes);
* ``auto`` (default) — ``file`` when some columns are missing, else ``operator``.

Per-slice sensitivities from the calibration columns (:mod:`ipsolve.io.fastmri`), set on the
operator by slice name: coil maps (multi-coil), or for one coil its phase — a scan's image is
complex, and a real model would leave its phase as misfit.  ``data.window``: ``auto`` = [0, 99.5th percentile of the
volume's magnitude] (zero-filled for ``file``, the fully sampled image for ``operator``) or
``[0, hi]``: k-space is linear in the image, so only a scale is possible.  Ground truth: the
file's ``reconstruction_rss``/``reconstruction_esc`` when it covers the k-space's square field of
view, else (fully sampled files) the root-sum-of-squares of the k-space; metrics are left out
otherwise.  Outputs carry an affine with the header's voxel sizes and no orientation (fastMRI
files hold no patient geometry).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..notices import shown
from .inputs import Item, Plan

MASK_MODES = ("auto", "file", "operator")


def _window(spec, magnitudes: np.ndarray, name: str):
    from ..io import Window, parse_window

    parsed = parse_window(spec)
    if parsed == "auto":
        hi = float(np.percentile(magnitudes, 99.5))
        if not hi > 0:
            raise ValueError(f"data.window=auto: {name} has no signal (99.5th percentile of the magnitude is {hi:g})")
        return Window("auto", 0.0, hi)
    if isinstance(parsed, str) or parsed[0] != 0:
        raise ValueError(f"data.window={spec} for k-space: k-space is linear in the image, so the window must be "
                         f"auto or [0, hi] (a scale), got {spec}")
    return Window(f"[0, {parsed[1]:g}]", 0.0, parsed[1])


def _lowpass_target(target: np.ndarray, size: int) -> np.ndarray:
    """A target image on the k-space's ``W×W`` field of view brought to ``size`` by the same
    k-space crop as the data (magnitude)."""
    from ..io.fastmri import fft2c_numpy, ifft2c_numpy, square_kspace

    return np.abs(ifft2c_numpy(square_kspace(fft2c_numpy(target.astype(np.complex128))[None], size)[0]))


def kspace_items(data, prior, op_spec, explicit: tuple, out: Path, files: list):
    """``(items, plans, operator, measurements, explicit operator settings)`` for the fastMRI
    ``files`` (:func:`ipsolve.io.read_fastmri`) of ``data.path``."""
    import torch

    from ..io.fastmri import (acs_columns, crop_mask, estimate_sensitivities, kspace_noise_std, read_slice,
                              rss_image, sampled_columns, single_coil_phase, square_kspace, voxel_sizes)
    from ..io.volume import select_slices
    from .settings import build_operator, named_params
    from ..operators import MRI, OPERATORS

    name, params = named_params("operator", op_spec, OPERATORS)
    if name != "mri":
        raise ValueError(f"data=fastmri holds MRI k-space: use operator=mri (or mri_4x, mri_8x), not operator={name}")
    if prior.channels != 1:
        raise ValueError(f"MRI reconstructs magnitude images: the prior must have 1 channel, {prior.source} has "
                         f"{prior.channels}")
    mode = str(data.get("mask", "auto"))
    if mode not in MASK_MODES:
        raise ValueError(f"data.mask must be one of {', '.join(MASK_MODES)}, got {shown(mode)}")
    size = prior.image_size
    coils = {kf.coils for kf in files}
    if len(coils) > 1:
        raise ValueError(f"the files of {data.path} have different coil counts ({sorted(coils)}); run them separately")
    ncoils = coils.pop()
    if "coils" in explicit and int(params.get("coils", 1)) != ncoils:
        raise ValueError(f"the k-space of {files[0].path.name} has {ncoils} coil(s) (kspace {files[0].shape}) but "
                         f"operator.coils={params.get('coils')}; drop operator.coils (it follows the file)")
    # each file's sampling on the prior's grid
    prepared = []
    for kf in files:
        first, last = select_slices(_SliceCount(kf.name, kf.slices), data.get("slices"))
        raw = [read_slice(kf, z) for z in range(first, last + 1)]
        file_mask = kf.mask if kf.mask is not None else sampled_columns(np.stack([k for k, _ in raw]))
        undersampled = not (file_mask | edge_padding(file_mask)).all()  # zero columns at the edges: padding
        use_file = mode == "file" or (mode == "auto" and undersampled)
        if mode == "operator" and undersampled:
            raise ValueError(f"{kf.path.name} is undersampled ({int(file_mask.sum())} of {file_mask.size} columns): "
                             f"data.mask=operator needs fully sampled k-space to simulate another mask from")
        ks = np.stack([square_kspace(k, size) for k, _ in raw])  # (n, coils, S, S)
        prepared.append((kf, first, last, raw, ks, crop_mask(file_mask, size), use_file))
    modes = {p[6] for p in prepared}
    if len(modes) > 1:
        raise ValueError(f"the files of {data.path} mix undersampled and fully sampled k-space; run them separately "
                         f"or set data.mask")
    use_file = modes.pop()
    params = dict(params)
    if use_file:
        masks = {p[0].name: p[5] for p in prepared}
        first_mask = next(iter(masks.values()))
        if any(not np.array_equal(m, first_mask) for m in masks.values()):
            raise ValueError(f"the files of {data.path} were sampled with different masks ({', '.join(masks)}); "
                             f"run them separately")
        given = [k for k in ("mask", "acceleration", "center_fraction") if k in explicit]
        if given:  # the file's own columns decide; a given mask would be recorded but not used
            raise ValueError(f"the k-space is undersampled: its own sampled columns are the mask; drop "
                             f"{', '.join('operator.' + k for k in given)} (or use a fully sampled file)")
        from .rundir import save_array

        preset = params.get("acceleration")
        file_mask_note = (f"the file's own sampled columns are the mask ({int(first_mask.sum())} of {first_mask.size} "
                          f"on the prior's grid: {first_mask.size / max(int(first_mask.sum()), 1):.2f}×)"
                          + (f"; the operator preset's acceleration {preset:g}× is not used" if preset else ""))
        mask_path = out / "inputs" / "fastmri_mask.npy"
        save_array(first_mask, mask_path)  # atomic: every process writes the same mask
        params["mask"] = str(mask_path)
        explicit = (*explicit, "mask")
    if "sensitivities" not in explicit:
        params["sensitivities"] = None
        params["coils"] = 1  # the per-slice maps below set the coil count
    try:
        operator = build_operator({"name": "mri", **params})
        if not isinstance(operator, MRI):  # pragma: no cover - the registry maps mri to MRI
            raise ValueError("data=fastmri needs the MRI operator")
        try:
            mask = operator.mask_for((1, 1, size, size))
        except ValueError as err:
            raise ValueError(f"the k-space ({ncoils} coil(s), {size}×{size} on the prior's grid) does not fit the "
                             f"operator: {err}") from None
        if use_file:  # the file's columns decide: the preset's acceleration and centre fraction went into
            for unused in ("acceleration", "center_fraction"):  # summary.json unused (audit 2026-12-07)
                operator.params.pop(unused, None)
        if operator.sens is not None and operator.sens.shape[0] != ncoils:
            raise ValueError(f"operator.sensitivities has {operator.sens.shape[0]} coil maps but the k-space has "
                             f"{ncoils} coils")
    except Exception:  # nothing half-written: the mask file goes with the failed run
        if use_file:
            mask_path.unlink(missing_ok=True)
            try:
                mask_path.parent.rmdir()
            except OSError:
                pass
        raise
    on_grid = np.logical_and.reduce([p[5] for p in prepared])  # each file's columns holding data, on the grid
    if not use_file and not on_grid.all():  # fully sampled but padded: the operator's mask, less the padding
        from .rundir import save_array

        mask_path = out / "inputs" / "fastmri_mask.npy"
        save_array(mask.numpy() & on_grid, mask_path)
        operator = build_operator({"name": "mri", **params, "mask": str(mask_path)})
        operator.mask_drawn_from_settings = True  # (check_settings_used: acceleration and seed drew it)
        mask = operator.mask_for((1, 1, size, size))
        explicit = (*explicit, "mask")
    if not use_file:  # the measurements are made here, with the operator's own mask (its seed's)
        explicit = (*explicit, "seed")
    acs = acs_columns(mask.numpy())
    items, plans, maps = [], [], {}
    for kf, first, last, raw, ks, sampled_on_grid, _ in prepared:
        names = [f"{kf.name}_z{z:03d}" for z in range(first, last + 1)]
        zero_filled = np.stack([rss_image(np.where(mask.numpy()[None, None], k, 0)) for k in ks])
        full = np.stack([rss_image(k) for k in ks]) if not use_file else None
        warnings = [file_mask_note] if use_file else []  # (logged by the caller, rank 0)
        truth = None
        target_fov = kf.target_shape is not None and tuple(kf.target_shape[-2:]) == (kf.width, kf.width)
        if target_fov:
            truth = np.stack([_lowpass_target(t, size) for _, t in raw])
        elif full is not None:
            truth = full
            if kf.target:
                warnings.append(f"{kf.target} {tuple(kf.target_shape[-2:])} covers another field of view than the "
                                f"k-space ({kf.width}×{kf.width} after removing readout oversampling): the ground "
                                f"truth is the root-sum-of-squares of the fully sampled k-space")
        elif kf.target:
            warnings.append(f"{kf.target} {tuple(kf.target_shape[-2:])} covers another field of view than the k-space "
                            f"({kf.width}×{kf.width}): no ground truth, no metrics")
        window = _window(data.get("window", "auto"), zero_filled if use_file else full, kf.name)
        raw_noise, noise_how = kspace_noise_std([k for k, _ in raw])  # per real/imaginary part, the file's units
        # on the solver's scale: square_kspace scales by size/W, the items divide by the window's hi
        noise_sigma = None if raw_noise is None else raw_noise * size / kf.width / window.hi
        phases = []
        if "sensitivities" not in explicit:  # multi-coil: coil maps; one coil: its phase (the image is complex)
            for nm, k in zip(names, ks):
                if ncoils > 1:
                    maps[nm] = torch.from_numpy(estimate_sensitivities(k, acs))
                else:
                    phase, what = single_coil_phase(k, acs)
                    maps[nm] = torch.from_numpy(phase)
                    phases.append(what.split(" (")[0])
        x_truth = None
        if truth is not None:
            x_truth = torch.from_numpy(window.apply(truth)[:, None].astype(np.float32))
        for i, nm in enumerate(names):
            # the measured k-space at the sampled columns — the file's mask, or the operator's applied to
            # fully sampled data (retrospective undersampling, as fastMRI does; not re-simulated from the magnitude)
            cols = ks[i][..., mask.numpy()] / window.hi  # (coils, S, K): the operator's layout
            y = np.stack([cols.real, cols.imag], 1).reshape(2 * ncoils, size, -1)
            items.append(Item(nm, tensor=torch.from_numpy(y.astype(np.float32))[None], volume=kf.name, z=first + i,
                              truth=None if x_truth is None else x_truth[i:i + 1]))
        dr, dc, dz = voxel_sizes(kf, size)
        affine = np.diag([dr, dc, dz, 1.0])
        affine[2, 3] = first * dz
        if size < kf.width:
            warnings.append(f"k-space cropped to its central {size}×{size} (of {kf.width}×{kf.width} after the "
                            f"readout crop): the prior's grid; {int(mask.sum())} of {size} columns sampled")
        source = {"kind": "fastmri", "file": str(kf.path), "kspace_shape": list(kf.shape), "coils": ncoils,
                  "target": kf.target, "mask": "file" if use_file else "operator (applied to the file's k-space)",
                  "sampled_columns": int(mask.sum()), "acs_columns": int(acs.sum()),
                  "padding_columns": None if use_file else int((~sampled_on_grid).sum()),
                  "sensitivities": ("operator.sensitivities" if "sensitivities" in explicit else
                                    "ACS centre / root-sum-of-squares (fastMRI VarNet's initial estimate)" if ncoils > 1
                                    else "one coil's phase from the ACS centre image: "
                                    + ", ".join(f"{n} slice(s) {w}" for w, n in
                                                sorted({w: phases.count(w) for w in phases}.items()))),
                  "noise_sigma": noise_sigma,
                  "noise_estimate": (f"{noise_sigma:.4g} on the solver's scale ({raw_noise:.4g} in the file's units): "
                                     f"{noise_how}" if noise_sigma is not None else
                                     f"none: {noise_how} (k-space {list(kf.shape)})"),
                  "voxel_sizes_mm": [dr, dc, dz], "units": "",
                  "header": kf.header, "attrs": {k: v for k, v in kf.attrs.items() if isinstance(v, (int, float, str))}}
        plans.append(Plan(name=kf.name, kind="fastmri", window=window, first=first, last=last, size=size,
                          affine=affine, slice_names=names, files=[kf.path], source=source, crop=None,
                          truth=x_truth, warnings=warnings))
    if maps:
        operator.set_sensitivity_maps(maps, "estimated per slice from the calibration columns (ACS / RSS)" if ncoils > 1
                                      else "the phase of each slice's calibration-column image")
    return items, plans, operator, True, explicit


def edge_padding(mask: np.ndarray) -> np.ndarray:
    """The unsampled columns outside the first and last sampled one when they are padding: the
    columns between are all sampled, both edges have some and together at most a quarter of the
    width — a block on one side only is partial-Fourier undersampling (fastMRI's
    ``VarNetDataTransform`` zeroes the mask outside ``[acq_start, acq_end)``; real scans have
    such zero columns).  None are padding otherwise (an undersampled mask)."""
    mask = np.asarray(mask, dtype=bool)
    sampled = np.flatnonzero(mask)
    out = np.zeros_like(mask)
    both_edges = sampled.size and sampled[0] > 0 and sampled[-1] < mask.size - 1  # one side only: partial Fourier
    if both_edges and mask[sampled[0]:sampled[-1] + 1].all() and mask.size - sampled.size <= mask.size // 4:
        out[:sampled[0]] = True
        out[sampled[-1] + 1:] = True
    return out


class _SliceCount:
    """What :func:`ipsolve.io.volume.select_slices` needs of a k-space file."""

    def __init__(self, name: str, n: int):
        self.name, self.shape = name, (0, 0, n)
