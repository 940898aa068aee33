"""ipsolve: imaging inverse problems with pretrained diffusion and flow-matching priors.

Every image inside ipsolve is a ``(B, C, H, W)`` tensor in [-1, 1]; the measurement noise
``sigma`` is on that scale.

``OPERATORS`` and ``SOLVERS`` are the registries (name → class) that ``make_operator`` and
``make_solver`` build from; ``help(ipsolve.solve)`` and the others document the API (README, Python)."""
from __future__ import annotations

from .operators import OPERATORS

__version__ = "0.1.0"


def __getattr__(name):  # solvers and the runner are imported on first use (they pull in more)
    if name in ("make_operator", "make_solver", "load_prior", "solve", "calibrate"):  # also taking the CLI's presets
        from .runner import settings

        return getattr(settings, name)
    if name == "estimate_sigma":  # sigma="auto": the noise of blurred measurements
        from .operators.noise_level import estimate_sigma

        return estimate_sigma
    if name in ("Calibration", "SOLVERS", "Result"):
        from . import solvers

        return getattr(solvers, name)
    if name in ("reconstruct", "reconstruct_volumes"):
        from . import runner

        return getattr(runner, name)
    if name in ("datasets", "priors", "solvers", "runner", "metrics", "io"):  # ipsolve.datasets.heldout_phantoms(...)
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'ipsolve' has no attribute {name!r}")


def __dir__():  # the lazily imported API too: help(ipsolve) and tab completion list it
    return sorted(set(globals()) | set(__all__))


__all__ = ["make_operator", "OPERATORS", "load_prior", "make_solver", "solve", "calibrate", "Calibration", "reconstruct",
           "reconstruct_volumes",
           "SOLVERS", "Result", "estimate_sigma"]
