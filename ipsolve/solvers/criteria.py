"""Ground-truth-free scores of a reconstruction, shared by calibration and the stopping rules."""
from __future__ import annotations

import torch

from .base import residual_ratio
from .stopping import discrepancy_tau


def holdout_error(y_held: torch.Tensor, predicted: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per image ``‖y_H − A_H(x̂)‖² / (m_H σ²)``: its expectation is 1 + ‖A_H(x − x̂)‖²/(m_H σ²) for a
    reconstruction that did not see the held-out noise, so 1 means "predicts the held-out entries
    to the noise level" (σ = 0: the mean squared error)."""
    sse = (y_held - predicted).flatten(1).pow(2).sum(1)
    return sse / (y_held[0].numel() * (sigma ** 2 if sigma > 0 else 1.0))


def discrepancy_ratio(y: torch.Tensor, ax: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per image ``‖y − A(x̂)‖ / (τ σ √m)`` with τ the χ²_m 95 % factor: ≤ 1 means the fit is one the
    true image could have produced."""
    return residual_ratio(y, ax, sigma) / discrepancy_tau(y[0].numel())
