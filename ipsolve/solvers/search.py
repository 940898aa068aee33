"""The calibration's search algorithms on a log scale: golden-section search of a score to
minimise (measurement-splitting validation) and the discrepancy principle's bisection towards the
weakest guidance that fits (:mod:`.calibration` runs them over a solver's ``search_space``)."""
from __future__ import annotations

import math

GOLDEN = (math.sqrt(5) - 1) / 2
# a golden-section search stops once its two inner points differ by less than 2 %: a budget of 25 placed 15 of its
# candidates within ζ 0.1548–0.1562, values the score cannot tell apart (an audit, 2026-12-07)
RESOLUTION = math.log(1.02)


def default_budget(n_params: int) -> int:
    """Candidates when none is given: the solver as given + 4 per parameter (5 for one, 9 for two).
    A golden-section search needs more than its first two points to narrow its bracket at all; with
    two parameters sharing 5 candidates (2 each) RED-diff's λ on CT 16 views ended 7.7 dB below the
    oracle's, with 4 each 2.0 dB (docs/calibration.md, "Measured")."""
    return 1 + 4 * n_params


def golden_section(evaluate, lo: float, hi: float, evaluations: int, extend: bool = True):
    """Minimise ``evaluate(value)`` over ``[lo, hi]`` on a log scale with ``evaluations`` calls
    (golden-section search: after the first two interior points each call shrinks the bracket by
    0.618).  Golden-section points never reach the range's ends (4 points on [10⁻³, 10⁻¹] end at
    0.051), so with ``extend`` one call more evaluates the end when the best point is the outermost
    one on that side — the bracket then still reaches the end and the minimum may lie there.  Stops
    early once the two inner points are within 2 % (:data:`RESOLUTION`).  Returns the best value evaluated."""
    a, b = math.log(lo), math.log(hi)
    if evaluations < 2:
        raise ValueError(f"a search needs at least two candidates per parameter, got {evaluations}")
    c, d = b - GOLDEN * (b - a), a + GOLDEN * (b - a)
    fc, fd = evaluate(math.exp(c)), evaluate(math.exp(d))
    tried = [(fc, c), (fd, d)]
    for _ in range(evaluations - 2):
        if d - c < RESOLUTION:  # (the candidates left would repeat values to within 2 %)
            break
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - GOLDEN * (b - a)
            fc = evaluate(math.exp(c))
            tried.append((fc, c))
        else:
            a, c, fc = c, d, fd
            d = a + GOLDEN * (b - a)
            fd = evaluate(math.exp(d))
            tried.append((fd, d))
    best = min(tried)
    points = [t for _, t in tried]
    if extend and math.isfinite(best[0]):
        end = math.log(lo) if best[1] == min(points) else math.log(hi) if best[1] == max(points) else None
        if end is not None:
            best = min(best, (evaluate(math.exp(end)), end))
    return math.exp(best[1])


def discrepancy_search(evaluate, lo: float, hi: float, evaluations: int, direction: int):
    """The weakest guidance whose discrepancy ratio is ≤ 1: bisection on a log scale between ``lo``
    and ``hi`` (``direction`` +1: a larger value guides more strongly).  ``evaluate(value)`` returns
    the median ratio, ``inf`` for a value that made the solver diverge (too strong: the search
    moves towards weaker guidance).  A value that fits worse than a weaker one already tried overshoots
    (DPS's residual rises again past some ζ): the search moves weaker, as after a fit — it went on
    stronger, and returned the bracket's weak end (an audit, 2026-12-07).  If no candidate fits, the
    best-fitting one."""
    a, b = math.log(lo), math.log(hi)
    tried = []
    for _ in range(evaluations):
        mid = (a + b) / 2
        ratio = evaluate(math.exp(mid))
        overshoot = any(r < ratio for m, r in tried if (m < mid if direction > 0 else m > mid))
        tried.append((mid, ratio))
        fits = ratio <= 1.0 or not math.isfinite(ratio) or overshoot  # (diverged: weaker, as after a fit)
        if (direction > 0) == fits:  # fits: move towards weaker guidance
            b = mid
        else:
            a = mid
    fitting = [m for m, r in tried if r <= 1.0]  # (inf never fits)
    if fitting:
        return math.exp(min(fitting) if direction > 0 else max(fitting))
    return math.exp(min(tried, key=lambda t: t[1])[0])


def split_budget(budget: int, n: int) -> list[int]:
    """``budget`` candidates shared by ``n`` parameters, the first ones getting the remainder."""
    base, extra = divmod(budget, n)
    return [base + (1 if i < extra else 0) for i in range(n)]
