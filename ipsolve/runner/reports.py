"""Summaries, reports and sweep tables: mean ± std per metric, ``metrics.csv``, the lines
printed after a run, and the comparison of a sweep's runs."""
from __future__ import annotations

import csv
import io
import itertools
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

from ..calibration_settings import score_unit
from ..notices import plain_number
from .rundir import atomic_write_text

METRICS = ("psnr", "ssim", "lpips")

# Calibration.against_initial_guess, as the report says it (compare_with_initial_guess)
AGAINST_GUESS = {"better": "better than the guess", "indistinguishable": "indistinguishable from the guess",
                 "worse": "worse than the guess"}
INDISTINGUISHABLE = ("the score cannot tell whether the solve beats the operator's initial guess (below it by less than "
                     "two standard errors, above it by less than one): compare them (initial/ beside recon/)")


def indistinguishable_note(handicap: str | None) -> str:
    """What the log and the report say of an ``indistinguishable`` comparison: :data:`INDISTINGUISHABLE`,
    or, where a ``better`` was withheld (``Calibration.guess_handicap``), why."""
    if not handicap:
        return INDISTINGUISHABLE
    return (f"the solve scored below the operator's initial guess by more than two standard errors, but this is not "
            f"called better: {handicap}; compare them (initial/ beside recon/)")


def against_guess(calibration: dict, searched: bool = True) -> str:
    """The comparison with the initial guess, as the report says it (``Calibration.summary``).  On
    fresh splits the entries held out are others than the two scores' before it, so the difference
    is not theirs (``searched=False``: ``calibrate.params=[]``, no values chosen on any split)."""
    verdict, splits = calibration.get("against_initial_guess"), calibration.get("comparison_splits")
    if verdict not in AGAINST_GUESS or calibration.get("initial_guess_se") is None or splits is None:
        if not searched:  # compare only, and no split's solve gave finite scores
            return "; no comparison made: the solves of the kept entries diverged"
        # a calibration.json from before 2026-12-06 (twentieth session)
        return " (a warning only where the guess is better by more than one standard error)"
    where = ((f"on {splits} fresh split{'s' if splits > 1 else ''} of y (other held-out entries, which do not flatter "
              f"the values)" if searched else f"on {splits} fresh split{'s' if splits > 1 else ''} of y (held-out entries)")
             if splits else "on the calibration's own split" if searched else "on one split of y (held-out entries)")
    difference = calibration["initial_guess_difference"]
    return (f"; {where} the solve scored {plain_number(abs(difference))} {score_unit(calibration.get('sigma'))} "
            f"{'below' if difference < 0 else 'above'} the guess (one standard error "
            f"{plain_number(calibration['initial_guess_se'])}: "
            f"{'not called better (note below)' if calibration.get('guess_handicap') else AGAINST_GUESS[verdict]})")


def against_classical(calibration: dict, name: str | None) -> str | None:
    """The comparison with the operator's classical estimate (a blur's deconvolution, on the same splits
    as :func:`against_guess`), as the report's line says it, or None where there was none."""
    verdict, difference, se = (calibration.get(k) for k in ("against_classical", "classical_difference", "classical_se"))
    if verdict not in AGAINST_GUESS or difference is None or se is None:
        return None
    splits = calibration.get("comparison_splits")
    where = f"on {splits} fresh split{'s' if splits > 1 else ''} of y" if splits else "on the calibration's own split"
    words = {"better": "better than it", "indistinguishable": "indistinguishable from it (compare classical/ beside "
             "recon/)", "worse": "not shown better: held-out entries favour a deconvolution, whose errors the blur "
             "hides — gains up to about 1 dB scored so; compare classical/ beside recon/"}[verdict]
    return (f"  against the classical {name or 'estimate'}: {where} (held-out entries) the solve scored "
            f"{plain_number(abs(difference))} {score_unit(calibration.get('sigma'))} {'below' if difference < 0 else 'above'} "
            f"it (one standard error {plain_number(se)}: {words})")


def resize_words(sizes) -> str:
    """How files of these ``"HxW"`` sizes reach the prior's: a square one is resized, another centre-cropped first."""
    square = all(h == w for h, w in (key.split("x") for key in sizes))
    return "resized" if square else "centre-cropped to a square and resized"


def sigma_range_text(summary: dict) -> str:
    """The run's σ for the report's first line: as given, estimated (``sigma=auto``), or each image's own
    (``sigma=auto_each``: their range and median; metrics.csv's ``sigma`` gives each)."""
    estimate = summary.get("sigma_estimate") or {}
    if estimate.get("each"):
        values = [float(v) for v in (estimate.get("per_image") or {}).values()] or [float(summary["sigma"])]
        return (f"each image's own, {sigma_text(min(values))} to {sigma_text(max(values))} (median "
                f"{sigma_text(summary['sigma'])}; estimated: sigma=auto_each)")
    return sigma_text(summary["sigma"]) + (" (estimated: sigma=auto)" if estimate.get("auto") else "")


def sigma_text(sigma) -> str:
    """σ as the report prints it: six significant digits (``sigma=auto`` measures it to 17)."""
    return f"{sigma:.6g}" if isinstance(sigma, (int, float)) and not isinstance(sigma, bool) else str(sigma)


def autoencoder_passes(info: dict) -> int | None:
    """A latent solver's autoencoder calls recorded in its ``info`` (None when it records none)."""
    keys = ("decoder_backward", "decoder_forward", "encoder")
    return sum(int(info[k]) for k in keys if k in info) if any(k in info for k in keys) else None


def _stats(values) -> dict | None:
    import statistics

    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return {"mean": mean, "std": std, "median": statistics.median(vals), "n": len(vals), "min": min(vals),
            "max": max(vals)}


def summarize(records: list[dict], *, settings: dict, skipped: list[dict], num_processes: int,
              wall_seconds: float, extra: dict | None = None) -> dict:
    """Mean ± std (sample std; ``n`` images) and median per metric and per solver statistic.

    Times: ``seconds_per_image`` is the wall time of an image's batch (measure, solve, score)
    divided by the images in it; ``batch_seconds`` the batch's whole time; ``solver_seconds`` the
    solver's time until the image stopped (its ``info["seconds"]``: the batch's time, not the image's)."""
    has_truth = any("metrics" in r for r in records)
    metrics = {}
    if has_truth:
        for m in METRICS:
            metrics[m] = _stats(r["metrics"].get(m) for r in records)
            metrics[f"{m}_initial"] = _stats(r.get("initial_metrics", {}).get(m) for r in records)
        if any(r.get("classical_metrics") for r in records):  # a blur's Tikhonov deconvolution (batches.classical_estimate)
            for m in METRICS:
                metrics[f"{m}_classical"] = _stats((r.get("classical_metrics") or {}).get(m) for r in records)
            metrics["psnr_minus_classical"] = _stats(  # paired: images resumed from before 2026-12-08 have none
                r["metrics"]["psnr"] - r["classical_metrics"]["psnr"] for r in records
                if r.get("metrics", {}).get("psnr") is not None and (r.get("classical_metrics") or {}).get("psnr") is not None)
    return {
        "num_images": len(records) + len(skipped),
        "num_finished": len(records),
        "num_skipped": len(skipped),
        "skipped": skipped,
        "ground_truth": has_truth,
        "metrics": metrics,
        "nfe": {**(_stats(r["info"]["nfe"] for r in records) or {}),
                "total": sum(int(r["info"]["nfe"]) for r in records)},
        "iterations": _stats(r["info"].get("iterations") for r in records),
        # latent solvers' autoencoder work beside the NFE (ReSample: decoder forward+backward in its DPS steps
        # and latent fits, forward passes, encodes; a batch's count, the same for its images)
        **({"autoencoder_passes": _stats(autoencoder_passes(r["info"]) for r in records)}
           if any(autoencoder_passes(r["info"]) for r in records) else {}),
        "seconds_per_image": _stats(r.get("seconds_per_image") for r in records),
        "batch_seconds": _stats(r.get("batch_seconds") for r in records),
        "solver_seconds": _stats(r["info"]["seconds"] for r in records),
        "residual": _stats(r["info"]["residual"] for r in records),
        "initial_residual": _stats(r.get("initial_residual") for r in records),
        "reliability": _stats(r["info"].get("reliability") for r in records),
        **({"kernel_error": _stats(r.get("kernel_error") for r in records)}  # blind, simulated: ‖k̂ − k‖/‖k‖
           if any(r.get("kernel_error") is not None for r in records) else {}),
        "stop_reasons": dict(Counter(r["info"]["stop_reason"] for r in records)),
        "residual_warnings": {r["name"]: r["warning"] for r in records if "warning" in r},
        "worse_than_initial": {r["name"]: r["worse_than_initial"] for r in records if r.get("worse_than_initial")},
        # what reading a file changed about it (transparency composited, 12-bit values, a TIFF's first page)
        **({"input_notes": {r["name"]: r["input_notes"] for r in records if r.get("input_notes")}}
           if any(r.get("input_notes") for r in records) else {}),
        "seeds": {r["name"]: r["seed"] for r in records},
        "num_processes": num_processes,
        # a resume on another process count: each record keeps the count (and rank) it was made with
        **({"images_by_process_count": dict(Counter(int(r.get("num_processes", num_processes)) for r in records))}
           if any(r.get("num_processes", num_processes) != num_processes for r in records) else {}),
        "rank": {r["name"]: r["rank"] for r in records},
        "wall_seconds": wall_seconds,
        **settings,
        **(extra or {}),
    }


CSV_INFO = ("nfe", "iterations", "stop_reason", "residual")
CSV_TIMES = ("seconds_per_image", "batch_seconds")


RELIABILITY_TERMS = ("feasibility", "disagreement", "prior_consistency")  # the score's terms (solvers/sampling.py)


def metrics_csv(records: list[dict], decisions: dict | None = None) -> str:
    """One row per image: metrics (with ground truth), solver statistics, the initial guess's
    residual and whether the reconstruction fits worse (``worse_than_initial``) or far from the noise
    level (``residual_warning``), times, the
    reliability score, its terms and the accept / review decision, seeds."""
    has_truth = any("metrics" in r for r in records)
    classical = any(r.get("classical_metrics") for r in records)  # the operator's classical estimate, scored
    cols = ["name", "rank"]
    if has_truth:
        cols += list(METRICS) + [f"{m}_initial" for m in METRICS]
        cols += [f"{m}_classical" for m in METRICS] if classical else []
    cols += list(CSV_INFO) + ["initial_residual", "worse_than_initial", "residual_warning", *CSV_TIMES, "reliability",
                              *RELIABILITY_TERMS, "reliability_reason", "decision", "seed_noise", "seed_solver"]
    kernels = any(r.get("kernel_error") is not None for r in records)  # blind, simulated
    cols += ["kernel_error"] if kernels else []
    own_sigma = any("sigma" in r for r in records)  # sigma=auto_each: the σ each image was solved with
    cols += ["sigma"] if own_sigma else []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)

    def fmt(v):
        if v is None:
            return "n/a"
        return f"{v:.6g}" if isinstance(v, float) else v

    for r in records:
        row = [r["name"], r["rank"]]
        if has_truth:
            row += [fmt(r["metrics"].get(m)) for m in METRICS]
            row += [fmt(r.get("initial_metrics", {}).get(m)) for m in METRICS]
            row += [fmt((r.get("classical_metrics") or {}).get(m)) for m in METRICS] if classical else []
        row += [fmt(r["info"].get(k)) for k in CSV_INFO]
        row += [fmt(r.get("initial_residual")), "yes" if r.get("worse_than_initial") else "no",
                "yes" if r.get("warning") else "no"]  # residual above 5σ√m (summary.json: residual_warnings)
        row += [fmt(r.get(k)) for k in CSV_TIMES]
        terms = r["info"].get("reliability_terms") or {}  # n/a: a term that needs what the run lacks (samples)
        row += [fmt(r["info"].get("reliability")), *(fmt(terms.get(k)) for k in RELIABILITY_TERMS),
                fmt(r["info"].get("reliability_reason")),
                (decisions or {}).get(r["name"], "accept")]
        row += [r["seed"]["noise"], r["seed"]["solver"]]
        row += [fmt(r.get("kernel_error"))] if kernels else []
        row += [fmt(r.get("sigma"))] if own_sigma else []
        w.writerow(row)
    return buf.getvalue()


def format_stats(s: dict | None, digits: int = 2, median: bool = False, of: int | None = None) -> str:
    """``mean ± std`` (``median: True``: and the median, which one outlying image cannot move);
    ``of``: the run's image count, said when the statistic covers fewer (e.g. a metric added on a
    resume: the resumed images are not rescored)."""
    if not s:
        return "n/a"
    text = f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"
    if median and s.get("median") is not None:
        text += f", median {s['median']:.{digits}f}"
    if of is not None and s.get("n") is not None and s["n"] < of:
        text += f" (over {s['n']} of {of} images)"
    return text


def report(summary: dict) -> str:
    """A few human-readable lines about a finished run."""
    lines = []
    op, sv, pr = summary["operator"], summary["solver"], summary["prior"]
    lines.append(f"ipsolve: {summary['num_finished']} image(s) reconstructed"
                 + (f", {summary['num_skipped']} skipped (unreadable or invalid, see summary.json: "
                    f"{', '.join(str(s['file'] or s['name']) for s in summary['skipped'])})" if summary["skipped"] else "")
                 + f" | operator {op['name']}"
                 + (f" ({drawn['sampled_columns']} of {drawn['columns']} columns sampled: {drawn['acceleration']:g}×)"
                    if isinstance(drawn := summary.get("operator_realised"), dict) else "")
                 + (f" ({op['views']} views over {op['angles'][0]:g}–{op['angles'][1]:g}°)"
                    if op.get("name") == "ct" and op.get("views") and len(op.get("angles") or ()) == 2 else "")
                 + (f" (oversampling {op['oversampling']:g}, |F| of {'x' if op.get('signed') else '(x + 1)/2'}"
                    + ("; metrics after aligning to the truth's translation and flip, recon/ as solved)"
                       if summary.get("metrics") else ")")
                    if op.get("name") == "phase_retrieval" and isinstance(op.get("oversampling"), (int, float)) else "")
                 + f" | solver {sv['name']} | prior {pr['source']} | sigma {sigma_range_text(summary)}"
                 + f" | {summary['num_processes']} process(es)")
    coupling, chosen = summary.get("z_coupling"), (summary.get("calibration") or {}).get("coupling")
    if coupling == "auto" and isinstance(chosen, (int, float)):
        coupling = f"weight {chosen:g}, chosen from the measurements (data.z_coupling=auto; 0: slice by slice)"
    elif isinstance(coupling, (int, float)) and not isinstance(coupling, bool):
        coupling = f"weight {coupling:g}" if coupling > 0 else None
    if isinstance(coupling, str) and coupling.startswith("auto (one slice"):
        lines.append("  z-coupling: none (data.z_coupling=auto, but every volume has one slice)")
    elif coupling:  # (the weight was in summary.json only)
        lines.append(f"  z-coupling: {coupling} (total variation along z in the data term: each volume's slices "
                     f"solved together)")
    m = summary["metrics"]
    if m:
        n = summary["num_finished"]
        lines.append(f"  PSNR {format_stats(m.get('psnr'), median=True, of=n)} dB (initial guess "
                     f"{format_stats(m.get('psnr_initial'), median=True, of=n)})"
                     f" | SSIM {format_stats(m.get('ssim'), 3, median=True, of=n)} (initial "
                     f"{format_stats(m.get('ssim_initial'), 3, median=True, of=n)})"
                     f" | LPIPS {format_stats(m.get('lpips'), 3, of=n)}")
        ours, initial = m.get("psnr"), m.get("psnr_initial")
        if ours and initial and ours["mean"] < initial["mean"]:  # measured with the ground truth the user gave
            lines.append(f"  warning: the reconstructions score below the operator's initial guess (mean PSNR "
                         f"{ours['mean']:.2f} against {initial['mean']:.2f} dB): the prior does not fit these images "
                         f"or the solver's settings do not suit them (README: Which prior for which images; "
                         f"calibrate=true chooses the settings from the measurement)")
        classical = m.get("psnr_classical")
        if classical:  # the field's classical method where it is not the initial guess (a blur's deconvolution)
            name = summary.get("classical") or "the classical estimate"
            lines.append(f"  classical {name}: PSNR {format_stats(classical, median=True, of=n)} dB | SSIM "
                         f"{format_stats(m.get('ssim_classical'), 3, median=True, of=n)} — the yardstick a "
                         f"reconstruction should beat (the initial guess is the measurement itself)")
            paired = m.get("psnr_minus_classical")  # per image, where both were scored (a resume may lack it)
            below_initial = ours and initial and ours["mean"] < initial["mean"]  # (warned above already)
            if paired and paired["mean"] < 0 and not below_initial:
                lines.append(f"  warning: the reconstructions score below the classical estimate (PSNR "
                             f"{-paired['mean']:.2f} dB lower on average over the {paired['n']} image(s) with both): "
                             f"the prior or the solver's settings do not suit these images at this noise level")
        resized = summary.get("resized")
        if resized:
            size = "×".join(str(v) for v in resized["to"])
            lines.append(f"  metrics are at the prior's size {size}: {resized['count']} image(s) were "
                         f"{resize_words(resized['from']).replace(' to a square', '')} from "
                         f"{', '.join(k.replace('x', '×') for k in resized['from'])}")
    if summary["num_finished"]:
        per_image = summary.get("seconds_per_image")
        ae = summary.get("autoencoder_passes")
        lines.append(f"  NFE {format_stats(summary['nfe'], 0)}"
                     + (f" (+ {format_stats(ae, 0)} autoencoder passes, a decoder forward+backward counting one)"
                        if ae else "") + " | residual/(sigma*sqrt(m)) "
                     f"{format_stats(summary['residual'])} (initial guess "
                     f"{format_stats(summary.get('initial_residual'))}) | seconds per image "
                     f"{format_stats(per_image, 1)} (batch time / batch size) | "
                     f"stop: {', '.join(f'{k} {v}' for k, v in summary['stop_reasons'].items())}")
    read = summary.get("input_notes") or {}
    if read:  # what reading a file changed about it (transparency, 12-bit values, pages): the log said it
        notes = [n for ns in read.values() for n in ns]
        lines.append(f"  note: {len(read)} input file(s) changed as read: {notes[0]}"
                     + (f"; {len(notes) - 1} more (summary.json input_notes)" if len(notes) > 1 else ""))
    if summary.get("kernel_error"):  # blind, simulated: the estimated kernel against the true one
        lines.append(f"  kernel error ‖k̂ − k‖/‖k‖ {format_stats(summary['kernel_error'], 3)} (estimated against the "
                     f"true kernel; kernel/ holds the estimates)")
    calibration = summary.get("calibration")
    if calibration:
        changed = calibration.get("changes")  # absent from a record: say nothing of kept values
        values = ", ".join((f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}")
                           + (" (the solver's own, kept)" if changed is not None and k not in changed
                              and k != "z_coupling" else "")  # (the coupling weight is no solver setting)
                           for k, v in calibration["params"].items())
        if calibration.get("options", {}).get("params") == []:  # calibrate.params=[]: compared only
            lines.append(f"  compared with the operator's initial guess on {len(calibration['images'])} image(s) without "
                         f"the ground truth (calibrate.params=[]: the solver as given, no values searched; "
                         f"{calibration['nfe_per_image']:.0f} network evaluations per image, {calibration['seconds']:.0f} s"
                         f"){against_guess(calibration, searched=False).replace('; ', ': ', 1)}")
        else:
            lines.append(f"  calibrated on {len(calibration['images'])} image(s) without the ground truth: {values} "
                         f"({calibration['method']}, {calibration['candidates']} candidates, "
                         f"{calibration['nfe_per_image']:.0f} network evaluations per image, {calibration['seconds']:.0f} s"
                         f"; calibration.csv)")
        if calibration.get("score") is not None and calibration.get("initial_guess_score") is not None:
            lines.append(f"  calibration score on the split that chose the values ({score_unit(calibration.get('sigma'))}: "
                         f"held-out entries' error, plus "
                         f"kept entries' misfit beyond it; lower is better): {plain_number(calibration['score'], 4)}, "
                         f"the operator's initial guess {plain_number(calibration['initial_guess_score'], 4)}"
                         + against_guess(calibration))
        classical = against_classical(calibration, summary.get("classical"))
        if classical:
            lines.append(classical)
        if calibration.get("warning"):
            lines.append(f"  warning: calibration: {calibration['warning']}")
        else:
            if calibration.get("against_initial_guess") == "indistinguishable":
                lines.append(f"  note: calibration: {indistinguishable_note(calibration.get('guess_handicap'))}")
            if calibration.get("blind_spot"):
                lines.append(f"  note: calibration: {calibration['blind_spot']}")
    threads = summary.get("threads")
    if threads:
        mixed = threads.get("images_by_threads")
        lines.append(f"  torch threads: {threads['threads']} per process ({threads['reason']})"
                     + (f"; the images were made with {', '.join(f'{k} thread(s): {v}' for k, v in mixed.items())} "
                        f"(a resume)" if mixed else ""))
    determinism = summary.get("deterministic") or {}
    made, finished = determinism.get("images"), summary.get("num_finished")
    if determinism.get("enabled") or made:
        ops = determinism.get("nondeterministic_ops") or []
        mixed = made is not None and (made != finished or not determinism.get("enabled"))
        lines.append(f"  deterministic algorithms: {'on' if determinism.get('enabled') else 'off'} in this run"
                     + (f"; {made} of {finished} image(s) were made with them (a resumed run may differ)" if mixed
                        else "")
                     + (f"; {len(ops)} operation(s) without a deterministic kernel ran anyway (results may differ in "
                        f"the last bits between runs): {', '.join(ops)}" if ops else
                        " (every operation met had a deterministic kernel)" if determinism.get("enabled") else ""))
    for text in summary.get("warnings", []):
        lines.append(f"  warning: {text}")
    worse = summary.get("worse_than_initial") or {}
    if worse:
        lines.append(f"  warning: {len(worse)} of {summary['num_finished']} reconstruction(s) fit the measurement "
                     f"worse than the initial guess (residual above its residual and the noise level; marked for "
                     f"review): {', '.join(list(worse)[:5])}{', ...' if len(worse) > 5 else ''}")
    review = summary.get("review") or {}
    if review.get("review_below") is not None or review.get("review_coverage") is not None or review.get("flagged"):
        why = Counter(review["flagged"].values())
        lines.append(f"  review: {review['num_flagged']} of {summary['num_finished']} image(s) flagged"
                     + (f" (each by its first reason: {', '.join(f'{k}: {v}' for k, v in why.items())})" if why else "")
                     + (f": {', '.join(list(review['flagged'])[:5])}" if review["flagged"] else "")
                     + (", ... (all in summary.json, metrics.csv)" if len(review["flagged"]) > 5 else "")
                     + (f"; {review['tied_at_cut']} of them reviewed because their reliability ties with the first "
                        f"image left out (accepted below the requested coverage)" if review.get("tied_at_cut") else "")
                     + (f"; {review['accepted_by_score_but_flagged']} of them ranked for acceptance by their reliability "
                        f"but flagged (a flagged image is never accepted, whatever review_coverage or review_below)"
                        if review.get("accepted_by_score_but_flagged") else ""))
    elif review and not summary.get("calibration"):  # every image accepted, by no rule but the flags
        from ..solvers.base import RESIDUAL_WARNING

        from ..calibration_settings import NOTHING_TO_CHOOSE

        uncomparable = any(NOTHING_TO_CHOOSE in w for w in summary.get("warnings", []))
        lines.append(f"  review: no image flagged; with no review rule set, accept means only that no flag was raised "
                     f"(residual within {RESIDUAL_WARNING:g}× the noise level and the initial guess's): "
                     f"review_coverage=0.8 also reviews the least reliable"
                     + ("" if uncomparable else ", 'calibrate.params=[]' compares the solver with the initial guess"))
    below = review.get("accepted_below_initial_psnr")
    if below:
        lines.append(f"  note: {len(below)} accepted image(s) score below their initial guess in PSNR: "
                     f"{', '.join(below[:5])}{', ...' if len(below) > 5 else ''} (accept/review is decided from the "
                     f"measurement alone; the ground truth, which a user of real data lacks, shows it: metrics.csv "
                     f"psnr against psnr_initial)")
    for name, vol in (summary.get("volumes") or {}).items():
        m, m0 = vol.get("metrics"), vol.get("initial_metrics")
        lines.append(f"  volume {name}: slices {vol['slices'][0]}-{vol['slices'][1]} at {vol['size']} px, window "
                     f"[{vol['window']['lo']:g}, {vol['window']['hi']:g}] ({vol['window']['spec']}) -> "
                     f"{vol['outputs'].get('recon', 'not written')}"
                     + (f" | volume PSNR {m['psnr']:.2f} dB (initial {m0['psnr']:.2f})" if m and m0 else ""))
        for text in vol.get("warnings", []):
            lines.append(f"    note: {text}")
    if summary.get("input_skipped"):
        lines.append("  input files skipped: " + "; ".join(f"{Path(s['file']).name} ({s['reason']})"
                                                         for s in summary["input_skipped"][:5])
                     + (" ..." if len(summary["input_skipped"]) > 5 else ""))
    far = summary.get("residual_warnings", {})
    if far:
        lines.append(f"  warning: {len(far)} image(s) far from the noise level (residual > 5× σ√m; with samples=k "
                     f"also most samples'): "
                     f"{', '.join(list(far)[:5])}{', ...' if len(far) > 5 else ''} — see summary.json")
    return "\n".join(lines)


def failed_job_choices(folder: Path) -> dict:
    """A failed sweep job's operator, solver and prior as its composed configuration
    (``.hydra/config.yaml``) names them — its row said n/a for what was known; {} without one."""
    import yaml

    try:
        cfg = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    part = {k: cfg.get(k) if isinstance(cfg.get(k), dict) else {} for k in ("operator", "solver", "prior")}
    out = {"operator": part["operator"].get("name"), "solver": part["solver"].get("name"),
           "prior": part["prior"].get("source")}
    return {k: str(v) for k, v in out.items() if v not in (None, "???")}


def job_files(sweep_dir, name: str) -> list[Path]:
    """The sweep jobs' files called ``name`` (``summary.json``, ``failed.json``, ``.hydra``) at any
    depth below ``sweep_dir``: ``hydra.sweep.subdir=${hydra.job.override_dirname}`` nests a job whose
    setting holds a "/" (``data.path=/data/x``) — one level down, such a sweep had no summary and a
    failed job went unseen (audit 2026-12-07)."""
    sweep_dir = Path(sweep_dir)
    # a job folder: one level down (as Hydra numbers them), or deeper with Hydra's .hydra beside the file — not a
    # job's records/ (an image named "failed" has records/failed.json: the review of 2026-12-07)
    return sorted(p for p in sweep_dir.rglob(name) if p.parent != sweep_dir
                  and (p.parent.parent == sweep_dir or (p.parent / ".hydra").is_dir()))


def sweep_files(sweep_dir) -> dict[str, int]:
    """Every job's ``summary.json`` / ``failed.json`` under ``sweep_dir`` with its modification
    time (ns): taken when a sweep starts, so that its summary can leave out what it did not write."""
    out = {}
    for p in [*job_files(sweep_dir, "summary.json"), *job_files(sweep_dir, "failed.json")]:
        try:
            out[str(p)] = p.stat().st_mtime_ns
        except OSError:
            pass
    return out


def calibration_columns(calibration: dict | None, warnings: list | None = None) -> dict:
    """A sweep row's ``calibrated`` (the chosen values, ``name=value`` joined by ``; ``) and
    ``against_initial_guess`` (better / indistinguishable / worse) from a run's calibration record;
    None where the run did not calibrate — "none (nothing to choose)" where calibrate=true met a solver
    that declares no parameters and cannot be compared (DDRM: its row showed "-" with no reason)."""
    if not calibration:
        from ..calibration_settings import NOTHING_TO_CHOOSE

        nothing = any(NOTHING_TO_CHOOSE in w for w in warnings or ())
        return {"calibrated": "none (nothing to choose)" if nothing else None, "against_initial_guess": None,
                "against_classical": None}
    values = "; ".join(f"{k}={plain_number(v) if isinstance(v, float) else v}"
                       for k, v in (calibration.get("params") or {}).items())
    if (calibration.get("options") or {}).get("params") == []:  # calibrate.params=[]: nothing chosen, compared only
        values = "compared only"
    return {"calibrated": values or None, "against_initial_guess": calibration.get("against_initial_guess") or None,
            "against_classical": calibration.get("against_classical") or None}


def calibrated_cell(row: dict) -> str:
    """The sweep table's ``calibrated`` cell: the values and, in brackets, the comparison's outcome."""
    verdict = row.get("against_initial_guess")
    if verdict and row.get("against_classical"):  # a symmetric blur: also against its deconvolution
        verdict += f"; deconvolution: {row['against_classical']}"
    return (row.get("calibrated") or "-") + (f" ({verdict})" if verdict else "")


def keep_earlier_summary(csv_path: Path, md_path: Path, rows: list[dict]) -> None:
    """Before a sweep's summary replaces an earlier one in the same folder: keep the earlier pair as
    ``sweep_summary.<its time>.md`` / ``.csv`` when it lists a finished job that this summary does
    not (another sweep refused in the folder of a finished one: its table would be lost).  A resumed
    or extended sweep, whose earlier finished jobs are finished again, just replaces it."""
    try:
        earlier = list(csv.DictReader(io.StringIO(csv_path.read_text())))
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(csv_path.stat().st_mtime))
    except (OSError, csv.Error, UnicodeDecodeError):
        return
    finished_now = {str(r["job"]) for r in rows if r["error"] is None}
    lost = [r.get("job") for r in earlier if not r.get("error") and r.get("job") not in finished_now]
    if not lost:
        return
    suffix = next(f"{stamp}{'' if n == 0 else f'-{n}'}" for n in itertools.count()
                  if not any((p.parent / f"{p.stem}.{stamp}{'' if n == 0 else f'-{n}'}{p.suffix}").exists()
                             for p in (csv_path, md_path)))  # two kept the same second: none overwritten
    for path in (csv_path, md_path):
        if path.is_file():
            path.replace(path.with_name(f"{path.stem}.{suffix}{path.suffix}"))
    print(f"ipsolve: the earlier sweep summary in {csv_path.parent} lists finished job(s) {', '.join(map(str, lost))} "
          f"that this sweep does not: kept as sweep_summary.{suffix}.md / .csv", file=sys.stderr)


def summarize_sweep(sweep_dir, before: dict[str, int] | None = None,
                    refused: list[dict] = ()) -> tuple[Path, Path] | None:
    """Compare the runs of a sweep (every ``*/summary.json`` under ``sweep_dir``; a job that
    failed left ``*/failed.json`` with its one-line reason): writes ``sweep_summary.md`` and
    ``sweep_summary.csv`` there.  ``before`` (:func:`sweep_files` at the sweep's start): files
    still as they were then are not this sweep's — a job folder left by an earlier sweep in the
    same folder (compared by identity, not by clock, so jobs on other machines count alike).  A
    job with both files from this sweep is shown by its summary (it failed after finishing
    images); without ``before``, by the newer of the two.  ``refused``: jobs whose folder another live
    run held (``folder``, ``overrides``, ``reason``, ``choices``; nothing was written there), each
    shown as a failed job — they had no row."""
    sweep_dir = Path(sweep_dir)
    now = sweep_files(sweep_dir)

    def current(path: Path) -> bool:
        return str(path) in now and (before is None or before.get(str(path)) != now[str(path)])

    runs = []
    for p in [*job_files(sweep_dir, "summary.json"), *job_files(sweep_dir, "failed.json")]:
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not current(p):
            continue
        other = p.parent / ("summary.json" if p.name == "failed.json" else "failed.json")
        if current(other) and (
                (before is not None and p.name == "failed.json")
                or (before is None and (now[str(other)] > now[str(p)]
                                        or (now[str(other)] == now[str(p)] and p.name == "failed.json")))):
            continue  # the job's other file says what happened
        runs.append((p.parent.relative_to(sweep_dir).as_posix(), data, p.name == "failed.json"))
    for job in refused:  # (whatever that folder holds is the other run's)
        try:
            folder = Path(job["folder"]).absolute().relative_to(sweep_dir.absolute()).as_posix()
        except ValueError:
            folder = str(job["folder"])
        runs = [r for r in runs if r[0] != folder] + [(folder, job, True)]
    if not runs:
        return None
    runs.sort(key=lambda r: (0, int(r[0])) if r[0].isdigit() else (1, r[0]))
    cols = ["job", "overrides", "operator", "solver", "prior", "images", "skipped", "psnr", "psnr_median", "psnr_std", "ssim",
            "ssim_std", "lpips", "psnr_initial", "psnr_initial_median", "psnr_classical", "nfe", "seconds_per_image", "residual",
            "residual_warnings", "worse_than_initial", "flagged_for_review", "stop_reasons", "calibrated",
            "against_initial_guess", "against_classical", "error"]
    overrides = [s.get("overrides", []) for _, s, _ in runs]
    common = [o for o in overrides[0] if all(o in other for other in overrides[1:])] if len(runs) > 1 else []
    rows = []
    for job, s, failed in runs:
        shown = " ".join(o for o in s.get("overrides", []) if o not in common)
        if failed:
            rows.append({**{c: None for c in cols}, **(s.get("choices") or failed_job_choices(sweep_dir / job)), "job": job,
                         "overrides": shown, "error": s.get("reason")})
            continue
        m = s.get("metrics") or {}

        def g(key, part="mean"):  # unrounded: the .csv rounds to 4 decimals, the .md to its own (once)
            return (m.get(key) or {}).get(part)

        per_image = s.get("seconds_per_image") or s.get("seconds") or {}  # "seconds": summaries before 2026-12
        rows.append({"job": job, "overrides": shown, "operator": s["operator"]["name"],
                     "solver": s["solver"]["name"], "prior": s["prior"]["source"], "images": s["num_finished"],
                     # inputs that could not be used (only the job's own summary said so: audit 2026-12-07)
                     "skipped": len(s.get("skipped") or []) + len(s.get("input_skipped") or []),
                     "psnr": g("psnr"), "psnr_median": g("psnr", "median"), "psnr_std": g("psnr", "std"),
                     "ssim": g("ssim"), "ssim_std": g("ssim", "std"), "lpips": g("lpips"),
                     "psnr_initial": g("psnr_initial"), "psnr_initial_median": g("psnr_initial", "median"),
                     "psnr_classical": g("psnr_classical"),  # a symmetric blur's deconvolution
                     "nfe": round((s.get("nfe") or {}).get("mean", 0), 1),
                     "seconds_per_image": round(per_image.get("mean", 0), 2),
                     "residual": round((s.get("residual") or {}).get("mean", 0), 3),
                     "residual_warnings": len(s.get("residual_warnings") or {}),
                     "worse_than_initial": len(s.get("worse_than_initial") or {}),
                     "flagged_for_review": (s.get("review") or {}).get("num_flagged", 0),
                     "stop_reasons": " ".join(f"{k}:{v}" for k, v in s.get("stop_reasons", {}).items()),
                     **calibration_columns(s.get("calibration"), s.get("warnings")), "error": None})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if k == "error" and v is None else "n/a" if v is None else round(v, 4) if isinstance(v, float)
                        else v) for k, v in r.items()})
    csv_path, md_path = sweep_dir / "sweep_summary.csv", sweep_dir / "sweep_summary.md"
    keep_earlier_summary(csv_path, md_path, rows)
    atomic_write_text(csv_path, buf.getvalue())

    def pm(r, k, d):
        if r[k] is None:
            return "n/a"
        text = f"{r[k]:.{d}f} ± {r[k + '_std']:.{d}f}" if r.get(k + "_std") is not None else f"{r[k]:.{d}f}"
        return text + (f" (median {r[k + '_median']:.{d}f})" if r.get(k + "_median") is not None else "")

    def num(v, d):
        return "n/a" if v is None else f"{v:.{d}f}"

    calibrated = any(r.get("calibrated") for r in rows)  # a column only when some job calibrated
    md = [f"# Sweep summary: {sweep_dir}", "",
          "PSNR/SSIM: mean ± std (median) over the images (data range 1; std: the sample standard deviation, "
          "÷ (n − 1)); PSNR (initial): the operator's initial "
          "guess (for a symmetric blur also its classical deconvolution); residual: ‖y − A(x)‖ / (σ√m), ≈ 1 at the noise level; s/image: the batch's time divided by its "
          "images.",
          f"Overrides common to all runs: {' '.join(common) or '(none)'}", "",
          "flags: images whose residual is above 5σ√m / that fit y worse than the initial guess / flagged for review.",
          "",
          *(["calibrated: the values calibrate=true chose from the measurement (and the comparison with the initial "
             "guess: better / indistinguishable / worse, a warning).", ""] if calibrated else []),
          "| job | overrides | images | PSNR (dB) | SSIM | LPIPS | PSNR (initial) | NFE | s/image | residual | flags | stop |"
          + (" calibrated |" if calibrated else ""),
          "|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if calibrated else "")]
    for r in rows:
        if r["error"] is not None:
            md.append(f"| {r['job']} | {r['overrides'] or '(defaults)'} | failed: {r['error'].replace('|', '/')} "
                      f"| | | | | | | | | |" + (" |" if calibrated else ""))
            continue
        images = f"{r['images']}" + (f" ({r['skipped']} skipped)" if r["skipped"] else "")
        md.append(f"| {r['job']} | {r['overrides'] or '(defaults)'} | {images} | {pm(r, 'psnr', 2)} | "
                  f"{pm(r, 'ssim', 3)} | {num(r['lpips'], 3)} | {num(r['psnr_initial'], 2)}"
                  + (f" (deconvolution {r['psnr_classical']:.2f})" if r.get("psnr_classical") is not None else "")
                  + f" | {r['nfe']:g} | "
                  f"{r['seconds_per_image']:g} | {r['residual']:g} | "
                  f"{r['residual_warnings']} / {r['worse_than_initial']} / {r['flagged_for_review']} | {r['stop_reasons']} |"
                  + (f" {calibrated_cell(r)} |" if calibrated else ""))
    failed = [r for r in rows if r["error"] is not None]
    if failed:
        md += ["", f"{len(failed)} job(s) failed; each job's folder holds failed.json with the reason."]
    atomic_write_text(md_path, "\n".join(md) + "\n")
    return md_path, csv_path
