"""The optional packages of the medical formats, with a one-line error naming the extra."""
from __future__ import annotations

import importlib

EXTRA = 'pip install "ipsolve[medical]"'
PURPOSE = {"pydicom": "reading and writing DICOM", "nibabel": "reading and writing NIfTI",
           "h5py": "reading fastMRI HDF5 k-space"}


class MissingDependency(ImportError):
    """An optional package that a format needs is not installed."""


def require(module: str):
    """``import module``, or :class:`MissingDependency` saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependency(f"{PURPOSE.get(module, module)} needs the package {module}, which is not "
                                f"installed: {EXTRA}") from None
