"""Selective reconstruction: accept the images whose reliability score is high, flag the rest
for review, and judge a score by its risk–coverage curve (as selective classification does:
Geifman & El-Yaniv 2017; the area under the curve, AURC, lower = better).  The score never
reads the ground truth; the curves need it and are drawn only where it exists."""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from .notices import shown

# the per-image reliability score's terms (ipsolve.solvers.sampling), each a badness
RELIABILITY_TERMS = ("feasibility", "disagreement", "prior_consistency")


def review_decisions(scores: Sequence[float], threshold: float | None = None,
                     coverage: float | None = None) -> list[str]:
    """``"accept"`` / ``"review"`` per image: review below ``threshold``, or keep the most
    reliable ``coverage`` fraction; both None: accept all.  Images whose score ties with the
    first one left out are reviewed with it (the score cannot tell them apart, and accepting
    by their listing order would be arbitrary), so the accepted fraction can fall below
    ``coverage`` (:func:`tied_at_cut` counts them)."""
    if threshold is not None and coverage is not None:
        raise ValueError("give review_below (a reliability threshold) or review_coverage (a fraction), not both")
    n = len(scores)
    if coverage is not None:
        if not 0 < coverage <= 1:
            raise ValueError(f"review_coverage must be a fraction in (0, 1], got {shown(coverage)}")
        keep = coverage_count(n, coverage)
        order = sorted(range(n), key=lambda i: -scores[i])
        cut = scores[order[keep]] if keep < n else -math.inf
        accepted = {i for i in order[:keep] if keep == n or scores[i] > cut}
        return ["accept" if i in accepted else "review" for i in range(n)]
    if threshold is not None:
        return ["accept" if s >= threshold else "review" for s in scores]
    return ["accept"] * n


def coverage_count(n: int, coverage: float) -> int:
    """How many of ``n`` images ``review_coverage=coverage`` asks to accept: never more than that
    fraction (rounded down: 0.6 of 4 accepts 2; it rounded up, accepting 75 %), at least one."""
    return max(1, math.floor(coverage * n + 1e-9)) if n else 0


def tied_at_cut(scores: Sequence[float], coverage: float | None) -> int:
    """How many images within the requested ``coverage`` were reviewed because their score
    ties with the first image left out (see :func:`review_decisions`)."""
    if coverage is None:
        return 0
    return coverage_count(len(scores), coverage) - review_decisions(scores, coverage=coverage).count("accept")


def risk_coverage(scores: Sequence[float], risks: Sequence[float]) -> tuple[list[float], list[float], float]:
    """``(coverage, mean risk of the accepted, AURC)``: accept images from the most reliable
    (highest score) down; at coverage c = k/n the risk is the mean of the k accepted risks;
    AURC is the mean over k = 1..n (the discrete area).  Images with equal scores are accepted
    in no particular order: within such a tie the curve is its expectation (the tie's mean risk
    for each image taken from it), so a term that cannot tell images apart (all 0) gives the
    flat curve of accepting at random, not one that follows the images' order."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    coverage, risk, total, k = [], [], 0.0, 0
    for _, group in itertools.groupby(order, key=lambda i: scores[i]):
        tie = list(group)
        mean = sum(risks[i] for i in tie) / len(tie)
        for _ in tie:
            k += 1
            total += mean
            coverage.append(k / len(order))
            risk.append(total / k)
    return coverage, risk, (sum(risk) / len(risk) if risk else float("nan"))


def risk_coverage_table(records: list[dict]) -> tuple[str, dict]:
    """CSV text of the risk–coverage curves of every reliability term and of the combined
    score, for two risks — the error (MSE on the [-1, 1] scale) and −PSNR — and their AURCs:
    ``{score: {"mse": AURC, "neg_psnr": AURC, "psnr_accept_half": mean PSNR of the better half}}``.
    Records need ``metrics.psnr`` and ``info.reliability``."""
    rows = [r for r in records if r.get("metrics", {}).get("psnr") is not None and "reliability" in r["info"]]
    if not rows:
        return "", {}
    psnr = [float(r["metrics"]["psnr"]) for r in rows]
    mse = [4 * 10 ** (-p / 10) for p in psnr]  # PSNR on [0, 1] → MSE on the [-1, 1] scale
    scores = {"reliability": [float(r["info"]["reliability"]) for r in rows]}
    for term in RELIABILITY_TERMS:
        vals = [r["info"].get("reliability_terms", {}).get(term) for r in rows]
        if all(v is not None for v in vals):
            scores[term] = [-float(v) for v in vals]  # a term is a badness: its score is −term
    lines, aurc = ["score,coverage,mean_mse,mean_psnr"], {}
    for name, s in scores.items():
        cov, risk_mse, a_mse = risk_coverage(s, mse)
        _, risk_psnr, a_psnr = risk_coverage(s, [-p for p in psnr])
        half = max(1, len(rows) // 2)
        aurc[name] = {"aurc_mse": a_mse, "aurc_neg_psnr": a_psnr, "psnr_accept_half": -risk_psnr[half - 1],
                      "psnr_accept_all": -risk_psnr[-1]}
        lines += [f"{name},{c:.4f},{m:.6g},{-p:.4f}" for c, m, p in zip(cov, risk_mse, risk_psnr)]
    return "\n".join(lines) + "\n", aurc


def plot_risk_coverage(csv_text: str, path) -> None:
    """``risk_coverage.png``: mean PSNR of the accepted images against coverage, one line per score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[str, tuple[list, list]] = {}
    for line in csv_text.strip().splitlines()[1:]:
        name, cov, _, ps = line.split(",")
        curves.setdefault(name, ([], []))
        curves[name][0].append(float(cov))
        curves[name][1].append(float(ps))
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for name, (cov, ps) in curves.items():
        ax.plot(cov, ps, marker=".", label=name, linewidth=2 if name == "reliability" else 1)
    ax.set_xlabel("coverage (fraction of images accepted, most reliable first)")
    ax.set_ylabel("mean PSNR of the accepted (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
