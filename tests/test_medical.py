"""Medical and volume data (issue 21): DICOM / NIfTI / fastMRI HDF5 readers and writers, the
intensity window, volumes through the runner (slices → items → volumes), z-coupling, and
one-line errors on bad input.  Every scan comes from pydicom's and nibabel's bundled test files
or is built here; nothing is downloaded."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")
pytest.importorskip("h5py")

from pydicom.data import get_testdata_file  # noqa: E402

from ipsolve.datasets import example_dicom_folder, example_nifti, fastmri_phantom_file, heldout_volume  # noqa: E402
from ipsolve.io import MissingDependency, Window, parse_window, read_dicom, read_fastmri, read_nifti  # noqa: E402
from ipsolve.io.dicom import DicomError, write_dicom_series  # noqa: E402
from ipsolve.io.nifti import write_nifti  # noqa: E402
from ipsolve.io.volume import LPS_TO_RAS, resized_affine, resolve_window  # noqa: E402
from ipsolve.runner import RunError, report  # noqa: E402
from ipsolve.runner.volumes import reconstruct_volumes  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHEAP_DPS = {"name": "dps", "steps": 5, "rescale_zeta": True}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread, as the CLI subprocesses run (measured: on the shared 2-core machine, 2
    threads made a 100-step DPS volume 15× slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def nibabel_affine(ds) -> np.ndarray:
    """nibabel's own DICOM → RAS affine of one slice (``nibabel.nicom.dicomwrappers``, LPS → RAS)."""
    import warnings

    from nibabel.nicom import dicomwrappers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LPS_TO_RAS @ dicomwrappers.wrapper_from_data(ds).affine


def rotation(a: float, b: float, c: float) -> np.ndarray:
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rx = np.array([[1, 0, 0], [0, cc, -sc], [0, sc, cc]])
    return rz @ ry @ rx


def write_series(folder: Path, n: int = 5, spacing: float = 2.5, slope: float = 2.0, intercept: float = -1000.0,
                 oblique: bool = True, uid: str | None = None, size: int | None = None,
                 tilt: float = 0.0) -> tuple[list[Path], np.ndarray]:
    """A CT series built from pydicom's CT_small.dcm: slice k's stored pixels are CT_small's + 7k
    (so each slice is identifiable), positions k·spacing along the slice normal of an oblique
    orientation, InstanceNumbers and file names shuffled (neither follows the positions).
    Returns the files in position order and the expected HU volume (rows, cols, n)."""
    from pydicom.uid import generate_uid

    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    raw = src.pixel_array.astype(np.int16)
    if size is not None:
        raw = raw[:size, :size]
    r = rotation(0.3, -0.2, 0.15) if oblique else np.eye(3)
    x_dir, y_dir = r[:, 0], r[:, 1]
    normal = np.cross(y_dir, x_dir)  # nibabel's slice normal
    origin = np.array([-158.1, -179.0, -75.7])
    series_uid = uid or generate_uid()
    rng = np.random.default_rng(3)
    order = rng.permutation(n)
    folder.mkdir(parents=True, exist_ok=True)
    files, expected = [None] * n, []
    for k in range(n):
        ds = src.copy()
        pix = raw + 7 * k
        ds.Rows, ds.Columns = pix.shape
        ds.PixelData = pix.astype("<i2").tobytes()
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImageOrientationPatient = [f"{v:.10f}" for v in (*x_dir, *y_dir)]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in origin + k * (spacing * normal + tilt * y_dir)]  # tilt: mm sideways
        ds.InstanceNumber = int(order[k]) + 1
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.SliceThickness = spacing
        f = folder / f"img{series_uid[-1]}_{int(order[(k + 2) % n]):02d}{rng.integers(1000)}"  # names unrelated to position
        ds.save_as(f)
        files[k] = f
        expected.append(pix * slope + intercept)
    return files, np.stack(expected, -1)


# ----------------------------------------------------------------------------------------
# DICOM reading
# ----------------------------------------------------------------------------------------
def test_dicom_slices_ordered_by_position_hu_rescaled_affine_as_nibabel(tmp_path):
    files, expected = write_series(tmp_path / "s")
    (vol,), skipped = read_dicom(tmp_path / "s")
    assert skipped == [] and vol.meta["ordered_by"] == "ImagePositionPatient"
    assert vol.meta["units"] == "HU"
    np.testing.assert_array_equal(vol.data, expected)  # order from positions, slope 2 / intercept -1000 applied
    assert [Path(f.split("#")[0]) for f in vol.meta["slice_files"]] == files
    # in-plane axes and origin: nibabel's affine of the first slice; third axis: its slice normal ×
    # the spacing nibabel's slice indicator measures between consecutive slices
    first = pydicom.dcmread(files[0])
    ref = nibabel_affine(first)
    np.testing.assert_allclose(vol.affine[:, [0, 1, 3]], ref[:, [0, 1, 3]], atol=1e-5)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel calls its DICOM readers experimental
        from nibabel.nicom import dicomwrappers

        w0, w1 = (dicomwrappers.wrapper_from_data(pydicom.dcmread(f)) for f in files[:2])
    dz = w1.slice_indicator - w0.slice_indicator
    np.testing.assert_allclose(vol.affine[:3, 2], (LPS_TO_RAS[:3, :3] @ w0.slice_normal) * dz, atol=1e-5)


def test_instance_number_orders_slices_without_positions(tmp_path):
    files, expected = write_series(tmp_path / "s", n=4, oblique=False)
    for f in files:
        ds = pydicom.dcmread(f)
        del ds.ImagePositionPatient
        ds.save_as(f)
    (vol,), _ = read_dicom(tmp_path / "s")
    numbers = [int(pydicom.dcmread(f).InstanceNumber) for f in files]
    np.testing.assert_array_equal(vol.data, expected[..., np.argsort(numbers)])
    assert vol.meta["ordered_by"] == "InstanceNumber" and "InstanceNumber" in vol.meta["warnings"][0]


def test_enhanced_multiframe_orders_frames_by_position(tmp_path):
    """An enhanced multi-frame file (per-frame PlanePositionSequence, shared orientation, spacing and
    rescale) whose frames are stored out of position order."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    raw = ds.pixel_array.astype(np.int16)
    stored = [2, 0, 1]  # frame f holds slice stored[f]
    ds.NumberOfFrames = 3
    ds.PixelData = np.stack([raw + 7 * k for k in stored]).astype("<i2").tobytes()
    shared = Dataset()
    ori, meas, pvt = Dataset(), Dataset(), Dataset()
    ori.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    meas.PixelSpacing, meas.SliceThickness = [0.5, 0.5], 3.0
    pvt.RescaleSlope, pvt.RescaleIntercept = 1.0, -1024.0
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = Sequence([ori]), Sequence([meas])
    shared.PixelValueTransformationSequence = Sequence([pvt])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in stored:
        pos, item = Dataset(), Dataset()
        pos.ImagePositionPatient = [0.0, 0.0, -3.0 * k]  # nibabel's normal (column × row cosine) is −z
        item.PlanePositionSequence = Sequence([pos])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "RescaleSlope", "RescaleIntercept"):
        del ds[tag]
    ds.save_as(tmp_path / "enhanced.dcm")
    (vol,), _ = read_dicom(tmp_path / "enhanced.dcm")
    np.testing.assert_array_equal(vol.data, np.stack([raw + 7 * k - 1024.0 for k in range(3)], -1))
    np.testing.assert_allclose(vol.affine, np.array([[0, -0.5, 0, 0], [-0.5, 0, 0, 0], [0, 0, -3, 0], [0, 0, 0, 1]]))


def test_single_slice_affine_equals_nibabel_and_hu(tmp_path):
    (vol,), _ = read_dicom(example_dicom_folder(tmp_path / "ct"))
    ds = pydicom.dcmread(tmp_path / "ct" / "CT_small.dcm")
    np.testing.assert_allclose(vol.affine, nibabel_affine(ds), atol=1e-9)
    np.testing.assert_array_equal(vol.data[:, :, 0], ds.pixel_array.astype(np.float64) - 1024)  # RescaleIntercept


def test_what_reading_found_is_warned_as_read(tmp_path, caplog):
    """docs/medical.md: without positions InstanceNumber orders the slices "and a warning says so" —
    it was the report's note only (audit 2026-12-07)."""
    import logging

    files, _ = write_series(tmp_path / "s", n=2, oblique=False)
    for f in files:
        ds = pydicom.dcmread(f)
        del ds.ImagePositionPatient
        ds.save_as(f)
    with caplog.at_level(logging.WARNING, logger="ipsolve"):
        run = reconstruct_volumes(tmp_path / "s", "dicom", tmp_path / "run", solver=CHEAP_DPS, operator="ct_sparse")
    assert "no ImagePositionPatient/ImageOrientationPatient: slices ordered by InstanceNumber" in caplog.text
    assert not any("slices resized" in r.getMessage() for r in caplog.records)  # the resize stays a report note
    assert any("slices resized" in w for w in run.summary["volumes"]["CT_series1"]["warnings"])


def test_corrupt_dicom_files_are_skipped_with_their_name(tmp_path):
    files, expected = write_series(tmp_path / "s", n=4, oblique=False)
    (tmp_path / "s" / "notes.dcm").write_bytes(b"not a dicom file at all")
    broken = tmp_path / "s" / "broken_slice"
    ds = pydicom.dcmread(files[-1])
    ds.ImagePositionPatient = [str(float(v) + 0 * 1) for v in ds.ImagePositionPatient]
    ds.save_as(broken)
    data = broken.read_bytes()
    broken.write_bytes(data[:-5000])  # pixel data cut short
    (vol,), skipped = read_dicom(tmp_path / "s")
    reasons = {Path(s["file"]).name: s["reason"] for s in skipped}
    assert set(reasons) == {"notes.dcm", "broken_slice"}
    assert "not a DICOM" in reasons["notes.dcm"] and "pixel data" in reasons["broken_slice"]
    np.testing.assert_array_equal(vol.data, expected)


def test_ct_without_rescale_and_many_unreadable_files_are_said_once(tmp_path, caplog):
    """(audit 2026-12-07) A CT series without RescaleSlope/Intercept (type 1 for CT) was labelled HU in silence,
    though its stored values may be HU + 1024; the files of an earlier run in the data folder were skipped with one
    warning each (45 lines): one per reason now, naming the first three."""
    import logging

    files, _ = write_series(tmp_path / "s", n=3, oblique=False)
    for f in files[:2]:
        ds = pydicom.dcmread(f)
        del ds.RescaleSlope, ds.RescaleIntercept
        ds.save_as(f)
    for k in range(5):
        (tmp_path / "s" / f"x{k}.png").write_bytes(b"png")
    with caplog.at_level(logging.WARNING, logger="ipsolve"):
        (vol,), skipped = read_dicom(tmp_path / "s")
    assert vol.meta["units"] == "HU" and len(skipped) == 5
    assert any(w.startswith("2 of 3 CT slice(s) have no RescaleSlope/RescaleIntercept (required for CT)")
               for w in vol.meta["warnings"])
    assert caplog.text.count("skipping") == 1 and "skipping 5 files (not a DICOM file): " in caplog.text
    assert "and 2 more" in caplog.text
    from ipsolve.io.dicom import log_skipped

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ipsolve"):
        log_skipped([{"file": "a", "reason": "r1"}, {"file": "b", "reason": "r2"}, {"file": "c", "reason": "r2"}])
    assert [r.getMessage() for r in caplog.records] == ["skipping a: r1", "skipping 2 files (r2): b, c"]
    # the series' files in slice order in summary.json's input (they are listed by name otherwise)
    from ipsolve.io.sources import describe_volume

    assert describe_volume(vol)["slice_files"] == [str(f) for f in files]


def test_two_series_need_a_choice(tmp_path):
    write_series(tmp_path / "mixed", n=2, uid="1.2.826.0.1.3680043.8.498.1")
    write_series(tmp_path / "mixed", n=3, uid="1.2.826.0.1.3680043.8.498.2")
    with pytest.raises(DicomError) as err:
        read_dicom(tmp_path / "mixed")
    text = str(err.value)
    assert "\n" not in text and "data.series" in text
    assert "1.2.826.0.1.3680043.8.498.1" in text and "1.2.826.0.1.3680043.8.498.2" in text
    # both keep CT_small's series number: the listing asks for the UID, and the number (which took both,
    # as data.series=all) is refused naming the two
    number = str(pydicom.dcmread(get_testdata_file("CT_small.dcm")).SeriesNumber)
    assert "data.series=<SeriesInstanceUID> (or data.series=all)" in text
    with pytest.raises(DicomError, match=rf"series number {number} is shared by 2 series .*give the SeriesInstanceUID"):
        read_dicom(tmp_path / "mixed", series=number)
    (vol,), _ = read_dicom(tmp_path / "mixed", series="1.2.826.0.1.3680043.8.498.2")
    assert vol.shape[2] == 3
    assert sorted(v.shape[2] for v in read_dicom(tmp_path / "mixed", series="all")[0]) == [2, 3]
    # through the runner: one line, nothing written
    out = tmp_path / "run"
    with pytest.raises(RunError, match="2 DICOM series"):
        reconstruct_volumes(tmp_path / "mixed", "dicom", out, solver=CHEAP_DPS)
    assert not (out / "records").exists()


def test_compressed_transfer_syntaxes(tmp_path):
    from pydicom.pixels import get_decoder

    plain = read_dicom(get_testdata_file("MR_small.dcm"))[0][0]
    rle = read_dicom(get_testdata_file("MR_small_RLE.dcm"))[0][0]  # pydicom's own RLE decoder
    np.testing.assert_array_equal(rle.data, plain.data)
    jls = pydicom.dcmread(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    if get_decoder(jls.file_meta.TransferSyntaxUID).is_available:
        pytest.skip("a JPEG-LS plugin is installed here")
    with pytest.raises(DicomError) as err:
        read_dicom(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    assert "\n" not in str(err.value) and "JPEG-LS" in str(err.value) and "pylibjpeg" in str(err.value)


def test_multiframe_rtdose_frames_become_slices():
    path = get_testdata_file("rtdose.dcm")
    (vol,), _ = read_dicom(path)
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array.astype(np.float64) * float(ds.DoseGridScaling)
    offsets = np.array([float(v) for v in ds.GridFrameOffsetVector])
    assert vol.shape == (10, 10, 15) and ds.DoseUnits == "RELATIVE" and vol.meta["units"] == "relative"
    # GridFrameOffsetVector runs along row × column cosine; the volume ascends along nibabel's normal
    order = np.argsort(-offsets)
    np.testing.assert_allclose(vol.data, np.moveaxis(frames[order], 0, -1))
    assert abs(np.linalg.norm(vol.affine[:3, 2]) - abs(offsets[1] - offsets[0])) < 1e-6


# ----------------------------------------------------------------------------------------
# windows, NIfTI, round trips
# ----------------------------------------------------------------------------------------
def test_window_settings():
    assert parse_window("auto") == "auto" and parse_window("ct_soft_tissue") == "ct_soft_tissue"
    assert parse_window([-160, 240]) == (-160.0, 240.0) and parse_window("[0, 1]") == (0.0, 1.0)
    for bad in ([240, -160], [5, 5], "loud", [0, float("nan")]):
        with pytest.raises(ValueError) as err:
            parse_window(bad)
        assert "\n" not in str(err.value) and "data.window" in str(err.value)
    w = Window("x", -160.0, 240.0)
    v = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0])
    np.testing.assert_allclose(w.apply(v), [-1, -1, 0, 1, 1])
    np.testing.assert_allclose(w.invert(w.apply(v)), np.clip(v, -160, 240))


def test_window_lo_above_hi_through_the_runner_writes_nothing(tmp_path):
    folder = example_dicom_folder(tmp_path / "ct")
    with pytest.raises(RunError) as err:
        reconstruct_volumes(folder, "dicom", tmp_path / "run", window=[240, -160], solver=CHEAP_DPS)
    assert "\n" not in str(err.value) and "lo < hi" in str(err.value)
    assert [p.name for p in (tmp_path / "run").iterdir()] == []
    # a misspelt option is named with the closest one, and the list offers only what can be passed
    with pytest.raises(RunError, match=r"unknown data option\(s\) 'writedicom' for dicom \(did you mean "
                                       r"'write_dicom'\?\); options: batch_size, series, slices, window, write_dicom, "
                                       r"z_coupling$"):
        reconstruct_volumes(folder, "DICOM", tmp_path / "run", writedicom=True, solver=CHEAP_DPS)


def test_ct_window_needs_hu(tmp_path):
    (vol,), _ = read_nifti(example_nifti(tmp_path))
    with pytest.raises(ValueError, match="Hounsfield.*give data.units=HU"):
        resolve_window("ct_soft_tissue", vol)
    # data.units=HU says a NIfTI holds Hounsfield units (it records none): the named window applies
    from omegaconf import OmegaConf

    from ipsolve.runner.volumes import read_volumes

    data = OmegaConf.create({"format": "nifti", "path": str(example_nifti(tmp_path)), "units": "HU"})
    (hu,), _ = read_volumes(data)
    assert (resolve_window("ct_soft_tissue", hu).lo, resolve_window("ct_soft_tissue", hu).hi) == (-160, 240)
    with pytest.raises(ValueError, match="data.units must be HU"):
        read_volumes(OmegaConf.create({**data, "units": "mm"}))
    # an MR volume read as HU through the soft-tissue window is nearly all clipped: said (it was silent),
    # with the volume's own range; a window that fits it is not
    from ipsolve.io.volume import window_clip_note

    note = window_clip_note(hu, resolve_window("ct_soft_tissue", hu))
    assert note.startswith("the window ct_soft_tissue (-160 to 240) clips ") and "data.window=auto fits" in note
    # a CT's air and bone clipped by the soft-tissue window is its purpose, not said (62 % of a series was warned
    # about, "its slices are nearly constant": audit 2026-12-07); above 90 % it is said
    import dataclasses

    from ipsolve.io.volume import CLIPPED_NOTE

    window = resolve_window([-160, 240], hu)
    for inside, said in ((0.38, False), (0.05, True)):
        values = np.where(np.arange(hu.data.size).reshape(hu.data.shape) < inside * hu.data.size, 40.0, -1000.0)
        clipped = dataclasses.replace(hu, data=values)
        assert (window_clip_note(clipped, window) is not None) == said, inside
    assert CLIPPED_NOTE == 0.9
    lo, hi = np.percentile(hu.data, (0.5, 99.5))
    assert window_clip_note(hu, resolve_window([lo, hi], hu)) is None
    assert window_clip_note(hu, resolve_window("auto", hu)) is None


def test_nifti_4d_picks_the_asked_volume(tmp_path):
    path = example_nifti(tmp_path, "functional.nii")
    img = nib.load(path)
    (vol,), _ = read_nifti(path, volume=7)
    np.testing.assert_allclose(vol.data, np.asarray(img.dataobj[..., 7], dtype=np.float64))
    np.testing.assert_array_equal(vol.affine, img.affine)
    assert vol.name == "functional_t7"
    assert vol.meta["warnings"] == []  # asked for: nothing to warn about
    # not asked for: volume 0, and a warning says which of how many (the default passed unnoticed: audit 2026-12-07)
    (first,), _ = read_nifti(path)
    np.testing.assert_allclose(first.data, np.asarray(img.dataobj[..., 0], dtype=np.float64))
    assert first.meta["warnings"] == ["functional.nii is 4-D (17, 21, 3, 20): volume 0 of its 20 is reconstructed "
                                      "(data.volume=0 … 19 chooses another; one per run)"]
    with pytest.raises(ValueError) as err:
        read_nifti(path, volume=20)
    assert "\n" not in str(err.value) and "0 … 19" in str(err.value)


def test_dicom_to_nifti_to_volume_and_dicom_round_trips(tmp_path):
    files, _ = write_series(tmp_path / "s", n=3)
    (vol,), _ = read_dicom(tmp_path / "s")
    window = resolve_window("ct_soft_tissue", vol)
    assert (window.lo, window.hi) == (-160.0, 240.0)
    x = window.apply(vol.data)  # what the prior sees
    # NIfTI: float32 values, the DICOM-derived affine
    nii = write_nifti(tmp_path / "out" / "v.nii.gz", window.invert(x), vol.affine, "test", protected=vol.files)
    (back,), _ = read_nifti(nii)
    np.testing.assert_allclose(window.apply(back.data), x, atol=1e-6)  # float32 of HU, within the window
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)  # stored as float32
    # DICOM series: new UIDs, the patient and study kept, 16-bit quantisation of the window
    for h in vol.headers:
        h.SliceLocation = "0"  # (the input's, now no longer true: written anew from the slice's position)
    written = write_dicom_series(tmp_path / "out" / "dcm", window.invert(x), vol.affine, vol.headers, window,
                                 "ipsolve test derivation", "ipsolve test", protected=vol.files)
    (again,), _ = read_dicom(tmp_path / "out" / "dcm")
    step = (window.hi - window.lo) / 65535
    assert np.abs(window.invert(x) - again.data).max() <= step / 2 * (1 + 1e-6)  # (slope written with 10 digits)
    np.testing.assert_allclose(again.affine, vol.affine, atol=1e-5)
    src, out = pydicom.dcmread(files[0]), pydicom.dcmread(written[0])
    assert out.SeriesInstanceUID != src.SeriesInstanceUID and out.SOPInstanceUID != src.SOPInstanceUID
    assert len({pydicom.dcmread(f).SOPInstanceUID for f in written}) == 3
    for tag in ("PatientName", "PatientID", "StudyInstanceUID", "FrameOfReferenceUID"):
        assert out[tag].value == src[tag].value, tag
    assert out.DerivationDescription == "ipsolve test derivation"
    for f in written:  # the position along the slice normal (it was dropped)
        d = pydicom.dcmread(f)
        normal = np.cross(np.asarray(d.ImageOrientationPatient[:3], float), np.asarray(d.ImageOrientationPatient[3:], float))
        assert float(d.SliceLocation) == pytest.approx(float(np.dot(np.asarray(d.ImagePositionPatient, float), normal)),
                                                       abs=1e-4)
    assert out.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID


def test_written_dicom_keeps_each_slice_in_place_and_its_attributes(tmp_path):
    """A series with a missing slice: the NIfTI side warns (one spacing), the written DICOM puts
    every slice at its input slice's own position (was: the median grid, 2.5 mm off after the gap);
    the input's acquisition attributes, MONOCHROME1 and — for the same result written twice — the
    UIDs are kept; an input without geometry gets none invented."""
    files, _ = write_series(tmp_path / "s", n=5)
    files[2].unlink()
    (vol,), _ = read_dicom(tmp_path / "s")
    assert any("irregular slice spacing" in w and "misplaced" in w for w in vol.meta["warnings"])
    window = resolve_window("ct_soft_tissue", vol)
    values = window.invert(window.apply(vol.data))
    def write(folder, headers=vol.headers, positions=vol.meta["positions"]):
        return write_dicom_series(folder, values, vol.affine, headers, window, "test derivation", "ipsolve test",
                                  protected=vol.files, positions=positions)
    written = write(tmp_path / "a")
    sources = [pydicom.dcmread(f) for f in files[:2] + files[3:]]
    for out_file, src in zip(written, sources):
        out = pydicom.dcmread(out_file)
        np.testing.assert_allclose(np.array(out.ImagePositionPatient, float), np.array(src.ImagePositionPatient, float),
                                   atol=1e-4)
        for tag in ("KVP", "Manufacturer", "ExposureTime", "ConvolutionKernel"):  # acquisition attributes kept
            if tag in src:
                assert out[tag].value == src[tag].value, tag
        assert out.RescaleSlope != src.RescaleSlope and "PixelPaddingValue" not in out  # pixel module: our own
    # the same result written again: the same series (was: new UIDs on every re-run)
    again = write(tmp_path / "b")
    assert [pydicom.dcmread(f).SOPInstanceUID for f in again] == [pydicom.dcmread(f).SOPInstanceUID for f in written]
    # MONOCHROME1 stays; no geometry in → none out
    bare = []
    for h in vol.headers:
        h = pydicom.dataset.Dataset(h)
        h.PhotometricInterpretation = "MONOCHROME1"
        del h.ImagePositionPatient, h.ImageOrientationPatient
        bare.append(h)
    out = pydicom.dcmread(write(tmp_path / "c", bare, [None] * len(bare))[0])
    assert out.PhotometricInterpretation == "MONOCHROME1"
    assert "ImagePositionPatient" not in out and "ImageOrientationPatient" not in out


def test_a_gantry_tilt_keeps_every_slice_in_place_in_both_outputs(tmp_path):
    """Positions that advance sideways as well as along the normal (a gantry tilt: 0.65 mm per 2.5 mm
    slice) were put on the normal, up to 2.6 mm off at 5 slices in both outputs, silently (audit
    2026-12-07): the affine's slice axis is now the step between positions (sheared; the NIfTI's qform,
    which cannot shear, is unset) and the written DICOM keeps each slice's own position."""
    files, _ = write_series(tmp_path / "s", n=5, tilt=0.65, size=16)
    (vol,), _ = read_dicom(tmp_path / "s")
    assert any("advance 0.65 mm sideways per slice" in w and "gantry tilt, 2.6 mm over" in w for w in vol.meta["warnings"])
    assert vol.voxel_sizes()[2] == pytest.approx(2.5, abs=1e-4)  # the spacing along the normal, not the step's length
    positions = np.array([pydicom.dcmread(f).ImagePositionPatient for f in files], float)
    for k, lps in enumerate(positions):  # the voxel (0, 0, k) sits at slice k's ImagePositionPatient
        np.testing.assert_allclose(np.linalg.inv(LPS_TO_RAS) @ vol.affine @ [0, 0, k, 1], [*lps, 1], atol=1e-4)
    nifti = write_nifti(tmp_path / "v.nii.gz", vol.data.astype(np.float32), vol.affine, "tilt")
    header = nib.load(nifti).header  # the sform exact; the qform (ITK reads it) the nearest unsheared grid
    assert int(header["qform_code"]) == 1 and int(header["sform_code"]) == 1
    np.testing.assert_allclose(nib.load(nifti).affine, vol.affine, atol=1e-4)
    (back,), _ = read_nifti(nifti)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)
    window = resolve_window("ct_soft_tissue", vol)
    written = write_dicom_series(tmp_path / "d", window.invert(window.apply(vol.data)), vol.affine, vol.headers, window,
                                 "test", "ipsolve test", protected=vol.files, positions=vol.meta["positions"])
    for out, lps in zip(written, positions):
        out = pydicom.dcmread(out)
        np.testing.assert_allclose(np.array(out.ImagePositionPatient, float), lps, atol=1e-4)
        assert float(out.SpacingBetweenSlices) == pytest.approx(2.5, abs=1e-4)  # along the normal, not the step
    # straight series whose stored positions are rounded (to 0.01 mm, as scanners write them; 0.625-mm slices):
    # no shear, no warning (a median of differences read 11 of 200 such series as tilted)
    for seed in range(5):
        rounding = np.random.default_rng(seed).uniform(-0.005, 0.005, (12, 3))
        files, _ = write_series(tmp_path / f"t{seed}", n=12, spacing=0.625, size=8)
        for f, r in zip(files, rounding):
            ds = pydicom.dcmread(f)
            ds.ImagePositionPatient = [f"{v:.2f}" for v in np.array(ds.ImagePositionPatient, float) + r]
            ds.save_as(f)
        (vol,), _ = read_dicom(tmp_path / f"t{seed}")
        assert not any("sideways" in w for w in vol.meta["warnings"]), vol.meta["warnings"]


def test_a_run_folder_that_is_the_input_folder_is_named(tmp_path):
    """hydra.run.dir = the input folder: its dicom/ is left out as the run's own output, and the error
    said only "no DICOM images (ipsolve.log: not a DICOM file)" (audit 2026-12-07)."""
    write_series(tmp_path / "dicom" / "CT_series1", n=2, size=8)
    (tmp_path / "ipsolve.log").write_text("a log\n")
    with pytest.raises(DicomError, match=r"no DICOM images in .*; .*dicom is left out as this run's output \(the run "
                                         r"folder is the input folder: give another hydra.run.dir\)"):
        read_dicom(tmp_path, exclude=[tmp_path / "dicom", tmp_path / "volumes"])


def test_nifti_complex_and_nan_voxels_are_said(tmp_path):
    data = np.full((8, 8, 2), 3 + 4j, dtype=np.complex64)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "c.nii")
    (vol,), _ = read_nifti(tmp_path / "c.nii")
    np.testing.assert_allclose(vol.data, 5.0)  # the magnitude (was the real part, 3)
    assert any("complex" in w for w in vol.meta["warnings"])
    real = np.ones((8, 8, 2), np.float32)
    real[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(real, np.eye(4)), tmp_path / "n.nii")
    (vol,), _ = read_nifti(tmp_path / "n.nii")
    assert vol.data[0, 0, 0] == 0 and any("1 non-finite voxel" in w for w in vol.meta["warnings"])


def test_dicom_inputs_a_newcomer_has(tmp_path, caplog):
    """(audit 2026-12-07) A palette-colour file is refused, not read as grey levels; data.series=all
    leaves out a series with no readable image and reconstructs the others (it stopped the run); a
    series an earlier run wrote into the data folder is left out (a second run found two series);
    RT Dose units follow DoseUnits; missing positions are warned as read."""
    import logging

    with pytest.raises(DicomError, match=r"PALETTE COLOR image: its values are indices into a colour table"):
        read_dicom(get_testdata_file("examples_palette.dcm"))
    mixed = tmp_path / "mixed"
    write_series(mixed, n=2, uid="1.2.826.0.1.3680043.8.498.11")
    colour = pydicom.dcmread(get_testdata_file("SC_rgb_small_odd.dcm"))
    colour.save_as(mixed / "colour.dcm")
    with caplog.at_level(logging.WARNING, logger="ipsolve"):
        volumes, skipped = read_dicom(mixed, series="all")
    assert [v.shape[2] for v in volumes] == [2] and any("colour image" in s["reason"] for s in skipped)
    assert "the series is left out" in caplog.text
    with pytest.raises(DicomError, match=r"no readable images in series .*\(colour image"):  # alone: the reason said
        read_dicom(mixed / "colour.dcm")
    # an earlier run's dicom/ output inside the data folder
    data = tmp_path / "data"
    files, _ = write_series(data, n=3)
    (vol,), _ = read_dicom(data)
    write_dicom_series(data / "dicom" / "s", vol.data, vol.affine, vol.headers, resolve_window("auto", vol),
                       "ipsolve 0.1: dps reconstruction", "ipsolve dps ct", protected=vol.files)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ipsolve"):
        (again,), skipped = read_dicom(data)
    assert again.shape[2] == 3 and [Path(s["file"]).parent.name for s in skipped] == ["s"] * 3
    assert "written by an earlier ipsolve run" in caplog.text and caplog.text.count("skipping") == 0
    ours = str(pydicom.dcmread(next((data / "dicom" / "s").iterdir())).SeriesInstanceUID)
    assert read_dicom(data, series=ours)[0][0].shape[2] == 3  # asked for by its UID: read
    assert read_dicom(data / "dicom" / "s")[0][0].shape[2] == 3  # its own folder: read
    # RT Dose: DoseUnits says Gy or RELATIVE (pydicom's rtdose.dcm is RELATIVE: was reported as Gy)
    dose = pydicom.dcmread(get_testdata_file("rtdose.dcm"))
    dose.DoseUnits = "GY"
    dose.save_as(tmp_path / "gray.dcm")
    assert read_dicom(tmp_path / "gray.dcm")[0][0].meta["units"] == "Gy"


def test_nifti_headers_a_newcomer_has(tmp_path):
    """(audit 2026-12-07) Size-1 dimensions after the 4th are dropped (ITK/ANTs write them; refused
    before); summary.json's voxel sizes are millimetres whatever the file's units; a qform in another
    space than the sform (its own code) is kept, moved to the output grid as the sform is."""
    from ipsolve.io.sources import describe_volume

    data = np.arange(6 * 6 * 3, dtype=np.float32).reshape(6, 6, 3)
    nib.save(nib.Nifti1Image(data[..., None, None], np.eye(4)), tmp_path / "five.nii")
    (vol,), _ = read_nifti(tmp_path / "five.nii")
    np.testing.assert_array_equal(vol.data, data)
    img = nib.Nifti1Image(data, np.diag([2000.0, 2000.0, 3000.0, 1.0]))
    img.header.set_xyzt_units("micron")
    nib.save(img, tmp_path / "micron.nii")
    (vol,), _ = read_nifti(tmp_path / "micron.nii")
    assert describe_volume(vol)["voxel_sizes_mm"] == [2.0, 2.0, 3.0]
    scanner = np.diag([1.0, 1.0, 2.0, 1.0])
    aligned = scanner.copy()
    aligned[:3, 3] = [10.0, 20.0, 30.0]
    two = nib.Nifti1Image(data, aligned)
    two.set_qform(scanner, code=1)
    two.set_sform(aligned, code=2)
    nib.save(two, tmp_path / "two.nii")
    (vol,), _ = read_nifti(tmp_path / "two.nii")
    moved = resized_affine(vol.affine, (1, 1, 4), 8, 1)  # a crop, a resize and a first slice
    out = nib.load(write_nifti(tmp_path / "out.nii.gz", np.zeros((8, 8, 2)), moved,
                               "ipsolve: a description longer than the header's 79 characters; window [-861, 785]",
                               template=vol.headers[0]))
    assert int(out.header["sform_code"]) == 2 and int(out.header["qform_code"]) == 1
    np.testing.assert_allclose(out.get_sform(), moved, atol=1e-5)
    np.testing.assert_allclose(out.get_qform(), scanner @ np.linalg.inv(aligned) @ moved, atol=1e-5)
    assert out.header["descrip"].tobytes().decode().rstrip("\x00") == \
        "ipsolve: a description longer than the header's 79 characters"  # cut between parts


def test_input_inside_the_run_folder_is_found(tmp_path):
    """``hydra.run.dir`` holding the data: only the run's own outputs are left out of the search."""
    from omegaconf import OmegaConf

    from ipsolve.runner.volumes import own_outputs, read_volumes

    example_dicom_folder(tmp_path / "study" / "scans")
    data = OmegaConf.create({"format": "dicom", "path": str(tmp_path / "study" / "scans")})
    (vol,), _ = read_volumes(data, exclude=own_outputs(tmp_path / "study", data.path))
    assert vol.shape[2] == 1
    assert own_outputs(tmp_path / "elsewhere", data.path) == [tmp_path / "elsewhere"]


def test_resized_affine_keeps_pixel_centres():
    aff = np.diag([0.5, 0.5, 2.0, 1.0])
    aff[:3, 3] = [10, 20, 30]
    out = resized_affine(aff, (0, 16, 128), 32, first_slice=3)
    # output pixel (0, 0) covers input pixels 0..3 (rows) and 16..19 (columns): its centre is at 1.5 / 17.5
    np.testing.assert_allclose(out @ [0, 0, 0, 1], aff @ [1.5, 17.5, 3, 1])
    np.testing.assert_allclose(np.linalg.norm(out[:3, :3], axis=0), [2.0, 2.0, 2.0])


# ----------------------------------------------------------------------------------------
# missing packages, fastMRI
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("module, call", [
    ("pydicom", lambda p: read_dicom(p)), ("nibabel", lambda p: read_nifti(p)), ("h5py", lambda p: read_fastmri(p))])
def test_missing_package_names_the_extra(monkeypatch, tmp_path, module, call):
    monkeypatch.setitem(sys.modules, module, None)  # "import module" now fails
    with pytest.raises(MissingDependency) as err:
        call(tmp_path)
    assert "\n" not in str(err.value) and 'pip install "ipsolve[medical]"' in str(err.value) and module in str(err.value)


def test_missing_package_through_the_runner(monkeypatch, tmp_path):
    folder = example_dicom_folder(tmp_path / "ct")
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(RunError, match=r'pip install "ipsolve\[medical\]"'):
        reconstruct_volumes(folder, "dicom", tmp_path / "run", solver=CHEAP_DPS)


def test_calibration_columns_match_fastmri():
    """``acs_columns`` = fastMRI's ``SensitivityModel.get_pad_and_num_low_freqs``.  Fixture
    recorded from facebookresearch/fastMRI at 91f2df4, ``fastmri/models/varnet.py`` lines 181-201
    (the method's source executed alone with torch), on 36 fastMRI masks (ipsolve's
    ``column_mask``: widths 32/64/368, 4×/8%, 8×/4%, random and equispaced, seeds 0-2) and two
    hand-made asymmetric centres (widths 32 and 31): its ``pad`` and ``num_low_frequencies``."""
    from ipsolve.io.fastmri import acs_columns, estimate_sensitivities, fft2c_numpy

    ref = np.load(ROOT / "tests" / "fixtures" / "fastmri_acs.npz")
    for m, w, pad, num in zip(ref["masks"], ref["widths"], ref["pad"], ref["num_low"]):
        expected = np.zeros(w, bool)
        expected[pad:pad + num] = True
        np.testing.assert_array_equal(acs_columns(m[:w]), expected)
    # the maps: unit root-sum-of-squares everywhere, and exact for smooth maps of a constant image
    from ipsolve.operators.mri import synthetic_sensitivities

    s = synthetic_sensitivities(4, 32, 0).numpy().astype(np.complex128)
    k = fft2c_numpy(s * 0.7)
    acs = np.zeros(32, bool)
    acs[8:24] = True
    est = estimate_sensitivities(k, acs)
    np.testing.assert_allclose((np.abs(est) ** 2).sum(0), 1.0, atol=1e-12)
    assert np.abs(est - s)[:, 4:-4, 4:-4].max() < 0.05


@pytest.fixture(scope="module")
def fastmri_file(tmp_path_factory):
    """Two slices of a held-out phantom volume as a 4-coil fastMRI file, 4× random mask, noise σ = 0.01."""
    folder = tmp_path_factory.mktemp("fastmri")
    path, mask = fastmri_phantom_file(folder / "knee_phantom.h5", heldout_volume(2, 32, seed=5), coils=4,
                                      acceleration=4, sigma=0.01, seed=0)
    return path, mask


def test_fastmri_file_reconstructs_better_than_zero_filled(fastmri_file, tmp_path):
    path, mask = fastmri_file
    result = reconstruct_volumes(path, "fastmri", tmp_path / "run", operator="mri",
                                 solver={"name": "dps", "steps": 100, "rescale_zeta": True})
    vol = result.summary["volumes"]["knee_phantom"]
    assert vol["input"]["mask"] == "file" and vol["input"]["sampled_columns"] == int(mask.sum())
    assert result.summary["measurements"] and result.summary["operator"]["coils"] == 4
    assert vol["metrics"]["psnr"] > vol["initial_metrics"]["psnr"] + 1.0  # measured: 15.73 vs 13.75 dB
    for rec in result.records:  # measured: +1.8 and +2.2 dB
        assert rec["metrics"]["psnr"] > rec["initial_metrics"]["psnr"] + 0.5
    img = nib.load(tmp_path / "run" / vol["outputs"]["recon"])
    assert img.shape == (32, 32, 2)


def test_kspace_that_does_not_fit_the_operator(fastmri_file, tmp_path):
    path, _ = fastmri_file
    with pytest.raises(RunError) as err:
        reconstruct_volumes(path, "fastmri", tmp_path / "a", operator={"name": "mri", "coils": 8}, solver=CHEAP_DPS)
    assert "\n" not in str(err.value) and "4 coil(s)" in str(err.value) and "operator.coils=8" in str(err.value)
    with pytest.raises(RunError, match="operator=mri"):
        reconstruct_volumes(path, "fastmri", tmp_path / "b", operator="ct_sparse", solver=CHEAP_DPS)
    with pytest.raises(RunError, match="undersampled"):
        reconstruct_volumes(path, "fastmri", tmp_path / "c", operator="mri", mask="operator", solver=CHEAP_DPS)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # nothing half-written


def test_single_coil_kspace_with_phase(tmp_path):
    """A scan's image is complex: one coil's phase is estimated from the calibration columns and
    modelled (audit 2026-12-05: with a real-image model DPS ended below zero-filling — here 10.0
    against 16.5 dB; measured with the phase 21.1); a real image keeps a global phase (22.2 dB, as
    before).  ``operator.acceleration`` given for an undersampled file is refused (it was ignored,
    yet recorded as the run's)."""
    for phase, model in ((2.5, "2 slice(s) the phase of the centre image"), (0.0, "2 slice(s) a global phase")):
        path, mask = fastmri_phantom_file(tmp_path / f"p{phase}" / "sc.h5", heldout_volume(2, 64, seed=5), coils=1,
                                          acceleration=4, sigma=0.01, seed=0, phase=phase)
        result = reconstruct_volumes(path, "fastmri", tmp_path / f"run{phase}", operator="mri",
                                     solver={"name": "dps", "steps": 100, "rescale_zeta": True})
        vol = result.summary["volumes"]["sc"]
        assert vol["input"]["sensitivities"] == f"one coil's phase from the ACS centre image: {model}"
        # the file's own mask replaces the preset's acceleration: said (only a column count showed it)
        assert any(w.startswith("the file's own sampled columns are the mask (") and
                   "the operator preset's acceleration 4× is not used" in w for w in vol["warnings"]), vol["warnings"]
        assert "mask" in result.summary["operator"]
        assert not {"acceleration", "center_fraction"} & set(result.summary["operator"])  # (recorded, unused)
        assert vol["metrics"]["psnr"] > vol["initial_metrics"]["psnr"] + 3.0  # measured +4.6 / +5.6 dB
    with pytest.raises(RunError, match=r"drop operator.acceleration"):
        reconstruct_volumes(path, "fastmri", tmp_path / "acc", operator={"name": "mri", "acceleration": 8},
                            solver=CHEAP_DPS)


def test_fully_sampled_kspace_is_undersampled_retrospectively(tmp_path):
    """A fully sampled file (zero columns at its edges are padding, not undersampling): the
    operator's mask, less the padding, is applied to the file's own k-space — the measurement is
    the scan's data at those columns, not a re-simulation from its magnitude image."""
    vol = heldout_volume(2, 40, seed=5)
    path, _ = fastmri_phantom_file(tmp_path / "full.h5", vol, coils=4, sigma=0.01, seed=0, phase=1.0,
                                   undersample=False, pad_columns=5)
    result = reconstruct_volumes(path, "fastmri", tmp_path / "run", operator="mri", solver=CHEAP_DPS)
    # the operator's acceleration and seed drew the mask (then saved as a file): used, not refused as a mask
    # file's would be (a review of 2026-12-07: check_settings_used refused them)
    from ipsolve import make_operator
    from ipsolve.runner.run import check_settings_used

    op = make_operator("mri", mask=str(tmp_path / "run" / "inputs" / "fastmri_mask.npy"))
    with pytest.raises(RunError, match="does not use operator.acceleration"):
        check_settings_used(op, ["acceleration"])
    op.mask_drawn_from_settings = True
    check_settings_used(op, ["acceleration", "seed", "center_fraction"])
    source = result.summary["volumes"]["full"]["input"]
    assert source["mask"].startswith("operator") and result.summary["volumes"]["full"]["metrics"]
    assert source["padding_columns"] == 2  # 5 zero columns at each edge of 40, 1 of them inside the central 32
    from skimage import io as skio

    from ipsolve.runner.grid import row_labels

    grid = skio.imread(tmp_path / "run" / "grid.png")  # truth | measurement | initial | reconstruction
    margin = row_labels([r["name"] for r in result.records][:8])[1]  # (the rows' names)
    assert grid.shape[1] == 394 + margin  # 4 columns (without the truth, as before: 296)
    op_mask = np.load(tmp_path / "run" / "inputs" / "fastmri_mask.npy")
    from ipsolve.io.fastmri import open_fastmri, read_slice, square_kspace

    kf = open_fastmri(path)
    k, _ = read_slice(kf, 0)
    ks = square_kspace(k, 32)
    assert not op_mask[ks.any(axis=(0, 1)) == 0].any()  # no padding column counts as measured
    hi = result.summary["volumes"]["full"]["window"]["hi"]
    cols = ks[..., op_mask] / hi
    expected = np.stack([cols.real, cols.imag], 1).reshape(8, 32, -1)
    saved = np.load(tmp_path / "run" / "measurement" / "full_z000.npy")
    np.testing.assert_allclose(saved.reshape(expected.shape), expected, atol=1e-5)


def test_sigma_auto_measures_the_kspace_noise(tmp_path, caplog):
    """``sigma=auto`` for fastMRI files: the noise in the readout-oversampling margin, on the
    solver's scale (the file's noise × size/W ÷ the window's hi).  Measured: within 2.5 % of the
    noise added (4 coils undersampled, one coil fully sampled at 64 → 32 px)."""
    for coils, width, undersample in ((4, 32, True), (1, 64, False)):
        path, _ = fastmri_phantom_file(tmp_path / f"os{coils}.h5", heldout_volume(2, width, seed=5), coils=coils,
                                       sigma=0.02, seed=0, phase=1.0, undersample=undersample, readout_oversampling=2)
        result = reconstruct_volumes(path, "fastmri", tmp_path / f"run{coils}", operator="mri", solver=CHEAP_DPS,
                                     sigma="auto")
        vol = result.summary["volumes"][f"os{coils}"]
        added = 0.02 * 1e-4 * 32 / width / vol["window"]["hi"]
        assert result.summary["sigma"] == pytest.approx(added, rel=0.05)  # measured: within 2.5 %
        assert vol["input"]["noise_sigma"] == pytest.approx(result.summary["sigma"])
        estimate = result.summary["sigma_estimate"]  # as a 2-D run's sigma=auto records it (it was in volumes/ only)
        assert estimate["auto"] and estimate["median"] == result.summary["sigma"]
        assert estimate["per_image"] == {f"os{coils}": vol["input"]["noise_sigma"]}
        assert "(estimated: sigma=auto)" in report(result.summary)
    with caplog.at_level("WARNING", logger="ipsolve"):  # a given sigma far from the file's noise: said
        reconstruct_volumes(path, "fastmri", tmp_path / "given", operator="mri", solver=CHEAP_DPS, sigma=0.2)
    assert "sigma=auto takes it" in caplog.text
    plain, _ = fastmri_phantom_file(tmp_path / "plain.h5", heldout_volume(1, 32, seed=5), coils=1, sigma=0.02)
    with pytest.raises(RunError, match="no readout oversampling") as err:
        reconstruct_volumes(plain, "fastmri", tmp_path / "plain", operator="mri", solver=CHEAP_DPS, sigma="auto")
    assert "\n" not in str(err.value)
    # an object through the whole readout field of view (a knee's leg): the margin is no noise, and is not used
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 32), indexing="ij")
    leg = torch.where(xx.abs() < 0.75, 0.4 + 0.2 * torch.cos(6 * yy), torch.tensor(-1.0)).expand(1, 1, 64, 32)
    knee, _ = fastmri_phantom_file(tmp_path / "leg.h5", leg.contiguous(), coils=1, sigma=0.02, undersample=False)
    with pytest.raises(RunError, match="margin holds object, not only noise"):
        reconstruct_volumes(knee, "fastmri", tmp_path / "leg", operator="mri", solver=CHEAP_DPS, sigma="auto")
    with pytest.raises(RunError, match="sigma=auto estimates the noise of given measurements .* data=fastmri: k-space"):
        reconstruct_volumes(example_nifti(tmp_path), "nifti", tmp_path / "nii", solver=CHEAP_DPS, sigma="auto",
                            slices=[0, 0])


# ----------------------------------------------------------------------------------------
# the runner: outputs in the input's geometry, never over an input, resume, z-coupling
# ----------------------------------------------------------------------------------------
def test_nothing_is_written_over_an_input(tmp_path):
    run = tmp_path / "run"
    img = nib.load(example_nifti(tmp_path))
    src = run / "volumes" / "anatomical.nii.gz"  # the input sits where the output volume would go
    src.parent.mkdir(parents=True)
    nib.save(img, src)
    before = src.read_bytes()
    with pytest.raises(RunError, match="input file"):
        reconstruct_volumes(src, "nifti", run, operator="ct_sparse", solver=CHEAP_DPS, slices=[10, 11])
    assert src.read_bytes() == before
    assert not (run / "records").exists() and not (run / "summary.json").exists()


def test_nifti_volume_resumes_and_keeps_its_affine(tmp_path):
    src = example_nifti(tmp_path / "in")
    kw = dict(operator="ct_sparse", solver=CHEAP_DPS, slices=[10, 12], samples=2)
    first = reconstruct_volumes(src, "nifti", tmp_path / "run", **kw)
    again = reconstruct_volumes(src, "nifti", tmp_path / "run", **kw)
    assert again.summary["num_resumed"] == 3 and first.summary["num_finished"] == 3
    vol = again.summary["volumes"]["anatomical"]
    out = nib.load(tmp_path / "run" / vol["outputs"]["recon"])
    img = nib.load(src)
    # anatomical.nii is 33×41: centre crop 33×33 (columns 4..36), resized to 32; slices from 10
    np.testing.assert_allclose(out.affine, resized_affine(img.affine, (0, 4, 33), 32, 10), atol=1e-4)
    assert vol["crop"] == {"row0": 0, "col0": 4, "side": 33} and out.shape == (32, 32, 3)
    std = nib.load(tmp_path / "run" / vol["outputs"]["std"]).get_fdata()
    assert std.shape == (32, 32, 3) and std.max() > 0
    recon = out.get_fdata()
    w = vol["window"]
    assert w["lo"] - 1e-3 <= recon.min() and recon.max() <= w["hi"] + 1e-3  # inverted into the file's units


def test_processes_split_coupled_volumes_whole():
    from contextlib import contextmanager

    from ipsolve.runner.inputs import Item
    from ipsolve.runner.processes import local_items

    class TwoProcesses:  # accelerate's split_between_processes for rank 1 of 2 (the second half)
        num_processes, process_index = 2, 1

        @contextmanager
        def split_between_processes(self, things):
            things = list(things)
            yield things[(len(things) + 1) // 2:]

    items = [Item(f"{v}_z{z:03d}", volume=v, z=z) for v in ("a", "b", "c") for z in range(3)]
    names = [it.name for it in items]
    assert [it.name for it in local_items(TwoProcesses(), items, names, by_volume=True)] == ["c_z000", "c_z001", "c_z002"]
    assert len(local_items(TwoProcesses(), items, names)) == 4  # slice by slice: any split


def test_z_coupling_term():
    from ipsolve.solvers.coupling import ZCoupling, neighbour_pairs

    pairs = neighbour_pairs([("a", 3), ("a", 4), ("b", 5), ("a", 5), ("b", 6)])
    assert sorted(pairs) == [(0, 1), (1, 3), (2, 4)]  # within a volume, z and z + 1 only
    x = torch.randn(5, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    e = ZCoupling(2.0, pairs, eps=1e-9)(x)
    total = sum(2.0 * (x[j] - x[i]).abs().sum() for i, j in pairs)
    assert torch.allclose(e.sum(), total, rtol=1e-6)
    (g,) = torch.autograd.grad(e.sum(), x)
    assert g[0].abs().sum() > 0 and g[4].abs().sum() > 0


def test_z_coupling_makes_neighbouring_slices_agree(tmp_path):
    """The same 4-slice volume with and without a strong coupling: the reconstruction's variation
    along z shrinks (DPS, 20 steps) and the coupled volume was solved in one batch."""
    vol = heldout_volume(4, 32, seed=5)
    img = nib.Nifti1Image(((vol[:, 0].permute(1, 2, 0).numpy() + 1) * 500).astype(np.float32), np.eye(4))
    nib.save(img, tmp_path / "v.nii.gz")
    kw = dict(operator="ct_sparse", solver={"name": "dps", "steps": 20, "rescale_zeta": True}, window=[0, 1000],
              batch_size=2)
    tv = {}
    for weight in (None, 0.05):
        res = reconstruct_volumes(tmp_path / "v.nii.gz", "nifti", tmp_path / f"run{weight}", z_coupling=weight, **kw)
        x = nib.load(tmp_path / f"run{weight}" / "volumes" / "v.nii.gz").get_fdata()
        tv[weight] = np.abs(np.diff(x, axis=2)).mean()
        batches = {tuple(r["batch"]) for r in res.records}
        assert len(batches) == (1 if weight else 2)
    assert tv[0.05] < 0.7 * tv[None]
    # the weight is written with the pixels it changed: a DICOM series' DerivationDescription (the NIfTI's 79
    # characters hold no more) and summary.json (audit 2026-12-07: the same description with and without)
    write_series(tmp_path / "s", n=2, oblique=False, size=64)
    coupled = reconstruct_volumes(tmp_path / "s", "dicom", tmp_path / "dcm", operator="ct_sparse", solver=CHEAP_DPS,
                                  z_coupling=0.05, write_dicom=True)
    assert coupled.summary["z_coupling_weight"] == coupled.summary["volumes"]["CT_series1"]["z_coupling"] == 0.05
    first = next((tmp_path / "dcm" / "dicom" / "CT_series1").iterdir())
    assert str(pydicom.dcmread(first).DerivationDescription).endswith("-> 32 px; z-coupling weight 0.05")
    saved = (tmp_path / "dcm" / "report.txt").read_text()  # the volumes' lines too (written before them: review)
    assert saved == report(coupled.summary) + "\n" and "volume CT_series1: slices 0-1" in saved
    assert "z-coupling: weight 0.05 (total variation along z" in report(res.summary)  # (in summary.json only before)
    assert "operator ct (16 views over 0–180°)" in report(res.summary)
    one = {**res.summary, "z_coupling": "auto (one slice per volume: none)"}  # (said "auto ... each volume's slices
    assert "z-coupling: none (data.z_coupling=auto, but every volume has one slice)" in report(one)  # solved together")
    with pytest.raises(RunError, match="dps, dmplug, fmplug"):
        reconstruct_volumes(tmp_path / "v.nii.gz", "nifti", tmp_path / "daps", z_coupling=0.05,
                            operator="ct_sparse", solver="daps_cpu", window=[0, 1000])


def test_z_coupling_auto_is_chosen_from_the_measurements(tmp_path):
    """``z_coupling="auto"``: the weight is calibrated (held-out entries, never the truth) on
    neighbouring slices from the middle of the first volume, scored coupled against slice by slice
    (weight 0, the candidate as given), recorded in calibration.json and summary.json, and every
    volume is then solved coupled with it in one batch; a resumed run reuses the choice."""
    import json

    vol = heldout_volume(6, 32, seed=5)
    img = nib.Nifti1Image(((vol[:, 0].permute(1, 2, 0).numpy() + 1) * 500).astype(np.float32), np.eye(4))
    nib.save(img, tmp_path / "v.nii.gz")
    kw = dict(operator="ct_sparse", solver={"name": "dps", "steps": 10, "rescale_zeta": True}, window=[0, 1000],
              calibrate={"enabled": False, "images": 3, "budget": 4})  # the weight only
    res = reconstruct_volumes(tmp_path / "v.nii.gz", "nifti", tmp_path / "run", z_coupling="auto", **kw)
    cal = res.summary["calibration"]
    assert cal["images"] == ["v_z001", "v_z002", "v_z003"]  # the middle 3 of 6 slices, neighbours
    assert set(cal["params"]) == {"z_coupling"} and cal["coupling"] == cal["params"]["z_coupling"] >= 0
    assert cal["table"][0]["preset"] and cal["table"][0]["z_coupling"] == 0.0
    # summary.json records the calibration that ran (calibrate.enabled was given as false)
    assert res.summary["calibrate"]["enabled"] is True and res.summary["calibrate"]["params"] == ["z_coupling"]
    # 3 golden-section points, and the range's end when the best of them is the outermost one
    assert len(cal["table"]) in (4, 5) and all(r["z_coupling"] >= 1e-4 for r in cal["table"][1:])
    assert json.loads((tmp_path / "run" / "calibration.json").read_text())["coupling"] == cal["coupling"]
    assert {tuple(r["batch"]) for r in res.records} == {tuple(f"v_z{z:03d}" for z in range(6))}  # one batch
    assert (tmp_path / "run" / "calibration.png").is_file()
    assert f"z-coupling: weight {cal['coupling']:g}, chosen from the measurements" in report(res.summary)
    # the weight the volume was solved with, beside settings' "auto": in summary.json and the volume's record (audit
    # 2026-12-07: in the calibration's record only; the DICOM description: test_z_coupling_makes_neighbouring_slices_agree)
    assert res.summary["z_coupling"] == "auto" and res.summary["z_coupling_weight"] == cal["coupling"]
    assert res.summary["volumes"]["v"]["z_coupling"] == cal["coupling"]
    (tmp_path / "run" / "records" / "v_z004.json").unlink()  # a slice unfinished: its volume is redone whole
    table = (tmp_path / "run" / "calibration.csv").read_text()
    again = reconstruct_volumes(tmp_path / "v.nii.gz", "nifti", tmp_path / "run", z_coupling="auto", **kw)
    assert again.summary["num_resumed"] == 0 and again.summary["calibration"]["coupling"] == cal["coupling"]
    assert again.summary["z_coupling_weight"] == cal["coupling"]
    assert (tmp_path / "run" / "calibration.csv").read_text() == table  # reused, not calibrated again
    with pytest.raises(RunError, match="auto"):
        reconstruct_volumes(tmp_path / "v.nii.gz", "nifti", tmp_path / "bad", z_coupling="sometimes", **kw)
    with pytest.raises(RunError, match="z_coupling must be a number >= 0 .*got true$"):  # it ran with weight 1
        reconstruct_volumes(tmp_path / "v.nii.gz", "nifti", tmp_path / "bad", z_coupling=True, **kw)
    with pytest.raises(ValueError, match=r"data.volume must be an integer >= 0 \(the volume of a 4-D file, 0-based\), "
                                         r"got 'abc'$"):
        reconstruct_volumes(tmp_path / "v.nii.gz", "nifti", tmp_path / "bad", volume="abc", **kw)
    # one slice: no neighbours, so nothing is calibrated (it cost 29 s and cut DMPlug's budget to 49 iterations)
    one = reconstruct_volumes(example_dicom_folder(tmp_path / "ct"), "dicom", tmp_path / "one", z_coupling="auto",
                              operator="ct_sparse", solver=CHEAP_DPS)
    assert one.summary["calibration"] is None and "none" in str(one.summary["z_coupling"])


def test_training_slices_from_dicom_and_nifti(tmp_path):
    from ipsolve.io import load_training_slices

    write_series(tmp_path / "dcm", n=3, oblique=False)
    x = load_training_slices(tmp_path / "dcm", 32, window="ct_soft_tissue")
    assert x.shape == (3, 1, 32, 32) and x.min() >= -1 and x.max() <= 1
    y = load_training_slices(example_nifti(tmp_path / "nii", "functional.nii"), 16)
    assert y.shape == (3 * 20, 1, 16, 16)  # every slice of every volume of the 4-D file
    nii = example_nifti(tmp_path / "nii3")  # NIfTI records no units: an HU window needs units="HU" (--units HU)
    with pytest.raises(ValueError, match="Hounsfield units"):
        load_training_slices(nii, 16, window="ct_soft_tissue")
    assert load_training_slices(nii, 16, window="ct_soft_tissue", units="HU").shape[1:] == (1, 16, 16)
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_prior", ROOT / "scripts" / "train_prior.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    next_batch, channels, validation, split, _ = train.batches(str(tmp_path / "dcm"), 32, 5,
                                                               torch.Generator().manual_seed(0), val_fraction=0.1)
    assert channels == 1 and next_batch().shape == (5, 1, 32, 32)
    assert validation is None and split.startswith("none (3 image(s) from one source")  # too few to hold out
    # the 4-D file's 20 frames are one scan (one source): a block of its last slices is held out, never drawn
    nii = str(tmp_path / "nii" / "functional.nii")
    next_batch, _, (heldout, compared), split, _ = train.batches(nii, 16, 64, torch.Generator().manual_seed(0),
                                                                 val_fraction=0.1)
    assert split.startswith("the last 6 of the 60 slices") and heldout.shape == (6, 1, 16, 16)
    assert len(compared) == 54 and not any((compared[:, None] == heldout[None]).flatten(2).all(2).any(1))
    drawn = torch.cat([next_batch() for _ in range(10)])
    assert not (drawn[:, None] == heldout[None]).flatten(2).all(2).any()
    # one volume alone: a block of slices at its end
    kept, end_block, what = train.split_heldout(y[:12], ["volume 0"] * 12, 0.25, 0)
    torch.testing.assert_close(end_block, y[9:12])
    assert len(kept) == 9 and "lower bound" in what


# ----------------------------------------------------------------------------------------
# the README command
# ----------------------------------------------------------------------------------------
def test_readme_dicom_command(tmp_path):
    """``ipsolve data=dicom data.path=<folder> operator=ct_sparse`` on the folder made by
    :func:`example_dicom_folder` (5 DPS steps): the NIfTI output sits where the input slice is
    (nibabel's affine of CT_small.dcm, composed with the 128 → 32 px resize), and the DICOM
    output series carries the same geometry."""
    folder = example_dicom_folder(tmp_path / "ct")
    run = tmp_path / "run"
    from test_cli import ipsolve as run_cli

    proc = run_cli("data=dicom", f"data.path={folder}", "operator=ct_sparse", "solver=dps_cpu", "solver.steps=5",
                   "data.write_dicom=true", f"hydra.run.dir={run}", "progress=false", "metrics=[psnr,ssim]",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "volumes/CT_series1.nii.gz" in proc.stdout
    expected = nibabel_affine(pydicom.dcmread(folder / "CT_small.dcm")) @ np.diag([4.0, 4.0, 1.0, 1.0])
    expected[:2, 3] = nibabel_affine(pydicom.dcmread(folder / "CT_small.dcm"))[:2, :3] @ [1.5, 1.5, 0] + \
        nibabel_affine(pydicom.dcmread(folder / "CT_small.dcm"))[:2, 3]
    out = nib.load(run / "volumes" / "CT_series1.nii.gz")
    np.testing.assert_allclose(out.affine, expected, atol=1e-4)
    assert out.shape == (32, 32, 1)
    (derived,), _ = read_dicom(run / "dicom" / "CT_series1")
    np.testing.assert_allclose(derived.affine, expected, atol=1e-4)
    # a run directory inside the input folder: its own DICOM output is not a second input series on a rerun
    for _ in range(2):
        res = reconstruct_volumes(folder, "dicom", folder / "run", solver=CHEAP_DPS, write_dicom=True)
    assert res.summary["num_resumed"] == 1
    volumes, skipped = read_dicom(folder, series="all")  # (read elsewhere, the output is left out, named)
    assert len(volumes) == 1 and any("earlier ipsolve run" in s["reason"] for s in skipped)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["inputs"]["volumes"]["CT_series1"]["window"] == pytest.approx(
        [summary["volumes"]["CT_series1"]["window"]["lo"], summary["volumes"]["CT_series1"]["window"]["hi"]])


def test_a_folder_of_suffixless_dicom_files_points_to_the_volume_readers(tmp_path):
    """``data=folder`` on DICOM files without a suffix: the error names ``data=dicom`` and the
    Python call (found by the "DICM" marker, ``io.sources.is_dicom_file``)."""
    from ipsolve.runner.inputs import collect_items

    folder = example_dicom_folder(tmp_path / "ct")
    for f in list(folder.iterdir()):
        f.rename(folder / "IM0001")
    with pytest.raises(RunError, match=r"data=dicom .*reconstruct_volumes\(path, 'dicom', output_dir\)"):
        collect_items(folder)
