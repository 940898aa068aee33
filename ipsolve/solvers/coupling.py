"""Coupling the slices of a volume: total variation along z in the data term.

A 2-D prior reconstructs a volume slice by slice; neighbouring slices then disagree where the
prior fills in what the measurement does not fix.  DiffusionMBIR (Chung et al., "Solving 3D
inverse problems using pre-trained 2D diffusion models", CVPR 2023; HJ-harry/DiffusionMBIR
``solvers``: ADMM-TV along z after every denoising step) adds a total-variation prior along the
slice axis to the data step.  ipsolve puts the same term into the data fidelity each solver
already differentiates, so any solver with such a term takes it unchanged:

    E(x) = ‖y − A(x)‖² + weight · Σ_{neighbours z, z+1} Σ_pixels φ(x_{z+1} − x_z),
    φ(d) = √(d² + ε²) − ε   (a smoothed |d|: differentiable at 0)

* DPS steps along ``−ζ ∇_{x_t} √E`` (its unsquared norm, now of the augmented residual);
* DMPlug / FMPlug minimise ``E / m`` (their per-image mean squared error plus the term).

The data residual that the stopping rules and the records report stays ‖y − A(x)‖ alone.  Each
neighbour pair's term is split half and half between its two slices (per-image energies that sum
to the volume's), and the gradient reaches both.  ``weight`` is in the units of ‖y − A(x)‖² per
pixel of |x_{z+1} − x_z| on the [-1, 1] scale (measured choices: README "Medical and volume data").
"""
from __future__ import annotations

import torch

from ..tensors import cached_on

SOLVERS_WITH_DATA_TERM = ("dps", "dmplug", "fmplug")


def neighbour_pairs(slices) -> list[tuple[int, int]]:
    """Batch index pairs ``(i, j)`` of slices of the same volume with ``z_j = z_i + 1``; ``slices``
    is one ``(volume, z)`` per batch entry."""
    where = {(v, z): i for i, (v, z) in enumerate(slices) if v is not None and z is not None}
    return [(i, where[(v, z + 1)]) for (v, z), i in where.items() if (v, z + 1) in where]


class ZCoupling:
    """``x (B, C, H, W) → (B,)``: each slice's share of ``weight · Σ φ(x_{z+1} − x_z)`` (module docstring)."""

    def __init__(self, weight: float, pairs, eps: float = 1e-3):
        self.weight, self.eps = float(weight), float(eps)
        self.pairs = list(pairs)
        self._first = torch.tensor([p[0] for p in self.pairs], dtype=torch.long)
        self._second = torch.tensor([p[1] for p in self.pairs], dtype=torch.long)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        energy = x.new_zeros(x.shape[0])
        if not self.pairs or self.weight == 0:
            return energy
        # indices made once on the host, copied to the device once (a copy per call would wait for it)
        i, j = cached_on(self, "first", self._first, x.device), cached_on(self, "second", self._second, x.device)
        d = x[j] - x[i]
        tv = (torch.sqrt(d * d + self.eps ** 2) - self.eps).flatten(1).sum(1)
        return self.weight * (energy.index_add(0, i, tv / 2).index_add(0, j, tv / 2))


def check_solver(solver) -> None:
    """ValueError unless ``solver`` adds a coupling term to its data fidelity."""
    if not getattr(solver, "accepts_penalty", False):
        raise ValueError(f"z-coupling adds a term to the solver's data fidelity; solver {solver.name!r} does not "
                         f"take one (use {', '.join(SOLVERS_WITH_DATA_TERM)})")
