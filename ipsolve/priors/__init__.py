"""Pretrained priors and their schedules (knows no operators or solvers)."""
from __future__ import annotations

from .analytic import linear_alphas_cumprod, make_analytic_prior
from .base import DiffusionPrior, FlowPrior, LatentPrior, Prior, randn
from .loading import BUNDLED_DIR, bundled_names, load_prior, save_pretrained_prior

__all__ = ["Prior", "DiffusionPrior", "FlowPrior", "LatentPrior", "load_prior", "make_analytic_prior",
           "bundled_names", "save_pretrained_prior", "BUNDLED_DIR", "linear_alphas_cumprod", "randn"]
