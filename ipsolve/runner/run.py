"""The run: :func:`execute` and its two doors, the Python API (:func:`reconstruct`) and the
command line's job (:func:`ipsolve.runner.job.run_config`)."""
from __future__ import annotations

import contextlib
import json
import logging
import math
import numbers
import time
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..notices import bars_render, shown
from .batches import Job, run_batches
from .calibration import calibrate_job, calibration_options, effective_options, nothing_to_choose
from .determinism import deterministic_algorithms
from .errors import RunError, flag
from .lock import run_lock
from ..operators.base import operator_label
from ..solvers.base import RESIDUAL_WARNING
from ..selective import plot_risk_coverage, review_decisions, risk_coverage_table, tied_at_cut
from .grid import write_grid
from .noise import measurement_sigma
from .inputs import (Item, check_measurement_provenance, collect_items, converted_channels, describe_spec,
                     input_digest, measurement_origin, recorded_settings)
from .processes import all_gather, broadcast, gather_records, local_items, process_device, process_state
from .reports import METRICS, metrics_csv, report, resize_words, summarize
from .rundir import atomic_write_text, check_writable, fingerprint, prepare_resume, unselected_records
from .settings import build_models, check_fits, run_settings
from .threads import torch_threads

log = logging.getLogger("ipsolve")


@dataclass
class Reconstruction:
    """What a run returns: ``x`` (``(N, C, H, W)`` in [-1, 1], CPU; None with
    ``return_images=False``; images resumed from an earlier run are read back from their 8-bit
    PNG, within 1/255, unless their float values were kept), one record per finished image
    (same order), the names, the images skipped as unreadable or invalid, the summary and the
    output directory (or None).
    Unpacks as ``x, records = ipsolve.reconstruct(...)``."""

    x: object
    records: list[dict]
    names: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    output_dir: Path | None = None

    def __iter__(self):
        return iter((self.x, self.records))


def execute(items: list[Item], *, operator, solver, prior, sigma: float = 0.01, noise: str = "gaussian",
            seed: int = 0, batch_size: int = 4, measurements: bool = False, output_dir=None,
            metrics: Sequence[str] = METRICS, lpips_net: str = "alex", grid_max: int = 8, progress: bool = True,
            state=None, device=None, config_yaml: str | None = None, extra_summary: dict | None = None,
            return_images: bool = True, explicit_operator: Sequence[str] = (), samples: int = 1,
            review_below: float | None = None, review_coverage: float | None = None,
            threads="auto", calibrate=False, select: str = "mean", input_settings: dict | None = None,
            keep_arrays: bool = False, coupling: float | str | None = None, deterministic: bool = False,
            settings_given: Sequence[str] | None = None, calibrate_off: bool = False) -> Reconstruction:
    """Reconstruct ``items``: split across processes, batched within each, every image seeded
    from (``seed``, name), skipping the images whose record already exists in ``output_dir``.

    ``operator`` / ``solver`` / ``prior``: objects, names or config mappings (see
    :func:`build_operator`, :func:`build_solver`, :func:`build_prior`).  Unreadable images are
    skipped with a logged reason.  Rank 0 writes ``metrics.csv``, ``summary.json`` and
    ``grid.png``; every rank returns the full list of records.  ``explicit_operator``: the
    operator settings the user gave (``seed``, ``mask``; ``*`` for an operator object), which
    measurements need when the operator draws hidden state from its seed; ``settings_given``: those the
    user gave, where they differ (a recorded operator, fastMRI's mask file: :func:`check_settings_used`;
    None: ``explicit_operator``).  ``samples=k``: k
    posterior samples per image (``mean/``, ``std/``, ``samples/``).  ``review_below`` (a
    reliability threshold) or ``review_coverage`` (the fraction to accept, most reliable first)
    flags the other images for review in ``summary.json`` and ``metrics.csv``; a reconstruction
    that fits the measurement worse than the initial guess is never accepted.  ``threads``:
    torch's CPU threads per process during the run, ``"auto"`` (:mod:`.threads`) or a number.
    ``calibrate``: ``True`` or a mapping (``images``, ``method``, ``budget``, ``holdout``,
    ``params``; :mod:`.calibration`) — choose the solver's parameters from the first images'
    measurements, never their ground truth, then solve all.  ``input_settings``: how the inputs
    were made (e.g. a volume's window), part of the settings and the resume fingerprint.
    ``keep_arrays``: also write ``recon/``, ``initial/`` (and ``std/``) as float32 ``.npy``, the exact
    values (the PNGs are 8-bit; the command line's ``save_arrays=true``; volume runs always).  ``coupling``: a
    z-coupling weight, or ``"auto"`` to choose it from the first volume's measurements
    (:mod:`.calibration`); the items' ``volume``/``z`` say which slices are neighbours, each volume
    is solved in one batch and handed to one process (see :mod:`ipsolve.solvers.coupling`).
    ``deterministic``: torch's deterministic algorithms during the run, for bit-reproducible GPU
    runs (:mod:`.determinism`; ``summary.json``'s ``deterministic`` names any operation without a
    deterministic kernel that ran anyway, as rank 0 met them)."""
    start = time.perf_counter()
    batch_size, sigma = check_arguments(batch_size, noise, sigma, measurements)
    metrics = metric_names(metrics, lpips_net)
    seed = integer_setting("seed", seed, None, "the run's seed: each image's noise and solver seeds derive from it")
    grid_max = integer_setting("grid_max", grid_max, 0, "the most images in grid.png; 0: no grid")
    if review_below is not None and (isinstance(review_below, bool) or not isinstance(review_below, (int, float))
                                     or not math.isfinite(review_below) or review_below > 0):
        # (NaN and inf reached summary.json as non-standard JSON; a positive threshold flagged every image)
        raise RunError(f"review_below must be a finite number <= 0 (a reliability threshold; reliability is <= 0, 0 "
                       f"the best) or null, got {shown(review_below)}")
    if review_coverage is not None and (isinstance(review_coverage, bool) or not isinstance(review_coverage, (int, float))
                                        or not 0 < review_coverage <= 1):
        raise RunError(f"review_coverage must be a fraction in (0, 1] (of the images accepted, most reliable first) "
                       f"or null, got {shown(review_coverage)}")
    if review_below is not None and review_coverage is not None:  # (review_decisions' check, after all the work)
        raise RunError("give review_below (a reliability threshold) or review_coverage (a fraction), not both")
    calibrate = calibration_options(calibrate)
    if select not in ("mean", "residual"):
        raise RunError(f"select must be 'mean' or 'residual' (with samples=k: the mean, or each image's sample of "
                       f"smallest residual), got {shown(select)}")
    samples = integer_setting("samples", samples, 1, "posterior samples per image")
    try:
        review_decisions([], review_below, review_coverage)  # checks the two settings before any work
    except ValueError as err:
        raise RunError(str(err)) from None
    out = check_writable(Path(output_dir)) if output_dir is not None else None
    if state is None:
        state = process_state(device)
    from ..operators.base import InputWarning
    from ..solvers.calibration import CalibrationWarning

    from ..operators import Operator

    # the runner names each batch's images on the operator (per-image masks, coil maps): a caller's
    # operator object gets its own naming back, or a later solve(y, op) would use the run's masks
    # (only operators that report their naming: a user's set_images need not take None)
    restore = isinstance(operator, Operator) and type(operator).image_names is not Operator.image_names
    with torch_threads(threads, state.num_processes) as chosen, deterministic_algorithms(deterministic) as determinism, \
            warnings.catch_warnings(), \
            _restore_image_names(operator if restore else None, operator.image_names() if restore else None):
        warnings.simplefilter("ignore", InputWarning)  # logged once by _execute instead of at every measure and solve
        warnings.simplefilter("ignore", CalibrationWarning)  # logged by the calibration and in the report
        if state.process_index == 0:
            log.info("torch threads: %d per process (%s)", chosen["threads"], chosen["reason"])
            if determinism["enabled"]:
                log.info("deterministic algorithms: on (torch.use_deterministic_algorithms, warn-only; cuDNN "
                         "deterministic, not benchmarking)")
        options = _Options(sigma=sigma, noise=noise, seed=seed, batch_size=batch_size, measurements=measurements,
                           out=out, metrics=metrics, lpips_net=lpips_net, grid_max=grid_max, progress=progress,
                           device=device, config_yaml=config_yaml,
                           extra_summary={"threads": chosen, "deterministic": determinism, **(extra_summary or {})},
                           return_images=return_images,
                           explicit_operator=explicit_operator, samples=samples, review_below=review_below,
                           review_coverage=review_coverage, start=start, calibrate=calibrate, select=select,
                           input_settings=input_settings, keep_arrays=keep_arrays, coupling=coupling,
                           deterministic=determinism["enabled"], calibrate_off=calibrate_off,
                           settings_given=explicit_operator if settings_given is None else settings_given)
        with run_lock(out, state.process_index == 0, state):  # one run at a time per output directory
            return _execute(items, operator, solver, prior, state, options)


@dataclass(frozen=True)
class _Options:
    """:func:`execute`'s settings once checked (see its docstring); ``out`` is the checked output
    directory, ``start`` the run's start time, ``calibrate`` :func:`calibration_options`' mapping."""

    sigma: float | str  # "auto" / "auto_each" until _execute estimates it (given measurements)
    noise: str
    seed: int
    batch_size: int
    measurements: bool
    out: Path | None
    metrics: Sequence[str]
    lpips_net: str
    grid_max: int
    progress: bool
    device: object
    config_yaml: str | None
    extra_summary: dict
    return_images: bool
    explicit_operator: Sequence[str]
    settings_given: Sequence[str]  # the operator settings the user gave (check_settings_used)
    samples: int
    review_below: float | None
    review_coverage: float | None
    start: float
    calibrate: dict
    select: str
    input_settings: dict | None
    keep_arrays: bool
    coupling: float | str | None
    deterministic: bool = False
    calibrate_off: bool = False  # reconstruct(calibrate=False) given: a solver's "auto" values are refused, not calibrated


@contextlib.contextmanager
def _restore_image_names(operator, names):
    try:
        yield
    finally:
        if operator is not None:
            operator.set_images(names)


def _execute(items, operator, solver, prior, state, o: _Options) -> Reconstruction:
    """:func:`execute` once its arguments are checked (``o``) and the thread count is set."""
    from ..operators.base import sigma_scale_note

    sigma_each = None  # sigma=auto_each: each image's own estimate, by name
    sigma_notes = []  # what the measurements' noise estimate says about sigma (given measurements)
    terminal = bars_render()
    log_progress = bool(o.progress) and not terminal  # output to a file: log lines instead of bar frames
    progress = bool(o.progress) and terminal
    device = process_device(o.device, state)
    operator, solver, prior, load_warnings = build_models(operator, solver, prior, state=state, device=device,
                                                          progress=progress)
    check_fits(solver, operator, prior)
    auto = tuple(getattr(solver, "auto_params", ()) or ())
    if o.calibrate_off and auto:  # (it calibrated them anyway: an audit, 2026-12-07; solve() refuses alike)
        from ..calibration_settings import auto_switched_off

        raise RunError(auto_switched_off(auto, "the measurements"))
    check_operator_takes(operator, prior)
    check_settings_used(operator, o.settings_given)
    if o.noise == "poisson" and not o.measurements:
        from ..operators.base import check_poisson

        try:
            check_poisson(operator)
        except ValueError as err:
            raise RunError(str(err)) from None
    if o.measurements:
        check_measurement_provenance(operator, o.explicit_operator, measurement_origin(items))
        sigma, estimate, sigma_notes = measurement_sigma(o.sigma, items, operator, prior, device,
                                                         measurement_origin(items) is not None,
                                                         state.process_index == 0)
        if o.sigma == "auto_each":  # each image's σ̂, or why it has none (skipped by the batch that reads it)
            sigma_each = {**dict(estimate["per_image"]), **estimate.get("not_estimated", {})}
        o = replace(o, sigma=sigma, extra_summary={**o.extra_summary, **({"sigma_estimate": estimate} if estimate else {})})
    notes = load_warnings + sigma_notes + input_warnings(items, prior, o.measurements, state.process_index, operator,
                                                         o.sigma)
    from ..solvers import SELECT_ONE_SAMPLE

    for note in (operator.single_run_note if o.samples == 1 else None, sigma_scale_note(o.sigma),
                 kernel_note(operator, prior),
                 SELECT_ONE_SAMPLE if o.select == "residual" and o.samples == 1 else None):
        if note:
            notes.append(note)
            if state.process_index == 0:
                log.warning("%s", note)
    from ..metrics import lpips_available, lpips_unavailable_message

    unavailable = ({"lpips": lpips_unavailable_message(o.lpips_net)}  # logged where LPIPS is first asked for
                   if "lpips" in o.metrics and not o.measurements and not lpips_available(o.lpips_net) else {})
    resized = None if o.measurements else resized_inputs(items, prior, state.process_index)
    settings = run_settings(operator, solver, prior, sigma=o.sigma, noise=o.noise, seed=o.seed,
                            measurements=o.measurements)
    if o.samples > 1:
        settings["samples"] = o.samples
        settings["select"] = o.select
    if o.input_settings:
        settings["inputs"] = o.input_settings
    coupling = None if o.coupling is None else check_coupling(o.coupling, items, solver)
    if coupling is not None:
        settings["z_coupling"] = coupling
        if coupling == "auto" and not has_neighbours(items):  # nothing to couple: calibrating the weight (and a
            if state.process_index == 0:                       # plug-in solver's budget with it) changes nothing
                log.warning("data.z_coupling=auto: every volume has one slice, so there are no neighbours to couple; "
                            "no coupling (the weight is not calibrated)")
            coupling = None
            settings["z_coupling"] = "auto (one slice per volume: none)"
    calibrate = effective_options(o.calibrate, solver, coupling)
    note = nothing_to_choose(o.calibrate, calibrate, solver, operator, prior)
    if note:  # (a calibrate=true sweep over solvers failed DDRM's job: an audit, 2026-12-07)
        calibrate = {**calibrate, "enabled": False}
        notes.append(note)
        if state.process_index == 0:
            log.warning("%s", note)
    elif calibrate["enabled"] and calibrate["params"] == [] and o.calibrate.get("params") is None \
            and state.process_index == 0:
        log.info("calibrate=true: solver %s declares no parameters to choose; it is compared as given with the "
                 "operator's initial guess (as calibrate.params=[])", solver.name)
    if sigma_each is not None:
        check_sigma_each(calibrate["enabled"], coupling, o.batch_size, state.process_index == 0)
        settings["sigma_each"] = True  # fingerprinted: the images' σ are their own, not the median's
    if calibrate["enabled"]:  # recorded as it runs (solver.X=auto turns it on); a resume calibrates alike
        # comparison_splits changes no reconstruction, only the comparison calibration.json reports: not fingerprinted
        settings["calibrate"] = {**{k: v for k, v in calibrate.items() if k != "comparison_splits"},
                                 "auto": list(getattr(solver, "auto_params", ()) or ())}
    job = Job(operator=operator, solver=solver, prior=prior, sigma=o.sigma, noise=o.noise, seed=o.seed,
              measurements=o.measurements, metrics=list(o.metrics), lpips_net=o.lpips_net, device=device,
              rank=state.process_index, world=state.num_processes, out=o.out,
              # sigma=auto_each: no image is solved with the median, which moves with the selection (a resume on more
              # or fewer images was refused as "different settings": an audit, 2026-12-07); each image's σ is its own
              fingerprint=fingerprint(settings if sigma_each is None else {**settings, "sigma": "auto_each"}),
              samples=o.samples, select=o.select, keep_arrays=o.keep_arrays, coupling=coupling,
              own_measurements=bool(o.measurements and measurement_origin(items) is not None),
              deterministic=o.deterministic, sigma_each=sigma_each)
    # recorded, not fingerprinted: the networks' layout (channels_last="auto": NHWC on a CPU) changes
    # rounding only, so a run may resume on another device
    settings["prior"]["memory_format"] = prior.memory_format
    settings["prior"].update(prior_description(prior))
    if getattr(prior, "memory_options", None):  # gradient checkpointing, VAE tiling/slicing as given
        settings["prior"]["memory_options"] = prior.memory_options
    names = [it.name for it in items]
    done, pending = decide_resume(state, o.out, names, job.fingerprint, o.config_yaml,
                                  digest_of=lambda nm, by_name={it.name: it for it in items}: input_digest(by_name[nm]))
    if coupling is not None:  # a coupled volume is redone whole: its slices are solved together
        unfinished = {it.volume for it in items if it.name in pending}
        pending = [it.name for it in items if it.volume in unfinished]
        done = {nm: rec for nm, rec in done.items() if nm not in set(pending)}
    log_start(job, settings, names, done, pending)
    others = unselected_records(o.out, names) if state.process_index == 0 else []
    if others:
        notes.append(f"{o.out} also holds {len(others)} finished image(s) this run did not select "
                     f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}; a smaller data.max_images, or "
                     f"other inputs): this summary, metrics.csv, the report and the grid cover the {len(names)} "
                     f"selected; run again on all of the inputs to summarise all")
        log.warning("%s", notes[-1])
    note = resumed_without_metrics(done, job.metrics, o.measurements)
    if note:
        notes.append(note)
        if state.process_index == 0:
            log.warning("%s", note)
    calibration = calibrate_job(job, items, calibrate, state) if pending else finished_calibration(o.out, job)
    if job.coupling == "auto" and (calibration or {}).get("coupling") is not None:  # a finished run summarised again
        job.coupling = float(calibration["coupling"])
    local = local_items(state, items, pending, by_volume=coupling is not None)
    records, skipped, images = run_batches(job, local, o.batch_size, progress, o.return_images, log_progress)
    state.wait_for_everyone()
    ordered, skipped = gather_records(state, names, records, skipped, done)
    if calibration is not None and calibration.get("changes"):  # the values the images were solved with
        from .settings import describe

        settings = {**settings, "solver": {**describe(job.operator, job.solver, job.prior)["solver"],
                                           "calibrated": sorted(calibration["changes"])}}
    summary = summarize(ordered, settings=settings, skipped=skipped, num_processes=job.world,
                        wall_seconds=time.perf_counter() - o.start,
                        extra={"output_dir": str(o.out) if o.out else None, "num_resumed": len(done),
                               "warnings": notes, "metrics_unavailable": unavailable, "samples": o.samples,
                               "resized": finished_only(resized, {r["name"] for r in ordered}),
                               "review": review_summary(ordered, o.review_below, o.review_coverage,
                                                        not_beating_initial(calibration)),
                               "calibration": calibration,
                               # what classical/ and the *_classical metrics hold (a blur's Tikhonov deconvolution)
                               **({"classical": next(r["classical"] for r in ordered if r.get("classical"))}
                                  if any(r.get("classical") for r in ordered) else {}),
                               # the weight the volumes were solved with (settings' z_coupling may say "auto")
                               **({"z_coupling_weight": float(job.coupling)} if isinstance(job.coupling, float) else {}),
                               **(o.extra_summary or {})})
    made_with = Counter(int(r["threads"]) for r in ordered if isinstance(r.get("threads"), int))
    if isinstance(summary.get("threads"), dict) and set(made_with) - {summary["threads"].get("threads")}:
        # a resume at another thread count: summary.json gave the last run's only (float32's last bits differ)
        unknown = len(ordered) - sum(made_with.values())  # records written before they kept it
        summary["threads"] = {**summary["threads"], "images_by_threads": {
            **{str(k): v for k, v in sorted(made_with.items())}, **({"unknown": unknown} if unknown else {})}}
    if summary.get("deterministic"):  # per image: a resume may have switched it (records say how each was made)
        summary["deterministic"] = {**summary["deterministic"],
                                    "images": sum(bool(r.get("deterministic")) for r in ordered)}
    realised = getattr(job.operator, "realised_sampling", lambda: None)()
    if realised:  # the mask as drawn (beside the operator's settings, which are compared with other runs')
        summary["operator_realised"] = realised
    summary["wall_seconds_all_runs"] = summary["wall_seconds"] + (earlier_wall_seconds(o.out, done) if done else 0.0)
    if job.rank == 0:
        resumed = f", {len(done)} of them by the earlier run" if done else ""  # none solved again on a resume
        log.info("finished %d of %d image(s) (%d skipped%s) in %.1f s", len(ordered), len(names), len(skipped),
                 resumed, summary["wall_seconds"])
    if job.rank == 0 and o.out is not None:
        write_run_files(job, ordered, summary, items, o.grid_max)
    x = gather_images(state, images, ordered, o.out) if o.return_images else None
    return Reconstruction(x=x, records=ordered, names=[r["name"] for r in ordered], skipped=skipped,
                          summary=summary, output_dir=o.out)


def finished_calibration(out: Path | None, job) -> dict | None:
    """The calibration record of a finished run that is summarised again (nothing left to solve): its
    chosen values, and its warning, which marks every image for review, stay in the report."""
    path = out / "calibration.json" if out is not None else None
    if path is None or not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("fingerprint") != job.fingerprint:
        return None
    from ..solvers.calibration import with_params
    from .calibration import with_todays_verdict

    job.solver = with_params(job.solver, **record.get("changes", {}))  # the values its images were solved with
    return with_todays_verdict(record, job.operator)


def earlier_wall_seconds(out: Path | None, done: dict[str, dict]) -> float:
    """The wall time of the earlier runs a resume continues: their ``summary.json``'s, or — where
    that is less, as after a run killed before it wrote one — the solve time of the batches it
    finished (each distinct batch of the resumed records counted once; start-up not included)."""
    batches = {tuple(r.get("batch") or [r["name"]]): float(r.get("batch_seconds") or 0.0) for r in done.values()}
    solved = sum(batches.values())
    try:
        earlier = json.loads((out / "summary.json").read_text())
        recorded = float(earlier.get("wall_seconds_all_runs", earlier.get("wall_seconds", 0.0)))
    except (OSError, TypeError, ValueError, AttributeError):
        recorded = 0.0
    return max(recorded, solved)


def has_neighbours(items: list[Item]) -> bool:
    """Some volume has two or more slices (z-coupling has a pair to act on)."""
    return any(n > 1 for n in Counter(it.volume for it in items).values())


def check_coupling(coupling, items: list[Item], solver) -> float | str:
    """The z-coupling weight as a number >= 0, or ``"auto"`` (chosen from the measurements by
    calibration, :mod:`.calibration`), or :class:`RunError` (no volumes, or a solver without a data
    term to extend)."""
    from ..solvers.coupling import check_solver

    try:
        weight = coupling if coupling == "auto" else float("nan") if isinstance(coupling, bool) else float(coupling)
    except (TypeError, ValueError):  # (true: a weight of 1 before)
        weight = float("nan")
    if weight != "auto" and (not math.isfinite(weight) or weight < 0):
        raise RunError(f"data.z_coupling must be a number >= 0 (the weight of total variation along z), auto "
                       f"(chosen from the measurements) or null, got {shown(coupling)}")
    if any(it.volume is None or it.z is None for it in items):
        raise RunError("z-coupling needs volumes (data=dicom, nifti or fastmri), not a folder of images")
    try:
        check_solver(solver)
    except ValueError as err:
        raise RunError(str(err)) from None
    return weight


def integer_setting(name: str, value, minimum: int | None, meaning: str) -> int:
    """``value`` as an int, or one line naming the setting: a whole number (``2.0`` passes, ``1.5``
    and ``"abc"`` do not — a seed of 1.5 was silently 1) of at least ``minimum``."""
    whole = isinstance(value, numbers.Integral) or (isinstance(value, numbers.Real) and float(value).is_integer())  # numpy too
    if isinstance(value, bool) or not whole or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise RunError(f"{name} must be an integer{bound} ({meaning}), got {shown(value)}")
    return int(value)


def kernel_note(operator, prior) -> str | None:
    """A blur kernel wider than half the image: the papers' 61-px kernels are for 256-px images
    (on the bundled 32-px priors they blur nearly the whole picture; the README's tables use 9 px)."""
    import torch

    kernel = getattr(operator, "kernel", None)
    if not torch.is_tensor(kernel) or kernel.ndim != 2 or kernel.shape[-1] * 2 <= prior.image_size:
        return None
    return (f"the {kernel.shape[-1]}-px blur kernel is wider than half the prior's {prior.image_size}-px images (the "
            f"papers' kernels are for 256 px; the README's 32-px tables use operator.size=9, and operator.std=1 for the "
            f"Gaussian)")


def check_operator_takes(operator, prior) -> None:
    """:class:`RunError` (one line, before any work) when the operator cannot take the prior's
    images: their channel count (BKSE is RGB), or their size (a blur kernel wider than the image;
    BKSE's multiples of 128) — these were tracebacks from the first batch."""
    need = getattr(operator, "channels", None)
    name = operator_label(operator)
    if need is not None and need != prior.channels:
        raise RunError(f"{name} takes {need}-channel images, but the prior {getattr(prior, 'source', '')} makes "
                       f"{prior.channels}-channel ones: use a {need}-channel prior")
    try:
        operator.output_shape((1, prior.channels, prior.image_size, prior.image_size))
    except (ValueError, RuntimeError) as err:  # (RuntimeError: a deepinv physics built for another size)
        raise RunError(f"{name} on the prior's {prior.image_size}×{prior.image_size} images: {err}") from None


def check_settings_used(operator, explicit: Sequence[str]) -> None:
    """:class:`RunError` (one line, before any work) for operator settings given on the command line
    that the operator's mode leaves unused (:meth:`~ipsolve.operators.base.Operator.unused_settings`)."""
    unused = {k: v for k, v in operator.unused_settings().items() if k in explicit}
    if unused:
        said = "; ".join(f"operator.{k} (used with {v})" for k, v in unused.items())
        raise RunError(f"{operator_label(operator)} with {describe_mode(operator)} does not use {said}: leave "
                       f"{'it' if len(unused) == 1 else 'them'} out or choose that mode")


def describe_mode(operator) -> str:
    """The settings that decide an operator's mode, as ``key=value`` (for :func:`check_settings_used`)."""
    params = getattr(operator, "params", {}) or {}
    keys = [k for k in ("model", "kernel", "true_kernel", "mask") if k in params]
    if params.get("model") == "bkse":
        keys = ["model"]
    return ", ".join(f"{k}={params[k]}" for k in keys) or "these settings"


def resumed_without_metrics(done: dict, metrics: Sequence[str], measurements: bool) -> str | None:
    """The note for a resume asked for metrics the earlier run's finished images were not scored
    with (metrics are taken beside each reconstruction; they are not in the resume fingerprint, so
    ``metrics=[psnr,ssim]`` on a psnr run resumed and showed SSIM for the new images only, unsaid)."""
    if measurements or not done:
        return None
    missing = [m for m in metrics if any(m not in (rec.get("metrics") or {}) for rec in done.values())]
    if not missing:
        return None
    lacking = sum(any(m not in (rec.get("metrics") or {}) for m in missing) for rec in done.values())
    return (f"{', '.join(missing)} asked for now, not when {lacking} of the {len(done)} image(s) the earlier run "
            f"finished were solved: they show n/a (another output directory scores every image)")


def metric_names(metrics, lpips_net) -> list[str]:
    """``metrics`` as a list of known names (one name alone is a list of one: ``metrics=psnr`` was
    read letter by letter), or :class:`RunError`; ``lpips_net`` is checked even when LPIPS is not
    asked for, so a typo does not wait for the day it is."""
    from ..metrics import LPIPS_BACKBONES

    if isinstance(metrics, str):
        metrics = [metrics]
    if not isinstance(metrics, Sequence) or not all(isinstance(m, str) for m in metrics):
        raise RunError(f"metrics must be a list of {', '.join(METRICS)} ([] for none), got {shown(metrics)}")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise RunError(f"unknown metric(s) {', '.join(map(repr, unknown))}; known: {', '.join(METRICS)}")
    if lpips_net not in LPIPS_BACKBONES:
        raise RunError(f"lpips_net must be one of {', '.join(LPIPS_BACKBONES)}, got {shown(lpips_net)}")
    return list(metrics)


def check_sigma_each(calibrate: bool, coupling, batch_size: int, main_process: bool) -> None:
    """``sigma=auto_each`` solves each image alone with its own σ̂ (the solvers take one σ per call): a
    :class:`RunError` where the run needs one σ for several images — calibration's choice, z-coupled slices."""
    if calibrate:
        raise RunError("calibration (calibrate=true, or a solver value given as auto) chooses one set of values for one "
                       "sigma, and sigma=auto_each gives each image its own: use sigma=auto (their median) with "
                       "calibration, or run images of unlike noise separately")
    if coupling is not None:
        raise RunError("data.z_coupling solves a volume's slices together with one sigma, and sigma=auto_each gives "
                       "each slice its own: use sigma=auto, or data.z_coupling=0 (slice by slice)")
    if batch_size > 1 and main_process:
        log.info("sigma=auto_each: each image is solved alone with its own sigma (a batch of one, not %d)", batch_size)


def check_arguments(batch_size, noise: str, sigma, measurements: bool = False) -> tuple[int, float | str]:
    """``(batch_size, sigma)`` as numbers (sigma ``"auto"`` / ``"auto_each"`` for given measurements,
    estimated by :func:`.noise.measurement_sigma`), or :class:`RunError` for an invalid argument."""
    batch_size = integer_setting("batch_size", batch_size, 1, "images solved together")
    if noise not in ("gaussian", "poisson"):
        raise RunError(f"noise must be 'gaussian' or 'poisson', got {shown(noise)}")
    if str(sigma) in ("auto", "auto_each"):
        if measurements:
            return int(batch_size), str(sigma)
        raise RunError(f"sigma={sigma} estimates the noise of given measurements (data.measurements=true: blurred "
                       "images; data=fastmri: k-space); this run measures its images itself and adds noise at the "
                       "sigma you give: give sigma as a number (the noise std of y: on the [-1, 1] image scale for blur, SR "
                       "and inpainting, e.g. 0.01; README, What σ means here, for CT, MRI and phase retrieval)")
    from ..operators.base import InputWarning, as_sigma

    try:
        with warnings.catch_warnings():  # a sigma above 1 is logged by _execute (sigma_scale_note), not warned here
            warnings.simplefilter("ignore", InputWarning)
            sigma = as_sigma(_as_number(sigma) if isinstance(sigma, str) else sigma)  # a command line's "0.01"
    except (TypeError, ValueError):
        raise RunError(f"sigma must be a finite number >= 0 (the noise std on the [-1, 1] image scale, e.g. 0.01), "
                       f"got {shown(sigma)}") from None
    return int(batch_size), sigma


def input_warnings(items: list[Item], prior, measurements: bool, rank: int, operator=None, sigma: float = 0.0) -> list[str]:
    """What the user should know about the inputs before trusting the results (logged by rank 0)."""
    notes = []
    converted = converted_channels(items, prior.channels)  # measurements too: a grey y was replicated silently
    what = "measurement" if measurements else "image"
    if converted:
        source = getattr(prior, "source", type(prior).__name__)
        if prior.channels == 1:
            which = ("" if "grey-ddpm" in str(source) else "the bundled phantom priors suit CT-like grey images, "
                     "prior=grey_ddpm grey natural ones; ")
            notes.append(f"{len(converted)} colour {what}(s) converted to grey (luminance, scikit-image's rgb2gray: "
                         f"0.2125 R + 0.7154 G + 0.0721 B) for the 1-channel prior {source} "
                         f"({', '.join(converted[:4])}{', ...' if len(converted) > 4 else ''}); {which}colour photos "
                         f"need a colour photo prior (prior=photo_ddpm, or a diffusers model: prior=DIR)")
        else:
            notes.append(f"{len(converted)} grey {what}(s) replicated to {prior.channels} channels for the prior "
                            f"{source} ({', '.join(converted[:4])}{', ...' if len(converted) > 4 else ''})")
    given = [it.tensor for it in items if it.tensor is not None and it.path is None and it.volume is None]
    image_like = not measurements or getattr(operator, "measurement_is_image", False)
    if image_like:  # a caller's own tensors and .npy files, read as they are (pictures and volumes are mapped to [-1, 1])
        from ..operators.base import unit_range_note
        from ..solvers.inputs import MEASUREMENT_FIX, unit_range_slack

        def unit_range(low, high, what):
            return (unit_range_note(low, high, what, unit_range_slack(sigma), MEASUREMENT_FIX) if measurements
                    else unit_range_note(low, high, what))

        # (measure()'s and solve()'s InputWarnings are filtered during a run: they were said nowhere)
        if given and (note := unit_range(min(float(t.amin()) for t in given), max(float(t.amax()) for t in given),
                                         f"the {what} tensor")):
            notes.append(note)
        arrays = [(it.path, array_range(it.path)) for it in items
                  if it.path is not None and it.volume is None and it.path.suffix.lower() == ".npy"]
        readable = [(p, r) for p, r in arrays if r is not None]
        on_unit = [(p, r) for p, r in readable if unit_range(*r, p.name)]
        if on_unit:  # per file: one file on [0, 1] among right ones is as wrong (audit 2026-12-07: said nowhere)
            path, (low, high) = on_unit[0]
            notes.append(f"{unit_range(low, high, path.name)} ({len(on_unit)} of {len(readable)} {what} .npy files, "
                         f"read exactly, lie in [0, 1])")
    if rank == 0:
        for w in notes:
            log.warning("%s", w)
    return notes


def array_range(path) -> tuple[float, float] | None:
    """``(min, max)`` of a ``.npy`` file's values, or None where it cannot be read or is not finite
    (the batch loop skips it with the reason)."""
    import numpy as np

    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        low, high = float(np.min(arr)), float(np.max(arr))
    except (OSError, ValueError, EOFError, TypeError):
        return None
    return (low, high) if math.isfinite(low) and math.isfinite(high) else None


def resized_inputs(items: list[Item], prior, rank: int) -> dict | None:
    """Image files not at the prior's size are centre-cropped to a square and resized to it
    (:func:`ipsolve.io.load_image`), and scored there: logged once (rank 0) and recorded in
    ``summary.json`` — ``{"to": [S, S], "count": n, "from": {"HxW": images}, "images": [names]}``,
    or None when every file already has the prior's size."""
    from ..io import image_size

    size = (prior.image_size, prior.image_size)
    sizes: dict[str, int] = {}
    size_of: dict[str, str] = {}
    for it in items:
        hw = image_size(it.path) if it.path is not None else None
        if hw is not None and tuple(hw) != size:
            key = f"{hw[0]}x{hw[1]}"
            sizes[key] = sizes.get(key, 0) + 1
            size_of[it.name] = key
    names = list(size_of)
    if not names:
        return None
    sides = {nm: tuple(map(int, key.split("x"))) for nm, key in size_of.items()}
    narrow = [nm for nm, (h, w) in sides.items() if min(h, w) < max(h, w) / 2]
    if rank == 0 and narrow:  # (a 3×300 strip became a 3×3 crop enlarged to the prior's size, said as "resized")
        log.warning("%d image file(s) keep less than half of their area in the square centre crop (%s%s): crop or pad "
                    "them yourself to keep what matters", len(narrow),
                    ", ".join(f"{nm}: {size_of[nm].replace('x', '×')}" for nm in narrow[:4]), ", ..." if len(narrow) > 4 else "")
    if rank == 0:  # (square files are only resized: a 10×10 one was said to be "centre-cropped")
        log.warning("%d image file(s) will be %s to the prior's %d×%d as read (%s; "
                    "summary.json's resized counts those reconstructed); reconstructions and metrics are at %d×%d",
                    len(names), resize_words(sizes), *size,
                    ", ".join(f"{k.replace('x', '×')} → {size[0]}×{size[1]}: {n}" for k, n in sizes.items()), *size)
    return {"to": list(size), "count": len(names), "from": sizes, "images": names, "_size_of": size_of}


def finished_only(resized: dict | None, finished: set[str]) -> dict | None:
    """:func:`resized_inputs`' record restricted to the images that were reconstructed (a file
    skipped as unreadable was counted from its header)."""
    if resized is None:
        return None
    names = [nm for nm in resized["images"] if nm in finished]
    if not names:
        return None
    sizes: dict[str, int] = {}
    for nm in names:
        sizes[resized["_size_of"][nm]] = sizes.get(resized["_size_of"][nm], 0) + 1
    return {"to": resized["to"], "count": len(names), "from": sizes, "images": names}


def decide_resume(state, out: Path | None, names: list[str], fp: str,
                  config_yaml: str | None, digest_of=None) -> tuple[dict[str, dict], list[str]]:
    """``(records finished by an earlier run, names left to do)``: decided by rank 0, the same on every rank."""
    # resume: rank 0 cleans up and decides what is left to do; every rank gets the same list
    done, error = {}, None
    if state.process_index == 0 and out is not None:
        done, error = prepare_resume(out, names, fp, config_yaml, digest_of)
    pending, error = broadcast(([nm for nm in names if nm not in done], error) if state.process_index == 0 else None,
                               state)
    if error is not None:  # every rank stops, none waits for the others
        raise RunError(error)
    return done, pending


def log_start(job: Job, settings: dict, names: list[str], done: dict, pending: list[str]) -> None:
    """Rank 0's log lines: what runs where, and how much an earlier run already finished."""
    if job.rank != 0:
        return
    from ..solvers.base import prior_key

    prior, out = job.prior, job.out
    sigma = f"{job.sigma:g}" if job.sigma_each is None else f"each image's own (median {job.sigma:.4g})"
    log.info("%d image(s) | operator %s | solver %s | prior %s (%s, %d px, %d channel(s)) | sigma %s | "
             "seed %d | %d process(es) | device %s%s", len(names), settings["operator"]["name"],
             settings["solver"]["name"], settings["prior"]["source"], prior_key(prior).replace("-", " "),
             prior.image_size, prior.channels, sigma, int(job.seed), job.world, job.device, f" | output {out}" if out else "")
    if done:
        log.info("resuming in %s: %d of %d images already finished, %d to do", out, len(done), len(names),
                 len(pending))


def prior_description(prior) -> dict:
    """What summary.json says about the prior beyond its fingerprinted record: the absolute path of a
    local source (as typed, ``prior.source=sd15`` named no place) and a diffusion network's prediction
    type (an ε and a v folder with the same weights read alike before)."""
    import os

    out = {}
    source = str(getattr(prior, "source", ""))
    if source and os.path.exists(os.path.expanduser(source)):
        out["path"] = str(Path(source).expanduser().resolve())
    inner = getattr(prior, "inner", prior)
    if getattr(inner, "prediction_type", None):
        out["prediction_type"] = inner.prediction_type
    return out


def write_run_files(job: Job, records: list[dict], summary: dict, items: list[Item], grid_max: int) -> None:
    """Rank 0's files about the whole run: ``metrics.csv``, ``summary.json``, ``report.txt`` (what the
    console shows; a volume run writes it again with its volumes), ``grid.png`` and, for
    a blur, ``operator_kernel.npy`` (the kernel the operator applies: a blind one's true kernel)."""
    import torch

    atomic_write_text(job.out / "metrics.csv", metrics_csv(records, summary["review"]["decisions"]))
    curves, aurc = risk_coverage_table(records)
    if not curves and any("psnr" not in (r.get("metrics") or {}) for r in records) and \
            any(r.get("metrics") for r in records):  # (it was left out unsaid: audit 2026-12-07)
        log.info("no risk_coverage.csv/.png: the risk-coverage table ranks PSNR, which metrics= left out")
    if curves:  # ground truth present: how well the score ranks the reconstructions
        summary["review"]["risk_coverage"] = aurc
        atomic_write_text(job.out / "risk_coverage.csv", curves)
        plot_risk_coverage(curves, job.out / "risk_coverage.png")
    atomic_write_text(job.out / "summary.json", json.dumps(summary, indent=1, default=str))
    atomic_write_text(job.out / "report.txt", report(summary) + "\n")  # what the console showed, kept with the run
    write_grid(job.out, records, items, job.prior, job.measurements, grid_max, summary["review"]["decisions"])
    kernel = getattr(job.operator, "kernel", None)
    blind_given = job.measurements and hasattr(job.operator, "kernel_size")  # its true kernel made nothing here
    if torch.is_tensor(kernel) and kernel.ndim == 2 and not blind_given:  # the blur that made or explains y
        from .rundir import save_array

        save_array(kernel.detach().float().cpu().numpy(), job.out / "operator_kernel.npy")


WORSE_THAN_INITIAL = "residual above the initial guess's"
UNFIT = f"residual above {RESIDUAL_WARNING:g}× the noise level (with samples=k: the mean's or most samples')"
NOT_BEATING_INITIAL = "calibration: the initial guess predicts held-out entries better"


def not_beating_initial(calibration: dict | None) -> str | None:
    """The calibration's warning that the solver is not expected to beat the initial guess (held-out
    entries), or None — the discrepancy principle's warning (no candidate fit the noise level) is no
    such finding: each image's own residual says how it fits."""
    if not calibration or calibration.get("method") == "discrepancy":
        return None
    return calibration.get("warning") or None


def review_summary(records: list[dict], review_below, review_coverage, calibration_warning: str | None = None) -> dict:
    """Accept / review per image from the reliability scores (never the ground truth).  A
    reconstruction that fits the measurement worse than the initial guess
    (``worse_than_initial``, :func:`~.batches.flag_against_initial`) or leaves a residual above 5×
    the noise level (its residual warning: it does not explain y at the assumed σ — wrong operator
    settings, σ or too short a solve) is never accepted; nor is any image of a run whose calibration
    found the solver not expected to beat the initial guess (``calibration_warning``: held-out entries,
    :func:`ipsolve.solvers.calibration.initial_guess_warning`)."""
    scores = [r["info"].get("reliability", float("-inf")) for r in records]
    by_score = review_decisions(scores, review_below, review_coverage)
    # a residual above RESIDUAL_WARNING·σ√m is reviewed whatever the score and the initial guess's fit
    unfit = [bool(r.get("warning")) for r in records]
    decisions = ["review" if r.get("worse_than_initial") or bad or calibration_warning else d
                 for r, d, bad in zip(records, by_score, unfit)]
    flagged = {r["name"]: (WORSE_THAN_INITIAL if r.get("worse_than_initial") else UNFIT if bad
                           else NOT_BEATING_INITIAL if calibration_warning else r["info"].get("reliability_reason"))
               for r, d, bad in zip(records, decisions, unfit) if d == "review"}
    return {"review_below": review_below, "review_coverage": review_coverage, "num_flagged": len(flagged),
            "tied_at_cut": tied_at_cut(scores, review_coverage),
            # accepted by their reliability, reviewed for a flag (so fewer are accepted than review_coverage asks)
            "accepted_by_score_but_flagged": sum(a == "accept" and d == "review" for a, d in zip(by_score, decisions))
            if review_below is not None or review_coverage is not None else 0,
            "flagged": flagged, "decisions": {r["name"]: d for r, d in zip(records, decisions)},
            # evaluation only (the decisions above never see it): accepted images that the ground truth, where given,
            # scores below their initial guess in PSNR (an audit read "accept" as "better than the guess")
            "accepted_below_initial_psnr": accepted_below_initial(records, decisions)}


def accepted_below_initial(records: list[dict], decisions: list[str]) -> list[str] | None:
    """The accepted images whose PSNR against the ground truth is below their initial guess's
    (None without ground truth).  Evaluation of the decisions, which are made from the measurement."""
    scored = [(r, d) for r, d in zip(records, decisions)
              if (r.get("metrics") or {}).get("psnr") is not None and (r.get("initial_metrics") or {}).get("psnr") is not None]
    if not scored:
        return None
    return [r["name"] for r, d in scored if d == "accept" and r["metrics"]["psnr"] < r["initial_metrics"]["psnr"]]


def gather_images(state, images: dict, records: list[dict], out: Path | None):
    """Every process's reconstructions (earlier runs' read from ``out``) in the order of ``records``, or None."""
    import numpy as np
    import torch

    from ..io import load_image

    merged = {k: v for part in all_gather(images, state) for k, v in part.items()}
    for rec in records:
        if rec["name"] not in merged and out is not None:  # finished in an earlier run: its float values if
            arrays = rec["outputs"].get("recon_data")    # kept (volume runs), else its 8-bit PNG (≤ 1/255 off)
            merged[rec["name"]] = (torch.from_numpy(np.load(out / arrays)).float()[None] if arrays
                                   else load_image(out / rec["outputs"]["recon"]))
    return torch.cat([merged[r["name"]] for r in records]) if records else None


# ----------------------------------------------------------------------------------------
# measurements made by an ipsolve run: its operator and noise
# ----------------------------------------------------------------------------------------
def recorded_operator_spec(recorded: dict) -> dict:
    """The operator settings to rebuild a run's operator from: its ``config.yaml`` node, else its
    ``summary.json`` record without the files' digests — a file setting (an MRI sensitivities file,
    recorded with its absolute path) taken from the record, and refused in one line when the file is
    gone or its contents changed since (the digests made ``make_operator`` fail on an unknown setting,
    and a relative path in config.yaml failed from another directory)."""
    from .rundir import file_digest

    spec = dict(recorded["config"] or recorded["operator"])
    described = recorded["operator"]
    spec.pop("kernel_digest", None)  # (a blur's description of its kernel, no setting)
    applied = Path(recorded["file"]).parent / "operator_kernel.npy"  # the kernel the run's blur applied
    for key in [k for k in described if k.endswith("_sha256")]:
        name = key.removesuffix("_sha256")
        spec.pop(key, None)
        path = described.get(name)
        if name == "kernel" and "kernel_digest" in described and applied.is_file() and not (
                isinstance(path, str) and Path(path).is_absolute() and Path(path).is_file()):
            spec[name] = str(applied)  # an in-memory kernel, or a file gone: the same kernel (kernel_digest checks)
            continue
        if not (isinstance(path, str) and Path(path).is_absolute()):
            continue
        if not Path(path).is_file():
            raise RunError(f"the measurements were made with operator.{name}={path}, which is gone; give "
                           f"operator.{name}=FILE (the same contents)")
        if file_digest(path) != described[key]:
            raise RunError(f"the measurements were made with operator.{name}={path}, whose contents have changed "
                           f"since ({recorded['file']} records another digest)")
        spec[name] = path
    return spec


def recorded_operator(items: list[Item], operator, sigma, noise, *, keep_operator: bool, keep_sigma: bool,
                      keep_noise: bool):
    """``(operator, sigma, noise)`` for measurements: the ones the run that made them recorded
    (its ``config.yaml`` / ``summary.json`` beside ``measurement/``) where the user gave none
    (``keep_*`` False), else the given ones; logs what was read, and where from."""
    recorded = recorded_settings(items)
    if recorded is None:
        return operator, sigma, noise
    taken = []
    if not keep_operator:
        operator = recorded_operator_spec(recorded)
        taken.append(f"operator {describe_spec(recorded['operator'])}")
    if not keep_sigma and recorded.get("sigma") is not None:
        sigma = recorded["sigma"]
        taken.append(f"sigma {sigma:g}" if isinstance(sigma, (int, float)) else f"sigma={sigma}")
    elif keep_sigma and isinstance(recorded.get("sigma"), (int, float)) \
            and _as_number(sigma) not in (None, float(recorded["sigma"])):
        log.warning("sigma %g given; the measurements were made with sigma %g (%s)", float(sigma),
                    float(recorded["sigma"]), recorded["file"])
    if not keep_noise and recorded.get("noise"):
        noise = recorded["noise"]
        if noise != "gaussian":
            taken.append(f"noise {noise}")
    if taken:
        source = recorded["file"] if recorded["config"] is None or keep_operator else \
            str(Path(recorded["file"]).with_name("config.yaml"))
        log.info("measurements only: %s read from %s (the run that made these measurements)", " and ".join(taken),
                 source)
    return operator, sigma, noise


# ----------------------------------------------------------------------------------------
# the Python API
# ----------------------------------------------------------------------------------------
def reconstruct(images_or_folder, operator=None, solver="dmplug_quick", prior="phantom_ddpm",
                output_dir=None, *, sigma: float | str | None = None, noise: str | None = None, seed: int = 0,
                batch_size: int = 4, measurements: bool = False, max_images: int | None = None, names=None,
                device=None, metrics: Sequence[str] = METRICS, lpips_net: str = "alex", grid_max: int = 8,
                progress: bool = True, return_images: bool = True, samples: int = 1,
                review_below: float | None = None, review_coverage: float | None = None,
                threads="auto", calibrate=None, select: str = "mean", deterministic: bool = False,
                save_arrays: bool = False) -> Reconstruction:
    """Reconstruct a folder of images (a path or ``bundled:phantom`` / ``bundled:photo``), a
    list of image paths, or a tensor ``(N, C, H, W)`` in [-1, 1] (the prior's size and
    channels).  Files are centre-cropped and resized to the prior's size.

    ``operator``, ``solver``, ``prior``: objects, registry names (``"super_resolution"``,
    ``"dps"``, ...), config preset names (``"dmplug_cpu"``, ``"phantom_ddpm"``) or prior sources
    (``"bundled:phantom-ddpm"``, a diffusers directory, ...); by default the command line's main
    job (``dmplug_quick`` on the phantom prior, super-resolution ×4).  ``measurements=True``: the
    inputs are measurements ``y`` (no ground truth; no PSNR/SSIM/LPIPS).  Each image's noise and
    solver seeds derive from (``seed``, its name), so results do not depend on batching or on the
    number of processes beyond float32 rounding (which DPS or LBFGS can amplify to tenths of a
    dB on one image; float64 priors — float64 networks, float32 iterates — give identical digits).  With ``output_dir`` the same files as the command line are written
    and a rerun resumes.  Under ``accelerate launch`` / ``torchrun`` the images are split across
    the processes.  Returns a :class:`Reconstruction` (``x, records = reconstruct(...)``).

    ``operator=None``, ``sigma=None``, ``noise=None``: with measurements from an ipsolve run's
    ``measurement/`` folder, the ones that run recorded; otherwise ``"super_resolution"``,
    0.01 and ``"gaussian"``; ``sigma="auto"`` (with ``measurements=True``): estimated from blurred
    measurements (:func:`ipsolve.estimate_sigma`; :mod:`.noise`), their median; ``"auto_each"``: each image
    solved alone with its own estimate (records' ``sigma``).  ``threads``: torch's CPU threads during the run (``"auto"``: see
    :mod:`ipsolve.runner.threads`; restored afterwards).  ``calibrate=True`` (or a mapping of
    options): choose the solver's parameters from the first images' measurements first
    (:mod:`ipsolve.runner.calibration`).  ``save_arrays=True``: with ``output_dir``, also ``recon/``,
    ``initial/`` (and ``std/``) as float32 ``.npy`` (the PNGs are 8-bit).  ``deterministic=True``: torch's deterministic algorithms
    for the run (bit-reproducible on a GPU, slower; :mod:`ipsolve.runner.determinism`).

    The rest: ``names`` (one per image of a tensor; default ``image_0000`` …), ``batch_size`` (images
    per solve), ``max_images`` (the first N of a folder), ``device`` (``"cuda"``, ``"cpu"``; default
    CUDA where there is one), ``metrics`` / ``lpips_net`` (with ground truth), ``grid_max`` (rows of
    ``grid.png``), ``progress`` (bars or log lines), ``return_images`` (False: ``x`` is None, for runs
    too large to hold), ``samples`` / ``select`` (k posterior samples per image; the mean or the sample
    of smallest residual), ``review_below`` / ``review_coverage`` (flag images for review by
    reliability: a threshold, or the fraction accepted) — as the command line's keys of the same name
    (conf/config.yaml)."""
    if output_dir is not None:
        check_writable(Path(output_dir))  # before any work
    items = collect_items(images_or_folder, max_images=max_images, names=names)
    if measurements:
        operator, sigma, noise = recorded_operator(items, operator, sigma, noise, keep_operator=operator is not None,
                                                   keep_sigma=sigma is not None, keep_noise=noise is not None)
    operator = "super_resolution" if operator is None else operator
    sigma = 0.01 if sigma is None else sigma
    noise = "gaussian" if noise is None else noise
    if isinstance(operator, str):
        explicit = ()
    elif isinstance(operator, Mapping):
        explicit = tuple(operator)
    else:  # an operator object: the user built it
        explicit = ("*",)
    # check_settings_used is for settings typed on the command line: a mapping here may be a whole preset (all
    # its keys present), and a recorded operator's keys are its config, none of them the user's
    settings_given = ()
    result = execute(items, operator=operator, solver=solver, prior=prior, sigma=sigma, noise=noise, seed=seed,
                     batch_size=batch_size, measurements=measurements, output_dir=output_dir, metrics=metrics,
                     lpips_net=lpips_net, grid_max=grid_max, progress=progress, device=device,
                     return_images=return_images, explicit_operator=explicit, settings_given=settings_given,
                     samples=samples,
                     review_below=review_below, review_coverage=review_coverage, threads=threads,
                     calibrate=False if calibrate is None else calibrate, select=select, deterministic=deterministic,
                     keep_arrays=flag("save_arrays", save_arrays), calibrate_off=calibrate is False)
    check_some_usable(result.summary)
    return result


def _as_number(value) -> float | None:
    """``value`` as a float, or None (``sigma=auto``, a typo: :func:`check_arguments` names it)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def check_some_usable(summary: dict) -> None:
    """:class:`RunError` naming the first reason when every input was skipped (the API returned an
    empty result with log warnings only; the command line said so)."""
    if summary["num_finished"] == 0 and summary["num_skipped"]:
        first = summary["skipped"][0]
        raise RunError(f"none of the {summary['num_skipped']} image(s) could be used; {first['name']}: "
                       f"{first['reason']}")
