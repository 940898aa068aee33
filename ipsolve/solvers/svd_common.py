"""What the SVD-based solvers share: the operator's decomposition with the one-line error (DDRM)
and the skip-type timestep grid of DDRM's and RED-diff's code (DDRM, ΠGDM, RED-diff)."""
from __future__ import annotations

import logging

from ..operators.decomposition import NotDecomposable
from .base import check_steps

log = logging.getLogger("ipsolve")
_NOTED: set = set()  # grid notes already logged in this process


def decomposition(solver_name: str, operator, shape, cutoff: float | None = None):
    """``operator.svd(shape)`` (with singular values below ``cutoff`` zeroed), or a one-line
    ``ValueError`` naming the operators that have one."""
    try:
        dec = operator.svd(tuple(shape))
    except NotDecomposable as err:
        raise ValueError(f"solver {solver_name!r} needs a decomposable operator (U, singular values, Vᵀ): {err}") from None
    return dec.truncated(cutoff) if cutoff else dec


def skip_grid(num_timesteps: int, steps: int) -> list[int]:
    """``range(0, T, T // steps)`` — DDRM ``runners/diffusion.py`` L334-335 and RED-diff
    ``utils/functions.py`` L20-24 (``get_timesteps``): ascending; the sampler runs it backwards
    from its last entry (T − T//steps, e.g. 950 for 20 steps), each step to the previous entry
    and the last to t = −1 (ᾱ = 1)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    check_steps(steps, num_timesteps)
    grid = list(range(0, num_timesteps, num_timesteps // steps))
    if len(grid) != steps and (num_timesteps, steps) not in _NOTED:  # said once: nfe counts the steps run
        _NOTED.add((num_timesteps, steps))
        log.warning("steps=%d runs %d steps on the reference's grid range(0, %d, %d) (steps dividing %d run as "
                    "asked)", steps, len(grid), num_timesteps, num_timesteps // steps, num_timesteps)
    return grid
