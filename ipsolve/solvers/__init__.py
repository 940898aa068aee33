"""Solvers: algorithms that combine an operator and a prior (no I/O, no config files)."""
from __future__ import annotations

import torch

from ..operators import Operator
from ..parameters import unknown_parameters_message
from ..priors import Prior
from .base import Result, Solver, generators_for
from .coupling import ZCoupling, check_solver
from .stopping import ESWMV, StoppingRule
from .daps import DAPS
from .dmplug import DMPlug
from .dps import DPS, BlindDPS, project_simplex
from .fmplug import FMPlug
from .resample import ReSample
from .sampling import combine_samples, reliability, sample_generators

SOLVERS = {"dps": DPS, "resample": ReSample, "dmplug": DMPlug, "fmplug": FMPlug, "daps": DAPS, "blind_dps": BlindDPS}


def make_solver(name: str, **params) -> Solver:
    """Build a solver by registry name (the same names as ``conf/solver/*.yaml``)."""
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; known solvers: {', '.join(sorted(SOLVERS))}")
    message = unknown_parameters_message("solver", name, SOLVERS[name], params)
    if message:
        raise TypeError(message)
    return SOLVERS[name](**params)


def solve(y: torch.Tensor, operator: Operator, prior: Prior, solver: Solver | str, *, sigma: float = 0.01,
          generator=None, callback=None, samples: int = 1, penalty=None) -> Result:
    """Reconstruct ``x`` from ``y = A(x) + n`` (``y`` in [-1, 1], noise std ``sigma`` on that scale).

    ``generator``: a ``torch.Generator``, a list with one per image (a batch then equals single
    runs with the same generators), or an int seed.  ``samples=k``: k independent runs per
    image (sample j of image i seeded from (i's generator, j); the batch is solved once per
    sample, so memory stays that of one run); ``Result.samples``, ``.x`` = their mean, ``.std``.
    Every image gets a ``reliability`` score in its ``info`` (:mod:`ipsolve.solvers.sampling`).
    ``penalty``: a per-image energy ``x → (B,)`` added to the solver's data term (z-coupling of a
    volume's slices, :class:`ipsolve.solvers.coupling.ZCoupling`; DPS, DMPlug, FMPlug).
    Never sees the ground truth."""
    if isinstance(solver, str):
        solver = make_solver(solver)
    if not isinstance(operator, Operator):
        raise TypeError(f"operator must be an ipsolve Operator (make_operator(...)), got {type(operator).__name__}")
    if not isinstance(prior, Prior):
        raise TypeError(f"prior must be an ipsolve Prior (load_prior(...)), got {type(prior).__name__}")
    solver.check(operator, prior)
    y = y.to(prior.device, torch.float32)
    operator.to(prior.device)
    operator.check_measurement(y, (y.shape[0], *prior.shape))
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1 (posterior samples per image), got {samples!r}")
    gens = generators_for(generator, y.shape[0])
    if penalty is not None:
        check_solver(solver)
        solver._penalty = penalty
    try:
        if samples == 1:
            result = solver.run(y, operator, prior, gens, sigma, callback)
        else:
            runs = [solver.run(y, operator, prior, sample_generators(gens, j), sigma, callback) for j in range(samples)]
            result = combine_samples(runs, y, operator, sigma)
    finally:
        solver._penalty = None
    per_call = (getattr(prior, "conditioning", None) or {}).get("evaluations_per_call", 1)
    for info, rel in zip(result.info, reliability(y, prior, result, sigma)):
        info.update(rel)
        if per_call > 1:  # classifier-free guidance: each network call evaluates the network twice
            info["nfe"] *= per_call
    return result


__all__ = ["SOLVERS", "make_solver", "solve", "Result", "Solver", "ESWMV", "StoppingRule", "DPS", "BlindDPS",
           "ReSample", "DMPlug", "FMPlug", "DAPS", "project_simplex", "ZCoupling"]
