"""Any operator restricted to a subset of its measurement's entries — the generic wrapper behind
measurement-splitting validation (self-validation, Li et al. 2021; SSDU, Yaman et al. 2020;
Noise2Inverse, Hendriksen et al. 2020): a solver reconstructs from the kept entries, the held-out
ones score the reconstruction.  The restricted operator masks the full operator's output and
keeps what solvers ask of an operator (its kind for per-operator defaults, blind kernels, initial
guesses, the adjoint and the CG pseudo-inverse of linear operators), so it works for every
operator, the deepinv adapter included; only an SVD is not kept (one line: not decomposable)."""
from __future__ import annotations

import copy

import torch

from ..notices import shown
from ..tensors import cached_on
from .base import Operator, check_image, operator_label
from .decomposition import not_decomposable

def split_entries(m: int, fraction: float, generator: torch.Generator, observed: torch.Tensor | None = None):
    """``(kept, held)``: sorted indices into a measurement's ``m`` flattened entries, with
    ``round(fraction · n)`` held out at random among the ``n`` observed entries (all of them when
    ``observed`` is None; an inpainting operator's holes carry no information and are never held
    out).  The same split serves every image of a batch."""
    if not 0.0 < float(fraction) <= 0.5:
        raise ValueError(f"the hold-out fraction must be in (0, 0.5], got {shown(fraction)}")
    candidates = torch.arange(m) if observed is None else torch.nonzero(observed.flatten().cpu()).flatten()
    n_held = round(float(fraction) * len(candidates))
    if n_held < 1 or n_held >= len(candidates):
        least = 0.5 / len(candidates) if len(candidates) > 1 else None
        raise ValueError(f"cannot hold out {fraction:g} of {len(candidates)} measurement entries: "
                         + (f"none would be held out; give a fraction of at least {least:.2g}, e.g. 0.2"
                            if n_held < 1 and least else "too few entries to split; use method='discrepancy'"))
    held = candidates[torch.randperm(len(candidates), generator=generator)[:n_held]].sort().values
    keep = torch.ones(m, dtype=torch.bool)
    keep[held] = False
    return torch.nonzero(keep).flatten(), held


class _Restricted:
    """Mixin placed before the operator's own class (see :func:`restrict`): ``A_K(x)`` = the kept
    entries of ``A(x)`` as a ``(B, 1, 1, m_K)`` measurement.  The restriction is applied in
    ``apply``, so everything built on it — ``forward``, the autograd adjoint, ``pinv`` by conjugate
    gradients, DiffPIR's CG proximal step — is that of ``A_K``."""

    _kept: torch.Tensor
    _full_shape: tuple
    _operator_class: type  # the class restrict() derived this one from
    _probing = False  # True while the wrapped class probes its own output shape with apply

    def apply(self, x):
        full = super().apply(x)
        return full if self._probing else self._gather(full)

    def _gather(self, full):
        return full.flatten(1)[:, cached_on(self, "kept", self._kept, full.device)].view(full.shape[0], 1, 1, -1)

    def forward(self, x, **kw):  # noqa: D401 - the wrapped operator's forward, restricted
        out = super().forward(x, **kw)
        if tuple(out.shape[1:]) == self._full_shape:  # a forward that bypasses apply (a blind kernel given)
            out = self._gather(out)
        return out

    def output_shape(self, shape):
        self._probing = True  # e.g. the deepinv adapter runs apply on zeros to learn its shape
        try:
            super().output_shape(shape)
        finally:
            self._probing = False
        return (shape[0], 1, 1, len(self._kept))

    def input_shape(self, y_shape):
        return super().input_shape((y_shape[0], *self._full_shape))

    def scatter(self, y_kept: torch.Tensor) -> torch.Tensor:
        """The full-shape measurement with the kept entries in place and the others filled
        (``holdout_fill``: harmonic interpolation of the kept entries that carry information — an
        inpainting mask's holes are zeros, not data: ``observed_mask`` — for image-like measurements
        and sinograms, zeros for k-space), as the initial guess and display need.  For inpainting this
        makes the restricted initial guess the harmonic fill with the held-out pixels missing too."""
        b = y_kept.shape[0]
        full = torch.zeros(b, int(torch.tensor(self._full_shape).prod()), dtype=y_kept.dtype, device=y_kept.device)
        full[:, cached_on(self, "kept", self._kept, y_kept.device)] = y_kept.flatten(1)
        full = full.view(b, *self._full_shape)
        if self.holdout_fill == "zero":
            return full
        from .inpainting import harmonic_fill

        mask = torch.zeros(int(torch.tensor(self._full_shape).prod()), dtype=y_kept.dtype, device=y_kept.device)
        mask[cached_on(self, "kept", self._kept, y_kept.device)] = 1
        mask = mask.view(1, *self._full_shape)
        observed = super().observed_mask((b, *self._full_shape))
        if observed is not None:
            mask = mask * observed.to(mask)
        return harmonic_fill(full, mask.expand_as(full))

    def kept_mask(self, like: torch.Tensor) -> torch.Tensor:
        """Bool on ``like``'s device, True at the kept entries that carry information: ``(1, *full_shape)``,
        or ``(B, *full_shape)`` where the operator's observed entries differ per image (inpainting's holes
        are kept but are no data: :meth:`Operator.observed_mask`)."""
        mask = torch.zeros(int(torch.tensor(self._full_shape).prod()), dtype=torch.bool, device=like.device)
        mask[cached_on(self, "kept", self._kept, like.device)] = True
        mask = mask.view(1, *self._full_shape)
        observed = super().observed_mask((like.shape[0], *self._full_shape))
        return mask if observed is None else mask & (observed.to(like.device) != 0)

    def unrestricted(self) -> Operator:
        """The operator itself, all of its measurement (a shallow copy sharing its parameters,
        buffers and state)."""
        out = copy.copy(self)
        out.__class__ = self._operator_class
        return out

    def initial_guess(self, y):
        filled = self.scatter(y)
        return self.unrestricted().initial_guess_from_part(filled, self.kept_mask(filled))

    def classical_estimate(self, y):
        """The operator's classical estimate (a blur's deconvolution) from the kept entries
        (:meth:`Operator.classical_from_part`), or None: calibration's second yardstick."""
        if self.classical_name is None:  # none to make (no fill computed for nothing)
            return None
        filled = self.scatter(y)
        return self.unrestricted().classical_from_part(filled, self.kept_mask(filled))

    def display(self, y, size):
        return super().display(self.scatter(y), size)

    def project_measurement(self, y):
        return y

    def svd(self, shape):
        raise not_decomposable(f"{operator_label(self)} (restricted to part of its measurement)")


def restrict(operator: Operator, kept: torch.Tensor, full_shape) -> Operator:
    """``operator`` restricted to the measurement entries ``kept`` (indices into one image's
    flattened measurement of shape ``full_shape`` = ``(C, h, w)``).  The result is an instance of
    the operator's own class (so solvers' per-operator defaults and blind-kernel handling apply)
    sharing its parameters and buffers."""
    cls = type(operator)
    restricted_cls = type(f"Restricted{cls.__name__}", (_Restricted, cls), {})
    out = copy.copy(operator)
    out.__class__ = restricted_cls
    out._kept, out._full_shape, out._operator_class = kept.clone(), tuple(int(s) for s in full_shape), cls
    return out


def gather(y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The entries ``index`` of each image's flattened measurement, ``(B, 1, 1, len(index))``
    (inside a loop, pass ``index`` on ``y``'s device: a host index is copied at every call)."""
    check_image(y, "y", finite=None)
    return y.flatten(1)[:, index.to(y.device)].view(y.shape[0], 1, 1, -1)
