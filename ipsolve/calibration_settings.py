"""The calibration's settings and their checks, one definition for both doors: ``ipsolve.calibrate``
(the API, :mod:`ipsolve.solvers.calibration`) and a run's ``calibrate`` option (the CLI,
:mod:`ipsolve.runner.calibration`).  Torch-free, so a run checks them before it starts any work."""
from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real

from .notices import shown

METHODS = ("auto", "holdout", "discrepancy")
# fresh splits on which the returned values are compared with the initial guess (fresh_split_differences)
COMPARISON_SPLITS = 2


def _integer(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_calibration_settings(*, method="auto", budget=None, holdout=0.2, comparison_splits=COMPARISON_SPLITS,
                               params=None, prefix: str = "") -> dict:
    """``method``, ``budget``, ``holdout``, ``comparison_splits`` and ``params`` checked, with
    ``params`` as a list (or None); a :class:`ValueError` of one line names the first bad one, with
    ``prefix`` before its name (``calibrate.`` from the command line)."""
    def bad(name: str, expected: str, value):
        return ValueError(f"{prefix}{name} must be {expected}, got {shown(value)}")

    if not isinstance(method, str) or method not in METHODS:
        raise bad("method", f"one of {', '.join(METHODS)}", method)
    if budget is not None and not (_integer(budget) and budget >= 1):
        raise bad("budget", "an integer >= 1 (candidate solves in all: at least 2 per calibrated parameter and 1 for "
                  "the solver as given, so 3 for one) or null (5 for one parameter, 9 for two)", budget)
    if isinstance(holdout, bool) or not isinstance(holdout, Real) or not 0.0 < float(holdout) <= 0.5:
        raise bad("holdout", "a fraction in (0, 0.5] (of the measurement entries held out)", holdout)
    if not (_integer(comparison_splits) and comparison_splits >= 0):
        raise bad("comparison_splits", "an integer >= 0 (fresh splits of y on which the result is compared with the "
                  "operator's initial guess; 0: the calibration's own split)", comparison_splits)
    if isinstance(params, str) and not params.strip("[]() \t\"'"):  # '', "[]" (quoted on the command line): no name
        raise bad("params", f"a parameter name or a list of them ({prefix}params=[] for none, to compare only: a list, "
                            f"not the string '[]')", params)
    names = None if params is None else [params] if isinstance(params, str) else params
    if names is not None and (not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names)):
        raise bad("params", "a parameter name, a list of them ([]: none, the solver as given only compared with the "
                  "initial guess), or null (all the solver declares)", list(names) if isinstance(names, Sequence) else names)
    if names is not None and len(names) == 0 and method == "discrepancy":  # (known before any work)
        raise ValueError(f"{prefix}params=[] compares the solver with the initial guess on held-out measurement "
                         f"entries, which the discrepancy principle holds none of: give {prefix}method=holdout or auto")
    return {"method": method, "budget": None if budget is None else int(budget), "holdout": float(holdout),
            "comparison_splits": int(comparison_splits), "params": None if names is None else list(names)}


def auto_switched_off(auto, source: str = "y") -> str:
    """The refusal of ``calibrate=False`` beside solver values given as ``"auto"`` (``solve`` and ``reconstruct``
    both calibrated them anyway: an audit, 2026-12-07); ``source``: what calibration would read."""
    one = len(auto) == 1
    return (f"calibrate=False, but the solver's {', '.join(auto)} {'is' if one else 'are'} 'auto' (to be chosen from "
            f"{source} by calibration): give {'it' if one else 'them'} a value, or leave calibrate out")


# a run's note (summary.json warnings, the report) where calibrate=true met a solver with nothing to choose that
# cannot run on part of y (DDRM); the report and the sweep table recognise it by this phrase
NOTHING_TO_CHOOSE = "declares no parameters to choose and cannot be compared with the initial guess"


def score_unit(sigma: float | None) -> str:
    """The unit of a calibration score and of differences of scores (:func:`ipsolve.solvers.criteria.holdout_error`:
    squared errors per measurement entry, divided by σ² — mean squared errors when σ = 0)."""
    if sigma is None:
        return "per entry"
    return "σ² per entry" if sigma > 0 else "per entry (mean squared error: σ = 0, not divided by a noise level)"
