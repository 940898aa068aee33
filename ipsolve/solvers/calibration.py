"""Tuning without the ground truth: choose a solver's guidance, step size and
stopping from the measurement alone.

Two criteria, each a small function of what a user has:

* :func:`holdout_error` — measurement-splitting validation: hold out a seeded fraction of the
  measurement's entries (pixels of y, sinogram bins, k-space samples), reconstruct from the rest
  with the operator restricted to the kept entries (:func:`ipsolve.operators.restrict.restrict`),
  and score how well the reconstruction predicts the held-out entries against the noise-only
  expectation: ``‖y_H − A_H(x̂)‖² / (m_H σ²)`` is 1 for a reconstruction that predicts them to
  the noise level and grows with its error there (self-validation, Li et al. 2021; SSDU, Yaman
  et al. 2020; Noise2Inverse, Hendriksen et al. 2020).  A candidate's score adds, per image, how
  much worse it fits the kept entries than it predicts the held-out ones (0 for a sane solve;
  :meth:`HoldoutObjective.with_kept_misfit`): the held-out entries cannot see an error made only
  at the entries a solve was given.  The chosen value is then used on all entries.
* :func:`discrepancy_ratio` — Morozov's discrepancy principle: the weakest guidance whose residual
  ``‖y − A(x̂)‖/(σ√m)`` is within the χ²_m 95 % level (:func:`~.stopping.discrepancy_tau`), for
  measurements too small to split.

The search runs on a log range per parameter (each solver's ``search_space``) by golden-section
search (coordinate-wise for several parameters; each coordinate starts from the best candidate so
far), one solve of the calibration images per candidate, ``budget`` candidates (default
:func:`default_budget`: 5 for one parameter — five times the network evaluations of one
uncalibrated solve run to its budget — and 9 for two) and one more per parameter whose best
candidate is the outermost one tried (the range's end is then tried: golden-section points never
reach it); every candidate's values, score and cost go into ``Calibration.table``.  The plug-in
solvers (DMPlug, FMPlug) also get their iteration count from the held-out error: each candidate
runs to its budget without a stopping rule (so calibration costs 5–6× the budget — plus the check
below, which stops at the chosen iterate — more than 5× a solve its stopping rule ends early) and
the iterate with the smallest held-out error (5-iteration moving average) sets ``iterations``,
within which the solver's own stopping rule stays on (not for blind operators, whose kernel
estimate the held-out error does not follow per iterate).  The chosen values are then checked with one solve on all entries
(``VERIFY_FACTOR``): a value at the edge of stability for the restricted operator can diverge on
the full one.  Nothing here sees the ground truth.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from numbers import Integral

import torch

from ..operators import BlindBlur, Operator
from ..operators.base import ASSUMED_SIGMA, NonFiniteError, assumed_sigma_note
from ..operators.restrict import gather, restrict, split_entries
from ..parameters import accepted_parameters
from ..calibration_settings import COMPARISON_SPLITS, METHODS, check_calibration_settings, score_unit
from ..notices import plain_number, plain_pair, shown, warn
from .base import Solver, generators_for, generators_on
from .criteria import discrepancy_ratio, holdout_error
from .stopping import discrepancy_tau
from .inputs import check_inputs, check_models
from .plug import PlugSolver
from .search import default_budget, discrepancy_search, golden_section, split_budget

log = logging.getLogger("ipsolve")

# the chosen values are checked with one solve on all entries: an image whose fit of the kept entries is
# worse than VERIFY_FACTOR × max(1, the restricted solve's) rejects them (a step size at the edge of
# stability for the restricted operator can diverge on the full one: DAPS at its paper settings on SR ×4,
# kept-entry fit 0.8 → 4,800, 4 dB); at most VERIFY_CANDIDATES candidates are checked, then the preset
VERIFY_FACTOR = 10.0
# params=[]: no values searched — the solver as given against the initial guess only (audit 2026-12-07: losses
# of 1.6 dB to the guess went unwarned where no calibration ran; the comparison alone called two of them worse)
COMPARE_ONLY = "params=[]: no values searched; the solver as given compared with the operator's initial guess only"
VERIFY_CANDIDATES = 2
MIN_SPLIT = 64  # measurement entries per image below which nothing is held out (auto: discrepancy)
# the z-coupling weight's search range (ZCoupling's units: ‖y − A(x)‖² per pixel of |x_{z+1} − x_z|); the
# weights chosen with ground truth on a validation volume were 0.001–0.003 (docs/medical.md)
COUPLING = "z_coupling"
COUPLING_RANGE = (1e-4, 3e-2)


@dataclass
class Calibration:
    """What :func:`calibrate` chose: ``params`` (name → value), ``solver`` (a copy with them set),
    ``table`` (one dict per candidate: its values, ``score``, ``nfe`` per image, ``seconds``),
    ``method`` (``holdout`` or ``discrepancy``), ``nfe`` (network evaluations per image spent in
    all), ``seconds``, ``note`` (why this method; any fallback) and ``changes`` (the settings that
    turn the original solver into ``solver``: the chosen values, and for the plug-in solvers
    their iteration budget, within which their own stopping rule stays on); ``result``: the solve of
    all of ``y`` that checked the chosen values (holdout; None when the solver's own values were
    kept) — :func:`ipsolve.solve` returns it instead of solving again; ``coupling``: the weight chosen with
    ``params=[..., "z_coupling"]`` (0 = slice by slice), else None; ``score`` (holdout): the returned
    values' score on the split that chose them, on the same scale as ``initial_guess_score`` (the
    guess's on that split); ``against_initial_guess``: ``better``, ``indistinguishable`` or ``worse``
    (with ``warning``) — the returned values against the initial guess on ``comparison_splits`` fresh
    splits (:func:`fresh_split_differences`; other held-out entries, so the verdict can differ from the
    two scores'): their mean per-entry
    score difference ``initial_guess_difference`` below two standard errors ``initial_guess_se``
    (better) or above one (worse: :func:`compare_with_initial_guess`); ``blind_spot``: what held-out entries cannot see on this
    operator (MRI), else ""; ``guess_handicap``: why ``better`` was withheld (an operator whose initial
    guess from part of y is handicapped — CT, MRI, phase retrieval — or not measured: deepinv's, your
    own; :attr:`Operator.holdout_guess_handicap`; or a guess whose held-out error is mostly a misfit it
    has at every entry, as a blur's: :func:`guess_misfit_handicap`), else ""; ``initial_guess_fit``:
    the guess's mean squared errors / σ² at the held-out and the kept entries of the calibration's split;
    ``against_classical``, ``classical_difference``, ``classical_se``: the same comparison with the
    operator's classical estimate from the kept entries where it has one (a blur's Tikhonov deconvolution,
    :meth:`Operator.classical_estimate`; its ``worse`` is a note, not a warning: :func:`classical_note`), else ""."""

    params: dict
    solver: Solver
    table: list[dict] = field(default_factory=list)
    method: str = ""
    nfe: float = 0.0
    seconds: float = 0.0
    note: str = ""
    changes: dict = field(default_factory=dict)  # the settings that make ``solver`` from the original one
    result: object = None  # the check's solve of all of ``y`` with the chosen values (a Result), when one ran
    coupling: float | None = None  # the chosen z-coupling weight (0: slice by slice), when it was calibrated
    initial_guess_score: float | None = None  # the operator's initial guess from the kept entries, scored alike
    warning: str = ""  # the initial guess predicts the held-out entries better than the chosen values
    score: float | None = None  # the returned values' score (holdout), beside initial_guess_score
    blind_spot: str = ""  # what held-out entries cannot see on this operator (Operator.holdout_blind_spot)
    guess_handicap: str = ""  # why a 'better' was not claimed (Operator.holdout_guess_handicap), when one was withheld
    against_initial_guess: str = ""  # better / indistinguishable / worse (compare_with_initial_guess); "" without one
    initial_guess_difference: float | None = None  # mean per-entry score difference, the solve's − the guess's
    initial_guess_se: float | None = None  # its standard error (paired, per entry)
    comparison_splits: int | None = None  # the fresh splits compared on (0: the calibration's own split)
    # the same against the operator's classical estimate (a blur's Tikhonov deconvolution; "" where it has none)
    against_classical: str = ""
    classical_difference: float | None = None
    classical_se: float | None = None
    sigma: float | None = None  # the σ the scores are divided by (as given, or sigma="auto"'s estimate)
    initial_guess_fit: dict | None = None  # the initial guess's mean held_out / kept squared errors / σ² (σ = 0: not
    # divided), on the calibration's own split

    def summary(self) -> dict:
        return {"params": self.params, "method": self.method, "nfe_per_image": self.nfe, "sigma": self.sigma,
                "seconds": round(self.seconds, 2), "candidates": len(self.table), "note": self.note,
                **({"score": self.score} if self.score is not None else {}),
                **({"initial_guess_score": self.initial_guess_score} if self.initial_guess_score is not None else {}),
                **({"against_initial_guess": self.against_initial_guess,
                    "initial_guess_difference": self.initial_guess_difference,
                    "initial_guess_se": self.initial_guess_se,
                    "comparison_splits": self.comparison_splits} if self.against_initial_guess else {}),
                **({"against_classical": self.against_classical, "classical_difference": self.classical_difference,
                    "classical_se": self.classical_se} if self.against_classical else {}),
                **({"warning": self.warning} if self.warning else {}),
                **({"blind_spot": self.blind_spot} if self.blind_spot else {}),
                **({"guess_handicap": self.guess_handicap} if self.guess_handicap else {}),
                **({"initial_guess_fit": self.initial_guess_fit} if self.initial_guess_fit else {})}


class CalibrationWarning(UserWarning):
    """The operator's initial guess predicts the held-out entries better than the calibrated solver by more
    than one standard error (:func:`calibrate`, :func:`initial_guess_warning`)."""


# ---------------------------------------------------------------------------------- solver copies
def declared_space(solver: Solver, params=None) -> dict[str, tuple[float, float]]:
    """The search ranges to use: the solver's declared ``search_space``, or the named subset of it
    (an undeclared name is a one-line error naming the declared ones)."""
    space = dict(getattr(type(solver), "search_space", {}) or {})
    if params is None:
        if not space:
            from . import SOLVERS

            tunable = sorted(n for n, cls in SOLVERS.items() if getattr(cls, "search_space", None))
            raise ValueError(f"solver {solver.name!r} declares no parameters to calibrate (it has no guidance "
                             f"strength or step size): run it without calibration (drop calibrate=true / "
                             f"calibrate=), or calibrate one of {', '.join(tunable)}")
        return space
    names = [params] if isinstance(params, str) else list(params)
    unknown = [p for p in names if p not in space]
    if unknown:
        raise ValueError(f"solver {solver.name!r} cannot calibrate {', '.join(map(repr, unknown))}; "
                         f"its calibrated parameters: {', '.join(space) or 'none'}")
    return {p: space[p] for p in names}


def with_params(solver: Solver, **params) -> Solver:
    """A new solver of the same class and settings with ``params`` changed (validated by its
    constructor); loaded helpers (a kernel prior) are shared, not reloaded."""
    kwargs = {k: getattr(solver, k) for k in accepted_parameters(type(solver)) if hasattr(solver, k)}
    kwargs.update(params)
    new = type(solver)(**kwargs)
    for k, v in vars(solver).items():  # loaded helpers, e.g. BlindDPS's kernel prior
        if k.startswith("_") and k != "_stopping" and v is not None and getattr(new, k, None) is None:
            setattr(new, k, v)
    new.auto_params = ()
    return new


def fresh_generators(gens):
    """Copies of ``gens`` at their current state, so every candidate draws the same noise."""
    def clone(g):
        c = torch.Generator(device=g.device)
        c.set_state(g.get_state())
        return c

    return [clone(g) for g in gens] if isinstance(gens, list) else clone(gens)


# ---------------------------------------------------------------------------------- objectives
class _Candidates:
    """What every candidate run of one calibration shares: the solver as given, the measurement,
    the per-image generators (each candidate draws the same noise), the searched space and the
    table of scored candidates (``Calibration.table``)."""

    def __init__(self, solver: Solver, operator: Operator, prior, y, sigma: float, gens, space: dict, penalty,
                 couple: bool):
        self.solver, self.operator, self.prior, self.y, self.sigma, self.gens = solver, operator, prior, y, sigma, gens
        self.space, self.penalty, self.couple = space, penalty, couple
        self.plug, self.blind = isinstance(solver, PlugSolver), isinstance(operator, BlindBlur)
        self.table: list[dict] = []
        self.planned: int | None = None  # the candidates calibrate plans (its budget), for the progress lines

    def scored(self, row: dict) -> None:
        """Add a scored candidate to the table and say so at INFO: a run's log gets a line per candidate
        (a calibration of a few minutes was silent until it ended; audit 2026-12-07)."""
        self.table.append(row)
        values = ", ".join(f"{k} = {plain_number(row[k], 4)}" for k in self.space if isinstance(row.get(k), (int, float)))
        if row.get("preset"):
            values = "the solver as given" + (f": {values}" if values else "")
        score = "diverged" if row.get("diverged") else f"score {plain_number(row['score'], 4)}"
        planned = f" of about {self.planned}" if self.planned else ""
        log.info("calibration: candidate %d%s (%s): %s, %.1f s", len(self.table), planned, values, score, row["seconds"])

    def candidate(self, values: dict, **extra) -> Solver:
        """The solver with ``values`` (and ``extra``) set, and the z-coupling it runs with: the
        candidate's weight, else the given one (none for the solver as given when it is searched)."""
        from .coupling import ZCoupling

        cand = with_params(self.solver, **{k: v for k, v in values.items() if k != COUPLING}, **extra)
        if self.penalty is not None:
            weight = values.get(COUPLING, 0.0 if self.couple else self.penalty.weight)
            cand._penalty = ZCoupling(weight, self.penalty.pairs, self.penalty.eps) if weight > 0 else None
        return cand

    def run(self, cand: Solver, y, operator, callback=None):
        return cand.run(y, operator, self.prior, fresh_generators(self.gens), self.sigma, callback)

    def given(self, name: str, resolved: bool = False):
        """``name``'s value as given (:func:`_given`; ``resolved``: a None resolved on the operator)."""
        return _given(self.solver, name, self.penalty, self.couple, *((self.operator, self.prior) if resolved else ()))

    def diverged(self, shown: dict, t0: float, preset: bool = False) -> float:
        """Record a candidate that made the solver diverge: the worst possible score."""
        self.scored({**shown, "score": math.inf, "nfe": math.nan, "seconds": time.perf_counter() - t0,
                     "diverged": True, **({"preset": True} if preset else {})})
        return math.inf

    def cost(self) -> float:
        """The candidates' network evaluations (a diverged run's partial cost is not known)."""
        return sum(r["nfe"] for r in self.table if not r.get("diverged"))


class DiscrepancyObjective(_Candidates):
    """Morozov's discrepancy principle: a candidate's score is the median over images of its
    residual on all entries against the χ²_m 95 % level (:func:`discrepancy_ratio`; ≤ 1 fits);
    plug-in solvers stop at the first iterate that fits."""

    def score(self, values: dict, preset: bool = False) -> float:
        extra = {"stop": ("discrepancy",), "tau": None, "combine": "first"} if self.plug else {}
        cand = self.candidate(values, **extra)
        t0 = time.perf_counter()
        try:
            res = self.run(cand, self.y, self.operator)
            with torch.no_grad():
                ax = self.operator(res.x, kernel=res.kernel) if self.blind else self.operator(res.x)
            ratio = float(discrepancy_ratio(self.y, ax, self.sigma).median())
            if not math.isfinite(ratio):
                raise NonFiniteError("non-finite reconstruction")
        except NonFiniteError:  # diverged: never the weakest value that fits
            return self.diverged(values, t0)
        self.scored({**values, "score": ratio, "nfe": _mean_nfe(res, self.prior), "seconds": time.perf_counter() - t0})
        return ratio

    def note(self) -> str:
        """Said when the principle's premise failed: no candidate fit the noise level."""
        ratios = [r["score"] for r in self.table if math.isfinite(r["score"])]
        if not ratios or min(ratios) <= 1.0:
            return ""
        return (f"no candidate fit the noise level (discrepancy ratios {min(ratios):.3g}–{max(ratios):.3g}; 1 = the "
                f"χ² 95 % level): the best-fitting one was chosen — the solver may need more steps or another range")


class HoldoutObjective(_Candidates):
    """Measurement-splitting validation: each candidate solves the kept entries (the operator
    restricted to them) and is scored by its squared error on the held-out entries / σ², per entry
    (:func:`holdout_error` is their mean).  The operator's initial guess from the kept entries is
    scored alike (no network evaluations): the reference a solver should beat and, where it fits
    the kept entries, the floor an early stop must reach.  :meth:`choose` applies the
    one-standard-error rules and checks the choice on all entries."""

    def __init__(self, *args, holdout: float, seed: int, observed):
        super().__init__(*args)
        y = self.y
        full_shape = tuple(y.shape[1:])
        self.kept, held = split_entries(y[0].numel(), holdout, torch.Generator().manual_seed(seed), observed)
        self.held = held.to(y.device)  # once, not at every iterate's score
        self.op_kept = restrict(self.operator, self.kept, full_shape)
        self.y_kept, self.y_held = gather(y, self.kept), gather(y, self.held)
        self.noise_var = self.sigma ** 2 if self.sigma > 0 else 1.0
        # the kept entries that carry information (an inpainting mask's holes are kept but are not data)
        self.informative = self.kept if observed is None else self.kept[observed.flatten().cpu()[self.kept]]
        self.y_informative = gather(y, self.informative)
        self.entries: dict[tuple, torch.Tensor] = {}  # per candidate: each held-out entry's squared error / σ²
        self.scores: dict[tuple, float] = {}  # per candidate: its table row's score (what chose it; notes say it)
        self.kept_fit: dict[tuple, torch.Tensor] = {}  # per candidate: each image's mean squared error / σ², kept
        self.best_iterations: dict[tuple, int] = {}  # plug-in candidates: the iteration of the held-out minimum
        self.checked: dict[tuple, object] = {}  # the solves on all entries (holds_on_all_entries)
        self.verify_nfe = 0.0
        self.baseline_errors = baseline_kept = None  # the initial guess's held-out errors and kept-entry fit
        self.baseline_fit = None  # (held-out, kept) mean squared errors / σ² of the initial guess (guess_misfit_handicap)
        if not self.blind:  # the operator's initial guess from the kept entries: the zero-NFE candidate
            try:
                with torch.no_grad():
                    self.baseline_errors, baseline_kept = self.fit_errors(
                        self.op_kept.initial_guess(self.y_kept).clamp(-1, 1))
                if not (torch.isfinite(self.baseline_errors).all() and torch.isfinite(baseline_kept).all()):
                    self.baseline_errors = baseline_kept = None  # a guess that is no reference (NaN, inf)
            except Exception:  # noqa: BLE001 - a reference only: an operator whose restricted guess fails has none
                self.baseline_errors = baseline_kept = None
        # a held-out minimum is no place to stop where the iterate explains the kept entries worse than both the
        # initial guess and the noise level (χ² 95 % level): the held-out curve then follows the prior's misfit,
        # not noise-fitting (a transfer audit: DMPlug stopped at 13 of 300 iterations at 12.7σ√m, −0.83 dB)
        self.fit_floor = None if baseline_kept is None else \
            max(float(baseline_kept.mean()), discrepancy_tau(len(self.informative)) ** 2)
        # the operator's classical estimate from the kept entries (a blur's Tikhonov deconvolution; its initial
        # guess is y): the second yardstick, scored alike, never a floor or a candidate
        self.classical_errors = None
        if not self.blind:
            with torch.no_grad():
                classical = self.op_kept.classical_estimate(self.y_kept)
                if classical is not None:
                    errors, kept = self.fit_errors(classical.clamp(-1, 1))
                    if torch.isfinite(errors).all() and torch.isfinite(kept).all():
                        self.classical_errors = (errors, kept)
        # the score counts every entry of y once: a held-out entry by its prediction error, a kept one by
        # the larger of its misfit and that (held-out entries are a random part of y, like the kept ones)
        self.kept_weight = len(self.informative) / max(len(self.held), 1)
        if self.baseline_errors is not None:
            self.baseline_fit = (float(self.baseline_errors.mean()), float(baseline_kept.mean()))
            self.baseline_errors = self.with_kept_misfit(self.baseline_errors, baseline_kept)
        if self.classical_errors is not None:
            self.classical_errors = self.with_kept_misfit(*self.classical_errors)

    def with_kept_misfit(self, errors: torch.Tensor, kept: torch.Tensor | None) -> torch.Tensor:
        """Each held-out entry's error (B, m_H) plus, per image, by how much its kept entries fit worse
        than its held-out entries are predicted, max(kept fit − held-out error, 0), times kept entries
        per held-out entry: the mean is then the error over all entries of y (× m / m_H), each kept entry
        counted at the larger of its misfit and the held-out error.  A sane solve fits the entries it was
        given at least as well as it predicts the others (the term is 0: held-out error alone, which the
        posterior mean minimises — tests/test_calibration.py); DPS at 50 steps did not (inpainting,
        σ = 0.05, 2 images: ζ 0.86 predicted held-out pixels at 13.6σ² but fitted the kept ones at 49σ²,
        and lost 2.2 dB to ζ 0.5, which the held-out error alone had ranked worse)."""
        if kept is None:
            return errors
        return errors + self.kept_weight * (kept - errors.mean(1)).clamp(min=0)[:, None]

    def fit_errors(self, x, kernel=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Each held-out entry's squared error / σ² (B, m_H; its mean: holdout_error) and each
        image's mean squared error / σ² on the kept entries that carry information (B,)."""
        full = self.operator(x, kernel=kernel) if self.blind else self.operator(x)
        return ((self.y_held - gather(full, self.held)).flatten(1).pow(2) / self.noise_var,
                (self.y_informative - gather(full, self.informative)).flatten(1).pow(2).mean(1) / self.noise_var)

    def score(self, values: dict, preset: bool = False) -> float:
        cand = self.candidate(values, **({"stop": ()} if self.plug else {}))
        curve = HeldOutCurve()

        def track(it, state):  # every iterate's held-out errors (plug-in solvers, not blind)
            if not self.blind:
                with torch.no_grad():
                    curve.add(*self.fit_errors(state["x"]))

        t0 = time.perf_counter()
        key = tuple(sorted(values.items()))
        shown = values if not preset else {n: self.given(n, resolved=True) for n in self.space}  # the value it ran with
        try:
            res = self.run(cand, self.y_kept, self.op_kept, track if self.plug else None)
            with torch.no_grad():
                errors, self.kept_fit[key] = self.fit_errors(res.x, res.kernel)
            if not torch.isfinite(errors).all():
                raise NonFiniteError("non-finite reconstruction")
        except NonFiniteError:  # this value makes the solver diverge: the worst possible score
            return self.diverged(shown, t0, preset)
        row = {**shown, "nfe": _mean_nfe(res, self.prior), "seconds": time.perf_counter() - t0,
               **({"preset": True} if preset else {})}
        held_out = float(errors.mean())
        if self.plug and curve.best is not None:
            it = int(curve.best_iteration)
            if self.fit_floor is not None and curve.best_kept is not None and \
                    float(curve.best_kept.mean()) > self.fit_floor:
                row.update(iterations=len(curve.means), held_out_minimum_at=it + 1,
                           kept_fit_there=float(curve.best_kept.mean()))  # the budget and the own stopping rule
            else:
                self.best_iterations[key] = it + 1
                errors, self.kept_fit[key] = curve.best_errors, curve.best_kept  # at the iterate it will stop at
                held_out = float(curve.best)  # (its trailing moving average, as the minimum was found)
                row.update(iterations=it + 1)
        excess = float((self.kept_fit[key] - errors.mean(1)).clamp(min=0).mean())  # (with_kept_misfit)
        row.update(score=held_out + self.kept_weight * excess, held_out=held_out,
                   kept_fit=float(self.kept_fit[key].mean()))
        self.entries[key] = self.with_kept_misfit(errors, self.kept_fit[key]).detach()
        self.scores[key] = row["score"]
        self.scored(row)
        return row["score"]

    def cost(self) -> float:
        return super().cost() + self.verify_nfe

    def beats_preset(self, key) -> tuple[bool, float, float]:
        """The one-standard-error rule: ``(better, gain, standard error)`` of candidate ``key``'s
        score against the solver as given."""
        entries = self.entries
        if key in entries and () in entries:
            d = entries[key] - entries[()]
            gain, se = float(-d.mean()), paired_standard_error(d, single=math.inf)
        else:  # the candidate diverged (all did), or the solver as given did and a candidate did not
            gain, se = (math.inf, 0.0) if key in entries else (-math.inf, 0.0)
        return gain > se, gain, se

    def weakest_within_one_se(self, ranked, name, direction, eligible=lambda row: True) -> dict:
        """The textbook one-standard-error rule: of the candidates whose score exceeds the
        best's by at most one standard error of the paired per-entry differences (and that are
        ``eligible``), the one with the weakest guidance (smallest ``direction`` × value); the best
        itself when no other is."""
        best = self.entries[((name, ranked[0][name]),)]
        within = [ranked[0]]
        for row in ranked[1:]:
            d = self.entries[((name, row[name]),)] - best
            if float(d.mean()) <= paired_standard_error(d) and eligible(row):
                within.append(row)
        return min(within, key=lambda r: direction * r[name])

    def plug_changes(self, key) -> dict:
        """A plug-in solver's budget: the candidate's held-out minimum, its own stopping rule kept (it
        may stop earlier: held-out entries do not see the noise fitted at the kept ones where each entry
        has local support — SR, inpainting — so at high σ their minimum comes late, docs/calibration.md)."""
        return {"iterations": self.best_iterations[key]} if self.plug and key in self.best_iterations else {}

    def holds_on_all_entries(self, key, row) -> bool:
        """One solve of ``y`` on all entries with candidate ``key``: every image must fit the kept
        entries within VERIFY_FACTOR × max(1, the restricted solve's fit) (recorded in its row)."""
        cand = self.candidate(dict(key), **self.plug_changes(key))
        log.info("calibration: checking the chosen values on all of y (one solve)")
        try:
            res = self.run(cand, self.y, self.operator)
            self.verify_nfe += _mean_nfe(res, self.prior)
            self.checked[key] = res
            with torch.no_grad():
                fit = self.fit_errors(res.x, res.kernel)[1]
        except NonFiniteError:
            fit = torch.full_like(self.kept_fit[key], math.inf)
        limit = VERIFY_FACTOR * self.kept_fit[key].clamp(min=1.0)
        row.update(full_fit=float(fit.max()), restricted_fit=float(self.kept_fit[key].max()))
        ok = bool((fit <= limit).all())
        if not ok:
            row["rejected"] = "diverged on all entries"
        return ok

    def choose(self, keep_preset: bool) -> tuple[dict, dict, tuple | None, list[str]]:
        """``(final values, changes to the solver, the accepted candidate's key or None, reasons)``: the
        best candidate by score (the one-SE pick of the weakest guidance where the solver
        declares it), kept only if it beats the solver as given by more than one standard error
        (``keep_preset``) and holds on all entries; else the next, then the solver's own values."""
        space, solver = self.space, self.solver
        ranked = sorted((r for r in self.table if not r.get("preset") and math.isfinite(r["score"])),
                        key=lambda r: r["score"])
        reasons, accepted = [], None
        name = next(iter(space)) if len(space) == 1 else None
        exempt = None  # the one-SE pick: within one SE of a best candidate that beat the solver as given
        if name in getattr(type(solver), "weakest_within_one_se", ()) and ranked and (
                not keep_preset or self.beats_preset(tuple(sorted((n, ranked[0][n]) for n in space)))[0]):
            # only once the best candidate has beaten the solver as given (else that comparison, below,
            # keeps the solver's own values and names the best candidate, not a weaker one), and only among
            # candidates that beat it too: a noisy weak candidate can lie within one SE of the best and score
            # worse than the solver as given (ζ 0.148 at 546 against the preset's 533 and the best's 481, each
            # SE paired with the best: −0.6 dB on a new image family, audit 2026-12-07)
            eligible = (lambda row: self.beats_preset(((name, row[name]),))[0]) if keep_preset else (lambda row: True)
            pick = self.weakest_within_one_se(ranked, name, getattr(type(solver), "guidance_direction", {}).get(name, 1),
                                              eligible)
            if pick is not ranked[0]:
                reasons.append(f"{name} = {pick[name]:.3g}, the weakest guidance whose score is within one "
                               f"standard error of the best's ({name} = {ranked[0][name]:.3g})"
                               + (" and beats the solver's own values by more than one" if keep_preset else ""))
            ranked, exempt = [pick, *(r for r in ranked if r is not pick)], pick
        for row in ranked[:VERIFY_CANDIDATES]:
            key = tuple(sorted((n, row[n]) for n in space))
            if keep_preset and row is not exempt:
                better, gain, se = self.beats_preset(key)
                if not better:  # not better than the preset by more than one standard error: keep the preset
                    own = next((r["score"] for r in self.table if r.get("preset")), math.nan)
                    values = ", ".join(f"{n} = {v:.3g}" for n, v in key)
                    reasons.append(f"kept the solver's own values (score {plain_number(own, 4)}): the best "
                                   f"{'remaining ' if reasons else ''}other candidate ({values}) scored "
                                   + (f"higher, {plain_number(abs(gain))} worse" if gain < 0 else
                                      f"lower by {plain_number(gain)}, within one standard error "
                                      f"({plain_number(se)})"))
                    break
            if self.holds_on_all_entries(key, row):
                accepted = key
                if keep_preset and () in self.entries and key in self.entries:
                    own = next(r["score"] for r in self.table if r.get("preset"))
                    se = self.beats_preset(key)[2]
                    score, own = plain_pair(row["score"], own)
                    reasons.append(f"{', '.join(f'{n} = {v:.3g}' for n, v in key)}: score {score} "
                                   f"against the solver's own values' {own} (one standard error "
                                   f"{plain_number(se)})")
                break
            reasons.append(f"rejected {dict(key)}: on all entries an image's fit of the kept entries rose to "
                           f"{plain_number(row['full_fit'])} (restricted solve {plain_number(row['restricted_fit'])})")
        final = changes = None
        if accepted is None and (keep_preset or ranked):
            if not reasons or reasons[-1].startswith("rejected"):
                reasons.append("kept the solver's own values")
            final, changes = {n: self.given(n, resolved=True) for n in space}, self.plug_changes(())
            if "iterations" in changes:  # the solver's own values, stopped where their held-out error was least
                final["iterations"] = changes["iterations"]
                reasons.append(f"its iteration count set to {changes['iterations']}, where the solver's own values' "
                               f"held-out error was least")
        elif accepted is not None:
            values = {n: dict(accepted)[n] for n in space}  # in the declared order
            final, changes = dict(values), {**values, **self.plug_changes(accepted)}
            if "iterations" in changes:
                final["iterations"] = changes["iterations"]
            reasons += [f"{n} = {v:.3g} is the {side} end of its search range {lo:g}–{hi:g}: the score was "
                        f"least there, a value beyond it may be better"
                        for n, v in values.items() for (lo, hi) in [space[n]]
                        for side, end in (("lower", lo), ("upper", hi)) if math.isclose(v, end, rel_tol=1e-6)]
        final_key = accepted if accepted is not None else ()
        final_row = next((r for r in self.table if r.get("preset")), None) if final_key == () else \
            next((r for r in self.table if not r.get("preset") and all(r.get(n) == v for n, v in final_key)), None)
        if final_row is not None and "held_out_minimum_at" in final_row:
            reasons.append(f"its held-out minimum (iteration {final_row['held_out_minimum_at']}) was not made its "
                           f"iteration count: that iterate fitted the kept entries at {final_row['kept_fit_there']:.3g}σ², "
                           f"worse than the initial guess and the noise level, so its budget and stopping rule stay")
        return final, changes, accepted, reasons

    def chosen_score(self, accepted) -> float | None:
        """The score of the values returned (the solver's own where none was accepted), or None: its
        table row's — for a plug-in solver the held-out curve's trailing mean at its minimum, as the
        notes give it (the mean of that iterate's entries alone, which this returned before, said 36
        where the note and calibration.csv said 106 at a 3-iteration budget)."""
        key = accepted if accepted is not None else ()
        if key in self.scores:
            return float(self.scores[key])
        return float(self.entries[key].mean()) if key in self.entries else None

    def own_split_differences(self, accepted, against: str = "initial") -> torch.Tensor | None:
        """The returned values' per-entry score minus the initial guess's (``against="classical"``: the
        classical estimate's) on this split (the one that chose them, so biased their way:
        :func:`fresh_split_differences`), or None without that yardstick."""
        key = accepted if accepted is not None else ()
        reference = self.baseline_errors if against == "initial" else self.classical_errors
        if reference is None or key not in self.entries:
            return None
        return (self.entries[key] - reference).flatten()


def coordinate_search(objective, chosen: dict, budget: int, method: str, extend: bool) -> dict:
    """Coordinate-wise search of ``objective.space`` from ``chosen`` with ``budget`` candidates:
    golden-section search of the score (each coordinate starts from the best candidate so
    far, which may be an earlier coordinate's), or the discrepancy principle's bisection towards
    the weakest guidance that fits.  A candidate scored already is not solved again."""
    table, space = objective.table, objective.space
    for (name, (lo, hi)), n in zip(space.items(), split_budget(budget, len(space))):
        def evaluate(value, name=name):
            values = {**chosen, name: value}
            for row in table:  # scored already (the solver's own value at a range's end): not solved again
                if all(isinstance(row.get(k), float) and math.isclose(row[k], v, rel_tol=1e-9) for k, v in values.items()):
                    return row["score"]
            return objective.score(values)

        if method == "holdout":
            chosen[name] = golden_section(evaluate, lo, hi, n, extend)
            tried = [r for r in table if not r.get("preset") and math.isfinite(r["score"])]
            if tried:
                best = min(tried, key=lambda r: r["score"])
                chosen = {n: best[n] for n in space}
        else:
            # a larger coupling weight regularises more: the strongest one that still fits
            direction = -1 if name == COUPLING else getattr(type(objective.solver), "guidance_direction", {}).get(name, 1)
            chosen[name] = discrepancy_search(evaluate, lo, hi, n, direction)
    return chosen


# ---------------------------------------------------------------------------------- calibrate
def calibrate(y: torch.Tensor, operator: Operator, prior, solver: Solver, *, sigma: float | str = ASSUMED_SIGMA, params=None,
              budget: int | None = None, method: str = "auto", holdout: float = 0.2, seed: int = 0,
              generator=None, keep_preset: bool = True, penalty=None, extend: bool = True,
              comparison_splits: int = COMPARISON_SPLITS) -> Calibration:
    """Choose ``solver``'s parameters for this measurement batch ``y`` without the ground truth
    (``sigma`` as :func:`ipsolve.solve`'s, ``"auto"`` included).

    ``params``: names of declared parameters (default: all of ``solver.search_space``; ``[]``: none —
    the solver as given is only compared with the operator's initial guess, on ``comparison_splits``
    fresh splits at one solve of the kept entries each, or with 0 on the split of ``seed``: holdout
    only, ``budget``, ``keep_preset`` and ``extend`` unused; :data:`COMPARE_ONLY`);
    ``budget``: candidates in all (default :func:`default_budget`: 5 solves of ``y`` for one
    parameter, 9 for two; at least two per parameter, plus one for the solver as given with
    ``keep_preset``; holdout tries one more per parameter, its range's end, when its best point is
    the outermost one: :func:`golden_section`, unless ``extend=False``); ``method``: ``holdout``,
    ``discrepancy`` or ``auto`` (holdout when each image has at least 64 measurement entries to
    split, else the discrepancy principle — the choice and why are in ``Calibration.note``); ``holdout``: the fraction of entries held out, in (0, 0.5];
    ``seed``: the split; ``generator``: the solver's randomness (as :func:`ipsolve.solve`), the same
    for every candidate.  ``keep_preset`` (holdout): the solver's own values are one of the
    candidates, and are kept unless the best candidate's score is lower by more than one
    standard error of the paired per-entry differences — the one-standard-error rule of
    cross-validation, so that a noisy score (few entries, high σ) does not move a good preset.
    The chosen values then solve all of ``y`` once and are rejected (for the next-best candidate,
    then the solver's own values) when an image's kept-entry fit gets ``VERIFY_FACTOR`` × worse
    than the restricted solve's; that solve is ``Calibration.result``.

    ``comparison_splits`` (holdout): fresh splits (seeds ``seed + 1``, …) on which the returned values
    are compared with the operator's initial guess (:func:`fresh_split_differences`; each costs one
    solve of the kept entries): ``Calibration.against_initial_guess`` and ``warning``; 0 compares on
    the calibration's own split, which chose the values and flatters them.

    ``penalty``: the :class:`~.coupling.ZCoupling` of a volume whose slices are the images of
    ``y`` — every candidate runs with it, as the solve will; with ``"z_coupling"`` among
    ``params`` its weight is searched too (:data:`COUPLING_RANGE`, log scale), and the solver as
    given runs without coupling, so coupling is kept only where it predicts the held-out entries
    better than slice by slice (``Calibration.coupling``)."""
    from . import make_solver
    from .coupling import ZCoupling, check_solver

    start = time.perf_counter()
    if isinstance(solver, str):
        solver = make_solver(solver)
    if not isinstance(solver, Solver):
        raise TypeError(f"solver must be an ipsolve Solver (make_solver(...)) or a preset name, got {shown(solver)}")
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise TypeError(f"seed must be an integer (it draws the held-out entries), got {shown(seed)}")
    seed = int(seed)
    for flag, value in (("keep_preset", keep_preset), ("extend", extend)):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be True or False, got {shown(value)}")
    checked = check_calibration_settings(method=method, budget=budget, holdout=holdout,
                                         comparison_splits=comparison_splits, params=params)
    method, budget, holdout, names = checked["method"], checked["budget"], checked["holdout"], checked["params"]
    couple = names is not None and COUPLING in names
    compare_only = names == []
    if penalty is not None and not isinstance(penalty, ZCoupling):
        raise TypeError(f"penalty must be a ZCoupling(weight, neighbour_pairs(...)) coupling the slices of y, or None, "
                        f"got {shown(penalty)}")
    check_models(operator, prior)
    auto = tuple(getattr(solver, "auto_params", ()) or ())
    left = [p for p in auto if names is not None and p not in names]
    if left:  # they would run with no value at all (audit 2026-12-07: params=[] dropped a zeta="auto" silently)
        raise ValueError(f"the solver's {', '.join(left)} {'is' if len(left) == 1 else 'are'} 'auto' (to be chosen), "
                         f"but params={names} leaves {'it' if len(left) == 1 else 'them'} out"
                         f"{' (compare only)' if compare_only else ''}: add {'it' if len(left) == 1 else 'them'} to "
                         f"params or give a value")
    if couple or penalty is not None:
        if not isinstance(penalty, ZCoupling):
            raise ValueError("calibrating z_coupling needs the volume's slices: give penalty=ZCoupling(weight, "
                             "neighbour_pairs(...)) for the images of y")
        check_solver(solver)
    if couple:
        names = [n for n in names if n != COUPLING]
    space = declared_space(solver, names) if names or not couple else {}
    if couple:
        space[COUPLING] = COUPLING_RANGE
    budget = default_budget(len(space)) if budget is None else budget
    needed = 2 * len(space) + int(keep_preset and method != "discrepancy")
    if budget < needed and not compare_only:
        raise ValueError(f"budget {budget} is below two candidates per calibrated parameter ({', '.join(space)})"
                         f"{' and the solver as given' if needed % 2 else ''}: give at least {needed}")
    solver.check(operator, prior)
    assumed_sigma_note(sigma, operator)
    y, sigma = check_inputs(y, operator, prior, sigma)
    gens = generators_on(generators_for(generator, y.shape[0]), prior.device)
    observed = operator.observed_entries(y.shape)
    method, note = choose_method(method, fewest_entries(operator, y.shape, observed), holdout, sigma)
    if compare_only and method != "holdout":
        raise ValueError("params=[] compares the solver with the initial guess on held-out measurement entries: "
                         + (f"this measurement has too few ({note})" if note else "give method='holdout' (or auto)"))

    if method == "holdout":
        check_restricted_solver(solver, operator, prior, tuple(y.shape[1:]), compare_only)
    shared = (solver, operator, prior, y, sigma, gens, space, penalty, couple)
    objective = HoldoutObjective(*shared, holdout=holdout, seed=seed, observed=observed) if method == "holdout" \
        else DiscrepancyObjective(*shared)
    if compare_only and objective.baseline_errors is None:
        raise ValueError(f"params=[] compares the solver with the operator's initial guess, and {type(operator).__name__} "
                         f"has none to score from part of y (a blind operator, or a guess that failed)")
    keep_preset = keep_preset and method == "holdout"
    objective.planned = budget
    if (keep_preset and not compare_only) or (compare_only and comparison_splits == 0):
        objective.score({}, preset=True)  # the solver as given: the reference to beat (compare-only: the split compared on)
    chosen = {name: _current(solver, name, lo, hi) for name, (lo, hi) in space.items()}
    if not compare_only:
        chosen = coordinate_search(objective, chosen, budget - int(keep_preset), method, extend)

    final = changes = accepted = score = None
    blind_spot = misfit = ""
    if compare_only:
        final, changes, score = {}, {}, objective.chosen_score(None)
        note = "; ".join(p for p in (note, COMPARE_ONLY) if p)
        blind_spot = getattr(operator, "holdout_blind_spot", None) or ""
    elif method == "holdout":
        final, changes, accepted, reasons = objective.choose(keep_preset)
        note = "; ".join(p for p in (note, *reasons) if p)
        score = objective.chosen_score(accepted)
        blind_spot = getattr(operator, "holdout_blind_spot", None) or ""
    else:  # the principle's premise failed where no candidate fits the noise level: a warning, as a worse guess is
        misfit = objective.note()
    if final is None:  # the discrepancy principle's choice (or no candidate held out at all)
        final, changes = dict(chosen), dict(chosen)
        if method == "discrepancy" and objective.plug:
            changes.update(stop=("discrepancy",), tau=None, combine="first")
    comparison = {}
    if method == "holdout" and objective.baseline_errors is not None:
        differences, classical, splits = None, None, int(comparison_splits)
        if splits > 0:
            differences, classical = fresh_split_differences(shared, objective, changes, splits, holdout, seed,
                                                             observed)
        if differences is None:  # none asked for, or none usable: the calibration's own split
            differences, splits = objective.own_split_differences(accepted), 0
            classical = objective.own_split_differences(accepted, "classical")
        if classical is not None:  # a blur's deconvolution: no handicap (it fits the entries it was built from)
            verdict, se = compare_with_initial_guess(classical)
            comparison.update(against_classical=verdict, classical_difference=float(classical.mean()), classical_se=se)
        if differences is not None:
            verdict, se = compare_with_initial_guess(differences)
            handicap = (getattr(operator, "holdout_guess_handicap", None)
                        or guess_misfit_handicap(objective.baseline_fit, sigma))
            if verdict == "better" and handicap:  # the guess's handicap, not the solve, may have made it
                verdict, comparison["guess_handicap"] = "indistinguishable", handicap
            comparison.update(against_initial_guess=verdict, initial_guess_difference=float(differences.mean()),
                              initial_guess_se=se, comparison_splits=splits)
        if objective.baseline_fit is not None:
            comparison["initial_guess_fit"] = dict(zip(("held_out", "kept"), objective.baseline_fit))
    warning = initial_guess_warning(comparison, sigma, searched=not compare_only) \
        if comparison.get("against_initial_guess") == "worse" else misfit
    if comparison.get("against_classical") == "worse":  # a note: this score favours the deconvolution
        note = (f"{note}; " if note else "") + classical_note(comparison, operator)
    coupling = None
    if couple:  # not a solver parameter: the weight of the penalty the solve runs with
        coupling = float(changes.pop(COUPLING, None) or 0.0)
        final[COUPLING] = coupling
    if warning:
        warn(warning, CalibrationWarning)
    if comparison.get("guess_handicap"):  # (said in a run's report only: in Python it read as a plain tie)
        note = (f"{note}; " if note else "") + ("scored below the initial guess by more than two standard errors, "
                                                f"not called better: {comparison['guess_handicap']}")
    baseline = getattr(objective, "baseline_errors", None)
    if compare_only and comparison.get("comparison_splits"):
        baseline = None  # (its split was not compared on: the fresh splits were)
    return Calibration(params=final, solver=with_params(solver, **changes), table=objective.table, method=method,
                       nfe=objective.cost(), seconds=time.perf_counter() - start, note=note, changes=changes,
                       result=objective.checked.get(accepted) if accepted is not None else None,
                       coupling=coupling, warning=warning, score=score, blind_spot=blind_spot, **comparison, sigma=sigma,
                       initial_guess_score=None if baseline is None else float(baseline.mean()))


def fewest_entries(operator, y_shape, observed) -> int:
    """The measurement entries that carry information in the image of ``y_shape`` that has fewest: per-image
    inpainting masks count each image's own (the split is drawn over their union, which was counted: a 95 %
    missing image's 51 pixels read as 782 — an audit, 2026-12-07)."""
    count = math.prod(y_shape[1:]) if observed is None else int(observed.sum())
    per_image = operator.observed_mask(y_shape)
    if per_image is not None and per_image.shape[0] > 1:
        count = min(count, int(per_image.flatten(1).sum(1).min()))
    return count


def choose_method(method: str, n_split: int, holdout: float, sigma: float) -> tuple[str, str]:
    """``(method, note)``: ``auto`` is holdout when each image has at least ``MIN_SPLIT`` measurement
    entries to split, else the discrepancy principle (which needs σ > 0); the note says why."""
    note = ""
    if method == "auto":
        method = "holdout" if n_split >= MIN_SPLIT else "discrepancy"
        note = (f"auto: holdout ({n_split} measurement entries per image, {holdout:g} held out)" if method == "holdout"
                else f"auto: discrepancy principle (only {n_split} measurement entries in an image; "
                     f"at least {MIN_SPLIT} are needed to hold some out)")
    elif method == "holdout" and n_split < MIN_SPLIT:
        method = "discrepancy"
        note = (f"fell back to the discrepancy principle: only {n_split} measurement entries in an image "
                f"(at least {MIN_SPLIT} are needed to hold some out)")
    if method == "discrepancy" and not sigma > 0:
        raise ValueError("the discrepancy principle needs the noise level: give sigma > 0 (or use method='holdout'"
                         f"{'' if n_split >= MIN_SPLIT else ' on a measurement with at least 64 entries'})")
    return method, note


def fresh_split_differences(shared: tuple, objective: HoldoutObjective, changes: dict, splits: int,
                            holdout: float, seed: int, observed) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The returned settings (``changes``, as :attr:`Calibration.solver` has them) on ``splits`` fresh
    splits (seeds ``seed + 1``, …): each split's kept entries solved and its entries scored as a
    candidate's (:meth:`HoldoutObjective.with_kept_misfit`), minus that split's initial guess's — the
    per-entry differences pooled, or None when no split gave finite ones (a split whose solve diverges
    is left out).  The calibration's own split chose the values (and a plug-in solver's iteration count
    at its held-out minimum), so their score there is biased their way — the reason model selection
    and model assessment use different data (nested cross-validation).  Measured on the 32 transfer rows
    (docs/calibration.md): on the own split 10 of the 15 losses scored worse than the guess and 1 of the
    12 gains did; on two fresh splits 14 of 15 and none.  Their network evaluations count in
    ``Calibration.nfe``.  Second: the same against the split's classical estimate (a blur's
    deconvolution, :attr:`HoldoutObjective.classical_errors`), or None where there is none."""
    pooled, classical = [], []
    for split_seed in range(seed + 1, seed + 1 + splits):
        fold = HoldoutObjective(*shared, holdout=holdout, seed=split_seed, observed=observed)
        if fold.baseline_errors is None:
            continue
        log.info("calibration: comparing with the operator's initial guess on fresh split %d of %d (one solve)",
                 split_seed - seed, splits)
        try:
            res = fold.run(fold.candidate(changes), fold.y_kept, fold.op_kept)
        except NonFiniteError:
            continue
        objective.verify_nfe += _mean_nfe(res, fold.prior)
        with torch.no_grad():
            errors, kept = fold.fit_errors(res.x, res.kernel)
            scored = fold.with_kept_misfit(errors, kept)
            d = (scored - fold.baseline_errors).flatten()
        if torch.isfinite(d).all():
            pooled.append(d)
            if fold.classical_errors is not None:
                classical.append((scored - fold.classical_errors).flatten())
    return (torch.cat(pooled) if pooled else None,
            torch.cat(classical) if classical and len(classical) == len(pooled) else None)


def paired_standard_error(differences: torch.Tensor, single: float = 0.0) -> float:
    """One standard error of the mean of paired per-entry score differences, ``std / √n`` (sample
    std; ``single`` where there is one entry) — the yardstick of every one-standard-error rule here."""
    d = differences.flatten()
    return float(d.std() / math.sqrt(d.numel())) if d.numel() > 1 else single


# "better" is a claim a user may rely on and skip the comparison: it needs two standard errors; "worse"
# asks for a look (initial/ beside recon/): one.  On the 32 rows of docs/calibration.md one standard error
# called a -0.09-dB loss and a +0.11-dB tie "better" (1.2 SE); two keeps 10 of the 11 gains' "better" on
# split seeds 1-2 and 5 of 11 on seeds 3-4, and calls no loss "better" on either (one did on 3-4)
# (audit 2026-12-07: 2 images, DPS at 20 steps, a -1.3-dB loss scored 1.4 SE "better")
BETTER_SE, WORSE_SE = 2.0, 1.0


def compare_with_initial_guess(differences: torch.Tensor) -> tuple[str, float]:
    """``(outcome, standard error)`` of per-entry score differences, the returned values' minus the
    operator's initial guess's (:func:`fresh_split_differences`): ``better`` (lower by more than
    :data:`BETTER_SE` standard errors), ``worse`` (higher by more than :data:`WORSE_SE`:
    :func:`initial_guess_warning`) or ``indistinguishable`` (between: the score cannot tell whether the
    solve beats its initial guess)."""
    se, mean = paired_standard_error(differences), float(differences.mean())
    if not (math.isfinite(mean) and math.isfinite(se)):
        return "indistinguishable", se
    return ("worse" if mean > WORSE_SE * se else "better" if mean < -BETTER_SE * se else "indistinguishable"), se


# the initial guess's held-out error must exceed its misfit of the entries it was built from by this factor for
# its score to measure prediction (measured, 20 % held out, σ 0.01 / 0.05, blobs, photos, textures: the blurs'
# guess y 0.9-1.4, CT's FBP 1.5-4.6, SR's bicubic 9-22, MRI's zero-filled guess (POCS) 7-15, inpainting's harmonic
# fill > 100)
GUESS_PREDICTION_RATIO = 2.0


def guess_misfit_handicap(fit: tuple[float, float] | None, sigma: float | None = None) -> str:
    """Why a ``better`` says nothing about the image (or ""): where the initial guess's held-out error
    ``fit[0]`` is less than :data:`GUESS_PREDICTION_RATIO` × its misfit ``fit[1]`` of the kept entries it
    was built from, its score measures a misfit it has at every entry — a blur's guess is y itself, which
    A blurs again — and any solve that fits y scores below it whatever its image (an audit, 2026-12-07:
    a 61-px Gaussian blur on grey photo crops, DPS tied with y (+0.00 dB) and scored 13 standard errors
    'better')."""
    if fit is None or not fit[0] < GUESS_PREDICTION_RATIO * fit[1]:
        return ""
    unit = "σ² per entry" if sigma else "per entry"
    return (f"the initial guess misfits the entries it was built from about as much as the held-out ones (kept "
            f"{plain_number(fit[1])}, held-out {plain_number(fit[0])} {unit}): its score measures a misfit it has "
            f"everywhere (a blur's guess is y itself, which the operator blurs again), which any solve that fits y "
            f"avoids, not how well it predicts unseen entries")


def classical_note(comparison: dict, operator) -> str:
    """What a ``worse`` against the classical estimate (a blur's deconvolution) means: not a warning —
    the held-out entries are blurred, so they barely see the detail a solve adds and favour the
    deconvolution, whose errors the blur hides (measured: a +0.95-dB and a −0.14-dB difference in PSNR
    both scored ``worse``; docs/calibration.md)."""
    name = getattr(operator, "classical_name", None) or "classical estimate"
    return (f"the solve is not shown better than the classical {name} on held-out entries, which favour a "
            f"deconvolution (gains up to about 1 dB scored worse): compare them (a run's classical/ beside its "
            f"recon/; operator.classical_estimate(y) in Python)")


def initial_guess_warning(comparison: dict, sigma: float | None = None, searched: bool = True) -> str:
    """The warning for a ``worse`` comparison (``Calibration``'s ``initial_guess_difference``,
    ``initial_guess_se``, ``comparison_splits``): the solver is then not expected to beat its initial
    guess on these images — usually a prior that does not fit them (a transfer audit: grey photos under
    the phantom prior, SR ×4: four of the five calibrated solvers lost 0.68–2.89 dB to bicubic)."""
    splits = comparison["comparison_splits"]
    where = (f"on {splits} fresh split{'s' if splits > 1 else ''} of y" if splits
             else "on the calibration's own split" if searched else "on one split of y")
    return (f"the operator's initial guess predicts the held-out measurement entries better than the "
            f"{'calibrated solver' if searched else 'solver as given'} ({where}, by "
            f"{plain_number(comparison['initial_guess_difference'])} {score_unit(sigma)}, one standard error "
            f"{plain_number(comparison['initial_guess_se'])}): on these images it is not expected to beat its initial guess "
            f"— compare them (a run's initial/ beside its recon/; operator.initial_guess(y) in Python), or use a prior "
            f"trained on images like these")


def _given(solver, name: str, penalty, couple: bool, operator=None, prior=None):
    """The value of ``name`` as given: the solver's — where it is None, the value the solver uses
    on ``operator`` and ``prior`` (DPS's per-operator ζ: :meth:`~.dps.DPS.default_value`; DAPS's
    per-task lr), so a kept preset
    reports the number it ran with — or for the z-coupling weight being searched none (0: slice
    by slice, the reference coupling has to beat)."""
    if name == COUPLING:
        return 0.0 if couple else getattr(penalty, "weight", None)
    value = getattr(solver, name, None)
    if value is None and operator is not None and hasattr(solver, "default_value"):
        value = solver.default_value(name, operator, prior)
    return value


def _current(solver, name, lo, hi) -> float:
    """The solver's present value of ``name`` (a start for coordinate-wise search), or the range's
    geometric middle when it has none (e.g. DPS's per-operator ζ)."""
    value = getattr(solver, name, None)
    return float(value) if isinstance(value, (int, float)) and value > 0 else math.sqrt(lo * hi)


def _mean_nfe(res, prior) -> float:
    """A candidate's network evaluations per image, counted as :func:`ipsolve.solve` counts them
    (classifier-free guidance evaluates the network twice per call: the foundation priors' count was
    half; audit 2026-12-07)."""
    per_call = (getattr(prior, "conditioning", None) or {}).get("evaluations_per_call", 1)
    return per_call * sum(i.get("nfe", 0) for i in res.info) / max(len(res.info), 1)


class HeldOutCurve:
    """A plug-in candidate's held-out error along its iterations: the trailing ``window``-iteration
    moving average of the mean error (the first entries average what there is), its minimum (the
    first, on ties), the iteration there and the per-entry errors of that iterate (and, when given,
    its per-image fit of the kept entries) — kept on the device without a host synchronisation per
    iteration, in memory independent of the budget."""

    def __init__(self, window: int = 5):
        self.window, self.means = window, []
        self.best = self.best_errors = self.best_iteration = self.best_kept = None

    def add(self, errors: torch.Tensor, kept: torch.Tensor | None = None) -> None:
        """One iterate's ``(B, m_H)`` held-out errors (and ``(B,)`` kept-entry fit)."""
        self.means.append(errors.mean())
        smooth = torch.stack(self.means[-self.window:]).mean().nan_to_num(nan=math.inf)  # a NaN iterate: never the best
        it = torch.full((), len(self.means) - 1, device=errors.device)  # filled on the device: no host copy
        if self.best is None:
            self.best, self.best_errors, self.best_iteration, self.best_kept = smooth, errors, it, kept
            return
        better = smooth < self.best
        self.best = torch.where(better, smooth, self.best)
        self.best_errors = torch.where(better, errors, self.best_errors)
        self.best_iteration = torch.where(better, it, self.best_iteration)
        if kept is not None:
            self.best_kept = torch.where(better, kept, self.best_kept)


def check_restricted_solver(solver: Solver, operator: Operator, prior, full_shape, compare_only: bool) -> None:
    """A one-line ValueError, before any solve, when ``solver`` cannot run on part of y (DDRM works
    in the operator's SVD, which :func:`~ipsolve.operators.restrict.restrict` has none of: the first
    split's solve failed with a message that blamed the operator, audit 2026-12-07)."""
    probe = restrict(operator, torch.zeros(1, dtype=torch.long), full_shape)
    try:
        solver.check(probe, prior)
    except ValueError as err:
        reason = ("it works in the operator's SVD, and an operator restricted to part of y has none"
                  if "no fast SVD" in str(err) else str(err))
        what = "params=[] compares with the initial guess on" if compare_only else "calibration scores"
        hint = "" if compare_only else ("; the discrepancy principle calibrates on all of y: method='discrepancy' "
                                        "(calibrate.method=discrepancy on the command line)")
        raise ValueError(f"{what} held-out entries of y, solving from the rest, which solver {solver.name!r} cannot: "
                         f"{reason}{hint}") from None


def apply_auto(solver: Solver, y, operator, prior, sigma: float, generator, calibrate_all: bool = False,
               compare_only: bool = False, **options) -> tuple[Solver, Calibration | None]:
    """The solver to run: calibrated on ``y`` when some of its parameters were given as ``"auto"``
    (or all declared ones with ``calibrate_all``), else itself.  ``options`` go to :func:`calibrate`
    (a ``penalty``: the candidates run with the z-coupling the solve will use).  ``compare_only``
    (``params=[]``): itself, compared with the initial guess (``Calibration.against_initial_guess``)."""
    names = tuple(getattr(solver, "auto_params", ()) or ())
    if calibrate_all:
        names = tuple(declared_space(solver))
    if compare_only:
        if names:
            raise ValueError(f"calibrate={{'params': []}} compares the solver as given with the initial guess, but its "
                             f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} 'auto' (to be chosen): drop one")
        cal = calibrate(y, operator, prior, solver, sigma=sigma, params=[], generator=generator, **options)
        return cal.solver, cal
    if not names:
        return solver, None
    cal = calibrate(y, operator, prior, solver, sigma=sigma, params=list(names), generator=generator, **options)
    return cal.solver, cal


__all__ = ["Calibration", "CalibrationWarning", "calibrate", "holdout_error", "discrepancy_ratio", "golden_section", "discrepancy_search",
           "declared_space", "with_params", "METHODS", "MIN_SPLIT", "COUPLING", "COUPLING_RANGE"]
