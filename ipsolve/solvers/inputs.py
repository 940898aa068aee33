"""What :func:`ipsolve.solve` and :func:`ipsolve.calibrate` check in a user's ``y``, ``sigma`` and
operator before any work: one line naming what is wrong and what is expected, instead of a torch
error deep inside a solver or a silently wrong result (a [0, 255] measurement, σ on the wrong scale,
an operator whose measurement changes the image's shape without saying how to go back)."""
from __future__ import annotations


import numpy as np
import torch

from ..operators import Operator
from ..operators.base import ASSUMED_SIGMA, OTHER_SCALE, as_sigma, check_image, operator_label
from ..operators.decomposition import NotDecomposable
from ..notices import shown, warn

# an image-like measurement of images in [-1, 1] stays within the operator's response to constant ±1
# images (bicubic's negative lobes overshoot by ~10 %) plus noise; beyond OTHER_SCALE × that plus
# RANGE_NOISE σ it is on another scale ([0, 255]) — loose, as analytic priors' samples leave [-1, 1]
RANGE_NOISE = 10.0
MEASUREMENT_FIX = "use 2·y − 1 and 2·sigma"
UNIT_RANGE_NOISE = 6.0  # a measurement of an image on [0, 1] reaches below 0 by its noise: ~4.5 σ at 256² × 3 entries
UNIT_RANGE_SLACK = 0.25  # at most (σ = 0.3 on [-1, 1] spreads a right y over [-1.7, 1.8]: "lies in [0, 1]" was said)


def unit_range_slack(sigma: float) -> float:
    """How far beyond [0, 1] a measurement of an image on [0, 1] may reach by its noise."""
    return min(UNIT_RANGE_NOISE * float(sigma or 0.0), UNIT_RANGE_SLACK)


def is_builtin(operator: Operator) -> bool:
    """An operator ipsolve ships (its shapes, initial guess and SVD are covered by the tests)."""
    return type(operator).__module__.startswith("ipsolve.")


def check_user_operator(operator: Operator, image_shape, device) -> None:
    """Your own operator (README, "Your own forward model"), on one random image batch: ``apply``
    exists and gives ``output_shape``'s shape, it is differentiable (solvers backpropagate through
    A), and one that sets ``is_linear`` is additive, ``A(a+b) − A(a) − A(b) + A(0) = 0`` (an affine
    map passes) — each a torch error or a silently wrong solve deep inside a solver before."""
    name = type(operator).__name__
    gen = torch.Generator().manual_seed(0)
    a, b = ((torch.rand(tuple(image_shape), generator=gen) * 2 - 1).to(device) for _ in range(2))
    expected = tuple(operator.output_shape(tuple(image_shape)))
    with torch.enable_grad():
        probe = a.clone().requires_grad_()
        try:
            out = operator.apply(probe)
        except NotImplementedError:
            raise NotImplementedError(f"{name} must implement apply(x): the forward model A on (B, C, H, W) images "
                                      f"in [-1, 1], written with torch operations") from None
        except (RuntimeError, ValueError, TypeError, IndexError) as err:  # a torch error from the user's own code
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise ValueError(f"{name}.apply fails on the prior's images {tuple(image_shape)}: "
                             f"{type(err).__name__}: {first}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{name}.apply gives {got} for images {tuple(image_shape)}, but {name}.output_shape says "
                         f"{expected}: output_shape must return the shape apply gives (y is always (B, C, H, W))")
    if not out.requires_grad:
        raise ValueError(f"{name}.apply is not differentiable (its output carries no gradient: a .numpy(), .detach() "
                         f"or .item() inside?): solvers backpropagate through A, so write it with torch operations")
    if operator.is_linear:
        with torch.no_grad():
            zero = operator.apply(torch.zeros_like(a))
            fa, fb = operator.apply(a), operator.apply(b)
            gap = float((operator.apply(a + b) - fa - fb + zero).abs().amax())
            size = max(float(fa.abs().amax()), float(fb.abs().amax()), 1e-12)
        if gap > 1e-3 * size:
            raise ValueError(f"{name} sets is_linear = True, but A(a + b) differs from A(a) + A(b) − A(0) by "
                             f"{gap / size:.3g} of |A(a)| on random images: set is_linear = False (solvers then use "
                             f"no adjoint or pseudo-inverse), or make apply linear")


def check_models(operator, prior) -> None:
    """A TypeError naming the argument when ``operator`` or ``prior`` is not ipsolve's (a name given
    where the object is expected: ``"inpainting"``, ``"bundled:phantom-ddpm"``)."""
    from ..priors import Prior

    if not isinstance(operator, Operator):
        hint = f" (make_operator({operator!r}))" if isinstance(operator, str) else " (make_operator(...))"
        raise TypeError(f"operator must be an ipsolve Operator{hint}, got {type(operator).__name__}")
    if not isinstance(prior, Prior):
        hint = f" (load_prior({prior!r}))" if isinstance(prior, str) else " (load_prior(...))"
        raise TypeError(f"prior must be an ipsolve Prior{hint}, got {type(prior).__name__}")


def check_inputs(y, operator: Operator, prior, sigma) -> tuple[torch.Tensor, float]:
    """``(y as float32 on the prior's device, sigma as a float)`` once ``y`` is a floating
    ``(B, C, H, W)`` tensor of the operator's measurement shape for the prior's images, within the
    range an image in [-1, 1] can give (image-like measurements), and the operator can map it back
    to the prior's image shape.  ``sigma="auto"``: estimated from ``y`` (:func:`auto_sigma`)."""
    if isinstance(y, np.ndarray):
        raise TypeError("y must be a torch.Tensor (B, C, H, W) in [-1, 1], got a numpy array: use torch.from_numpy(y)")
    check_image(y, "y", finite=None)  # before the cast below: an integer y would otherwise pass as float
    if y.shape[0] == 0:  # (a raw torch error inside the operator or the network)
        raise ValueError("y holds no images (a batch of 0); expected (B >= 1, C, H, W)")
    auto, given_sigma = isinstance(sigma, str) and sigma == "auto", sigma
    if isinstance(sigma, str) and not auto:
        raise TypeError(f"sigma must be a number (the noise std on the [-1, 1] scale) or 'auto' (estimated from a "
                        f"blurred y), got {shown(sigma)}")
    sigma = None if auto else as_sigma(sigma)
    y = y.to(prior.device, torch.float32)
    operator.to(prior.device)
    image_shape = (y.shape[0], *prior.shape)
    if not is_builtin(operator):
        check_user_operator(operator, image_shape, y.device)
    operator.check_measurement(y, image_shape)
    name = type(operator).__name__
    if operator.is_linear and tuple(operator.input_shape(tuple(y.shape))) != image_shape:
        raise ValueError(f"{name}.input_shape{tuple(y.shape)} gives {tuple(operator.input_shape(tuple(y.shape)))}, "
                         f"not the prior's image shape {image_shape}: an operator whose measurement has another "
                         f"shape than its image must override input_shape (and initial_guess, whose default is y)")
    if not is_builtin(operator):
        with torch.no_grad():
            guess = operator.initial_guess(y)
        if tuple(guess.shape) != image_shape:
            raise ValueError(f"{name}.initial_guess(y) has shape {tuple(guess.shape)}, not the prior's image shape "
                             f"{image_shape}: override initial_guess (the default returns y itself)")
    if not is_builtin(operator) and type(operator).svd is not Operator.svd:
        check_decomposition(operator, image_shape, y.device)
    if auto:
        sigma = auto_sigma(y, operator)
    elif given_sigma is not ASSUMED_SIGMA:  # (not given: assumed_sigma_note says so; it was also "far off")
        check_given_sigma(y, operator, sigma)
    check_range(y, operator, image_shape, sigma)
    operator.check_consistent(y, sigma)
    return y, sigma


def auto_sigma(y: torch.Tensor, operator: Operator) -> float:
    """``sigma="auto"``: the median over ``y``'s images of their noise estimates
    (:func:`ipsolve.operators.noise_level.estimate_sigma`, blurred measurements only); an
    ``InputWarning`` when they differ by more than 1.5× — one σ serves a batch (the residual check,
    the stopping rules and calibration read it), so images of unlike noise are solved apart."""
    from ..operators.base import InputWarning
    from ..operators.noise_level import checked_estimate, estimate_sigma, low_estimate_note

    estimates = estimate_sigma(y, operator).numpy()
    value = checked_estimate(float(np.median(estimates)))
    if estimates.max() > 1.5 * estimates.min():
        warn(f"sigma=auto: the images' noise estimates differ ({estimates.min():.3g} to {estimates.max():.3g}) "
             f"and one sigma ({value:.3g}, the median) serves the batch: solve them "
             f"apart (ipsolve.estimate_sigma gives each one's)", InputWarning)
    note = low_estimate_note(value, "y" if len(estimates) == 1 else "y (the images' median)")
    if note:
        warn(note, InputWarning)  # (attributed to the caller's line)
    return value


def check_given_sigma(y: torch.Tensor, operator: Operator, sigma: float) -> None:
    """An ``InputWarning`` when ``sigma``, given as a number, is far from the noise a blurred ``y``
    shows (:func:`~ipsolve.operators.noise_level.given_sigma_note` on the images' median estimate) —
    the command line said so and Python did not (an audit, 2026-12-07); nothing for other operators or
    for a ``y`` too small to estimate from."""
    from ..operators.base import InputWarning
    from ..operators.noise_level import estimate_sigma, given_sigma_note

    if operator.noise_estimate_note() is not None:
        return
    try:
        estimate = float(np.median(estimate_sigma(y, operator).numpy()))
    except ValueError:
        return
    note = given_sigma_note(sigma, estimate, "y" if y.shape[0] == 1 else "y (the images' median)")
    if note:
        warn(note, InputWarning)  # (attributed to the caller's line)


def check_range(y: torch.Tensor, operator: Operator, image_shape, sigma: float) -> None:
    """ValueError when an image-like ``y`` holds values far beyond what the operator gives for
    images in [-1, 1] (a measurement in [0, 255] or another scale); an ``InputWarning`` when it lies
    in [0, 1] up to the noise (:data:`UNIT_RANGE_NOISE` σ) — an image on [0, 1] measured as it is."""
    from ..operators.base import InputWarning, unit_range_note

    largest = float(y.abs().amax()) if operator.measurement_is_image else 0.0
    note = unit_range_note(float(y.amin()), float(y.amax()), "y", unit_range_slack(sigma), MEASUREMENT_FIX) \
        if operator.measurement_is_image else None
    if note:  # (a residual warning 10–40× the noise level was all a user saw: audit 2026-12-07)
        warn(note, InputWarning)  # (attributed to the caller's line)
    if largest > OTHER_SCALE + RANGE_NOISE * sigma:  # beyond what a gain-1 operator gives: ask this one
        with torch.no_grad():
            ones = torch.ones(image_shape, device=y.device)
            reach = max(float(operator(ones).abs().amax()), float(operator(-ones).abs().amax()), 1.0)
        if largest > OTHER_SCALE * reach + RANGE_NOISE * sigma:
            raise ValueError(f"y has values up to {largest:.4g}, far more than {operator_label(operator)} gives for "
                             f"images in [-1, 1] (|A(±1)| ≤ {reach:.3g}): ipsolve works on [-1, 1] — from [0, 1] use "
                             f"2·x − 1, from [0, 255] x/127.5 − 1 (and sigma on the same scale)")


def check_decomposition(operator: Operator, image_shape, device) -> None:
    """A user's ``svd()`` must reproduce its ``apply()`` (DDRM, ΠGDM, DiffPIR and RED-diff's start use
    only the decomposition): compared on one random image, relative error ≤ 1e-3 (float32 rounding is
    ~1e-6)."""
    name = type(operator).__name__
    try:
        dec = operator.svd(tuple(image_shape))
    except (NotDecomposable, ValueError):
        return
    v = (torch.rand(image_shape, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(device)
    with torch.no_grad():
        want, got = operator(v).flatten(1), dec.forward(v).flatten(1).to(torch.float32)
    if got.shape != want.shape:
        raise ValueError(f"{name}.svd(shape).forward gives measurements of shape {tuple(got.shape)}, {name}.apply "
                         f"{tuple(want.shape)}: U must map the singular coordinates to the measurement's shape")
    err = float((got - want).norm() / want.norm().clamp_min(1e-12))
    if not err <= 1e-3:
        raise ValueError(f"{name}.svd does not reproduce {name}.apply: ‖U(s·Vᵀv) + b − A(v)‖/‖A(v)‖ = {err:.3g} on a "
                         f"random image (expected ≤ 1e-3); check its U, singular values, V and offset")
