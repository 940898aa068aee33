"""The noise level of a run on given measurements (``data.measurements=true``): ``sigma=auto``
estimates it from the measurements (blurred images: :mod:`ipsolve.operators.noise_level`), and a
given ``sigma`` far from that estimate is said — the residual flags, the stopping rules and
calibration all read the measurement's noise through it.  (fastMRI k-space: :func:`.volumes.kspace_sigma`.)"""
from __future__ import annotations

import logging

import numpy as np

from .batches import read_measurement
from .errors import RunError

log = logging.getLogger("ipsolve")

METHOD = "patch PCA (Chen, Zhu & Heng, ICCV 2015)"


def measurement_sigma(sigma, items, operator, prior, device, own_measurements: bool, main_process: bool):
    """``(sigma as a number, the estimate's record for summary.json or None, notes)``.  ``sigma="auto"``:
    the median of the measurements' estimates (one σ serves the run; a note when they differ by more
    than 1.5×), or a one-line :class:`RunError` saying why there is none.  ``"auto_each"``: the same
    median, and the record's ``per_image`` estimates (each checked) are the σ each image is solved with.
    A number is kept, with a note when the estimate says it is wrong (:func:`given_sigma_note`), where
    the operator gives one; an estimate below ``LOW_ESTIMATE`` is said to be an upper bound.  The notes
    are logged (``main_process``) and go into summary.json and the report (they were in the log only:
    an audit, 2026-12-07).  Every process reads every measurement (2-D images: cheap), so all agree."""
    auto, each = str(sigma) in ("auto", "auto_each"), str(sigma) == "auto_each"
    if not auto and operator.noise_estimate_note() is not None:
        return sigma, None, []
    from ..operators.noise_level import checked_estimate, estimate_sigma, given_sigma_note, low_estimate_note

    from ..io import read_notices

    estimates, unread, failed = {}, None, {}
    for item in items:
        try:
            with read_notices(quiet=True):  # (the batch that reads it again says what reading changed)
                y = read_measurement(item, operator, prior, device, own_measurements)
        except (OSError, ValueError) as err:
            unread = unread or f"{item.name}: {err}"
            continue  # the batch that reads it skips it, saying why
        try:
            estimates[item.name] = float(estimate_sigma(y, operator)[0])
            if each:
                checked_estimate(estimates[item.name], f"measurement {item.name}")
        except ValueError as err:
            if each and operator.noise_estimate_note() is None:  # this image's own (flat, too small): it is skipped
                failed[item.name] = str(err).replace("sigma=auto", "sigma=auto_each").split("; give sigma")[0]
                estimates.pop(item.name, None)
                continue
            if auto:
                raise RunError(f"{err}".replace("give sigma as a number", "give sigma=VALUE")
                               .replace("sigma=auto ", f"sigma={sigma} ")) from None
            return sigma, None, []
    if not estimates:
        if failed:
            raise RunError(f"sigma=auto_each: no measurement's noise could be estimated ({next(iter(failed.items()))[0]}: "
                           f"{next(iter(failed.values()))}); give sigma=VALUE")
        if auto:  # (why they could not be read was dropped: an audit, 2026-12-07)
            raise RunError(f"sigma={sigma}: none of the measurements could be read to estimate their noise ({unread})")
        return sigma, None, []
    values = np.array(list(estimates.values()))
    value = float(np.median(values))
    # "auto": the run's sigma is "median" (one σ serves the run); "auto_each": each image's own, in per_image
    # (the median stands for the run where one number is asked for); else the given one, kept
    record = {"auto": auto, "method": METHOD, "median": value, "per_image": estimates}
    notes = []
    if each:
        record["each"] = True
        if failed:  # (one flat file stopped the whole run, where sigma=auto went on: an audit, 2026-12-07)
            record["not_estimated"] = failed
        low = [name for name, v in estimates.items() if low_estimate_note(v)]
        if low:
            notes.append(low_estimate_note(min(estimates[n] for n in low), f"{len(low)} measurement(s) (the lowest; "
                                           f"{', '.join(low[:3])}{', ...' if len(low) > 3 else ''})")
                         .replace("sigma=auto ", "sigma=auto_each "))
        if main_process:
            log.info("sigma=auto_each: each image is solved with its own noise level, estimated from its measurement "
                     "(%s): %.4g to %.4g, median %.4g (records' sigma)", METHOD, values.min(), values.max(), value)
    elif auto:
        try:
            checked_estimate(value, "the measurements (their median)")
        except ValueError as err:
            raise RunError(f"{err}".replace("give sigma as a number", "give sigma=VALUE")) from None
        if main_process:
            log.info("sigma=auto: %.4g, estimated from the %d measurement(s) (%s; the median of %.4g to %.4g)",
                     value, len(values), METHOD, values.min(), values.max())
        if values.max() > 1.5 * values.min():
            notes.append(f"sigma=auto: the measurements' noise estimates differ ({values.min():.4g} to "
                         f"{values.max():.4g}) and one sigma ({value:.4g}, their median) serves the run: sigma=auto_each "
                         f"solves each with its own (summary.json's sigma_estimate gives each one's)")
        notes.append(low_estimate_note(value, "the measurements (their median)"))
    else:
        notes.append(given_sigma_note(float(sigma), value, "the measurements (their median)"))
        off = [name for name, v in estimates.items() if given_sigma_note(float(sigma), v)]
        if not notes[-1] and off:  # (the median alone hid 3 of 6 measurements 5× off: an audit, 2026-12-07)
            notes.append(f"sigma is {float(sigma):g}, but {len(off)} of the {len(estimates)} measurements' noise is "
                         f"estimated far from it ({', '.join(f'{n} {estimates[n]:.4g}' for n in off[:3])}"
                         f"{', ...' if len(off) > 3 else ''}): sigma=auto_each solves each with its own estimate")
        elif notes[-1] and values.max() > 1.5 * values.min():
            notes[-1] += (f"; the measurements' estimates differ ({values.min():.4g} to {values.max():.4g}): "
                          f"sigma=auto_each solves each with its own")
    notes = [n for n in notes if n]
    if main_process:
        for note in notes:
            log.warning("%s", note)
    return (value if auto else sigma), record, notes
