"""Volumes through the runner: ``data=dicom|nifti|fastmri data.path=...``.

Each input volume becomes a stack of slice items (``<volume>_z012``: slice 12 of the input),
windowed as a whole (``data.window``) and resized to the prior's size the way the runner resizes
images (centre square crop, anti-aliased resize: :func:`ipsolve.io.square_crop_resize`); the
runner batches, seeds, resumes and splits them like any images, then rank 0 reassembles every
volume from the float reconstructions (``recon/<slice>.npy``), inverts the window and writes
``volumes/<volume>.nii.gz`` (with ``_initial`` and, with ``samples=k``, ``_std``) in the input's
geometry — the input affine composed with the crop and resize (:func:`ipsolve.io.volume.resized_affine`)
— and, for DICOM input with ``data.write_dicom=true``, a DICOM series ``dicom/<volume>/``.
Nothing is written over an input file.  ``data.z_coupling=w`` couples neighbouring slices
(:mod:`ipsolve.solvers.coupling`).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..notices import shown
from .errors import RunError, flag
from .inputs import Item, Plan
from .kspace import kspace_items
from .reports import report, sigma_text
from .rundir import atomic_write_text, check_writable
from .run import check_some_usable, execute, integer_setting

log = logging.getLogger("ipsolve")
FORMATS = ("dicom", "nifti", "fastmri")


# ----------------------------------------------------------------------------------------
# DICOM / NIfTI → slice items
# ----------------------------------------------------------------------------------------
def own_outputs(out: Path, input_path) -> list[Path]:
    """The folders an input search leaves out: the whole run folder when it sits inside (or beside)
    the input; only the run's volume outputs when the input sits inside the run folder (a
    ``hydra.run.dir`` that holds the data must not hide it)."""
    inside = Path(input_path).expanduser().resolve().is_relative_to(Path(out).resolve())
    return [Path(out) / "dicom", Path(out) / "volumes"] if inside else [Path(out)]


def read_volumes(data, exclude=()):
    """``(volumes, skipped files)`` of ``data.path`` (``data.series``, ``data.volume``; ``exclude``:
    the run directory, when it sits inside a DICOM input folder); a bad ``data.window`` fails
    first, before any file is read."""
    from ..io import parse_window
    from ..io.sources import load_volumes

    parse_window(data.get("window", "auto"))
    units = data.get("units")
    if units not in (None, "HU"):
        raise ValueError(f"data.units must be HU (a NIfTI holding Hounsfield units) or null, got {shown(units)}")
    volumes, skipped = load_volumes(data.format, data.path, series=data.get("series"), volume=data.get("volume"),
                                    exclude=exclude)
    if units:  # NIfTI stores no units: the user says the values are HU (window presets such as ct_soft_tissue apply)
        for v in volumes:
            v.meta["units"] = units
    return volumes, skipped


def image_volume_items(data, prior, volumes) -> tuple[list[Item], list[Plan]]:
    """Items and plans of the DICOM/NIfTI ``volumes`` (``data.window``, ``data.slices``)."""
    from ..io.sources import describe_volume
    from ..io.volume import resized_affine, resolve_window, select_slices, slice_images, window_clip_note

    spec = data.get("window", "auto")
    items, plans = [], []
    size = prior.image_size
    for v in volumes:
        window = resolve_window(spec, v)
        first, last = select_slices(v, data.get("slices"))
        x, crop = slice_images(v, window, size, first, last)
        if prior.channels != 1:  # a colour prior sees grey slices replicated (the output averages them)
            x = x.repeat(1, prior.channels, 1, 1)
        names = [f"{v.name}_z{k:03d}" for k in range(first, last + 1)]
        items += [Item(nm, tensor=x[i:i + 1], volume=v.name, z=first + i) for i, nm in enumerate(names)]
        headers = v.headers[first:last + 1] if v.kind == "dicom" else v.headers
        warnings = list(v.meta.get("warnings", []))
        clipped = window_clip_note(v, window)
        if clipped:  # logged by the caller (rank 0)
            warnings.append(clipped)
        if crop[2] != size:
            warnings.append(f"slices resized from {crop[2]}×{crop[2]} (crop of {v.shape[0]}×{v.shape[1]}) to the "
                            f"prior's {size}×{size}; the output volume keeps that grid (its affine says where it is)")
        plans.append(Plan(name=v.name, kind=v.kind, window=window, first=first, last=last, size=size,
                          affine=resized_affine(v.affine, crop, size, first), slice_names=names, files=list(v.files),
                          source=describe_volume(v), crop=crop, headers=headers, truth=x, warnings=warnings,
                          positions=v.meta["positions"][first:last + 1] if "positions" in v.meta else None))
    return items, plans


# ----------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------
def output_paths(out: Path, plan: Plan, samples: int, write_dicom: bool) -> list[Path]:
    paths = [out / "volumes" / f"{plan.name}{s}.nii.gz" for s in ("", "_initial")]
    if samples > 1:
        paths.append(out / "volumes" / f"{plan.name}_std.nii.gz")
    if write_dicom:
        paths += [out / "dicom" / plan.name / f"IM{k:04d}.dcm" for k in range(len(plan.slice_names))]
    return paths


def run_volume_config(cfg, output_dir: Path, state=None, extra_summary: dict | None = None,
                      explicit_operator=(), settings_given=None):
    """:func:`ipsolve.runner.run_config` for ``data.format`` dicom / nifti / fastmri (``settings_given``: the
    operator settings the user typed, checked against the operator's mode; None: ``explicit_operator``).
    The output directory's lock is held throughout: the mask, the volumes and the summary are written
    around the slices' run."""
    from ..notices import main_process
    from .lock import run_lock

    with run_lock(Path(output_dir), main_process(), state):
        return _run_volume_config(cfg, output_dir, state, extra_summary, explicit_operator, settings_given)


def _run_volume_config(cfg, output_dir: Path, state, extra_summary, explicit_operator, settings_given):
    """:func:`run_volume_config` once its folder is held."""
    from omegaconf import OmegaConf

    from ..io import MissingDependency
    from ..io.volume import check_not_inputs
    from .processes import process_device, process_state
    from .reports import METRICS
    from .settings import build_prior, to_plain

    out = check_writable(output_dir)
    data = cfg.data
    fmt = data.format
    if fmt not in FORMATS:
        raise RunError(f"data.format must be one of {', '.join(FORMATS)}, got {shown(fmt)}")
    if OmegaConf.is_missing(data, "path"):
        raise RunError(f"data.path is required with data={fmt}: ipsolve data={fmt} data.path=PATH")
    samples = integer_setting("samples", cfg.get("samples", 1), 1, "posterior samples per image")
    write_dicom = flag("data.write_dicom", data.get("write_dicom", False))
    if write_dicom and fmt != "dicom":
        raise RunError(f"data.write_dicom=true writes a DICOM series with the input's patient and study; data={fmt} "
                       f"has none (the NIfTI output volumes/<name>.nii.gz is written in any case)")
    try:  # the files first: a wrong path, series or window fails before the prior is loaded
        if fmt == "fastmri":
            from ..io import parse_window, read_fastmri

            parse_window(data.get("window", "auto"))
            volumes, skipped = read_fastmri(data.path)
        else:
            volumes, skipped = read_volumes(data, exclude=own_outputs(out, data.path))
    except (ValueError, FileNotFoundError, MissingDependency) as err:
        raise RunError(str(err)) from None
    if state is None:
        state = process_state(cfg.get("device", "auto"))
    device = process_device(cfg.get("device", "auto"), state)
    with state.local_main_process_first():
        prior = build_prior(cfg.prior, device)
    operator, measurements, explicit = cfg.operator, False, tuple(explicit_operator)
    try:
        if fmt == "fastmri":
            items, plans, operator, measurements, explicit = kspace_items(data, prior, cfg.operator, explicit, out,
                                                                          volumes)
            if plans and plans[0].warnings[:1] and plans[0].warnings[0].startswith("the file's own sampled columns") \
                    and state.process_index == 0:
                log.info("%s", plans[0].warnings[0])
        else:
            items, plans = image_volume_items(data, prior, volumes)
            # what the input's reading found (no positions, a gap, complex or non-finite voxels) and the window's
            # clipping: warned as read; the resize to the prior's size is the report's note only
            for plan, note in ((p, w) for p in plans for w in p.warnings if not w.startswith("slices resized")):
                if state.process_index == 0:
                    log.warning("volume %s: %s", plan.name, note)
        for plan in plans:  # nothing may be written over an input, checked before any work
            check_not_inputs(output_paths(out, plan, samples, write_dicom), plan.files)
    except (ValueError, FileNotFoundError, MissingDependency) as err:
        raise RunError(str(err)) from None
    trained = getattr(prior, "training_record", None) or {}
    if trained.get("data_kind") in ("dicom", "nifti") and str(trained.get("window")) != str(data.get("window", "auto")):
        note = (f"the prior was trained on scans with --window {trained.get('window')} (its training.json); this run "
                f"maps intensities with data.window={data.get('window', 'auto')}, so the prior sees other values than "
                f"it learned: use data.window={trained.get('window')}")
        if state.process_index == 0:
            log.warning("%s", note)
        for plan in plans:
            plan.warnings.append(note)
    sigma, estimate = kspace_sigma(cfg.sigma, plans, state.process_index == 0) if fmt == "fastmri" else (cfg.sigma, None)
    if estimate is not None:  # summary.json's sigma_estimate, as a 2-D run's sigma=auto records it
        extra_summary = {**(extra_summary or {}), "sigma_estimate": estimate}
    inputs = {"format": fmt, "path": str(data.path), "window": str(data.get("window", "auto")),
              "volumes": {p.name: p.settings() for p in plans}}
    result = execute(items, operator=operator, solver=cfg.solver, prior=prior, sigma=sigma,
                     noise=cfg.get("noise", "gaussian"), seed=cfg.seed, batch_size=data.get("batch_size", 4),
                     measurements=measurements, output_dir=out, metrics=to_plain(cfg.get("metrics", METRICS)),
                     lpips_net=cfg.get("lpips_net", "alex"), grid_max=cfg.get("grid_max", 8),
                     progress=flag("progress", cfg.get("progress", True)), state=state, device=device,
                     config_yaml=OmegaConf.to_yaml(cfg, resolve=True), extra_summary=extra_summary,
                     return_images=False, explicit_operator=explicit, samples=samples,
                     # (kspace_items adds the mask file's provenance to explicit: not the user's)
                     settings_given=tuple(explicit_operator) if settings_given is None else tuple(settings_given),
                     review_below=cfg.get("review_below"), review_coverage=cfg.get("review_coverage"),
                     input_settings=inputs, keep_arrays=True, coupling=data.get("z_coupling"),
                     threads=cfg.get("threads", "auto"), calibrate=to_plain(cfg.get("calibrate")),
                     select=cfg.get("select", "mean"), deterministic=cfg.get("deterministic", False))
    if state.process_index == 0:
        summary = result.summary
        summary["input_skipped"] = skipped
        summary["volumes"] = {}
        for plan in plans:
            try:
                summary["volumes"][plan.name] = write_volume(out, plan, result.records, summary, samples, write_dicom)
            except (ValueError, MissingDependency) as err:
                raise RunError(str(err)) from None
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=str))
        atomic_write_text(out / "report.txt", report(summary) + "\n")  # again, with the volumes' lines
    return result


KSPACE_METHOD = "k-space noise in the readout-oversampling margin (ipsolve.io.fastmri.kspace_noise_std)"


def kspace_sigma(sigma, plans: list, main_process: bool):
    """``(the noise level of a fastMRI run, the estimate's record for summary.json or None)``: ``sigma=auto`` takes each file's estimate from its
    readout-oversampling margin (:func:`ipsolve.io.fastmri.kspace_noise_std`, on the solver's scale;
    the median over files, which should agree: one σ serves the run) — a one-line
    :class:`RunError` where a file has none; a number is kept, with a warning when it is more than
    twice or less than half the files' estimate (the residual flags and calibration assume it)."""
    estimates = {p.name: p.source.get("noise_sigma") for p in plans}
    known = [v for v in estimates.values() if v is not None]
    if str(sigma) == "auto_each":
        raise RunError("sigma=auto_each is for folders of 2-D measurements; a fastMRI run takes one sigma: sigma=auto "
                       "(the files' median; run files of unlike noise separately) or sigma=VALUE")
    if str(sigma) == "auto":
        missing = [p for p in plans if p.source.get("noise_sigma") is None]
        if missing:
            why = missing[0].source.get("noise_estimate", "none").removeprefix("none: ")
            raise RunError(f"sigma=auto: the noise of {', '.join(p.name for p in missing)} cannot be measured: {why}; "
                           f"give sigma=VALUE (the std of one real or imaginary part of the k-space noise, × size/W, "
                           f"divided by the window's hi)")
        value = float(np.median(known))
        record = {"auto": True, "method": KSPACE_METHOD, "median": value, "per_image": estimates}
        if main_process:
            log.info("sigma=auto: %.4g, the k-space noise in the readout-oversampling margin (%s)", value,
                     ", ".join(f"{n} {v:.4g}" for n, v in estimates.items()))
            if max(known) > 1.5 * min(known):
                log.warning("sigma=auto: the files' noise levels differ (%.4g to %.4g) and one sigma serves the run: "
                            "run them separately", min(known), max(known))
        return value, record
    if known and main_process:
        try:
            given, est = float(sigma), float(np.median(known))
        except (TypeError, ValueError):
            return sigma, None  # execute names what is wrong with it
        if given > 2 * est or given < est / 2:
            log.warning("sigma is %g, but the k-space noise in the files' readout-oversampling margin is %.4g on "
                        "this scale (sigma=auto takes it): the residual flags and calibration assume sigma",
                        given, est)
    record = {"auto": False, "method": KSPACE_METHOD, "median": float(np.median(known)), "per_image": estimates} \
        if known else None
    return sigma, record


def _stack(out: Path, records: dict, names: list[str], key: str) -> np.ndarray | None:
    """Slices ``(S, S, n)`` (channels averaged) from the ``key`` arrays of the records, or None."""
    arrays = []
    for nm in names:
        rel = records[nm]["outputs"].get(key)
        if rel is None:
            return None
        arrays.append(np.load(out / rel).astype(np.float64).mean(0))
    return np.stack(arrays, axis=-1)


def volume_metrics(x: np.ndarray, truth: np.ndarray) -> dict:
    """PSNR over the whole volume (data range 1 on the window's [0, 1]) and SSIM: scikit-image's
    3-D SSIM (7×7×7 window) when the volume has at least 7 slices, with the mean of the slices' 2-D SSIM."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a, b = np.clip((x + 1) / 2, 0, 1), np.clip((truth + 1) / 2, 0, 1)
    out = {"psnr": float(peak_signal_noise_ratio(b, a, data_range=1.0)),
           "ssim_mean_slice": float(np.mean([structural_similarity(b[..., k], a[..., k], data_range=1.0)
                                             for k in range(a.shape[-1])]))}
    out["ssim_3d"] = float(structural_similarity(b, a, data_range=1.0)) if a.shape[-1] >= 7 else None
    return out


def write_volume(out: Path, plan: Plan, records: list[dict], summary: dict, samples: int, write_dicom: bool) -> dict:
    """Reassemble one volume from its slices' records and write its files; what summary.json says about it."""
    from .. import __version__
    from ..io.nifti import write_nifti

    by_name = {r["name"]: r for r in records}
    info = {"input": plan.source, "window": plan.window.record(), "slices": [plan.first, plan.last],
            "size": plan.size, "crop": (dict(zip(("row0", "col0", "side"), plan.crop)) if plan.crop else None),
            "affine": np.round(plan.affine, 8).tolist(), "slice_names": plan.slice_names,
            "warnings": plan.warnings, "outputs": {}}
    missing = [nm for nm in plan.slice_names if nm not in by_name]
    if missing:
        info["warnings"].append(f"{len(missing)} slice(s) not reconstructed ({', '.join(missing[:3])}"
                                f"{', ...' if len(missing) > 3 else ''}): no volume file written")
        log.warning("volume %s: %s", plan.name, info["warnings"][-1])
        return info
    recon = _stack(out, by_name, plan.slice_names, "recon_data")
    initial = _stack(out, by_name, plan.slice_names, "initial_data")
    op, sv, pr = summary["operator"], summary["solver"], summary["prior"]
    # the slices' coupling changes the pixels: said with them (a volume of one slice has no neighbour: not coupled)
    weight = summary.get("z_coupling_weight") if len(plan.slice_names) > 1 else None
    coupled = "" if weight is None else f"; z-coupling weight {weight:g}"
    if weight is not None:
        info["z_coupling"] = weight
    made = (f"ipsolve {__version__} {sv['name']} prior {pr['source']} from {op['name']} data; "
            f"window [{plan.window.lo:g}, {plan.window.hi:g}]{coupled}")
    template = plan.headers[0] if plan.kind == "nifti" else None
    vol_dir = out / "volumes"
    outputs = info["outputs"]
    for key, values in (("recon", recon), ("initial", initial)):
        path = vol_dir / f"{plan.name}{'' if key == 'recon' else '_' + key}.nii.gz"
        write_nifti(path, plan.window.invert(values), plan.affine, made, template, protected=plan.files)
        outputs[key] = str(path.relative_to(out))
    if samples > 1:
        std = _stack(out, by_name, plan.slice_names, "std_data")
        if std is not None:
            path = vol_dir / f"{plan.name}_std.nii.gz"
            write_nifti(path, plan.window.scale(std), plan.affine, "std of " + made, template, protected=plan.files)
            outputs["std"] = str(path.relative_to(out))
    if write_dicom:
        from ..io.dicom import write_dicom_series

        description = (f"ipsolve {__version__}: {sv['name']} reconstruction with the prior {pr['source']} "
                       f"({pr['image_size']} px) from simulated {op['name']} measurements "
                       f"(sigma {sigma_text(summary['sigma'])}) "
                       f"of series {plan.source.get('series_uid')}; intensity window [{plan.window.lo:g}, "
                       f"{plan.window.hi:g}] {plan.source.get('units') or ''}; in-plane "
                       f"{plan.crop[2] if plan.crop else '?'} -> {plan.size} px{coupled}")
        files = write_dicom_series(out / "dicom" / plan.name, plan.window.invert(recon), plan.affine, plan.headers,
                                   plan.window, description, f"ipsolve {sv['name']} {op['name']}",
                                   protected=plan.files, positions=plan.positions)
        outputs["dicom"] = str((out / "dicom" / plan.name).relative_to(out))
        info["dicom_files"] = len(files)
    if plan.truth is not None:
        truth = plan.truth.float().mean(1).permute(1, 2, 0).numpy().astype(np.float64)
        info["metrics"] = volume_metrics(recon, truth)
        info["initial_metrics"] = volume_metrics(initial, truth)
    return info


# ----------------------------------------------------------------------------------------
# the Python API
# ----------------------------------------------------------------------------------------
def reconstruct_volumes(path, format: str, output_dir, *, operator="ct_sparse", solver="dmplug_cpu",
                        prior="phantom_ddpm", sigma: float | str = 0.01, seed: int = 0, samples: int = 1, device=None,
                        progress: bool = False, metrics=("psnr", "ssim"), calibrate=False, threads="auto",
                        deterministic: bool = False, **data_options):
    """Reconstruct the volumes of ``path`` (``format``: dicom, nifti or fastmri) into
    ``output_dir``, as ``ipsolve data=<format> data.path=<path>`` does; ``data_options`` are the
    ``conf/data/<format>.yaml`` settings (``window``, ``series``, ``volume``, ``slices``,
    ``z_coupling``, ``write_dicom``, ``mask``, ``batch_size``).  ``operator`` / ``solver`` /
    ``prior``: preset names or mappings; ``calibrate``: as :func:`ipsolve.reconstruct`'s (with
    ``z_coupling="auto"`` its options also size the weight's calibration); ``threads`` and
    ``deterministic`` as :func:`ipsolve.reconstruct`'s.  ``sigma``: the noise std of the measurements
    (README, "What σ means here"); ``"auto"`` for fastMRI k-space (estimated from the file's noise).
    ``seed``, ``samples``, ``metrics`` (with a volume's ground truth), ``device``, ``progress``: as
    :func:`ipsolve.reconstruct`'s.  Returns the :class:`~ipsolve.runner.Reconstruction`
    (``summary["volumes"]`` says what was written where)."""
    from omegaconf import OmegaConf

    from .settings import load_preset

    if isinstance(format, str) and format.lower() in FORMATS:
        format = format.lower()  # 'DICOM'
    if format not in FORMATS:
        raise RunError(f"format must be one of {', '.join(FORMATS)}, got {shown(format)}")
    data = load_preset("data", format) or {"format": format}
    options = sorted(set(data) - {"format", "path"})  # (those two are arguments of their own)
    unknown = sorted(set(data_options) - set(options))
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], options, n=1)
        raise RunError(f"unknown data option(s) {', '.join(map(repr, unknown))} for {format}"
                       + (f" (did you mean {close[0]!r}?)" if close else "") + f"; options: {', '.join(options)}")
    data.update(data_options, path=str(path))
    cfg = OmegaConf.create({"data": data, "operator": operator, "solver": solver, "prior": prior, "sigma": sigma,
                            "seed": seed, "samples": samples, "device": device or "auto", "progress": progress,
                            "metrics": metrics, "calibrate": calibrate, "threads": threads,
                            "deterministic": deterministic})
    result = run_volume_config(cfg, Path(output_dir), explicit_operator=tuple(operator) if isinstance(operator, dict)
                               else (), settings_given=())  # (a mapping may be a whole preset: its keys all present)
    check_some_usable(result.summary)
    return result
