"""Stopping rules for the iterative solvers, without the ground truth: the discrepancy principle
with a χ²-calibrated τ, ES-WMV (windowed moving variance), and their combination
(:class:`StoppingRule`, used online by the plug-in solvers and replayed offline on recorded traces
by ``scripts/stopping_study.py``)."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..notices import shown
from ..tensors import per_image

RULES = ("eswmv", "discrepancy")  # the default rules
KNOWN_RULES = RULES + ("validation",)  # validation: the held-out measurement entries (PlugSolver holds them out)
COMBINE = ("first", "armed")
WINDOWS = (5, 10, 20, 50, 100)  # the windows the stopping study records


def discrepancy_tau(m: int, level: float = 0.95) -> float:
    """Morozov's factor τ for ``‖y − A(x)‖ ≤ τ σ √m``, chosen so that the true image passes with
    probability ``level``: ‖n‖²/σ² ~ χ²_m, hence τ = √(χ²_m quantile(level) / m)
    (≈ 1 + 1.645/√(2m) for large m; 1.14 for m = 64, 1.04 for m = 3072).  τ = 1 rejects the
    true image about half the time, since ‖n‖ ≈ σ√m (1 ± √(2/m))."""
    from scipy.stats import chi2

    if m < 1 or not 0 < level < 1:
        raise ValueError(f"need m >= 1 and 0 < level < 1, got m={m}, level={level}")
    return math.sqrt(float(chi2.ppf(level, m)) / m)



class ESWMV:
    """Early stopping by windowed moving variance (Wang et al., "Early stopping for deep image
    prior", TMLR 2023; cited by DMPlug): the variance of the last ``window`` iterates,
    ``VAR_t = 1/W Σ_i ‖x_i − x̄‖² / d``; stop when it has not reached a new minimum for
    ``patience`` iterations and return the iterate at the minimum.  Batched: one state per image,
    kept on the iterates' device (no host synchronisation per update)."""

    def __init__(self, batch: int, window: int = 100, patience: int = 1000):
        if window < 2 or patience < 1:
            raise ValueError(f"ES-WMV needs window >= 2 and patience >= 1, got {window}, {patience}")
        self.window, self.patience, self.batch = window, patience, batch
        self.buffer: list[torch.Tensor] = []
        self.best = torch.full((batch,), math.inf)
        self.best_iter = torch.zeros(batch, dtype=torch.long)
        self.wait = torch.zeros(batch, dtype=torch.long)
        self.best_x: torch.Tensor | None = None

    def update(self, x: torch.Tensor, it: int, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Add iterate ``x``; returns a bool ``(B,)`` (on ``x``'s device) of images whose patience
        ran out.  ``mask`` (bool ``(B,)``): only these images track their minimum and patience this time."""
        x = x.detach()
        self.buffer.append(x)
        if len(self.buffer) > self.window:
            self.buffer.pop(0)
        if self.best_x is None:
            self.best_x = x.clone()
            self.best, self.best_iter, self.wait = (v.to(x.device) for v in (self.best, self.best_iter, self.wait))
        if len(self.buffer) < self.window:
            return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        stack = torch.stack(self.buffer)
        var = (stack - stack.mean(0)).pow(2).flatten(2).mean(2).mean(0)
        track = torch.ones_like(self.best, dtype=torch.bool) if mask is None else mask.to(x.device)
        better = track & (var < self.best)
        self.best = torch.where(better, var, self.best)
        self.best_iter = torch.where(better, torch.full_like(self.best_iter, it), self.best_iter)
        self.wait = torch.where(better, torch.zeros_like(self.wait), self.wait + track.long())
        self.best_x = torch.where(per_image(better, x), x, self.best_x)
        return track & (self.wait >= self.patience)


class StoppingRule:
    """When to stop an image and which iterate to return.

    ``rules`` ⊆ {``eswmv``, ``discrepancy``, ``validation``} (empty: the budget only; ``validation``:
    the held-out-entry error's minimum, :class:`HeldOutMinimum`).  ``combine``:

    * ``"first"`` — whichever rule fires first: the discrepancy principle (‖y − A(x)‖ ≤ τσ√m)
      returns the current iterate, ES-WMV its minimum-variance iterate;
    * ``"armed"`` — ES-WMV only counts from the first iterate that meets the discrepancy
      principle (its variance minimum and patience are tracked from there), so the returned
      iterate fits the data to the noise level and is the steadiest one after that.

    ``"validation"`` (self-validation, Li et al. 2021): the solver fits only part of the
    measurement's entries and predicts the others (:func:`holdout_error`); the rule stops an image
    when the moving average over ``window`` iterations of that error has not reached a new minimum
    for ``patience`` iterations and returns the iterate at the minimum.  It fires on its own,
    whichever other rules are combined.

    ``tau=None``: :func:`discrepancy_tau` for the measurement size.  At the budget the current
    iterate is returned."""

    def __init__(self, rules=RULES, window: int = 100, patience: int = 1000, tau: float | None = None,
                 combine: str = "first"):
        rules = (rules,) if isinstance(rules, str) else tuple(rules)
        unknown = [r for r in rules if r not in KNOWN_RULES]
        if unknown:
            raise ValueError(f"unknown stopping rule(s) {unknown}; known: {', '.join(KNOWN_RULES)} (a budget always applies)")
        if combine not in COMBINE:
            raise ValueError(f"combine must be one of {', '.join(COMBINE)}, got {shown(combine)}")
        if combine == "armed" and set(rules) - {"validation"} and not set(RULES) <= set(rules):  # (none: the budget)
            raise ValueError(f"combine='armed' (ES-WMV stops only once the discrepancy rule has armed it) needs both "
                             f"stopping rules, stop=[eswmv, discrepancy], got stop={list(rules)}; with one rule give "
                             f"combine='first' too")
        if window < 2 or patience < 1:
            raise ValueError(f"ES-WMV needs window >= 2 and patience >= 1, got {window}, {patience}")
        if tau is not None and tau <= 0:
            raise ValueError(f"tau must be > 0 (or null for the χ² quantile), got {tau}")
        self.rules, self.window, self.patience, self.tau, self.combine = rules, window, patience, tau, combine

    @classmethod
    def from_preset(cls, params) -> "StoppingRule":
        """The rule of a solver preset's parameters (``stop``, ``window``, ``patience``, ``tau``, ``combine``)."""
        defaults = cls.__init__.__defaults__
        return cls(params.get("stop", defaults[0]), params.get("window", defaults[1]), params.get("patience", defaults[2]),
                   params.get("tau", defaults[3]), params.get("combine", defaults[4]))

    def describe(self) -> str:
        if not self.rules:
            return "budget"
        parts = []
        if "eswmv" in self.rules:
            parts.append(f"ES-WMV {self.window}/{self.patience}")
        if "discrepancy" in self.rules:
            parts.append("discrepancy τ " + ("χ²95" if self.tau is None else f"{self.tau:g}"))
        text = (" armed by " if self.combine == "armed" else " or ").join(parts)
        if "validation" in self.rules:
            text = " or ".join(p for p in (text, f"held-out error {self.window}/{self.patience}") if p)
        return text

    def tau_for(self, m: int) -> float:
        return self.tau if self.tau is not None else discrepancy_tau(m)

    def monitor(self, batch: int, m: int) -> "StopMonitor":
        return StopMonitor(self, batch, m)


STOP_CODES = ("budget", "nan", "discrepancy", "es-wmv", "validation")  # the reason codes :class:`StopMonitor` returns


class StopMonitor:
    """The online state of a :class:`StoppingRule` over a batch, on the iterates' device: an
    update launches a few small kernels and never waits for the device."""

    def __init__(self, rule: StoppingRule, batch: int, m: int):
        self.rule, self.tau = rule, rule.tau_for(m)
        self.es = ESWMV(batch, rule.window, rule.patience) if "eswmv" in rule.rules else None
        self.armed = torch.zeros(batch, dtype=torch.bool)
        self.validation = HeldOutMinimum(batch, rule.window, rule.patience) if "validation" in rule.rules else None

    def update(self, x: torch.Tensor, residual: torch.Tensor, it: int, validation: torch.Tensor | None = None):
        """Feed iterate ``x``, its residual ratio ``(B,)`` and (rule ``validation``) its held-out
        error ``(B,)``.  Returns ``(stop, code, value)`` on ``x``'s device: a bool ``(B,)``, a reason
        code ``(B,)`` (an index into :data:`STOP_CODES`, meaningful where ``stop``) and the iterates
        to return."""
        stop, code, value = self._residual_rules(x.detach(), residual, it)
        if self.validation is not None:
            if validation is None:
                raise ValueError("the validation stopping rule needs each iterate's held-out error")
            fired = self.validation.update(x.detach(), validation, it) & ~stop
            stop = stop | fired
            code = torch.where(fired, torch.full_like(code, STOP_CODES.index("validation")), code)
            value = torch.where(per_image(fired, x), self.validation.best_x, value)
        return stop, code, value

    def _residual_rules(self, x, residual, it):
        b, dev = x.shape[0], x.device
        residual = residual.to(dev)
        met = (residual <= self.tau) if "discrepancy" in self.rule.rules else torch.zeros(b, dtype=torch.bool, device=dev)
        discrepancy, eswmv = STOP_CODES.index("discrepancy"), STOP_CODES.index("es-wmv")
        if self.rule.combine == "armed" and self.es is not None:
            self.armed = self.armed.to(dev) | met
            fired = self.es.update(x, it, mask=self.armed)
            return fired, torch.full((b,), eswmv, device=dev), torch.where(per_image(fired, x), self.es.best_x, x)
        stop, code, value = met, torch.full((b,), discrepancy, device=dev), x
        if self.es is not None:
            fired = self.es.update(x, it) & ~met
            stop = stop | fired
            code = torch.where(fired, torch.full_like(code, eswmv), code)
            value = torch.where(per_image(fired, x), self.es.best_x, x)
        return stop, code, value


class HeldOutMinimum:
    """The validation rule's state: the moving average over ``window`` iterations of each
    image's held-out error, its minimum, the iterate there and the iterations since."""

    def __init__(self, batch: int, window: int, patience: int):
        self.window, self.patience = window, patience
        self.recent: list[torch.Tensor] = []
        self.best = self.best_x = self.wait = None

    def update(self, x: torch.Tensor, error: torch.Tensor, it: int) -> torch.Tensor:
        self.recent.append(error.to(x.device, torch.float32))
        if len(self.recent) > self.window:
            self.recent.pop(0)
        smooth = torch.stack(self.recent).mean(0)
        if self.best is None:
            self.best, self.best_x = smooth.clone(), x.clone()
            self.wait = torch.zeros_like(smooth, dtype=torch.long)
            return torch.zeros_like(smooth, dtype=torch.bool)
        better = smooth < self.best
        self.best = torch.where(better, smooth, self.best)
        self.best_x = torch.where(per_image(better, x), x, self.best_x)
        self.wait = torch.where(better, torch.zeros_like(self.wait), self.wait + 1)
        return self.wait >= self.patience


def windowed_variance(xs: torch.Tensor, window: int) -> torch.Tensor:
    """ES-WMV's ``VAR_t`` for every ``t`` of a recorded trajectory ``xs`` ``(T, B, d)`` (NaN while
    the window fills), from running sums in float64."""
    xs = xs.double()
    d = xs.shape[-1]
    s1 = torch.cat([torch.zeros_like(xs[:1]), torch.cumsum(xs, 0)])
    s2 = torch.cat([torch.zeros_like(xs[:1, :, 0]), torch.cumsum(xs.pow(2).sum(-1), 0)])
    win1, win2 = s1[window:] - s1[:-window], s2[window:] - s2[:-window]
    var = (win2 / window - win1.pow(2).sum(-1) / window**2) / d
    return torch.cat([torch.full((window - 1, xs.shape[1]), float("nan"), dtype=var.dtype, device=var.device), var])


def replay(rule: StoppingRule, trace: dict, budget: int):
    """Run ``rule`` on recorded traces (``residual``, ``var<window>`` and, for the validation rule,
    ``validation`` arrays of shape ``(T, B)``; ``m``), exactly as :class:`StopMonitor` would online.
    Returns per image the iteration index at which it stops and the index of the iterate it returns."""
    res = trace["residual"][:budget]
    t_max, b = res.shape
    tau = rule.tau_for(int(trace["m"]))
    use_d, use_e = "discrepancy" in rule.rules, "eswmv" in rule.rules
    var = trace[f"var{rule.window}"][:budget] if use_e else None
    stop = np.full(b, t_max - 1)
    ret = np.full(b, t_max - 1)
    done = np.zeros(b, dtype=bool)
    armed = np.zeros(b, dtype=bool) if rule.combine == "armed" else np.ones(b, dtype=bool)
    best, best_it, wait = np.full(b, np.inf), np.zeros(b, dtype=int), np.zeros(b, dtype=int)
    use_v = "validation" in rule.rules
    if use_v:
        val = np.asarray(trace["validation"][:budget], dtype=np.float64)
        csum = np.concatenate([np.zeros((1, b)), np.cumsum(val, 0)])
        v_best, v_it, v_wait = np.full(b, np.inf), np.zeros(b, dtype=int), np.zeros(b, dtype=int)
    for t in range(t_max):
        met = (res[t] <= tau) if use_d else np.zeros(b, dtype=bool)
        if rule.combine == "first":
            hit = met & ~done
            stop[hit], ret[hit], done[hit] = t, t, True
        else:
            armed |= met
        if use_e and not np.isnan(var[t]).any():
            track = armed & ~done
            better = track & (var[t] < best)
            best[better], best_it[better] = var[t][better], t
            wait[track & ~better] += 1
            wait[better] = 0
            fired = track & (wait >= rule.patience)
            stop[fired], ret[fired], done[fired] = t, best_it[fired], True
        if use_v:  # HeldOutMinimum: moving average over the last `window` errors
            lo = max(0, t + 1 - rule.window)
            smooth = (csum[t + 1] - csum[lo]) / (t + 1 - lo)
            better = smooth < v_best if t else np.ones(b, dtype=bool)
            v_best[better], v_it[better] = smooth[better], t
            v_wait = np.where(better, 0, v_wait + 1)
            fired = ~done & (v_wait >= rule.patience)
            stop[fired], ret[fired], done[fired] = t, v_it[fired], True
        if done.all():
            break
    return stop, ret
