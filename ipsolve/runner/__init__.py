"""The runner: data, batching, per-image seeds, multi-process splitting, outputs, resume,
metrics and summaries.  The command line (:mod:`ipsolve.cli`) and the Python API
(:func:`reconstruct`) are two thin doors onto :func:`execute`.

Run directory layout (every file written under a temporary name, then renamed; the per-image
record is written last, so an image counts as finished only when all its files exist)::

    recon/<name>.png          reconstruction
    measurement/<name>.png    the measurement y (shown at the image size: nearest upsampling for SR)
    measurement/<name>.npy    the measurement y exactly (what data.measurements=true reads first)
    initial/<name>.png        the operator's initial guess from y (bicubic for SR, ...)
    kernel/<name>.png         estimated blur kernel (blind deblurring; scaled to its maximum)
    records/<name>.json       metrics, solver info, seeds, rank
    metrics.csv, summary.json, grid.png, config.yaml
    volumes/<volume>.nii.gz   (data=dicom|nifti|fastmri) each volume reassembled from recon/<slice>.npy

The parts: :mod:`.settings` (names and configs → objects), :mod:`.inputs` (images and their
names), :mod:`.rundir` (the run directory and resume), :mod:`.processes` (process state and
gathering), :mod:`.batches` (the batch loop), :mod:`.reports` and :mod:`.grid` (summaries,
reports, sweep tables and images), :mod:`.threads` (torch's thread count), :mod:`.determinism`
(``deterministic=true``), :mod:`.progress`
(progress as log lines), :mod:`.calibration` (``calibrate=true``), :mod:`.run` (:func:`execute` and
its doors), :mod:`.volumes` and :mod:`.kspace` (DICOM/NIfTI/fastMRI volumes as slice items and
back, :func:`reconstruct_volumes`).
"""
from __future__ import annotations

from .errors import RunError
from .grid import make_grid
from .inputs import DEMO_DATA, Item, collect_items, derive_seed, load_measurement, load_truth, resolve_data_path
from .processes import process_state
from .reports import CSV_INFO, METRICS, format_stats, metrics_csv, report, summarize, summarize_sweep
from .job import run_config
from .run import Reconstruction, execute, reconstruct
from .rundir import atomic_write_text, check_writable, fingerprint, is_finished, read_record, remove_temp_files
from .settings import build_operator, build_prior, build_solver, conf_dir, describe, load_preset, prior_source
from .volumes import reconstruct_volumes

__all__ = ["RunError", "conf_dir", "load_preset", "build_operator", "build_solver", "build_prior", "prior_source",
           "describe", "Item", "collect_items", "resolve_data_path", "load_truth", "load_measurement", "derive_seed",
           "DEMO_DATA", "atomic_write_text", "check_writable", "remove_temp_files", "read_record", "is_finished",
           "fingerprint", "process_state", "Reconstruction", "execute", "reconstruct", "run_config", "report",
           "format_stats", "summarize", "summarize_sweep", "metrics_csv", "CSV_INFO", "make_grid", "METRICS",
           "reconstruct_volumes"]
