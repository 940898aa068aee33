"""DICOM series in and out (pydicom).

Reading (:func:`read_dicom`): every file under a folder (or one file) → series by
SeriesInstanceUID → one volume per series, its slices ordered by ImagePositionPatient projected
on the slice normal (never by file name; InstanceNumber when positions are missing), the
modality LUT applied (RescaleSlope/Intercept → HU for CT, pydicom's ``apply_modality_lut``),
pixel spacing and orientation kept in the affine.  Multi-frame files: enhanced (per-frame
PlanePositionSequence) and classic (GridFrameOffsetVector).  Compressed transfer syntaxes decode
with pydicom's installed plugins; one it cannot decode stops the run with a one-line error.
Files that are not DICOM or whose pixel data are broken are skipped with their name.

Geometry follows nibabel's ``nibabel/nicom/dicomwrappers.py`` (``Wrapper.rotation_matrix``,
``slice_normal``, ``affine``): the voxel axes are (row, column, slice); columns of the LPS affine
are the column cosine × row spacing, the row cosine × column spacing and the normal
``column cosine × row cosine`` × slice spacing; the translation is the first slice's
ImagePositionPatient.  The slice spacing is measured from the positions (nibabel's single-file
wrapper uses SpacingBetweenSlices or SliceThickness, which is all one file can say).

Writing (:func:`write_dicom_series`): one file per slice, new SeriesInstanceUID and
SOPInstanceUIDs, the patient, study and frame-of-reference tags copied from the input slice,
a DerivationDescription, SourceImageSequence pointing at the input slice, geometry from the
output affine, 16-bit pixels with RescaleSlope/Intercept spanning the window.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .optional import require
from .volume import LPS_TO_RAS, Volume, check_not_inputs

log = logging.getLogger("ipsolve")

DECODER_HINT = ("pydicom decodes compressed pixel data with optional plugins: pip install pylibjpeg "
                "pylibjpeg-libjpeg pylibjpeg-openjpeg, or python-gdcm")


class DicomError(ValueError):
    """A DICOM input that cannot be used as asked (one line)."""


# ----------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------
def _files(path: Path, exclude=()) -> list[Path]:
    """The files under ``path`` (hidden ones and those under an ``exclude`` folder left out)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no DICOM file or folder at {path}")
    skip = [Path(e).resolve() for e in exclude]
    return sorted(p for p in path.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(path).parts)
                  and not any(p.resolve().is_relative_to(e) for e in skip))


def _floats(value, n: int | None = None) -> np.ndarray | None:
    if value is None:
        return None
    try:
        arr = np.array([float(v) for v in value])
    except (TypeError, ValueError):
        return None
    return arr if n is None or arr.size == n else None


def _seq_item(ds, *path):
    """``ds.A[0].B[0]...`` or None."""
    node = ds
    for name in path:
        seq = getattr(node, name, None)
        if not seq:
            return None
        node = seq[0]
    return node


def _frame_geometry(ds, frame: int):
    """``(position, orientation, pixel spacing, slice thickness, slope, intercept)`` of ``frame`` of an
    enhanced multi-frame file (per-frame functional groups, falling back to the shared ones)."""
    per = ds.PerFrameFunctionalGroupsSequence[frame] if getattr(ds, "PerFrameFunctionalGroupsSequence", None) else None
    shared = ds.SharedFunctionalGroupsSequence[0] if getattr(ds, "SharedFunctionalGroupsSequence", None) else None

    def find(*path):
        for group in (per, shared):
            if group is not None:
                item = _seq_item(group, *path[:-1])
                if item is not None and getattr(item, path[-1], None) is not None:
                    return getattr(item, path[-1])
        return None

    return (_floats(find("PlanePositionSequence", "ImagePositionPatient"), 3),
            _floats(find("PlaneOrientationSequence", "ImageOrientationPatient"), 6),
            _floats(find("PixelMeasuresSequence", "PixelSpacing"), 2),
            find("PixelMeasuresSequence", "SpacingBetweenSlices") or find("PixelMeasuresSequence", "SliceThickness"),
            find("PixelValueTransformationSequence", "RescaleSlope"),
            find("PixelValueTransformationSequence", "RescaleIntercept"))


def _check_decodable(ds, path: Path) -> None:
    """A one-line error when no installed pydicom plugin decodes this transfer syntax."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is None:
        return
    try:
        from pydicom.pixels import get_decoder  # pydicom >= 3
    except ImportError:  # pydicom 2.x: decoding errors are caught where they happen
        return
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise DicomError(f"{path.name}: pydicom has no decoder for the transfer syntax {ts.name} ({ts})") from None
    if not decoder.is_available:
        raise DicomError(f"{path.name}: its pixel data are compressed as {ts.name} and no installed plugin decodes "
                         f"it; {DECODER_HINT}")


@contextlib.contextmanager
def _quiet_pydicom():
    """pydicom's decoders log each failing plugin with its traceback (at ERROR) before raising;
    the raised error becomes ipsolve's one line, so the log record is held back meanwhile."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _pixels(ds, path: Path) -> np.ndarray:
    """The stored pixel values ``(frames, rows, cols)`` (float64), or ValueError for broken data."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    compressed = bool(ts is not None and ts.is_compressed)
    if compressed:
        _check_decodable(ds, path)
    try:
        with _quiet_pydicom():
            arr = ds.pixel_array
    except (RuntimeError, NotImplementedError) as err:
        if compressed:  # a plugin exists but fails on this file (e.g. 12-bit JPEG with Pillow only)
            first = str(err).strip().splitlines()[-1].strip()
            raise DicomError(f"{path.name}: cannot decode its {ts.name} pixel data ({first}); {DECODER_HINT}") from None
        raise ValueError(f"broken pixel data: {str(err).splitlines()[0]}") from None
    except (ValueError, AttributeError, TypeError, EOFError, OSError) as err:
        raise ValueError(f"broken pixel data: {str(err).splitlines()[0]}") from None
    if "MOSAIC" in [str(t).upper() for t in (getattr(ds, "ImageType", None) or [])]:
        raise DicomError(f"{path.name} is a Siemens mosaic (ImageType MOSAIC: many slices tiled in one image); "
                         f"convert the series to NIfTI first (dcm2niix) and use data=nifti")
    if int(getattr(ds, "SamplesPerPixel", 1)) != 1:
        raise ValueError(f"colour image ({ds.SamplesPerPixel} samples per pixel, {getattr(ds, 'PhotometricInterpretation', '?')}); "
                         f"ipsolve reads grey-scale (one sample) DICOM images")
    photometric = str(getattr(ds, "PhotometricInterpretation", "") or "MONOCHROME2").upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):  # PALETTE COLOR: one sample, but an index into a colour table
        raise ValueError(f"{photometric} image: its values are "
                         f"{'indices into a colour table' if photometric == 'PALETTE COLOR' else 'no grey levels'}, not "
                         f"intensities; ipsolve reads grey-scale (MONOCHROME1/MONOCHROME2) DICOM images")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    arr = np.asarray(arr)
    if frames == 1 and arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"unexpected pixel array shape {arr.shape}")
    return arr


def _modality_lut(ds, arr: np.ndarray, slope=None, intercept=None) -> np.ndarray:
    """Stored values → physical units: RescaleSlope/Intercept (or a Modality LUT) by pydicom's
    ``apply_modality_lut``; enhanced files give slope/intercept per frame; RT Dose multiplies by
    DoseGridScaling."""
    if slope is not None or intercept is not None:
        out = arr.astype(np.float64) * float(slope if slope is not None else 1.0) + float(intercept or 0.0)
    else:
        try:
            from pydicom.pixels import apply_modality_lut
        except ImportError:  # pydicom 2.x
            from pydicom.pixel_data_handlers.util import apply_modality_lut
        out = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    if getattr(ds, "Modality", None) == "RTDOSE" and getattr(ds, "DoseGridScaling", None) is not None:
        out = out * float(ds.DoseGridScaling)
    return out


def _header(ds):
    """The dataset without its pixel data and per-frame groups (a new dataset sharing the
    elements: ``Dataset.copy`` is shallow, deleting from it would delete from ``ds``)."""
    from pydicom.dataset import Dataset

    skip = {"PixelData", "FloatPixelData", "DoubleFloatPixelData", "PerFrameFunctionalGroupsSequence"}
    header = Dataset()
    for elem in ds:
        if elem.keyword not in skip:
            header.add(elem)
    if hasattr(ds, "file_meta"):
        header.file_meta = ds.file_meta
    return header


def _slices_of(ds, path: Path) -> list[dict]:
    """One dict per frame: pixels, position, orientation, spacings, instance number, header."""
    arr = _pixels(ds, path)
    frames = arr.shape[0]
    iop = _floats(getattr(ds, "ImageOrientationPatient", None), 6)
    ipp = _floats(getattr(ds, "ImagePositionPatient", None), 3)
    spacing = _floats(getattr(ds, "PixelSpacing", None), 2)
    thickness = getattr(ds, "SpacingBetweenSlices", None) or getattr(ds, "SliceThickness", None)
    header = _header(ds)
    out = []
    offsets = _floats(getattr(ds, "GridFrameOffsetVector", None), frames) if frames > 1 else None
    for f in range(frames):
        pos, ori, sp, th, slope, intercept = ipp, iop, spacing, thickness, None, None
        if getattr(ds, "PerFrameFunctionalGroupsSequence", None) or getattr(ds, "SharedFunctionalGroupsSequence", None):
            fpos, fori, fsp, fth, slope, intercept = _frame_geometry(ds, f)
            pos, ori = (fpos if fpos is not None else pos), (fori if fori is not None else ori)
            sp, th = (fsp if fsp is not None else sp), (fth if fth is not None else th)
        elif offsets is not None and ipp is not None and iop is not None:
            # GridFrameOffsetVector (RT Dose, C.8.8.3.2): offsets along the normal row × column cosine
            pos = ipp + offsets[f] * np.cross(iop[:3], iop[3:])
        rescaled = (slope is not None or intercept is not None
                    or any(tag in ds for tag in ("RescaleSlope", "RescaleIntercept", "ModalityLUTSequence")))
        out.append({"pixels": _modality_lut(ds, arr[f], slope, intercept), "rescaled": rescaled,
                    "position": pos, "orientation": ori,
                    "spacing": sp, "thickness": float(th) if th not in (None, "") else None,
                    "instance": getattr(ds, "InstanceNumber", None), "frame": f, "file": path, "header": header})
    return out


def _series_label(ds) -> dict:
    return {"uid": str(getattr(ds, "SeriesInstanceUID", "") or "unknown"),
            "number": getattr(ds, "SeriesNumber", None), "modality": str(getattr(ds, "Modality", "") or ""),
            "description": str(getattr(ds, "SeriesDescription", "") or "")}


def _describe(series: dict) -> str:
    lab = series["label"]
    parts = [lab["modality"] or "?"]
    if lab["number"] not in (None, ""):
        parts.append(f"series number {lab['number']}")
    if lab["description"]:
        parts.append(repr(lab["description"]))
    parts.append(f"{len(series['files'])} file(s)")
    return f"{lab['uid']} ({', '.join(parts)})"


OWN_OUTPUT = "ipsolve "  # how the DerivationDescription of a series ipsolve wrote begins (write_dicom_series)


def _drop_own_output(groups: "OrderedDict[str, dict]", skipped: list, path: Path) -> None:
    """Leave out series an earlier ipsolve run wrote (ImageType DERIVED, DerivationDescription
    "ipsolve …": a run's ``dicom/`` output saved inside the data folder) where the folder holds
    others; they are named in ``skipped`` and the log.  Only they: read as asked
    (``data.series=UID`` or their own folder)."""
    def own(group):
        ds = group["datasets"][0]
        image_type = [str(t).upper() for t in (getattr(ds, "ImageType", None) or [])]
        return "DERIVED" in image_type and str(getattr(ds, "DerivationDescription", "")).startswith(OWN_OUTPUT)

    ours = [uid for uid, g in groups.items() if own(g)]
    if not ours or len(ours) == len(groups):
        return
    for uid in ours:
        group = groups.pop(uid)
        log.warning("%s: leaving out series %s, written by an earlier ipsolve run (its dicom/ output); "
                    "data.series=%s reads it", path, _describe(group), uid)
        skipped += [{"file": str(f), "reason": "written by an earlier ipsolve run (its dicom/ output)"}
                    for f in group["files"]]


def _choose(groups: "OrderedDict[str, dict]", series, path: Path) -> list[dict]:
    numbers = [str(g["label"]["number"]) for g in groups.values() if g["label"]["number"] not in (None, "")]
    shared = len(set(numbers)) < len(numbers)  # series numbers repeat across studies: only the UID then tells
    if series in (None, "") and len(groups) > 1:
        listing = "; ".join(_describe(g) for g in groups.values())
        what = "SeriesInstanceUID" if shared else "SeriesInstanceUID or series number"
        raise DicomError(f"{path} holds {len(groups)} DICOM series; choose one with data.series=<{what}> (or "
                         f"data.series=all): {listing}")
    if series in (None, "", "all"):
        return list(groups.values())
    text = str(series)
    chosen = [g for uid, g in groups.items() if uid == text]
    chosen = chosen or [g for g in groups.values() if str(g["label"]["number"]) == text]
    if not chosen:
        listing = "; ".join(_describe(g) for g in groups.values())
        raise DicomError(f"data.series={text} matches none of the series in {path}: {listing}")
    if len(chosen) > 1:  # they were all taken, as data.series=all does
        raise DicomError(f"data.series={text}: series number {text} is shared by {len(chosen)} series in {path}; give "
                         f"the SeriesInstanceUID of one: {'; '.join(_describe(g) for g in chosen)}")
    return chosen


def _name(label: dict, taken: set) -> str:
    base = label["modality"] or "dicom"
    if label["number"] not in (None, ""):
        base += f"_series{label['number']}"
    else:
        base += "_" + re.sub(r"[^0-9]", "", label["uid"])[-6:]
    base = re.sub(r"[^A-Za-z0-9_-]+", "_", base)
    name, i = base, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def _normal(orientation: np.ndarray) -> np.ndarray:
    """nibabel's slice normal: column cosine × row cosine (``Wrapper.slice_normal``)."""
    return np.cross(orientation[3:], orientation[:3])


def dicom_affine(orientation, spacing, first_position, slice_spacing: float) -> np.ndarray:
    """The RAS+ affine of (row, column, slice) voxels: see the module docstring."""
    x, y = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    aff = np.eye(4)
    aff[:3, 0] = y * float(spacing[0])
    aff[:3, 1] = x * float(spacing[1])
    aff[:3, 2] = _normal(np.asarray(orientation, float)) * float(slice_spacing)
    aff[:3, 3] = np.asarray(first_position, float)
    return LPS_TO_RAS @ aff


def _assemble(series: dict, name: str) -> Volume:
    """Order a series' slices and stack them into a :class:`Volume`."""
    slices = series["slices"]
    shapes = {s["pixels"].shape for s in slices}
    if len(shapes) > 1:
        raise DicomError(f"series {series['label']['uid']} mixes image sizes {sorted(shapes)}; ipsolve stacks one "
                         f"size per volume")
    warnings = []
    orientations = [s["orientation"] for s in slices]
    have_geometry = all(o is not None for o in orientations) and all(s["position"] is not None for s in slices)
    if have_geometry:
        ref = orientations[0]
        if any(not np.allclose(o, ref, atol=1e-4) for o in orientations):
            raise DicomError(f"series {series['label']['uid']} mixes slice orientations (a localizer?); "
                             f"ipsolve stacks parallel slices only")
        normal = _normal(ref)
        proj = np.array([float(np.dot(s["position"], normal)) for s in slices])
        order = np.argsort(proj, kind="stable")
        slices = [slices[i] for i in order]
        proj = proj[order]
        gaps = np.diff(proj)
        if len(gaps) and np.min(gaps) < 1e-4:
            raise DicomError(f"series {series['label']['uid']} has {len(slices)} images at "
                             f"{len(np.unique(np.round(proj, 4)))} positions (several echoes, phases or time points?); "
                             f"ipsolve needs one image per position")
        if len(gaps):
            dz = float(np.median(gaps))
            if np.max(np.abs(gaps - dz)) > max(1e-3, 0.01 * dz):
                warnings.append(f"irregular slice spacing ({gaps.min():.3g} to {gaps.max():.3g} mm, a missing slice?): "
                                f"the NIfTI output can hold one spacing and uses the median {dz:.4g} mm, so slices after "
                                f"a gap are misplaced there (up to {np.max(np.abs(np.cumsum(gaps - dz))):.3g} mm; "
                                f"z_coupling also treats them as neighbours); write_dicom keeps each slice's own position")
        else:
            dz = slices[0]["thickness"] or 1.0
        spacing = slices[0]["spacing"]
        if spacing is None:
            spacing = np.ones(2)
            warnings.append("no PixelSpacing: 1 mm assumed")
        affine = dicom_affine(ref, spacing, slices[0]["position"], dz)
        if len(slices) > 1:
            # a gantry tilt: the positions advance sideways too (they were put on the normal: audit 2026-12-07, 2.6 mm
            # off at 5 slices).  The sideways step is the least-squares slope over the series (stored positions are
            # rounded: a median of differences read 11 of 200 straight series as tilted), said and kept when the
            # last slice would otherwise be off by more than half a pixel
            pos = np.array([s["position"] for s in slices], float)
            k = np.arange(len(slices)) - (len(slices) - 1) / 2
            slope = (k[:, None] * (pos - pos.mean(0))).sum(0) / (k ** 2).sum()
            sideways = slope - float(np.dot(slope, normal)) * normal
            drift = (len(slices) - 1) * float(np.linalg.norm(sideways))
            if drift > 0.5 * float(np.min(spacing)):
                affine[:3, 2] = LPS_TO_RAS[:3, :3] @ (dz * normal + sideways)  # sheared: each slice at its position
                warnings.append(f"the slices advance {np.linalg.norm(sideways):.3g} mm sideways per slice besides "
                                f"{dz:.4g} mm along their normal (a gantry tilt, {drift:.3g} mm over the series): the "
                                f"NIfTI output's sform is sheared to keep every slice in place (its qform, which cannot "
                                f"shear, holds the nearest unsheared grid: ITK-based tools read that one), and "
                                f"z_coupling takes the slices as neighbours as they are stacked")
        order_by = "ImagePositionPatient"
    else:
        if all(s["instance"] not in (None, "") for s in slices):
            slices = sorted(slices, key=lambda s: (int(s["instance"]), s["frame"]))
            order_by = "InstanceNumber"
        else:
            slices = sorted(slices, key=lambda s: (str(s["file"]), s["frame"]))
            order_by = "file name (no ImagePositionPatient or InstanceNumber)"
        warnings.append(f"no ImagePositionPatient/ImageOrientationPatient: slices ordered by {order_by}, "
                        f"identity orientation assumed")
        spacing = slices[0]["spacing"] if slices[0]["spacing"] is not None else np.ones(2)
        dz = slices[0]["thickness"] or 1.0
        affine = np.diag([float(spacing[0]), float(spacing[1]), float(dz), 1.0])
    data = np.stack([s["pixels"] for s in slices], axis=-1)
    head = slices[0]["header"]
    modality = str(getattr(head, "Modality", "") or "")
    rescale_type = str(getattr(head, "RescaleType", "") or "")
    dose_units = str(getattr(head, "DoseUnits", "") or "GY").upper()  # GY or RELATIVE (RT Dose module)
    units = "HU" if modality == "CT" or rescale_type == "HU" else (
        ("Gy" if dose_units == "GY" else dose_units.lower()) if modality == "RTDOSE" else rescale_type)
    if modality == "CT" and not all(s["rescaled"] for s in slices):  # type 1 in CT Image Storage (C.8.2.1)
        missing = sum(not s["rescaled"] for s in slices)
        warnings.append(f"{missing} of {len(slices)} CT slice(s) have no RescaleSlope/RescaleIntercept (required for CT): "
                        f"their stored values are taken as HU as they are, which they may not be (a scanner's raw values "
                        f"are often HU + 1024: a named HU window, e.g. ct_soft_tissue, then shows the wrong tissue); "
                        f"data.window=auto fits the values whatever their units")
    meta = {"modality": modality, "units": units, "series_uid": series["label"]["uid"],
            "series_number": series["label"]["number"], "series_description": series["label"]["description"],
            "ordered_by": order_by, "warnings": warnings,
            "positions": [None if s["position"] is None or not have_geometry else [float(v) for v in s["position"]]
                          for s in slices],
            "slice_files": [f"{s['file']}" + (f"#frame{s['frame']}" if s["header"].get("NumberOfFrames", 1) not in (None, 1, "1") else "")
                            for s in slices]}
    files = sorted({s["file"] for s in slices})
    return Volume(name=name, data=data, affine=affine, kind="dicom", files=files, meta=meta,
                  headers=[s["header"] for s in slices])


def read_dicom(path, series=None, exclude=()) -> tuple[list[Volume], list[dict]]:
    """The volumes of a DICOM folder (searched recursively) or file: ``(volumes, skipped)`` with
    ``skipped`` one ``{"file", "reason"}`` per file that is not a usable DICOM image.
    ``series``: a SeriesInstanceUID or series number when the folder holds several series, or
    ``"all"`` (one volume each); several series and none chosen → :class:`DicomError` listing them.
    ``exclude``: folders not to search (a run directory inside the input folder: its own DICOM output)."""
    pydicom = require("pydicom")
    from pydicom.errors import InvalidDicomError

    path = Path(path).expanduser()
    groups: "OrderedDict[str, dict]" = OrderedDict()
    skipped = []
    for f in _files(path, exclude):
        try:
            ds = pydicom.dcmread(f)
        except InvalidDicomError:
            skipped.append({"file": str(f), "reason": "not a DICOM file"})
            continue
        except Exception as err:  # noqa: BLE001 - pydicom raises many kinds for a damaged header
            skipped.append({"file": str(f), "reason": f"unreadable DICOM header ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"})
            continue
        if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            skipped.append({"file": str(f), "reason": f"no pixel data (truncated, or not an image: "
                                                      f"{getattr(ds, 'SOPClassUID', None) and ds.SOPClassUID.name})"})
            continue
        label = _series_label(ds)
        groups.setdefault(label["uid"], {"label": label, "files": [], "datasets": []})
        groups[label["uid"]]["files"].append(f)
        groups[label["uid"]]["datasets"].append(ds)
    if not groups:
        detail = "; ".join(f"{Path(s['file']).name}: {s['reason']}" for s in skipped[:5])
        left_out = [e for e in map(Path, exclude) if e.is_dir() and path.is_dir()
                    and e.resolve().is_relative_to(path.resolve()) and any(f.is_file() for f in e.rglob("*"))]
        raise DicomError(f"no DICOM images in {path}" + (f" ({detail}{', ...' if len(skipped) > 5 else ''})" if skipped else "")
                         + (f"; {', '.join(map(str, left_out))} {'is' if len(left_out) == 1 else 'are'} left out as this "
                            f"run's output (the run folder is the input folder: give another hydra.run.dir)"
                            if left_out else ""))
    unread = len(skipped)  # files skipped before any pixel data was read (logged at the end; later ones as they go)
    if series in (None, "", "all"):
        _drop_own_output(groups, skipped, path)
    volumes, taken = [], set()
    chosen = _choose(groups, series, path)
    for group in chosen:
        group["slices"], reasons = [], []
        for f, ds in zip(group["files"], group["datasets"]):
            try:
                group["slices"] += _slices_of(ds, f)
            except DicomError:
                raise
            except ValueError as err:
                skipped.append({"file": str(f), "reason": str(err)})
                reasons.append(str(err))
                log.warning("skipping %s: %s", f, err)
        group.pop("datasets")
        if not group["slices"]:
            why = f"no readable images in series {_describe(group)} of {path} ({reasons[0] if reasons else 'no slices'})"
            if len(chosen) == 1:
                raise DicomError(why)
            log.warning("%s: the series is left out", why)  # data.series=all: the readable series are reconstructed
            continue
        volumes.append(_assemble(group, _name(group["label"], taken)))
    if not volumes:
        raise DicomError(f"none of the {len(chosen)} series in {path} has readable images (each one's reason is in the "
                         f"log above)")
    log_skipped(skipped[:unread])
    return volumes, skipped


SKIPPED_NAMED = 3  # files named per reason in the log (an earlier run's outputs in the folder are dozens)


def log_skipped(skipped: list[dict]) -> None:
    """One warning per reason for the files :func:`read_dicom` skipped, naming the first
    :data:`SKIPPED_NAMED` (``summary.json`` lists them all)."""
    by_reason: "OrderedDict[str, list[str]]" = OrderedDict()
    for s in skipped:
        by_reason.setdefault(s["reason"], []).append(s["file"])
    for reason, files in by_reason.items():
        if len(files) == 1:
            log.warning("skipping %s: %s", files[0], reason)
        else:
            more = len(files) - SKIPPED_NAMED
            log.warning("skipping %d files (%s): %s%s", len(files), reason, ", ".join(files[:SKIPPED_NAMED]),
                        f" and {more} more" if more > 0 else "")


# ----------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------
PATIENT_STUDY_TAGS = (  # copied from the input slice: patient, study, frame of reference, equipment context
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "PatientAge", "PatientWeight",
    "PatientSize", "PatientIdentityRemoved", "DeidentificationMethod", "StudyInstanceUID", "StudyDate", "StudyTime",
    "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription", "FrameOfReferenceUID",
    "PositionReferenceIndicator", "Modality", "BodyPartExamined", "PatientPosition", "SpecificCharacterSet",
    "KVP", "SliceThickness", "RescaleType", "AcquisitionDate", "AcquisitionTime", "SeriesDate", "SeriesTime",
    "Manufacturer", "ManufacturerModelName", "InstitutionName", "StationName", "DoseUnits", "DoseType",
    "DoseSummationType")
SINGLE_FRAME_CLASSES = {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.128",
                        "1.2.840.10008.5.1.4.1.1.20", "1.2.840.10008.5.1.4.1.1.7"}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _source_attributes(src, sop_class: str):
    """The input slice's attributes a derived image keeps: for a classic single-frame source of
    the same class, every public attribute except the pixel and presentation ones (group 0028,
    overlays 60xx, pixel data), the instance's own identity and creation time and the geometry
    (all set anew) — so an MR keeps ScanningSequence, EchoTime … as its class requires; for
    an enhanced multi-frame or other source (written as classic CT/MR or Secondary Capture) only
    :data:`PATIENT_STUDY_TAGS`."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    if str(getattr(src, "SOPClassUID", "")) == sop_class and sop_class in SINGLE_FRAME_CLASSES:
        for elem in src:
            group = elem.tag.group
            if (elem.tag.is_private or group in (0x0002, 0x0028, 0x7FE0) or 0x6000 <= group <= 0x60FF
                    or elem.keyword in NOT_COPIED):
                continue
            ds.add(copy.deepcopy(elem))  # a copy: setting a value on ds must not change the input's header
    else:
        for tag in PATIENT_STUDY_TAGS:
            if tag in src:
                ds[tag] = copy.deepcopy(src[tag])
    if "RescaleType" in src:  # the units (group 0028, kept on its own)
        ds.RescaleType = src.RescaleType
    elif "DoseUnits" in src:  # RT Dose written as Secondary Capture: its units
        ds.RescaleType = str(src.DoseUnits)
    return ds


NOT_COPIED = {  # set anew for a derived instance, or no longer true of it
    "SOPInstanceUID", "SeriesInstanceUID", "InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime",
    "ImagePositionPatient", "ImageOrientationPatient", "SliceLocation", "SpacingBetweenSlices", "SourceImageSequence",
    "DerivationDescription", "DerivationCodeSequence", "ImageType", "InstanceNumber", "SeriesNumber",
    "SeriesDescription", "ReferencedImageSequence", "IconImageSequence", "LossyImageCompression"}


def write_dicom_series(folder, values: np.ndarray, affine: np.ndarray, headers: list, window, description: str,
                       series_description: str, protected=(), positions: list | None = None) -> list[Path]:
    """Write ``values`` ``(rows, cols, slices)`` (physical units, inside ``window``) as a DICOM
    series in ``folder`` (one file per slice, ``IM0000.dcm`` …), geometry from ``affine`` (RAS+),
    patient, study and acquisition attributes from ``headers`` (one per output slice: the input
    slice it was made from; :func:`_source_attributes`).  ``positions`` (LPS, one per slice, or
    None): the input slices' own ImagePositionPatient — each slice is placed at its own position
    along the normal (a series with a missing slice is not put on the affine's regular grid); a
    series whose input had no geometry gets none (no invented orientation or position).
    Pixels: unsigned 16 bit, RescaleSlope = (hi − lo)/65535, RescaleIntercept = lo (quantisation
    step (hi − lo)/65535); MONOCHROME1 inputs stay MONOCHROME1 (displayed as the input was).
    UIDs are derived from the input series, the description and the pixels, so writing the same
    result again (a re-run of a finished run) gives the same series.  Files are written under
    temporary names and renamed; a target that is one of ``protected`` (the inputs) raises
    ValueError before anything is written."""
    import datetime
    import hashlib

    pydicom = require("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    targets = [folder / f"IM{k:04d}.dcm" for k in range(values.shape[2])]
    check_not_inputs(targets, protected)
    folder.mkdir(parents=True, exist_ok=True)
    lps = np.linalg.inv(LPS_TO_RAS) @ affine
    col_dir, row_dir = lps[:3, 0], lps[:3, 1]  # moving down a column (rows), along a row (columns)
    dr, dc = float(np.linalg.norm(col_dir)), float(np.linalg.norm(row_dir))
    iop = [*(row_dir / dc), *(col_dir / dr)]
    # the values as written (DS strings): quantise with exactly what a reader will apply
    slope_text, intercept_text = f"{(window.hi - window.lo) / 65535.0:.10g}", f"{window.lo:.10g}"
    slope, intercept = float(slope_text), float(intercept_text)
    stored_all = np.clip(np.round((values - intercept) / slope), 0, 65535).astype("<u2")
    identity = [str(getattr(h, "SeriesInstanceUID", "")) for h in headers[:1]] + [
        description, series_description, hashlib.sha256(stored_all.tobytes()).hexdigest(), f"{slope_text}/{intercept_text}",
        np.array2string(np.round(affine, 6))]
    series_uid = generate_uid(entropy_srcs=identity)
    geometry = positions is None or any(p is not None for p in positions)
    normal = np.cross(col_dir / dr, row_dir / dc)  # the slices' normal (a gantry tilt's step is not along it)
    normal = normal if float(np.dot(normal, lps[:3, 2])) >= 0 else -normal
    dz = abs(float(np.dot(lps[:3, 2], normal)))
    # the input slices' own positions, moved as the first one was by the crop and resize (in-plane)
    shift = lps[:3, 3] - np.asarray(positions[0], float) if positions is not None and positions[0] is not None else None
    now = datetime.datetime.now()
    written = []
    for k, target in enumerate(targets):
        src = headers[k]
        sop_class = str(getattr(src, "SOPClassUID", SECONDARY_CAPTURE))
        if sop_class not in SINGLE_FRAME_CLASSES:  # an enhanced multi-frame source: write classic single frames
            sop_class = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4"}.get(
                str(getattr(src, "Modality", "")), SECONDARY_CAPTURE)
        ds = _source_attributes(src, sop_class)
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[series_uid, str(k)])
        ds.SeriesInstanceUID = series_uid
        ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
        ds.SeriesNumber = int(getattr(src, "SeriesNumber", 0) or 0) + 1000
        ds.SeriesDescription = series_description[:64]
        ds.InstanceNumber = k + 1
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.DerivationDescription = description[:1024]
        if "SOPInstanceUID" in src:
            ref = Dataset()
            ref.ReferencedSOPClassUID = src.SOPClassUID
            ref.ReferencedSOPInstanceUID = src.SOPInstanceUID
            ds.SourceImageSequence = Sequence([ref])
        if geometry:
            position = lps[:3, 3] + k * lps[:3, 2]
            own = positions[k] if positions is not None else None
            if own is not None and shift is not None:  # the input slice's own place (a gap, a gantry tilt kept)
                position = np.asarray(own, float) + shift
            elif own is not None:  # (no first position to move by) its own place along the normal
                position = position + normal * float(np.dot(np.asarray(own, float) - position, normal))
            ds.ImageOrientationPatient = [f"{v:.8g}" for v in iop]
            ds.ImagePositionPatient = [f"{v:.8g}" for v in position]
            ds.SpacingBetweenSlices = f"{dz:.8g}"
            if "SliceLocation" in src:  # (dropped with the copied header: readers sort and label by it) the
                # position along the row × column normal, as scanners write it
                ds.SliceLocation = f"{float(np.dot(position, np.cross(iop[:3], iop[3:]))):.8g}"
        if geometry or "PixelSpacing" in src:
            ds.PixelSpacing = [f"{dr:.8g}", f"{dc:.8g}"]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = ("MONOCHROME1" if str(getattr(src, "PhotometricInterpretation", "")) == "MONOCHROME1"
                                        else "MONOCHROME2")
        ds.Rows, ds.Columns = int(values.shape[0]), int(values.shape[1])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = slope_text, intercept_text
        ds.WindowCenter, ds.WindowWidth = f"{(window.lo + window.hi) / 2:.6g}", f"{window.hi - window.lo:.6g}"
        ds.PixelData = np.ascontiguousarray(stored_all[:, :, k]).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        tmp = target.with_name(f".{target.stem}.tmp{target.suffix}")
        if int(pydicom.__version__.split(".")[0]) >= 3:
            ds.save_as(tmp, enforce_file_format=True)
        else:  # pragma: no cover - pydicom 2.x
            ds.is_little_endian, ds.is_implicit_VR = True, False
            ds.save_as(tmp, write_like_original=False)
        os.replace(tmp, target)
        written.append(target)
    return written
