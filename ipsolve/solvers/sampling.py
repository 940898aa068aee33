"""k posterior samples per image and the per-image reliability score built from what a user
has — the measurement, the noise level, the samples and the prior — never the ground truth."""
from __future__ import annotations

import math
import zlib

import torch

from ..notices import shown, warn
from ..operators import BlindBlur
from .base import Result, residual_ratio
from .stopping import discrepancy_tau


def sample_generators(gens, j: int):
    """The generators of sample ``j``: sample 0 uses ``gens`` itself (so ``samples=1`` is the
    plain run); sample j ≥ 1 of image i is seeded from (image i's seed, j), so a sample does
    not depend on batching or on the other images.  One shared generator is shared on."""
    if j == 0 or not isinstance(gens, list):
        return gens
    return [torch.Generator(device=g.device).manual_seed(
        zlib.crc32(f"{g.initial_seed()}/sample{j}".encode()) & 0x7FFF_FFFF) for g in gens]


SELECT = ("mean", "residual")


class IdenticalSamplesWarning(UserWarning):
    """``samples=k`` from a solver that drew no randomness: k equal samples, a std of 0."""


def combine_samples(runs: list[Result], y, operator, sigma: float, select: str = "mean") -> Result:
    """``Result`` of k runs: ``samples`` ``(B, k, C, H, W)``, ``x`` their mean (``select="mean"``)
    or, per image, the sample with the smallest data misfit ‖y − A(x_j)‖ (``select="residual"``:
    best-of-k measurable without the ground truth — the phase-retrieval papers pick the best of
    4–5 runs by ground-truth PSNR); ``std`` the per-pixel standard deviation (population, over the
    k samples); per image ``info`` sums the NFE and seconds, keeps each sample's stop reason and
    residual (``selected_sample`` with ``select="residual"``) and gives the returned x's residual.

    Where the operator has exact ambiguities (phase retrieval: translation, twin image, sign —
    ``Operator.align``), every sample is first moved to the element of its ambiguity group closest
    to the best-fitting sample, so the mean, the std and the disagreement term measure what the
    metrics measure (distance modulo the group) — not the twin of one sample against another."""
    if select not in SELECT:
        raise ValueError(f"select must be one of {', '.join(SELECT)}, got {shown(select)}")
    per_sample = torch.tensor([[float(r.info[i]["residual"]) for r in runs] for i in range(len(runs[0].info))])
    best = per_sample.nan_to_num(float("inf")).argmin(1)
    samples = aligned_samples(torch.stack([r.x for r in runs], 1), best, operator)
    std = samples.std(1, unbiased=False)
    if samples.shape[1] > 1 and float(std.amax()) == 0.0:
        warn(f"the {samples.shape[1]} samples are identical: this solver draws no randomness with these settings, so "
             f"std is 0 and says nothing about the uncertainty (a sampling solver such as dps or daps draws different "
             f"samples)", IdenticalSamplesWarning)
    picked = best if select == "residual" else None
    x = samples.mean(1) if picked is None else samples[torch.arange(samples.shape[0]), picked.to(samples.device)]
    if picked is not None:
        residual = per_sample[torch.arange(samples.shape[0]), picked]
    elif isinstance(operator, BlindBlur) and all(r.kernel is not None for r in runs):
        # the residual of the returned pair: the mean image blurred by the mean kernel
        with torch.no_grad():
            kernel = torch.stack([r.kernel for r in runs], 1).mean(1)
            residual = residual_ratio(y, operator(x.to(y), kernel=kernel.to(y)), sigma)
    elif isinstance(operator, BlindBlur):  # no kernel estimates to blur with: the samples' own residuals
        residual = torch.tensor([[r.info[i]["residual"] for r in runs] for i in range(x.shape[0])]).mean(1)
    else:
        with torch.no_grad():
            residual = residual_ratio(y, operator(x.to(y)), sigma)
    info = []
    for i in range(x.shape[0]):
        per = [r.info[i] for r in runs]
        info.append({**per[0], "nfe": sum(p["nfe"] for p in per), "seconds": sum(p["seconds"] for p in per),
                     "iterations": sum(p["iterations"] for p in per) / len(per),
                     "stop_reason": per[0]["stop_reason"] if len({p["stop_reason"] for p in per}) == 1 else
                     ",".join(p["stop_reason"] for p in per),
                     "residual": float(residual[i]),
                     "sample_residuals": [float(p["residual"]) for p in per] if sigma > 0 else None,
                     "samples": len(runs), **({"selected_sample": int(picked[i])} if picked is not None else {})})
    kernels = [r.kernel for r in runs if r.kernel is not None]
    kernel = None
    if kernels:
        stacked = torch.stack(kernels, 1)
        kernel = stacked.mean(1) if picked is None else stacked[torch.arange(stacked.shape[0]), picked.to(stacked.device)]
    return Result(x=x, info=info, kernel=kernel, samples=samples, std=std)


def aligned_samples(samples: torch.Tensor, anchor: torch.Tensor, operator) -> torch.Tensor:
    """``samples`` ``(B, k, …)`` with each moved by ``operator.align`` (its exact ambiguities; the
    identity for most operators) to the element closest to sample ``anchor[i]`` of its image; the
    anchor itself is kept as it is.  Uses only the samples, never the ground truth."""
    if getattr(operator, "align", None) is None:
        return samples
    rows = torch.arange(samples.shape[0])
    ref = samples[rows, anchor.to(samples.device)]
    moved = torch.stack([operator.align(samples[:, j], ref) for j in range(samples.shape[1])], 1)
    is_anchor = (torch.arange(samples.shape[1])[None] == anchor[:, None]).to(samples.device)
    return torch.where(is_anchor.view(*is_anchor.shape, *([1] * (samples.dim() - 2))), samples, moved)


# ---------------------------------------------------------------------------------------------
# reliability
# ---------------------------------------------------------------------------------------------
def feasibility_term(residual: torch.Tensor, m: int) -> torch.Tensor:
    """How far the fit misses the noise level: ``max(0, r/τ − 1)`` with ``r = ‖y − A(x)‖/(σ√m)``
    and τ the χ²_m 95 % factor (:func:`discrepancy_tau`) — 0 whenever the residual is one the
    true image could have; 1 when it is twice that.  Catches wrong operator settings, a prior
    that cannot produce the image, and solvers that did not converge."""
    return (residual / discrepancy_tau(m) - 1).clamp_min(0)


def disagreement_term(std: torch.Tensor, sigma: float) -> torch.Tensor:
    """How much the k samples disagree: the RMS over pixels of their per-pixel std, in units
    of ``10 σ`` (σ the noise std on the same [-1, 1] scale; 0.01 at least).  Catches images
    the measurement leaves undetermined *and* the prior cannot settle (they vary between samples)."""
    return std.pow(2).flatten(1).mean(1).sqrt() / (10 * max(sigma, 0.01))


CONSISTENCY_DRAWS = 2  # denoiser calls of the prior-consistency term per image


@torch.no_grad()
def prior_consistency_term(x: torch.Tensor, prior, level: float = 0.2, draws: int = CONSISTENCY_DRAWS,
                           seed: int = 0) -> torch.Tensor | None:
    """How far the prior's denoiser moves the reconstruction: noise ``x`` to std ``level`` (on
    the [-1, 1] scale), denoise, and measure RMS(x̂ − x) / ``level``; averaged over ``draws``
    fixed noise draws.  An image like the prior's training data comes back close (≈ 0.2–0.4);
    one the prior was never meant for is pulled towards what it knows (→ 1).  Pixel and latent
    diffusion and flow priors (latent: in latent space after ``encode``); None otherwise.  Every
    image gets the same draws, so its score does not depend on the batch it was solved in."""
    from ..priors import DiffusionPrior, FlowPrior, LatentPrior

    inner, v = prior, x.to(prior.device, torch.float32)
    if isinstance(prior, LatentPrior):
        inner, v = prior.inner, prior.encode(v)
    g = torch.Generator().manual_seed(seed)
    total = torch.zeros(v.shape[0], device=v.device)
    for _ in range(draws):
        noise = torch.randn(v.shape[1:], generator=g).to(v).expand_as(v)
        if isinstance(inner, DiffusionPrior):
            abar = inner.alphas_cumprod.to(v.device, torch.float64)
            t = int(torch.argmin((((1 - abar) / abar).sqrt() - level).abs()))  # x-space noise std = level
            a = abar[t].float()
            x_t = a.sqrt() * v + (1 - a).sqrt() * noise
            est = inner.x0(x_t, torch.full((v.shape[0],), t, device=v.device))
        elif isinstance(inner, FlowPrior):
            s = 1 / (1 + level)  # x_s = s·x + (1 − s)·z: noise std (1 − s)/s = level on x's scale
            x_t = s * v + (1 - s) * noise
            est = inner.x1_from_velocity(x_t, s, inner.velocity(x_t, torch.tensor(s)))
        else:
            return None
        total += (est - v).pow(2).flatten(1).mean(1).sqrt() / level
    return total / draws


def reliability(y, prior, result: Result, sigma: float) -> list[dict]:
    """Per image: the terms (``None`` where they need what is missing: samples, a prior with a
    denoiser) and ``reliability = −(feasibility + disagreement + prior_consistency)`` over the
    available terms (higher = more reliable; 0 at best), and the largest term as ``reason``."""
    residual = torch.tensor([float(i["residual"]) for i in result.info])  # each solver's own ‖y − A(x)‖/(σ√m)
    per_call = (getattr(prior, "conditioning", None) or {}).get("evaluations_per_call", 1)  # guidance: 2
    # m as the residual counts it (residual_ratio: an entry exactly 0 is a hole of a measurement read from elsewhere,
    # no noise; τ was taken for every entry, ~3 % low at 70 % missing: audit 2026-12-07)
    measured = [int((y[i] != 0).sum()) or y[i].numel() for i in range(y.shape[0])]
    feasibility = torch.cat([feasibility_term(residual[i:i + 1], m) for i, m in enumerate(measured)])
    terms = {"feasibility": feasibility if sigma > 0 else None,  # σ = 0: no noise level
             "disagreement": disagreement_term(result.std, sigma).cpu() if result.std is not None else None,
             "prior_consistency": prior_consistency_term(result.x, prior)}
    out = []
    for i in range(result.x.shape[0]):
        vals = {k: (None if v is None else float(v[i])) for k, v in terms.items()}
        present = {k: v for k, v in vals.items() if v is not None and math.isfinite(v)}
        score = -sum(present.values())
        out.append({"reliability": score, "reliability_terms": vals,
                    "reliability_reason": max(present, key=present.get) if present else None,
                    # the prior-consistency term's denoiser calls (its draws), beside the solver's own nfe
                    "reliability_nfe": per_call * CONSISTENCY_DRAWS if vals["prior_consistency"] is not None else 0})
    return out
