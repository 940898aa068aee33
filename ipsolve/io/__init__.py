"""Data in and out: the only place (with metrics) where files meet ipsolve's [-1, 1].

* :mod:`.images` — PNG/JPEG/... and ``.npy`` images (``load_image``, ``save_image``, ...).
* :mod:`.volume` — a 3-D volume with its geometry (affine), the intensity window and slicing.
* :mod:`.dicom`, :mod:`.nifti`, :mod:`.fastmri` — the medical formats (pydicom, nibabel, h5py:
  ``pip install "ipsolve[medical]"``), imported on first use.
"""
from __future__ import annotations

from .images import (ARRAY_SUFFIX, IMAGE_SUFFIXES, image_channels, image_size, list_images, load_array, load_folder,
                     load_image, read_notices, save_image, square_crop, square_crop_resize, to_uint8)
from .optional import MissingDependency, require
from .volume import Volume, Window, parse_window

__all__ = ["ARRAY_SUFFIX", "IMAGE_SUFFIXES", "image_channels", "image_size", "list_images", "load_array", "load_folder",
           "load_image", "read_notices", "save_image", "square_crop", "square_crop_resize", "to_uint8", "MissingDependency",
           "require", "Volume", "Window", "parse_window", "read_dicom", "read_nifti", "read_fastmri",
           "write_nifti", "write_dicom_series", "load_volumes", "load_training_slices"]


def __getattr__(name):  # the medical readers import pydicom / nibabel / h5py only when used
    if name in ("read_dicom", "write_dicom_series", "dicom_affine"):
        from . import dicom

        return getattr(dicom, name)
    if name in ("read_nifti", "write_nifti"):
        from . import nifti

        return getattr(nifti, name)
    if name in ("read_fastmri",):
        from . import fastmri

        return getattr(fastmri, name)
    if name in ("load_volumes", "load_training_slices"):
        from . import sources

        return getattr(sources, name)
    raise AttributeError(f"module 'ipsolve.io' has no attribute {name!r}")
