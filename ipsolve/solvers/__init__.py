"""Solvers: algorithms that combine an operator and a prior (no I/O, no config files)."""
from __future__ import annotations

import torch

from ..operators import Operator
from ..parameters import unknown_parameters_message
from ..priors import Prior
from .base import ESWMV, Result, Solver, generators_for
from .dmplug import DMPlug
from .dps import DPS, project_simplex
from .fmplug import FMPlug
from .resample import ReSample

SOLVERS = {"dps": DPS, "resample": ReSample, "dmplug": DMPlug, "fmplug": FMPlug}


def make_solver(name: str, **params) -> Solver:
    """Build a solver by registry name (the same names as ``conf/solver/*.yaml``)."""
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; known solvers: {', '.join(sorted(SOLVERS))}")
    message = unknown_parameters_message("solver", name, SOLVERS[name], params)
    if message:
        raise TypeError(message)
    return SOLVERS[name](**params)


def solve(y: torch.Tensor, operator: Operator, prior: Prior, solver: Solver | str, *, sigma: float = 0.01,
          generator=None, callback=None) -> Result:
    """Reconstruct ``x`` from ``y = A(x) + n`` (``y`` in [-1, 1], noise std ``sigma`` on that scale).

    ``generator``: a ``torch.Generator``, a list with one per image (a batch then equals single
    runs with the same generators), or an int seed.  Never sees the ground truth."""
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
    gens = generators_for(generator, y.shape[0])
    return solver.run(y, operator, prior, gens, sigma, callback)


__all__ = ["SOLVERS", "make_solver", "solve", "Result", "Solver", "ESWMV", "DPS", "ReSample", "DMPlug", "FMPlug",
           "project_simplex"]
