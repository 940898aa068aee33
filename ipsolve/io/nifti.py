"""NIfTI volumes in and out (nibabel): ``.nii`` / ``.nii.gz``, 3-D or 4-D (one chosen volume), the
affine kept (nibabel's ``img.affine``: the sform when set, else the qform), scl_slope/scl_inter
applied (nibabel's array proxy scales what it reads)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..notices import shown
from .optional import require
from .volume import Volume, check_not_inputs

SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    """Whether ``path``'s name ends in ``.nii`` or ``.nii.gz`` (any case)."""
    return path.name.lower().endswith(SUFFIXES)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            name = name[:-len(suffix)]
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name) or "volume"


def nifti_files(path: Path) -> list[Path]:
    """``[path]`` for a file (whatever its suffix), else the folder's NIfTI files (not recursive,
    hidden ones left out), sorted; FileNotFoundError when ``path`` is neither."""
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no NIfTI file or folder at {path}")
    return sorted(p for p in path.iterdir() if p.is_file() and is_nifti(p) and not p.name.startswith("."))


def read_nifti(path, volume: int | None = None) -> tuple[list[Volume], list[dict]]:
    """The volumes of a NIfTI file, or of every ``.nii``/``.nii.gz`` file in a folder:
    ``(volumes, skipped)``.  A 4-D file gives its volume number ``volume`` (0-based; None: volume 0,
    with a warning naming it, as a user who gave none may not know the file is 4-D); files nibabel
    cannot read are skipped with their name."""
    nib = require("nibabel")
    if volume is not None and (isinstance(volume, bool) or not isinstance(volume, int) or volume < 0):
        raise ValueError(f"data.volume must be an integer >= 0 (the volume of a 4-D file, 0-based), got {shown(volume)}")
    files = nifti_files(path)
    if not files:
        raise ValueError(f"no NIfTI files (.nii, .nii.gz) in {path}")
    volumes, skipped, taken = [], [], set()
    for f in files:
        try:
            img = nib.load(str(f))
            shape = img.shape
        except Exception as err:  # noqa: BLE001 - nibabel's errors for a damaged file vary
            skipped.append({"file": str(f), "reason": f"not a readable NIfTI file ({type(err).__name__}: {err})"})
            continue
        if len(shape) == 2:
            shape = (*shape, 1)
        squeezed = len(shape) > 4 and all(n == 1 for n in shape[4:])  # (x, y, z, t, 1, …): ITK/ANTs write these
        while len(shape) > 3 and shape[-1] == 1 and (squeezed or len(shape) > 4):
            shape = shape[:-1]
        if len(shape) == 3:
            if volume not in (0, None):
                raise ValueError(f"{f.name} is 3-D {tuple(shape)}: it has one volume, data.volume={volume} asks for another")
            index = None
        elif len(shape) == 4:
            index = int(volume or 0)
            if not 0 <= index < shape[3]:
                raise ValueError(f"{f.name} is 4-D {tuple(shape)} with {shape[3]} volumes; data.volume must be "
                                 f"0 … {shape[3] - 1}, got {volume}")
        else:
            raise ValueError(f"{f.name} has {len(shape)} dimensions {tuple(shape)}; ipsolve reads 3-D and 4-D NIfTI")
        try:
            if squeezed:  # size-1 dimensions after the 4th
                data = np.asarray(img.dataobj).reshape(shape)
                data = data[..., index] if index is not None else data
            else:
                data = np.asarray(img.dataobj[..., index] if index is not None else img.dataobj)
            slope, inter = img.dataobj.slope, img.dataobj.inter  # the proxy already applied them
        except Exception as err:  # noqa: BLE001
            skipped.append({"file": str(f), "reason": f"broken NIfTI data ({type(err).__name__}: {err})"})
            continue
        if data.ndim == 2:
            data = data[:, :, None]
        warnings = []
        if index is not None and shape[3] > 1 and volume is None:  # volume 0 taken without being asked for
            warnings.append(f"{f.name} is 4-D {tuple(shape)}: volume {index} of its {shape[3]} is reconstructed "
                            f"(data.volume=0 … {shape[3] - 1} chooses another; one per run)")
        if np.iscomplexobj(data):  # complex (MR) data: the magnitude, as a reader of magnitude images expects
            data = np.abs(data)
            warnings.append(f"{f.name} holds complex values: their magnitude is reconstructed")
        data = data.astype(np.float64)
        bad = int(data.size - np.isfinite(data).sum())
        if bad:
            data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
            warnings.append(f"{f.name}: {bad} non-finite voxel(s) (NaN/inf, e.g. outside a mask) set to 0")
        name = _stem(f) + (f"_t{index}" if index is not None else "")
        while name in taken:
            name += "_"
        taken.add(name)
        units = img.header.get_xyzt_units()[0] if hasattr(img.header, "get_xyzt_units") else None
        meta = {"modality": "", "units": "", "shape_4d": list(img.shape) if index is not None else None,
                "volume_index": index, "spatial_units": units, "scl_slope": float(slope), "scl_inter": float(inter),
                "warnings": warnings}
        volumes.append(Volume(name=name, data=data, affine=np.asarray(img.affine, dtype=np.float64), kind="nifti",
                              files=[f], meta=meta, headers=[img.header]))
    if not volumes:
        raise ValueError(f"no readable NIfTI volumes in {path}: " + "; ".join(f"{Path(s['file']).name}: {s['reason']}"
                                                                          for s in skipped))
    return volumes, skipped


def write_nifti(path, values: np.ndarray, affine: np.ndarray, description: str = "", template=None,
                protected=()) -> Path:
    """Write ``values`` (float32) with ``affine`` to ``path`` (``.nii`` or ``.nii.gz``), under a
    temporary name then renamed; units and codes copied from ``template`` (an input NIfTI header)
    when given, else millimetres and the scanner-based sform/qform (NIfTI code 1).  ``affine`` is the
    template's own affine (its sform) moved to the output grid; a template whose qform is another
    space (its own code) keeps it, moved alike: ``q_out = q_in · s_in⁻¹ · affine``.  A ``path`` that
    is one of ``protected`` raises ValueError before anything is written."""
    nib = require("nibabel")
    path = Path(path)
    check_not_inputs([path], protected)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(values, dtype=np.float32), affine)
    hdr = img.header
    code = 1
    if template is not None and hasattr(template, "get_xyzt_units"):
        space, time = template.get_xyzt_units()
        hdr.set_xyzt_units(space or "mm", time or "unknown")
        code = int(template["sform_code"]) or int(template["qform_code"]) or 1
    else:
        hdr.set_xyzt_units("mm", "sec")
    img.set_sform(affine, code=code)
    qform, qform_code = np.asarray(affine, dtype=np.float64), code
    if template is not None and hasattr(template, "get_qform") and int(template["sform_code"]) \
            and int(template["qform_code"]):
        s_in, q_in = template.get_sform(), template.get_qform()
        if not np.allclose(s_in, q_in, atol=1e-4):  # e.g. sform aligned (code 2), qform scanner (code 1)
            qform = q_in @ np.linalg.inv(s_in) @ qform
        qform_code = int(template["qform_code"])
    # a sheared grid (a DICOM gantry tilt): the qform holds nibabel's nearest unsheared one (rotation and zooms
    # only) with its code kept — ITK refuses a file whose qform is unset and sform sheared (the review of 2026-12-07)
    img.set_qform(qform, code=qform_code)
    # descrip holds 79 characters: cut at the last whole "; " part, not inside a value
    text = description if len(description) <= 79 else (description[:79].rsplit("; ", 1)[0] if "; " in description[:79]
                                                        else description[:79])
    hdr["descrip"] = text.encode("ascii", "replace")
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else ".nii"
    tmp = path.with_name(f".{path.name[:-len(suffix)]}.tmp{suffix}")
    nib.save(img, str(tmp))
    os.replace(tmp, path)
    return path
