"""Solvers: algorithms that combine an operator and a prior (no config files; no I/O but one: BlindDPS
loads its kernel prior from a source name on first use, so that ``make_solver("blind_dps_cpu")`` works
from Python as on the command line — :meth:`~.dps.DPS.kernel_prior_for`)."""
from __future__ import annotations

import numbers

import torch

from ..calibration_settings import auto_switched_off, check_calibration_settings
from ..notices import shown, warn
from ..operators import Operator
from ..parameters import expected_types, parameter_type_message, unknown_parameters_message
from ..priors import Prior
from .base import (RESIDUAL_WARNING, Result, ResidualWarning, Solver, generators_for, generators_on, residual_warning,
                   sample_residual_median, samples_warning)
from ..operators.base import ASSUMED_SIGMA, NonFiniteError, assumed_sigma_note
from .calibration import (COUPLING, Calibration, CalibrationWarning, apply_auto, calibrate, declared_space, with_params,
                          fresh_generators as _copies)
from .coupling import ZCoupling, check_solver

SELECT_ONE_SAMPLE = ("select='residual' picks the best of k samples and needs samples > 1 "
                     "(with samples=1 the one run is returned)")
from .inputs import check_inputs, check_models
from .stopping import ESWMV, StoppingRule
from .daps import DAPS
from .dmplug import DMPlug
from .dps import DPS, BlindDPS, project_simplex
from .fmplug import FMPlug
from .resample import ReSample
from .sampling import SELECT, combine_samples, reliability, sample_generators
from .ddrm import DDRM
from .diffpir import DiffPIR
from .pigdm import PiGDM

SOLVERS = {"dps": DPS, "resample": ReSample, "dmplug": DMPlug, "fmplug": FMPlug, "daps": DAPS, "blind_dps": BlindDPS}
SOLVERS.update({"ddrm": DDRM, "pigdm": PiGDM, "diffpir": DiffPIR})  # decomposable-operator baselines (README, Solvers)

# the field's standard baselines for diffusion (RED-diff) and flow priors (README, Solvers)
from .dflow import DFlow  # noqa: E402
from .flowdps import FlowDPS  # noqa: E402
from .pnp_flow import PnPFlow  # noqa: E402
from .reddiff import REDDiff  # noqa: E402

SOLVERS.update({"reddiff": REDDiff, "pnp_flow": PnPFlow, "dflow": DFlow, "flowdps": FlowDPS})


def make_solver(name: str, **params) -> Solver:
    """Build a solver by registry name (the same names as ``conf/solver/*.yaml``).  A parameter the
    solver declares in its ``search_space`` may be given as ``"auto"``: :func:`solve` then chooses it
    from the measurement (:func:`ipsolve.calibrate`) before solving."""
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; known solvers: {', '.join(sorted(SOLVERS))}")
    declared = getattr(SOLVERS[name], "search_space", {}) or {}
    types = expected_types(SOLVERS[name])
    # "auto" = calibrate: for the declared parameters; a string option may have its own "auto" (FlowDPS's loss_space)
    auto = tuple(k for k, v in params.items() if isinstance(v, str) and v == "auto"
                 and (k in declared or "str" not in types.get(k, set())))
    undeclared = [k for k in auto if k not in declared]
    if undeclared:
        raise ValueError(f"solver {name!r} cannot choose {', '.join(map(repr, undeclared))} automatically; "
                         f"parameters that accept 'auto': {', '.join(declared) or 'none'}")
    message = (unknown_parameters_message("solver", name, SOLVERS[name], params)
               or parameter_type_message("solver", name, SOLVERS[name], {k: v for k, v in params.items() if k not in auto}))
    if message:
        raise TypeError(message)
    try:
        solver = SOLVERS[name](**{k: v for k, v in params.items() if k not in auto})
    except ValueError as err:  # each class's own checks: named as the parameter-type errors are
        text = str(err)
        raise ValueError(text if text.startswith(f"solver {name!r}") else f"solver {name!r}: {text}") from None
    solver.check_values()  # at once, as the command line does (it waited for solve)
    solver.auto_params = auto
    return solver


def solve(y: torch.Tensor, operator: Operator, prior: Prior, solver: Solver | str, *, sigma: float | str = ASSUMED_SIGMA,
          generator=None, callback=None, samples: int = 1, select: str = "mean",
          calibrate: bool | dict | None = None, penalty=None) -> Result:
    """Reconstruct ``x`` from ``y = A(x) + n`` (``y`` in [-1, 1], noise std ``sigma`` on that scale;
    not given: 0.01 assumed, with an ``InputWarning``; ``"auto"``: estimated from a blurred ``y``,
    :func:`ipsolve.estimate_sigma`, the batch's median).

    ``generator``: a ``torch.Generator``, a list with one per image (a batch then equals single
    runs with the same generators, up to float32 rounding of batched network calls), or an int seed.  ``callback(step, state)``: called after each
    step or iteration with its index and a dict holding at least ``"x"``, the current image estimate.
    Inputs are checked first (:func:`ipsolve.solvers.inputs.check_inputs`); an image whose residual
    is far above the noise level gets ``info["warning"]`` and one ``ResidualWarning``.
    ``samples=k``: k independent runs per
    image (sample j of image i seeded from (i's generator, j); the batch is solved once per
    sample, so memory stays that of one run); ``Result.samples``, ``.x`` = their mean (or with
    ``select="residual"`` each image's sample of smallest misfit ‖y − A(x)‖), ``.std``.
    Every image gets a ``reliability`` score in its ``info`` (:mod:`ipsolve.solvers.sampling`).
    ``calibrate=True`` (or a dict of :func:`ipsolve.calibrate` options) — and any parameter given
    as ``"auto"`` to :func:`make_solver`, unless ``calibrate=False`` says otherwise (a ValueError) — first
    chooses the solver's declared parameters from ``y`` (``Result.calibration``).  ``penalty``: a per-image energy ``x → (B,)`` added to the
    solver's data term (z-coupling of a volume's slices, :class:`ipsolve.solvers.coupling.ZCoupling`;
    DPS, DMPlug, FMPlug); ``calibrate={"params": [..., "z_coupling"]}`` chooses its weight too (0:
    slice by slice; ``Result.calibration.coupling``); ``calibrate={"params": []}`` chooses nothing and
    compares the solver as given with the operator's initial guess on held-out entries
    (``Result.calibration.against_initial_guess``).  Never sees the ground truth."""
    if isinstance(solver, str):
        solver = make_solver(solver)
    if not isinstance(solver, Solver):
        raise TypeError(f"solver must be an ipsolve Solver (make_solver(...)) or a solver or preset name, got "
                        f"{type(solver).__name__}")
    check_models(operator, prior)
    if penalty is not None and not callable(penalty):
        raise TypeError(f"penalty must be a per-image energy x → (B,) (a callable, e.g. ZCoupling(...)) or None, got "
                        f"{shown(penalty)}")
    solver.check(operator, prior)
    check_callback(callback)
    assumed_sigma_note(sigma, operator)
    y, sigma = check_inputs(y, operator, prior, sigma)
    whole = isinstance(samples, numbers.Integral) or (isinstance(samples, numbers.Real) and float(samples).is_integer())
    if isinstance(samples, bool) or not whole or samples < 1:  # np.int64 and 2.0 too, as the command line takes
        raise ValueError(f"samples must be an integer >= 1 (posterior samples per image), got {shown(samples)}")
    samples = int(samples)
    if select not in SELECT:
        raise ValueError(f"select must be one of {', '.join(SELECT)}, got {shown(select)}")
    if select == "residual" and samples == 1:
        from ..operators.base import InputWarning

        warn(SELECT_ONE_SAMPLE, InputWarning)
    gens = generators_on(generators_for(generator, y.shape[0]), prior.device)
    compare_only = False
    if isinstance(calibrate, dict):  # options of ipsolve.calibrate; {} = its defaults
        options, calibrate_all = dict(calibrate), True
        names = options.pop("params", None)
        if names is not None:
            names = check_calibration_settings(params=names, prefix="calibrate option ")["params"]
        if names == []:  # params=[]: the solver as given, compared with the guess only
            compare_only, calibrate_all = True, False
        elif names is not None:  # calibrate only these (declared ones, and the z-coupling weight of ``penalty``)
            declared_space(solver, [n for n in names if n != COUPLING])
            left = [p for p in getattr(solver, "auto_params", ()) or () if p not in names]
            if left:  # they would run with no value at all
                raise ValueError(f"the solver's {', '.join(left)} {'is' if len(left) == 1 else 'are'} 'auto' (to be "
                                 f"chosen), but calibrate's params={names} leaves it out: add it to params or give a value")
            solver = with_params(solver)
            solver.auto_params = tuple(names)
            calibrate_all = False
        allowed = ("budget", "method", "holdout", "seed", "keep_preset", "comparison_splits", "extend")  # the rest
        # (sigma, generator, penalty) solve() passes itself
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(f"unknown calibrate option(s) {', '.join(unknown)}; options: params, {', '.join(allowed)}")
    elif calibrate is None or isinstance(calibrate, bool):
        auto = tuple(getattr(solver, "auto_params", ()) or ())
        if calibrate is False and auto:  # (it calibrated them anyway, silently: an audit, 2026-12-07)
            raise ValueError(auto_switched_off(auto))
        options, calibrate_all = {}, bool(calibrate)
    else:
        raise TypeError(f"calibrate must be True/False or a dict of ipsolve.calibrate options, got {shown(calibrate)}")
    if penalty is not None:  # calibration's candidates run with the coupling the solve uses
        options["penalty"] = penalty
    solver, calibration = apply_auto(solver, y, operator, prior, sigma, _copies(gens), calibrate_all=calibrate_all,
                                     compare_only=compare_only, **options)
    if calibration is not None and calibration.coupling is not None:  # params=[..., "z_coupling"]: its chosen weight
        penalty = ZCoupling(calibration.coupling, penalty.pairs, penalty.eps) if calibration.coupling > 0 else None
    if penalty is not None:
        check_solver(solver)
        solver._penalty = penalty
    try:
        if samples == 1 and calibration is not None and calibration.result is not None and callback is None:
            # calibration's check already solved all of y with the chosen values (and this penalty, or the
            # chosen z-coupling weight: its candidates ran with it)
            result = calibration.result
        elif samples == 1:
            result = solver.run(y, operator, prior, gens, sigma, callback)
        else:
            runs = [solver.run(y, operator, prior, sample_generators(gens, j), sigma, callback) for j in range(samples)]
            result = combine_samples(runs, y, operator, sigma, select)
    finally:
        solver._penalty = None
    return finish(result, y, prior, solver, sigma, calibration)


def check_callback(callback) -> None:
    """``callback(step, state)`` (README): a callable taking those two — said before the solve, not
    as a TypeError after its first step."""
    if callback is None:
        return
    if not callable(callback):
        raise TypeError(f"callback must be a function callback(step, state) called after each step, got "
                        f"{shown(callback)}")
    import inspect

    try:
        inspect.signature(callback).bind(0, {})
    except TypeError:
        raise TypeError("callback must take two arguments, callback(step, state): the step's index and a dict with "
                        "'x' (the estimate)") from None
    except ValueError:  # a builtin without a signature: taken as given
        pass


def finish(result: Result, y: torch.Tensor, prior: Prior, solver: Solver, sigma: float, calibration=None) -> Result:
    """What :func:`solve` adds to a solver's run: the divergence check, ``calibrated`` and
    ``reliability`` in each image's ``info``, NFE counted per network evaluation (classifier-free
    guidance: two per call).  The runner applies it to the calibration check's solve it reuses."""
    bad = [i for i in range(result.x.shape[0]) if not torch.isfinite(result.x[i]).all()]
    if bad:
        raise NonFiniteError(f"solver {solver.name!r} diverged: non-finite reconstruction of image(s) "
                             f"{', '.join(map(str, bad))}; use a smaller step size or guidance, or calibrate=True")
    result.calibration, result.sigma = calibration, float(sigma)
    if calibration is not None:
        for info in result.info:
            info["calibrated"] = dict(calibration.params)
    per_call = (getattr(prior, "conditioning", None) or {}).get("evaluations_per_call", 1)
    for info, rel in zip(result.info, reliability(y, prior, result, sigma)):
        info.update(rel)
        if per_call > 1:  # classifier-free guidance: each network call evaluates the network twice
            info["nfe"] *= per_call
        if sigma == 0:  # no noise level to measure the misfit against
            info["residual"] = None
        elif (text := residual_warning(info.get("residual")) or samples_warning(info)) is not None:
            info["warning"] = text
    far = [(i, info["residual"] if info["residual"] > RESIDUAL_WARNING else sample_residual_median(info))
           for i, info in enumerate(result.info) if "warning" in info]
    if far:
        lo, hi = min(r for _, r in far), max(r for _, r in far)
        span = f"{lo:.1f}" if f"{lo:.1f}" == f"{hi:.1f}" else f"{lo:.1f}–{hi:.1f}"
        warn(f"{len(far)} of {len(result.info)} image(s) (index {', '.join(str(i) for i, _ in far)}) fit y only "
             f"at {span}× the noise level (‖y − A(x̂)‖/(σ√m), with samples=k the mean's or most samples'; ≈ 1 "
             f"for a good fit): "
             f"the reconstruction does not explain the measurement; check the operator's settings (mask, "
             f"kernel, scale), sigma and the solver's steps (each image's info['warning'])"
             + (f"; {hint}" if (hint := solver.residual_hint()) else ""), ResidualWarning)
    return result


__all__ = ["SOLVERS", "make_solver", "solve", "calibrate", "Calibration", "CalibrationWarning", "Result", "Solver", "ESWMV", "StoppingRule",
           "DPS", "BlindDPS", "ReSample", "DMPlug", "FMPlug", "DAPS", "project_simplex", "REDDiff", "PnPFlow", "DFlow",
           "FlowDPS", "DDRM", "PiGDM", "DiffPIR", "ZCoupling"]
