"""``calibrate=true``: choose the solver's parameters from the first images' measurements
(:func:`ipsolve.calibrate` — never their ground truth), then solve every image with them.

Rank 0 calibrates and every rank receives the chosen settings; the choice is written to
``calibration.json`` / ``calibration.csv`` / ``calibration.png`` in the run directory, and a
resumed run reuses ``calibration.json`` instead of calibrating again.  ``data.z_coupling=auto``
calibrates the z-coupling weight too, on neighbouring slices of the first volume, against slice
by slice (weight 0)."""
from __future__ import annotations

import csv
import io
import json
import math
import logging
from collections.abc import Mapping
from pathlib import Path

from ..calibration_settings import COMPARISON_SPLITS, NOTHING_TO_CHOOSE, check_calibration_settings
from ..notices import shown
from .errors import RunError, flag
from .inputs import input_digest
from .reports import indistinguishable_note
from .rundir import atomic_write_text

log = logging.getLogger("ipsolve")
OPTIONS = ("enabled", "images", "method", "budget", "holdout", "params", "comparison_splits")
CHECKED = ("method", "budget", "holdout", "comparison_splits", "params")  # check_calibration_settings'
DEFAULTS = {"enabled": False, "images": 4, "method": "auto", "budget": None, "holdout": 0.2, "params": None,
            "comparison_splits": COMPARISON_SPLITS}


def calibration_options(value) -> dict:
    """``calibrate`` as given (``True``/``False`` or a mapping of :data:`OPTIONS`) → a full dict."""
    if value is None or isinstance(value, bool):
        return {**DEFAULTS, "enabled": bool(value)}
    if not isinstance(value, Mapping):
        raise RunError(f"calibrate must be true/false or a mapping of {', '.join(OPTIONS)}, got {shown(value)}")
    unknown = [k for k in value if k not in OPTIONS]
    if unknown:
        raise RunError(f"unknown calibrate option(s) {', '.join(unknown)}; options: {', '.join(OPTIONS)}")
    out = {**DEFAULTS, "enabled": True, **dict(value)}  # a mapping turns it on unless it says enabled: false
    out["enabled"] = flag("calibrate.enabled", out["enabled"])
    images = out["images"]
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise RunError(f"calibrate.images must be an integer >= 1 (the first images of the run, on which it "
                       f"calibrates), got {shown(images)}")
    try:  # checked even when off: a typo waits for the day calibration is turned on
        out.update(check_calibration_settings(**{k: out[k] for k in CHECKED}, prefix="calibrate."))
    except ValueError as err:
        raise RunError(str(err)) from None
    return out


def effective_options(options: dict, solver, coupling) -> dict:
    """The calibration a run does: ``options`` as given, turned on for parameters given as
    ``"auto"`` (``solver.X=auto``) and for ``data.z_coupling=auto`` (the weight searched with
    whatever else is), so that ``summary.json`` records what ran.  Applying it twice changes nothing."""
    from ..solvers.calibration import COUPLING, declared_space

    auto = tuple(getattr(solver, "auto_params", ()) or ())
    if options["enabled"] and options["params"] == [] and (auto or coupling == "auto"):
        asked = ", ".join([*(f"solver.{p}=auto" for p in auto), *(["data.z_coupling=auto"] if coupling == "auto" else [])])
        raise RunError(f"calibrate.params=[] compares the solver as given with the initial guess, but {asked} asks to "
                       f"choose values: drop one of them")
    if coupling == "auto":
        given = options["params"] if options["enabled"] else list(auto)
        if options["enabled"] and given is None:
            given = list(declared_space(solver))
        return {**options, "enabled": True, "params": [*(p for p in given if p != COUPLING), COUPLING]}
    if auto and not options["enabled"]:
        return {**options, "enabled": True, "params": list(auto)}
    if options["enabled"] and options["params"] is None and not getattr(type(solver), "search_space", None):
        # a solver with nothing to choose (DDRM): compared as given with the initial guess, as calibrate.params=[]
        # does — a calibrate=true sweep over solvers failed that job (an audit, 2026-12-07)
        return {**options, "params": []}
    return options


def nothing_to_choose(asked: dict, options: dict, solver, operator, prior) -> str | None:
    """Where ``calibrate=true`` met a solver that declares no parameters (``options``, from
    :func:`effective_options`, compare it as given, ``params=[]``): None when it can be compared on held-out
    entries, else why not (DDRM works in the operator's SVD) — the run then goes on uncalibrated, saying so."""
    if not (options["enabled"] and options["params"] == [] and asked.get("params") is None):
        return None
    from ..solvers.calibration import check_restricted_solver

    try:
        shape = tuple(operator.output_shape((1, *prior.shape))[1:])
        check_restricted_solver(solver, operator, prior, shape, True)
    except ValueError as err:
        why = str(err).split(" cannot: ", 1)[-1]
        return (f"calibrate=true: solver {solver.name} {NOTHING_TO_CHOOSE} on held-out entries ({why}): the run goes "
                f"on uncalibrated")
    return None


def calibrate_job(job, items, options: dict, state) -> dict | None:
    """Calibrate ``job.solver`` on the first ``options["images"]`` items and set the calibrated
    solver on ``job`` (every rank).  Returns the record for ``summary.json`` (None when off).
    Parameters given as ``"auto"`` (in a preset or as ``solver.X=auto``) are calibrated once here,
    on the first images, rather than on every batch."""
    from ..solvers.calibration import with_params
    from .processes import broadcast

    options = effective_options(options, job.solver, job.coupling)
    if not options["enabled"]:
        return None
    record, error = None, None
    if state.process_index == 0:
        previous = job.out / "calibration.json" if job.out is not None else None
        try:
            reusable = None
            if previous is not None and previous.is_file():
                reusable = json.loads(previous.read_text())
                why = stale_calibration(reusable, job, items, options)
                if why:
                    log.warning("calibration: %s was made %s; calibrating again", previous, why)
                    reusable = None
            if reusable is not None:
                record = with_todays_verdict(reusable, job.operator)
                made_on, now = len(record.get("images") or ()), len(calibration_items(job, items, int(options["images"])))
                fewer = (f"; made on {made_on} image(s) where this run has {now} to calibrate on — kept, so that every "
                         f"image of the folder is solved with the same values (a new output folder calibrates on {now})"
                         if 0 < made_on < now else "")
                log.info("calibration: reusing %s (%s)%s", previous, _describe(record), fewer)
            else:
                record = _calibrate(job, items, options)
        except (ValueError, TypeError, RunError) as err:
            error = str(err)
        except Exception as err:  # noqa: BLE001 - any failure must reach the other ranks, not leave them waiting
            error = out_of_memory_note(err, len(calibration_items(job, items, int(options["images"])))) \
                or f"{type(err).__name__}: {err}"
    record, error = broadcast((record, error), state)
    if error is not None:
        raise RunError(f"calibration failed: {error}")
    job.solver = with_params(job.solver, **record["changes"])
    job.calibrated = dict(record["changes"])
    if job.coupling == "auto":
        job.coupling = float(record["coupling"])
    return record


def out_of_memory_note(err: BaseException, images: int) -> str | None:
    """Why calibration stopped when ``err`` is running out of memory (None otherwise): its solves take all
    its ``images`` as one batch, which the batch loop's halving (:func:`.batches.split_for_memory`) does not
    reach, so the way out is fewer calibration images — a multi-line torch message was the error."""
    from .batches import out_of_memory

    if not out_of_memory(err):
        return None
    first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
    fewer = (f"calibrate.images={images // 2} (its {images} images are solved as one batch), or " if images > 1
             else "")
    return (f"out of memory ({first}): lower it with {fewer}the memory per image — a prior's memory options "
            f"(README, 'Memory at 512 px'), a smaller prior.image_size")


def _calibrate(job, items, options: dict) -> dict:
    """Rank 0's calibration: the measurements of the first images, exactly as the batch loop makes
    them (same per-image seeds), and the solver's seeds; the truths only simulate ``y``."""
    import torch

    from ..solvers.calibration import calibrate
    from ..solvers.coupling import ZCoupling, neighbour_pairs
    from .batches import image_seeds, load_batch, measure

    chosen = calibration_items(job, items, int(options["images"]))
    ok, inputs, _ = load_batch(job, chosen)
    if not ok:
        raise RunError("none of the calibration images could be read")
    seeds = image_seeds(job.seed, ok)
    names = [it.name for it in ok]
    y = torch.cat(inputs if job.measurements else measure(job, inputs, seeds, names))
    del inputs  # calibration sees the measurements only
    job.operator.set_images(names)
    gens = [torch.Generator().manual_seed(s["solver"]) for s in seeds]
    penalty = None
    if job.coupling is not None:  # the slices are coupled as the volume's solve couples them
        penalty = ZCoupling(1.0 if job.coupling == "auto" else job.coupling,
                            neighbour_pairs([(it.volume, it.z) for it in ok]))
    cal = calibrate(y, job.operator, job.prior, job.solver, sigma=job.sigma, params=options["params"],
                    budget=options["budget"], method=options["method"], holdout=options["holdout"], seed=job.seed,
                    generator=gens, penalty=penalty, comparison_splits=options["comparison_splits"])
    record = {**cal.summary(), "sigma": job.sigma, "images": names, "changes": cal.changes, "table": cal.table,
              "options": json.loads(json.dumps(options, default=str)), "fingerprint": job.fingerprint,
              "input_digests": {it.name: input_digest(it) for it in ok}}
    if cal.coupling is not None:
        record["coupling"] = cal.coupling
    if cal.result is not None and job.samples == 1 and job.coupling is None:
        # the check solved these images with the chosen values, their seeds and exactly the y the batch
        # loop makes: the batch loop takes them from here (calibration.json records it)
        res = cal.result
        for i, name in enumerate(names):
            job.solved[name] = (res.x[i:i + 1].detach(), dict(res.info[i]),
                                None if res.kernel is None else res.kernel[i:i + 1].detach(),
                                float(res.info[i].get("seconds", 0.0)) / len(names))
        record["reused_solve"] = True
    log.info("calibration on %d image(s): %s%s", len(names), _describe(record),
             "; its check's solve of them is kept, not repeated" if record.get("reused_solve") else "")
    if cal.warning:
        source = str(getattr(job.prior, "source", ""))
        hint = ("; for grey images that are no phantoms: prior=grey_ddpm" if source.startswith("bundled:phantom")
                and job.prior.channels == 1 and cal.method != "discrepancy" else "")
        log.warning("calibration: %s%s", cal.warning, hint)
    elif cal.against_initial_guess == "indistinguishable":
        log.info("calibration: %s", indistinguishable_note(cal.guess_handicap))
    if not cal.against_initial_guess:  # nothing to compare (the discrepancy principle's warning is another finding)
        log.info("calibration: no comparison with the operator's initial guess (%s)",
                 "the discrepancy principle holds no entries out" if cal.method == "discrepancy"
                 else "the operator has no initial guess to score: blind, or one that failed")
    if cal.blind_spot and not cal.warning:
        log.info("calibration: %s", cal.blind_spot)
    if job.out is not None:
        write_calibration_files(job.out, record)
    return record


def with_todays_verdict(record: dict, operator) -> dict:
    """A ``calibration.json`` record reused (a resume) with the comparison's verdict as ``calibrate``
    gives it today: a ``better`` from before 2026-12-07 against an initial guess that is no fair yardstick
    (``Operator.holdout_guess_handicap``; a guess whose held-out error is mostly its misfit,
    :func:`~ipsolve.solvers.calibration.guess_misfit_handicap`, where the record holds the guess's fits:
    written since 2026-12-07 — an older blur record keeps its verdict) becomes ``indistinguishable``, with why."""
    from ..solvers.calibration import guess_misfit_handicap

    fit = record.get("initial_guess_fit")
    handicap = getattr(operator, "holdout_guess_handicap", None) or guess_misfit_handicap(
        (fit["held_out"], fit["kept"]) if isinstance(fit, dict) and {"held_out", "kept"} <= set(fit) else None,
        record.get("sigma"))
    if record.get("against_initial_guess") == "better" and handicap:
        record = {**record, "against_initial_guess": "indistinguishable", "guess_handicap": handicap}
    return record


def stale_calibration(record: dict, job, items: list, options: dict) -> str | None:
    """Why a ``calibration.json`` left by an earlier run does not apply to this one (None: it
    does): other calibrate options, other run settings (operator, σ, solver, prior, seed: the
    resume fingerprint) or other calibration images."""
    made_with = dict(record.get("options") or {})
    if "comparison_splits" not in made_with:  # a record from before the option: what its comparison used
        made_with["comparison_splits"] = record.get("comparison_splits", 0 if record.get("method") == "holdout"
                                                    else options.get("comparison_splits"))
    asked = json.loads(json.dumps(options, default=str))
    if made_with != asked:
        differ = [f"calibrate.{k} {made_with.get(k)!r} -> {asked.get(k)!r}" for k in sorted(set(made_with) | set(asked))
                  if made_with.get(k) != asked.get(k)]
        return f"with other calibrate options ({', '.join(differ)})"
    if record.get("fingerprint") != job.fingerprint:
        return f"for other run settings (fingerprint {record.get('fingerprint')} != {job.fingerprint})"
    digests = record.get("input_digests") or {}
    by_name = {it.name: it for it in items}
    changed = [nm for nm, d in digests.items() if nm not in by_name or input_digest(by_name[nm]) != d]
    if changed or not digests:
        return f"from other images ({', '.join(changed[:3]) or 'not recorded'})"
    return None


def calibration_items(job, items: list, count: int) -> list:
    """The images to calibrate on: the first ``count``; with z-coupling, ``count`` neighbouring
    slices from the middle of the first volume (its end slices are often near empty), so that the
    candidates are scored coupled, as the volume will be solved."""
    if job.coupling is None:
        return items[:count]
    first = sorted((it for it in items if it.volume == items[0].volume), key=lambda it: it.z)
    start = max(0, (len(first) - count) // 2)
    return first[start:start + count]


def _describe(record: dict) -> str:
    if (record.get("options") or {}).get("params") == []:
        return (f"the solver as given against the initial guess: {record.get('against_initial_guess') or 'no comparison'} "
                f"({record['nfe_per_image']:.0f} network evaluations per image, {record['seconds']:.0f} s)")
    values = ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in record["params"].items())
    return (f"{values} by {record['method']} ({record['candidates']} candidates, {record['nfe_per_image']:.0f} "
            f"network evaluations per image, {record['seconds']:.0f} s){'; ' + record['note'] if record['note'] else ''}")


def write_calibration_files(out: Path, record: dict) -> None:
    """``calibration.json`` (what was chosen and how), ``calibration.csv`` (one row per candidate:
    its values, ground-truth-free score, network evaluations per image, seconds; for those checked
    on all entries ``full_fit`` / ``restricted_fit`` and, when it failed, ``rejected``) and
    ``calibration.png`` (score against each calibrated parameter, the chosen value and any
    rejected candidate marked)."""
    atomic_write_text(out / "calibration.json", json.dumps(record, indent=1, default=str))
    rows = record["table"]
    if not rows:  # calibrate.params=[]: nothing searched, nothing to tabulate
        return
    cols = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "calibration.csv", buf.getvalue())
    plot_calibration(rows, record["params"], record["method"], out / "calibration.png", sigma=record.get("sigma"))


def log_ticks(axis, values) -> None:
    """Readable ticks on a log axis over ``values``: within about a decade matplotlib labels every
    minor tick (2×10⁻¹, 3×10⁻¹, … overlapping); there, ticks at 1, 2 and 5 × 10^k as plain numbers."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if len(values) < 1 or max(values) / min(values) > 20:
        return
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def plot_calibration(rows: list[dict], chosen: dict, method: str, path: Path, sigma: float | None = None) -> None:
    """Score against each calibrated parameter; ``sigma == 0`` labels the score as the mean squared
    error it then is (``criteria.holdout_error``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k in chosen if k != "iterations"]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3), squeeze=False)
    for ax, name in zip(axes[0], names):
        finite = [r for r in rows if math.isfinite(r["score"])]  # a diverged candidate is listed in the CSV, not drawn
        pts = sorted((r[name], r["score"]) for r in finite if isinstance(r.get(name), (int, float)) and not r.get("preset"))
        if pts:
            ax.plot(*zip(*pts), "o-", color="0.4", label="candidates")
        rejected = [(r[name], r["score"]) for r in finite if r.get("rejected") and isinstance(r.get(name), (int, float))]
        if rejected:  # best held-out score, but the check on all entries failed (calibration.csv: full_fit)
            ax.plot(*zip(*rejected), "x", color="tab:red", ms=9, mew=2, label="rejected on all entries")
        for r in finite:
            if r.get("preset"):  # the solver as given (its value may be a per-operator default, None)
                given = r.get(name)
                ax.axhline(r["score"], color="tab:blue", ls="--",
                           label=f"as given ({'its per-operator default' if given is None else given})")
        if isinstance(chosen.get(name), (int, float)) and chosen[name] > 0:  # (z_coupling 0: slice by slice)
            ax.axvline(chosen[name], color="tab:red", label=f"chosen {chosen[name]:.3g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        log_ticks(ax.xaxis, [r[name] for r in finite if isinstance(r.get(name), (int, float)) and r[name] > 0])
        log_ticks(ax.yaxis, [r["score"] for r in finite if r["score"] > 0])
        ax.set_xlabel(name)
        # the holdout score: held-out entries' squared error plus any excess misfit of the kept ones
        # (HoldoutObjective.with_kept_misfit), per entry, divided by σ² (noise-free: not divided)
        if sigma == 0:
            ax.set_ylabel("score: squared error per entry" if method == "holdout" else "residual (σ = 0)")
        else:
            ax.set_ylabel("score: squared error / σ² per entry" if method == "holdout" else "residual / χ² level")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
