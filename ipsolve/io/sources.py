"""Volumes from a path, whatever the format: DICOM folders, NIfTI files, and the 2-D slices of
either (or an image folder) for training a prior (``scripts/train_prior.py --data DIR``)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..notices import shown
from .images import IMAGE_SUFFIXES, image_channels, list_images, load_image
from .nifti import is_nifti
from .volume import Volume, resolve_window, slice_images, window_clip_note

FORMATS = ("dicom", "nifti")


def is_dicom_file(path: Path) -> bool:
    """The "DICM" marker at byte 128 (DICOM PS3.10 §7.1), or a ``.dcm`` suffix."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def guess_format(path) -> str:
    """``nifti`` for ``.nii``/``.nii.gz`` files (or a folder holding them), ``images`` for a
    folder of pictures, else ``dicom`` (DICOM files often have no suffix, and a DICOM search goes
    into subfolders).  A folder holding two of these kinds, or nothing to read, is a
    :class:`ValueError` naming what it holds: one kind is read per folder, and the others were
    dropped without a word (a NIfTI beside PNGs trained on the NIfTI alone)."""
    path = Path(path).expanduser()
    if path.is_file():
        if is_nifti(path) or path.suffix.lower() in IMAGE_SUFFIXES:
            return "nifti" if is_nifti(path) else "images"
        if not is_dicom_file(path):  # (it was read as DICOM and said "not a DICOM file")
            raise ValueError(f"{path} is no image ({', '.join(IMAGE_SUFFIXES)}), NIfTI or DICOM file")
        return "dicom"
    if not path.is_dir():
        raise FileNotFoundError(f"no file or folder at {path}")
    files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
    nifti = [p for p in files if is_nifti(p)]
    pictures = [p for p in files if p.suffix.lower() in (*IMAGE_SUFFIXES, ".npy")]
    dicom = [p for p in files if p not in pictures and p not in nifti and is_dicom_file(p)]
    subfolders = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    found = {"NIfTI file(s)": nifti, "image(s)": pictures, "DICOM file(s)": dicom}
    kinds = [f"{len(v)} {k}" for k, v in found.items() if v]
    if len(kinds) > 1:
        raise ValueError(f"{path} holds {' and '.join(kinds)}: one kind is read per folder; put each kind in a folder "
                         f"of its own")
    if (nifti or pictures) and subfolders:
        logging.getLogger("ipsolve").warning("%s: its subfolders (%s) are not read: a folder of %s is read without "
                                             "its subfolders", path, ", ".join(p.name for p in subfolders[:4])
                                             + (", ..." if len(subfolders) > 4 else ""),
                                             "NIfTI files" if nifti else "images")
    if nifti:
        return "nifti"
    if pictures:
        return "images"
    if not dicom and not any(p.is_file() for p in path.rglob("*")):
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}), DICOM or NIfTI files in {path}")
    if not dicom:  # pictures in subfolders only (a class-per-folder layout): read as DICOM, "no DICOM images"
        below = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        others = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES][:200]
        if below and not any(is_dicom_file(p) for p in others):
            where = sorted({p.parent.relative_to(path).as_posix() for p in below})
            raise ValueError(f"{path} holds no images itself: {len(below)} are in its subfolders "
                             f"({', '.join(where[:4])}{', ...' if len(where) > 4 else ''}), which are not read — a "
                             f"folder of images is read without its subfolders: give a folder that holds the images")
    return "dicom"


def load_volumes(kind: str, path, series=None, volume: int | None = None, exclude=()) -> tuple[list[Volume], list[dict]]:
    """``(volumes, skipped files)`` of a DICOM folder/file or NIfTI file/folder (``exclude``: folders
    a DICOM search skips)."""
    if kind == "dicom":
        from .dicom import read_dicom

        return read_dicom(path, series=series, exclude=exclude)
    if kind == "nifti":
        from .nifti import read_nifti

        return read_nifti(path, volume=volume)
    raise ValueError(f"unknown volume format {kind!r}; expected one of {', '.join(FORMATS)}")


def load_training_slices(path, size: int, window="auto", series="all", volume=None, groups: bool = False,
                         units: str | None = None):
    """Training images ``(N, 1, size, size)`` in [-1, 1] from ``path``: every slice of every
    DICOM series or NIfTI volume (all volumes of a 4-D file unless ``volume`` is given), each
    volume windowed as a whole (``window``: auto, ct_soft_tissue or [lo, hi] — use the same one
    when reconstructing; ``units="HU"``: the volumes hold Hounsfield units, for NIfTI files, which
    record none — as the runner's ``data.units``), resized like the runner's inputs; or a folder of images
    (:func:`ipsolve.io.load_folder`, 1 or 3 channels as stored).  ``groups=True`` also returns
    each image's source — its file, or its volume — so that a validation split can hold out whole
    volumes (neighbouring slices are nearly the same image)."""
    if units not in (None, "HU"):
        raise ValueError(f"units must be HU (volumes holding Hounsfield units) or None, got {shown(units)}")
    images, sources = _training_slices(path, size, window, series, volume, units)
    return (images, sources) if groups else images


def _training_slices(path, size, window, series, volume, units=None):
    import torch

    kind = guess_format(path)
    if kind == "images":
        files = [Path(path)] if Path(path).is_file() else list_images(path)
        if not files:
            raise ValueError(f"no images in {path}")
        found = [image_channels(f) for f in files]
        channels = 3 if 3 in found else 1  # grey and colour mixed: all as colour (grey replicated), said
        if len(set(found) - {None}) > 1:
            logging.getLogger("ipsolve").warning("%s mixes grey and colour images: %d grey image(s) are replicated "
                                                 "to 3 channels (a colour prior)", path, found.count(1))
        return torch.cat([load_image(f, size, channels) for f in files]), [str(f) for f in files]
    if kind == "nifti" and volume is None:
        vols = []
        from .nifti import nifti_files, read_nifti
        from .optional import require

        nib = require("nibabel")
        files = []  # a 4-D file's frames are one scan: one source for a validation split
        for f in nifti_files(path):
            n = nib.load(str(f)).shape
            for t in range(n[3] if len(n) == 4 else 1):
                new = read_nifti(f, volume=t)[0]
                vols += new
                files += [str(f)] * len(new)
    else:
        vols = load_volumes(kind, path, series=series, volume=volume or 0)[0]
        files = [None] * len(vols)
    out, sources = [], []
    for i, (v, f) in enumerate(zip(vols, files)):
        if units:
            v.meta["units"] = units
        w = resolve_window(window, v)
        clipped = window_clip_note(v, w)
        if clipped:
            logging.getLogger("ipsolve").warning("%s", clipped)
        x, _ = slice_images(v, w, size, 0, v.shape[2] - 1)
        out.append(x)
        sources += [f"volume {i} ({v.name})" if f is None else f"volume ({Path(f).name})"] * len(x)
    if not out:
        raise ValueError(f"no slices in {path}")
    return torch.cat(out), sources


def describe_volume(v: Volume) -> dict:
    """What ``summary.json`` records about an input volume."""
    # a NIfTI's affine is in its own spatial units (xyzt_units): micrometres, metres or mm
    to_mm = {"micron": 1e-3, "meter": 1e3}.get(v.meta.get("spatial_units"), 1.0)
    return {"kind": v.kind, "shape": list(v.shape), "voxel_sizes_mm": [s * to_mm for s in v.voxel_sizes()],
            "affine": np.round(v.affine, 6).tolist(), "files": [str(f) for f in v.files[:20]] +
            ([f"... {len(v.files) - 20} more"] if len(v.files) > 20 else []),
            # (a DICOM series' slice_files: its files in slice order, z = 0 first — ImagePositionPatient's order, not
            # the file names')
            **{k: val for k, val in v.meta.items() if k != "positions"}}
