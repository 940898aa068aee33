"""Tuning without the ground truth, measured: for each solver × operator × noise level, the PSNR of
(a) the CPU preset's fixed values, (b) the values :func:`ipsolve.calibrate` chooses from the
measurement alone, and (c) an ORACLE — the best value on the same search space chosen with the
ground truth (only this study computes it; no solver, stopping rule or score ever does).

    python scripts/calibration_study.py run --out outputs/calibration/rows.jsonl [--solvers dps ...] [--shard 0/2]
    python scripts/calibration_study.py run --redo old_rows*.jsonl --out new_rows.jsonl   # the same rows, today's code
    python scripts/calibration_study.py report outputs/calibration/rows*.jsonl --out docs   # the table + figures/calibration_rows.json
    python scripts/calibration_study.py curves --out docs      # score vs PSNR curves for a few rows
    python scripts/calibration_study.py best-of-k --out docs   # phase retrieval: best of 4 runs by residual
    python scripts/calibration_study.py second-family --out outputs/calibration/second_family.jsonl [--shard 0/2]
    python scripts/calibration_study.py second-family --compare weakest --out outputs/calibration/second_family_dps.jsonl
    python scripts/calibration_study.py transfer --out outputs/calibration/transfer.jsonl [--shard 0/2] [--report]
    python scripts/calibration_study.py iteration-rules --out outputs/calibration/iteration_rules.jsonl [--shard 0/2]
    python scripts/calibration_study.py guess-loss --operators mri phase_retrieval ct [--reps 2]   # "A handicapped initial guess"
    python scripts/benchmark.py --calibration                                             # both

Images: 3 held-out ``blobs`` phantoms + Shepp–Logan (32 px; the family the priors never saw),
σ = 0.01 and 0.05.  Oracle: 6 log-spaced values of each calibrated parameter over its declared
range (coordinate-wise for two parameters: the first at the preset's second, then the second),
and for the plug-in solvers (DMPlug, FMPlug) each candidate's best iterate in hindsight over the
preset's budget.  Rows are appended to a JSON-lines file as they finish (a rerun skips them).
The other studies' JSON files in docs/figures/ (``calibration_second_family.json``,
``calibration_iteration_rules.json``; ``calibration_fresh_splits.json`` adds ``command``, ``date``
and ``machine`` around its ``rows``) are their ``.jsonl`` rows collected into one list, by hand:
``python -c "import json, sys; print(json.dumps([json.loads(l) for l in open(sys.argv[1])], indent=1))" ROWS.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import torch

from ipsolve import datasets, load_prior, make_operator, make_solver, solve
from ipsolve.metrics import psnr
from ipsolve.operators.base import NonFiniteError
from ipsolve.runner import load_preset
from ipsolve.solvers.calibration import calibrate, with_params
from ipsolve.solvers.plug import PlugSolver

OPERATORS = {
    "SR ×4": ("super_resolution", dict(scale=4)),
    "inpainting 70 %": ("inpainting", dict(mask="random")),
    "Gaussian blur 9 px": ("gaussian_blur", dict(size=9, std=1.0)),
    "CT 16 views": ("ct", dict(views=16)),
    "MRI 4×": ("mri", dict(acceleration=4, center_fraction=0.08)),
}
# solver (as in the table) -> (prior, preset, overrides): the CPU presets, and presets used where they
# were not tuned — DAPS's paper values (σ = 0.05, 256 px) at σ = 0.01 / 32 px, DPS's ζ at 50 and 1000 steps
SOLVERS = {"dps": ("bundled:phantom-ddpm", "dps_cpu", {}), "daps": ("bundled:phantom-ddpm", "daps_cpu", {}),
           "dmplug": ("bundled:phantom-ddpm", "dmplug_cpu", {}), "fmplug": ("bundled:phantom-flow", "fmplug_cpu", {}),
           "resample": ("bundled:phantom-latent", "resample_cpu", {}),
           "dps@50": ("bundled:phantom-ddpm", "dps_cpu", {"steps": 50}),
           "dps@1000": ("bundled:phantom-ddpm", "dps_cpu", {"steps": 1000}),
           "daps (paper)": ("bundled:phantom-ddpm", "daps", {})}
MAIN = ("dps", "daps", "dmplug", "fmplug", "resample")
# the standard baselines (README, Solvers) where their CPU presets were not tuned: the science operators
# (the presets were chosen on SR, inpainting and blur; on CT three of them lose 6–7 dB to FBP)
BASELINES = ("reddiff", "pnp_flow", "flowdps", "dflow", "pigdm", "diffpir")
SOLVERS.update({name: ("bundled:phantom-flow" if name in ("pnp_flow", "flowdps", "dflow") else "bundled:phantom-ddpm",
                       f"{name}_cpu", {}) for name in BASELINES})
BASELINE_ROWS = [(s, o, 0.01) for o in ("CT 16 views", "MRI 4×") for s in BASELINES]
SIGMAS = (0.01, 0.05)
PRIORITY = ("SR ×4", "inpainting 70 %", "CT 16 views", "Gaussian blur 9 px", "MRI 4×")
# the transfer rows: (solver, operator, σ)
TRANSFER = [("dps@50", "SR ×4", 0.01), ("dps@1000", "SR ×4", 0.01), ("dps@50", "inpainting 70 %", 0.01),
            ("daps (paper)", "SR ×4", 0.01), ("daps (paper)", "inpainting 70 %", 0.01)]
GRID = 6
_PRIORS: dict = {}


def prior_of(source):
    if source not in _PRIORS:
        _PRIORS[source] = load_prior(source)
    return _PRIORS[source]


def images() -> torch.Tensor:
    return torch.cat([datasets.heldout_phantoms(3, 32), datasets.shepp_logan(32)])


def gens(n):
    return [torch.Generator().manual_seed(100 + i) for i in range(n)]


def preset_solver(name: str):
    _, preset, overrides = SOLVERS[name]
    params = {**dict(load_preset("solver", preset)), **overrides}
    return make_solver(params.pop("name"), progress=False, **params)


def mean_psnr(x, truth) -> float:
    return float(psnr(x.clamp(-1, 1), truth).mean())


def oracle(y, op, prior, solver, truth, sigma):
    """The best values on the solver's search space by ground-truth PSNR (see the module docstring)."""
    space = type(solver).search_space
    chosen = {}
    best = (-math.inf, None)
    for name, (lo, hi) in space.items():
        results = []
        for v in torch.logspace(math.log10(lo), math.log10(hi), GRID).tolist():
            values = {**chosen, name: v}
            if isinstance(solver, PlugSolver):
                curve = []
                cand = with_params(solver, **values, stop=())
                solve(y, op, prior, cand, sigma=sigma, generator=gens(len(y)),
                      callback=lambda it, s: curve.append(float(psnr(s["x"].clamp(-1, 1), truth).mean())))
                it = max(range(len(curve)), key=curve.__getitem__)
                results.append((curve[it], {**values, "iterations": it + 1}))
            else:
                try:
                    res = solve(y, op, prior, with_params(solver, **values), sigma=sigma, generator=gens(len(y)))
                    results.append((mean_psnr(res.x, truth), values))
                except NonFiniteError:  # this value diverges: the worst
                    results.append((-math.inf, values))
        top = max(results, key=lambda r: r[0])
        chosen[name] = top[1][name]
        best = max(best, top, key=lambda r: r[0])
    return best


def problem(solver_name: str, op_label: str, sigma: float):
    """A row's data: ``(truth, operator, y, prior, preset solver)`` — the same measurement (noise seed
    1234) for every row of an operator and σ."""
    truth = images()
    registry, params = OPERATORS[op_label]
    op = make_operator(registry, **params)
    y = op.measure(truth, sigma, generator=torch.Generator().manual_seed(1234))
    return truth, op, y, prior_of(SOLVERS[solver_name][0]), preset_solver(solver_name)


def run_row(solver_name: str, op_label: str, sigma: float, earlier: dict | None = None) -> dict:
    """One row. ``earlier``: a row of a previous run on the same data; its oracle is reused when the
    preset's PSNR reproduces to 0.01 dB (the oracle is the costliest part and does not depend on
    calibration's code)."""
    truth, op, y, prior, solver = problem(solver_name, op_label, sigma)
    row = {"solver": solver_name, "operator": op_label, "sigma": sigma,
           "initial": mean_psnr(op.initial_guess(y), truth)}
    t0 = time.perf_counter()
    preset = solve(y, op, prior, solver, sigma=sigma, generator=gens(len(y)))
    row.update(preset=mean_psnr(preset.x, truth), preset_nfe=sum(i["nfe"] for i in preset.info) / len(y),
               preset_seconds=time.perf_counter() - t0)
    t0 = time.perf_counter()
    cal = calibrate(y, op, prior, solver, sigma=sigma, generator=gens(len(y)))
    calibrated = solve(y, op, prior, cal.solver, sigma=sigma, generator=gens(len(y)))
    row.update(calibrated=mean_psnr(calibrated.x, truth), chosen=cal.params, method=cal.method,
               calibration_nfe=cal.nfe, calibration_seconds=cal.seconds, solve_seconds=time.perf_counter() - t0 - cal.seconds,
               scores=cal.table)
    # the same search without the one-standard-error rule: the best-scored candidate other than the
    # solver as given (to show what the rule costs or saves; one more solve)
    tried = [c for c in cal.table if not c.get("preset")]
    if cal.method == "holdout" and tried:
        best = min(tried, key=lambda c: c["score"])
        values = {k: best[k] for k in type(solver).search_space}
        extra = {"iterations": best["iterations"]} if "iterations" in best else {}  # (as calibrate: own rule kept)
        if values == cal.params and not extra:
            row.update(best_scored=row["calibrated"], best_scored_values=values)
        else:
            res = solve(y, op, prior, with_params(solver, **values, **extra), sigma=sigma, generator=gens(len(y)))
            row.update(best_scored=mean_psnr(res.x, truth), best_scored_values={**values, **extra})
    if earlier is not None and abs(earlier["preset"] - row["preset"]) < 0.01:
        row.update(oracle=earlier["oracle"], oracle_values=earlier["oracle_values"],
                   oracle_seconds=earlier["oracle_seconds"], oracle_reused=True)
        return row
    t0 = time.perf_counter()
    best, values = oracle(y, op, prior, solver, truth, sigma)
    row.update(oracle=best, oracle_values=values, oracle_seconds=time.perf_counter() - t0)
    return row


def run(args):
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.is_file():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["solver"], r["operator"], r["sigma"]))
    # most informative first: the transfer rows, then σ = 0.01 operator by operator, then σ = 0.05
    todo = [t for t in TRANSFER if t[0] in args.solvers and t[1] in args.operators and t[2] in args.sigmas]
    todo += [(s, o, sig) for sig in args.sigmas for o in PRIORITY if o in args.operators
             for s in args.solvers if s in MAIN]
    todo += [t for t in BASELINE_ROWS if t[0] in args.solvers and t[1] in args.operators and t[2] in args.sigmas]
    if args.redo:  # exactly the rows of earlier files (their oracles reused where the preset reproduces)
        keys = [(r["solver"], r["operator"], r["sigma"]) for path in args.redo
                for r in map(json.loads, Path(path).read_text().splitlines())]
        todo = [t for t in keys if t[0] in args.solvers]
        args.reuse_oracle = [*args.reuse_oracle, *args.redo]
    k, n = (int(v) for v in args.shard.split("/"))
    todo = [t for i, t in enumerate(todo) if i % n == k and t not in done]
    earlier = {}
    for path in args.reuse_oracle:
        for line in Path(path).read_text().splitlines():
            r = json.loads(line)
            earlier[(r["solver"], r["operator"], r["sigma"])] = r
    for solver_name, op_label, sigma in todo:
        t0 = time.perf_counter()
        row = run_row(solver_name, op_label, sigma, earlier.get((solver_name, op_label, sigma)))
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{solver_name} | {op_label} | σ {sigma}: initial {row['initial']:.2f}, preset {row['preset']:.2f}, "
              f"calibrated {row['calibrated']:.2f} ({row['chosen']}), oracle {row['oracle']:.2f} "
              f"({row['oracle_values']}) — {time.perf_counter() - t0:.0f} s", flush=True)


CURVE_ROWS = [("dps", "SR ×4", 0.01), ("dps", "inpainting 70 %", 0.05), ("dps", "MRI 4×", 0.01)]


def curves(args):
    """Score curve vs PSNR curve: for a few rows, the held-out score (ground-truth free, on the
    calibration split) and the PSNR (ground truth, this study only) of the same values, 7 per
    decade-spanning range — ``calibration_curves.csv`` / ``.png``."""
    import csv as csvlib

    from ipsolve.operators.restrict import gather, restrict, split_entries
    from ipsolve.solvers.calibration import fresh_generators, holdout_error

    out = Path(args.out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    rows = []
    for solver_name, op_label, sigma in CURVE_ROWS:
        truth, op, y, prior, solver = problem(solver_name, op_label, sigma)
        (name, (lo, hi)), = list(type(solver).search_space.items())[:1]
        kept, held = split_entries(y[0].numel(), 0.2, torch.Generator().manual_seed(0), op.observed_entries(y.shape))
        op_kept = restrict(op, kept, tuple(y.shape[1:]))
        for v in torch.logspace(math.log10(lo), math.log10(hi), 7).tolist():
            cand = with_params(solver, **{name: v})
            part = cand.run(gather(y, kept), op_kept, prior, fresh_generators(gens(len(y))), sigma)
            score = float(holdout_error(gather(y, held), gather(op(part.x), held), sigma).mean())
            full = solve(y, op, prior, cand, sigma=sigma, generator=gens(len(y)))
            rows.append({"solver": solver_name, "operator": op_label, "sigma": sigma, "parameter": name, "value": v,
                         "holdout_score": score, "psnr": mean_psnr(full.x, truth)})
            print(rows[-1], flush=True)
    with open(out / "figures" / "calibration_curves.csv", "w", newline="") as f:
        w = csvlib.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVE_ROWS), figsize=(4.2 * len(CURVE_ROWS), 3.2))
    for ax, (solver_name, op_label, sigma) in zip(axes, CURVE_ROWS):
        pts = [r for r in rows if (r["solver"], r["operator"], r["sigma"]) == (solver_name, op_label, sigma)]
        xs = [r["value"] for r in pts]
        ax.plot(xs, [r["holdout_score"] for r in pts], "o-", color="tab:blue", label="held-out score (no truth)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(pts[0]["parameter"])
        ax.set_ylabel("held-out error / noise level", color="tab:blue")
        twin = ax.twinx()
        twin.plot(xs, [r["psnr"] for r in pts], "s--", color="tab:red", label="PSNR (ground truth)")
        twin.set_ylabel("PSNR dB", color="tab:red")
        ax.set_title(f"{solver_name}, {op_label}, σ {sigma}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "figures" / "calibration_curves.png", dpi=110)
    plt.close(fig)


def best_of_k(args):
    """Best-of-k on phase retrieval without the ground truth: DPS (``dps_cpu``) on DPS's operator,
    k = 4 runs per image; PSNR (modulo translation, twin image and sign) of the first run, the mean
    of the runs, the run ``select="residual"`` picks (smallest ‖y − A(x)‖: measurable) and the run
    the papers pick (best ground-truth PSNR: an oracle, this study only) — ``calibration_best_of_k.json``."""
    truth = images()
    op = make_operator("phase_retrieval", **{k: v for k, v in dict(load_preset("operator", "phase_retrieval_dps")).items()
                                             if k != "name"})
    y = op.measure(truth, args.sigma, generator=torch.Generator().manual_seed(1234))
    prior = prior_of("bundled:phantom-ddpm")
    res = solve(y, op, prior, preset_solver("dps"), sigma=args.sigma, generator=gens(len(y)),
                samples=args.k, select="residual")
    per_run = torch.stack([psnr(op.align(res.samples[:, j], truth).clamp(-1, 1), truth) for j in range(args.k)], 1)
    picked = torch.tensor([i["selected_sample"] for i in res.info])
    mean = psnr(op.align(res.samples.mean(1), truth).clamp(-1, 1), truth)
    row = {"operator": "phase retrieval (DPS's, oversample 2.0)", "sigma": args.sigma, "k": args.k,
           "initial": mean_psnr(op.align(op.initial_guess(y), truth), truth),
           "first_run": float(per_run[:, 0].mean()), "mean_of_runs": float(mean.mean()),
           "residual_pick": float(per_run[torch.arange(len(y)), picked].mean()),
           "oracle_pick": float(per_run.max(1).values.mean()),
           "per_image_runs": per_run.tolist(), "picked": picked.tolist(), "nfe_per_image": res.info[0]["nfe"]}
    out = Path(args.out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "figures" / "calibration_best_of_k.json").write_text(json.dumps(row, indent=1))
    print({k: v for k, v in row.items() if k not in ("per_image_runs",)})


# rows where trying the range's end changed the study's result, checked on a family the change was not
# designed on (second-family): the largest gains, the largest loss, a baseline
SECOND_FAMILY_ROWS = [("fmplug", "MRI 4×", 0.01), ("fmplug", "Gaussian blur 9 px", 0.01),
                      ("dmplug", "Gaussian blur 9 px", 0.01), ("fmplug", "CT 16 views", 0.05),
                      ("fmplug", "inpainting 70 %", 0.05), ("reddiff", "CT 16 views", 0.01)]
# DPS's weakest guidance within one standard error (--compare weakest): every operator at σ 0.05, SR at 0.01
WEAKEST_ROWS = [("dps", o, 0.05) for o in PRIORITY] + [("dps", "SR ×4", 0.01), ("dps@1000", "SR ×4", 0.01)]


def second_family(args):
    """A calibration change against calibration without it, on ``datasets.unseen_structures(4)``
    (checkerboards and stripes over held-out phantoms; noise seed 77): PSNR of the preset, of
    calibration without the change, and with it.  ``--compare end``: the range's end
    (``calibrate(..., extend=True)``, the default); without it is solved only where the end was among
    the candidates that decided (chosen or rejected by the check), elsewhere both searches return the
    same solve.  ``--compare weakest``: DPS's weakest guidance within one standard error
    (``weakest_within_one_se``), against the best-scored candidate.  One JSON line per row."""
    from ipsolve.solvers.dps import DPS

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["solver"], r["operator"], r["sigma"]) for r in map(json.loads, out.read_text().splitlines())} \
        if out.is_file() else set()
    k, n = (int(v) for v in args.shard.split("/"))
    truth = datasets.unseen_structures(4)
    rows = SECOND_FAMILY_ROWS if args.compare == "end" else WEAKEST_ROWS
    with_label, without_label = ("with_end", "without_end") if args.compare == "end" else ("with_rule", "without_rule")
    for i, (solver_name, op_label, sigma) in enumerate(rows):
        if i % n != k or (solver_name, op_label, sigma) in done:
            continue
        t0 = time.perf_counter()
        registry, params = OPERATORS[op_label]
        op = make_operator(registry, **params)
        y = op.measure(truth, sigma, generator=torch.Generator().manual_seed(77))
        prior, solver = prior_of(SOLVERS[solver_name][0]), preset_solver(solver_name)
        row = {"solver": solver_name, "operator": op_label, "sigma": sigma, "family": "unseen_structures(4)",
               "initial": mean_psnr(op.initial_guess(y), truth),
               "preset": mean_psnr(solve(y, op, prior, solver, sigma=sigma, generator=gens(len(y))).x, truth)}

        def calibrated(**kw):
            """PSNR of calibration's result (the check's solve) and the values it chose."""
            cal = calibrate(y, op, prior, solver, sigma=sigma, generator=gens(len(y)), **kw)
            x = cal.result.x if cal.result is not None else \
                solve(y, op, prior, cal.solver, sigma=sigma, generator=gens(len(y))).x
            return mean_psnr(x, truth), cal

        if args.compare == "end":
            row["with_end"], cal = calibrated()
            row.update(with_end_chosen=cal.params, candidates=len(cal.table))
            space = type(solver).search_space
            ends = [r for r in cal.table if not r.get("preset")
                    and any(math.isclose(r[p], v, rel_tol=1e-9) for p, rng in space.items() for v in rng
                            if isinstance(r.get(p), float))]
            if any(r.get("rejected") or all(r.get(p) == cal.params.get(p) for p in space) for r in ends):
                row["without_end"], without = calibrated(extend=False)
                row["without_end_chosen"] = without.params
            else:
                row.update(without_end=row["with_end"], without_end_chosen=cal.params)
        else:
            rule = DPS.weakest_within_one_se
            row["with_rule"], cal = calibrated()
            DPS.weakest_within_one_se = ()
            try:
                row["without_rule"], without = calibrated()
            finally:
                DPS.weakest_within_one_se = rule
            row.update(with_rule_chosen=cal.params, without_rule_chosen=without.params)
        row["seconds"] = time.perf_counter() - t0
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{solver_name} | {op_label} | σ {sigma}: initial {row['initial']:.2f}, preset {row['preset']:.2f}, "
              f"without {row[without_label]:.2f} ({row[without_label + '_chosen']}), with {row[with_label]:.2f} "
              f"({row[with_label + '_chosen']}) — {row['seconds']:.0f} s", flush=True)


# the plug-in solvers' iteration count from the held-out curve: the rule calibration uses (trailing 5-iterate
# mean, its first minimum) and the variants tried against it (iteration-rules)
def _trailing(m, w):
    return torch.stack([m[max(0, t - w + 1):t + 1].mean() for t in range(len(m))])


def _centred(m, w):
    return torch.stack([m[max(0, t - w // 2):t + w // 2 + 1].mean() for t in range(len(m))])


def _first_min(s) -> int:
    return int(torch.nonzero(s == s.min())[0])


ITERATION_RULES = {
    "trailing 5 (used)": lambda E: _first_min(_trailing(E.mean((1, 2)), 5)),
    "trailing 11": lambda E: _first_min(_trailing(E.mean((1, 2)), 11)),
    "trailing 21": lambda E: _first_min(_trailing(E.mean((1, 2)), 21)),
    "centred 5": lambda E: _first_min(_centred(E.mean((1, 2)), 5)),
    "centred 11": lambda E: _first_min(_centred(E.mean((1, 2)), 11)),
    "centred 21": lambda E: _first_min(_centred(E.mean((1, 2)), 21)),
    "no average": lambda E: _first_min(E.mean((1, 2))),
    "median of per-image minima": lambda E: int(torch.tensor(
        [_first_min(_trailing(E[:, b].mean(1), 5)) for b in range(E.shape[1])]).float().median()),
}


# the initial-guess warning where the prior does not fit (README, Tuning without the ground truth): (family, solver, operator) at σ = 0.01
TRANSFER_FAMILIES = {"photos": "heldout_grey_crops(names=brick, coins, grass, moon)",
                     "textures": "unseen_structures(4)", "blobs": "the study's images"}
TRANSFER_AUDIT_ROWS = ([(f, s, o) for f in ("photos", "textures") for o in ("SR ×4", "inpainting 70 %") for s in MAIN]
                       + [("photos", s, o) for o in ("CT 16 views", "MRI 4×") for s in ("dps", "daps", "dmplug")]
                       + [("blobs", s, o) for o in ("SR ×4", "inpainting 70 %") for s in ("dps", "daps", "dmplug")])


def family_images(family: str) -> torch.Tensor:
    if family == "photos":
        return datasets.heldout_grey_crops(32, names=("brick", "coins", "grass", "moon"))
    return datasets.unseen_structures(4) if family == "textures" else images()


def transfer(args):
    """Does calibration say when a solver will not beat the operator's initial guess?  On images the
    priors never saw (grey photo crops, textured phantoms; the study's ``blobs`` images as the case
    where the solvers gain), σ = 0.01, noise seed 1234: PSNR of the initial guess and of the calibrated
    solve, the chosen values' score, the initial guess's score and whether ``Calibration.warning``
    fired.  One JSON line per row; ``--report`` prints the table and writes
    ``figures/calibration_transfer.json`` under ``--docs``."""
    out = Path(args.out)
    if args.report:
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        return transfer_report(rows, Path(args.docs))
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["family"], r["solver"], r["operator"]) for r in map(json.loads, out.read_text().splitlines())} \
        if out.is_file() else set()
    k, n = (int(v) for v in args.shard.split("/"))
    for i, (family, solver_name, op_label) in enumerate(TRANSFER_AUDIT_ROWS):
        if i % n != k or (family, solver_name, op_label) in done:
            continue
        t0 = time.perf_counter()
        truth = family_images(family)
        registry, params = OPERATORS[op_label]
        op = make_operator(registry, **params)
        y = op.measure(truth, 0.01, generator=torch.Generator().manual_seed(1234))
        prior, solver = prior_of(SOLVERS[solver_name][0]), preset_solver(solver_name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cal = calibrate(y, op, prior, solver, sigma=0.01, generator=gens(len(y)))
            x = cal.result.x if cal.result is not None else solve(y, op, prior, cal.solver, sigma=0.01,
                                                                    generator=gens(len(y))).x
        row = {"family": family, "solver": solver_name, "operator": op_label, "sigma": 0.01,
               "initial": mean_psnr(op.initial_guess(y), truth), "calibrated": mean_psnr(x, truth),
               "chosen": cal.params, "chosen_score": cal.score,
               "initial_guess_score": cal.initial_guess_score, "warning": cal.warning,
               "against_initial_guess": cal.against_initial_guess, "initial_guess_difference": cal.initial_guess_difference,
               "initial_guess_se": cal.initial_guess_se, "comparison_splits": cal.comparison_splits,
               "seconds": time.perf_counter() - t0}
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{family} | {solver_name} | {op_label}: initial {row['initial']:.2f}, calibrated {row['calibrated']:.2f}, "
              f"score {row['chosen_score']:.4g} vs guess {row['initial_guess_score']:.4g}, "
              f"{'WARNED' if cal.warning else 'no warning'} — {row['seconds']:.0f} s", flush=True)


def transfer_report(rows: list[dict], docs: Path, margin: float = 0.3) -> None:
    """The table (markdown, printed) and ``figures/calibration_transfer.json``; a loss or gain is one of
    more than ``margin`` dB against the initial guess."""
    shown = {"better": "better", "indistinguishable": "within 1 SE", "worse": "**worse: warned**"}
    lines = ["| family | operator | solver | initial guess | calibrated (gain) | score: chosen / initial guess "
             "(calibration's split) | chosen − guess on 2 fresh splits (1 SE) | against the guess |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gain = r["calibrated"] - r["initial"]
        fresh = (f"{r['initial_guess_difference']:+,.4g} ({r['initial_guess_se']:,.3g})"
                 if r.get("initial_guess_difference") is not None else "")
        lines.append(f"| {r['family']} | {r['operator']} | {r['solver']} | {r['initial']:.2f} | "
                     f"{r['calibrated']:.2f} ({gain:+.2f}) | {r['chosen_score']:,.4g} / {r['initial_guess_score']:,.4g} | "
                     f"{fresh} | {shown.get(r.get('against_initial_guess'), '**warned**' if r['warning'] else 'no warning')} |")
    losses = [r for r in rows if r["calibrated"] - r["initial"] < -margin]
    gains = [r for r in rows if r["calibrated"] - r["initial"] > margin]
    ties = len(rows) - len(losses) - len(gains)
    # on the calibration's own split, without the one-SE margin
    above = [r for r in rows if r["chosen_score"] > r["initial_guess_score"]]
    level = [r for r in rows if r not in losses and r not in gains]
    summary = {"rows": len(rows), "margin_db": margin,
               "losses": len(losses), "losses_warned": sum(bool(r["warning"]) for r in losses),
               "gains": len(gains), "gains_warned": sum(bool(r["warning"]) for r in gains),
               "ties": ties, "ties_warned": sum(bool(r["warning"]) for r in rows) - sum(bool(r["warning"]) for r in losses + gains),
               "scored_above_guess": {"losses": sum(r in above for r in losses), "gains": sum(r in above for r in gains),
                                      "ties": len(above) - sum(r in above for r in losses + gains)},
               # Calibration.against_initial_guess per class (rows recorded before it existed: not counted)
               "against_initial_guess": {label: {v: sum(r.get("against_initial_guess") == v for r in group)
                                                 for v in ("better", "indistinguishable", "worse")}
                                         for label, group in (("losses", losses), ("gains", gains), ("ties", level))}}
    print("\n".join(lines))
    print(f"\nlosses > {margin} dB: {summary['losses']} ({summary['losses_warned']} warned); gains > {margin} dB: "
          f"{summary['gains']} ({summary['gains_warned']} warned); within ±{margin} dB: {ties} ({summary['ties_warned']} warned)")
    a = summary["scored_above_guess"]
    print(f"scored above the initial guess on the calibration's split (no margin): {a['losses']} of the losses, "
          f"{a['gains']} of the gains, {a['ties']} of the ties")
    for label, counts in summary["against_initial_guess"].items():
        print(f"{label}: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    (docs / "figures").mkdir(parents=True, exist_ok=True)
    (docs / "figures" / "calibration_transfer.json").write_text(
        json.dumps({"families": TRANSFER_FAMILIES, "summary": summary, "rows": rows}, indent=1) + "\n")


def fresh_folds(args):
    """Would fresh splits sharpen the comparison with the initial guess?  For each transfer row (its
    recorded chosen values, iteration count included), ``--folds`` more splits (seeds 1, 2, …;
    ``calibrate``'s own is 0: ``--first-seed 0`` reproduces its comparison): the chosen solver on each split's kept entries against that split's initial
    guess, scored as calibration scores (``HoldoutObjective``).  Fold 0 chose the values, so its score
    is biased their way; fresh folds are not (what ``calibrate`` does since: ``fresh_split_differences``).
    One JSON line per row: per fold the mean paired difference (chosen − guess) and its standard
    error, and the outcome from the folds' pooled per-entry differences."""
    from ipsolve.solvers.calibration import HoldoutObjective, compare_with_initial_guess, paired_standard_error

    rows = json.loads(Path(args.rows).read_text())["rows"]
    out = Path(args.out)
    done = {(r["family"], r["solver"], r["operator"]) for r in map(json.loads, out.read_text().splitlines())} \
        if out.is_file() else set()
    k, n = (int(v) for v in args.shard.split("/"))
    for i, r in enumerate(rows):
        key = (r["family"], r["solver"], r["operator"])
        if i % n != k or key in done:
            continue
        t0 = time.perf_counter()
        truth = family_images(r["family"])
        registry, params = OPERATORS[r["operator"]]
        op = make_operator(registry, **params)
        y = op.measure(truth, 0.01, generator=torch.Generator().manual_seed(1234))
        prior, solver = prior_of(SOLVERS[r["solver"]][0]), preset_solver(r["solver"])
        chosen = with_params(solver, **{name: v for name, v in r["chosen"].items() if v is not None})
        observed = op.observed_entries(y.shape)
        differences, folds = [], []
        for seed in range(args.first_seed, args.first_seed + args.folds):
            objective = HoldoutObjective(solver, op, prior, y, 0.01, gens(len(y)), {}, None, False,
                                         holdout=0.2, seed=seed, observed=observed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = objective.run(chosen, objective.y_kept, objective.op_kept)
            with torch.no_grad():
                errors, kept = objective.fit_errors(res.x, res.kernel)
            d = (objective.with_kept_misfit(errors, kept) - objective.baseline_errors).flatten()
            differences.append(d)
            folds.append({"seed": seed, "difference": float(d.mean()), "se": paired_standard_error(d)})
        pooled = torch.cat(differences)
        verdict, se = compare_with_initial_guess(pooled)
        row = {**dict(zip(("family", "solver", "operator"), key)), "gain": r["calibrated"] - r["initial"],
               "fold0_difference": r["chosen_score"] - r["initial_guess_score"],  # the calibration's own split
               "folds": folds, "fresh": verdict, "fresh_difference": float(pooled.mean()), "fresh_se": se,
               "seconds": time.perf_counter() - t0}
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{' | '.join(key)}: gain {row['gain']:+.2f}, own split {row['fold0_difference']:.1f}, fresh {verdict} "
              f"({row['fresh_difference']:.1f} ± {se:.1f}) — {row['seconds']:.0f} s", flush=True)


def iteration_rules(args):
    """How the plug-in solvers' iteration count is read off the held-out curve, measured: for each
    DMPlug/FMPlug row of the study (its calibrated lr, from ``--rows``) on the study's images and on
    ``datasets.unseen_structures(4)`` (noise seed 77), one run on the kept entries to the budget
    (every iterate's held-out errors, and — this study only — its PSNR) and one on all entries (every
    iterate's PSNR).  Each rule of ``ITERATION_RULES`` picks an iteration from the held-out errors;
    its PSNR is the full run's there.  One JSON line per row."""
    from ipsolve.operators.restrict import gather, restrict, split_entries
    from ipsolve.solvers.calibration import fresh_generators

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["family"], r["solver"], r["operator"], r["sigma"]) for r in map(json.loads, out.read_text().splitlines())} \
        if out.is_file() else set()
    study = [r for r in json.loads(Path(args.rows).read_text()) if r["solver"] in ("dmplug", "fmplug")]
    jobs = [(family, r) for family in ("study", "unseen_structures(4)") for r in study]
    k, n = (int(v) for v in args.shard.split("/"))
    for i, (family, r) in enumerate(jobs):
        key = (family, r["solver"], r["operator"], r["sigma"])
        if i % n != k or key in done:
            continue
        t0 = time.perf_counter()
        sigma = r["sigma"]
        if family == "study":
            truth, op, y, prior, solver = problem(r["solver"], r["operator"], sigma)
        else:
            truth = datasets.unseen_structures(4)
            registry, params = OPERATORS[r["operator"]]
            op = make_operator(registry, **params)
            y = op.measure(truth, sigma, generator=torch.Generator().manual_seed(77))
            prior, solver = prior_of(SOLVERS[r["solver"]][0]), preset_solver(r["solver"])
        lr = r["chosen"].get("lr") or solver.lr
        cand = with_params(solver, lr=lr, stop=())
        kept, held = split_entries(y[0].numel(), 0.2, torch.Generator().manual_seed(0), op.observed_entries(y.shape))
        y_held = gather(y, held)
        errors, kept_psnr, full_psnr = [], [], []

        def on_kept(it, state):
            with torch.no_grad():
                errors.append((y_held - gather(op(state["x"]), held)).flatten(1).pow(2) / sigma ** 2)
            kept_psnr.append(mean_psnr(state["x"], truth))

        cand.run(gather(y, kept), restrict(op, kept, tuple(y.shape[1:])), prior, fresh_generators(gens(len(y))), sigma,
                 on_kept)
        cand.run(y, op, prior, gens(len(y)), sigma, lambda it, state: full_psnr.append(mean_psnr(state["x"], truth)))
        E, full = torch.stack(errors), torch.tensor(full_psnr)
        row = {"family": family, "solver": r["solver"], "operator": r["operator"], "sigma": sigma, "lr": lr,
               "best_iterate": int(full.argmax()) + 1, "best_psnr": float(full.max()),
               "kept_run_best_iterate": int(torch.tensor(kept_psnr).argmax()) + 1,
               "rules": {name: {"iterations": rule(E) + 1, "psnr": float(full[rule(E)])}
                         for name, rule in ITERATION_RULES.items()},
               "seconds": time.perf_counter() - t0}
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        used = row["rules"]["trailing 5 (used)"]
        print(f"{family} | {r['solver']} | {r['operator']} | σ {sigma}: lr {lr:.3g}; best iterate {row['best_iterate']} "
              f"({row['best_psnr']:.2f} dB; on the kept entries {row['kept_run_best_iterate']}), held-out minimum "
              f"{used['iterations']} ({used['psnr']:.2f}) — {row['seconds']:.0f} s", flush=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]  # all shards' so far
    for family in ("study", "unseen_structures(4)"):
        sub = [r for r in rows if r["family"] == family]
        print(f"{family} ({len(sub)} rows), net dB against the rule used: " + ", ".join(
            f"{name} {sum(r['rules'][name]['psnr'] - r['rules']['trailing 5 (used)']['psnr'] for r in sub):+.2f}"
            for name in ITERATION_RULES))


def report(args):
    """The study's table (markdown) and its summary against the targets; ``figures/calibration_rows.json``."""
    rows = [json.loads(line) for path in args.rows for line in Path(path).read_text().splitlines()]
    out = Path(args.out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    lines = ["| solver | operator | σ | initial guess | (a) preset | (b) calibrated | (c) oracle | (b) − (a) | (c) − (b) | "
             "chosen | best-scored (no 1-SE rule, no check) | calibration NFE/image | s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (list(SOLVERS).index(r["solver"]), list(OPERATORS).index(r["operator"]), r["sigma"])):
        given = next((c for c in r["scores"] if c.get("preset")), None)
        values = {k: v for k, v in r["chosen"].items() if k != "iterations"}
        kept = given is not None and not any(  # no other candidate has the chosen values (a kept preset's None, its
            not c.get("preset") and all(c.get(k) == v for k, v in values.items())  # per-operator default, is reported
            for c in r["scores"])  # resolved: ζ 0.5 for inpainting)
        order = list(type(preset_solver(r["solver"])).search_space)  # the declared order
        chosen = ("as given" if kept else
                  ", ".join(f"{k} {r['chosen'][k]:.3g}" for k in order if r["chosen"].get(k) is not None))
        if "iterations" in r["chosen"]:
            chosen += f"; {r['chosen']['iterations']} iterations"
        free = f"{r['best_scored']:.2f}" if "best_scored" in r else "–"
        lines.append(f"| {r['solver']} | {r['operator']} | {r['sigma']} | {r['initial']:.2f} | {r['preset']:.2f} | "
                     f"{r['calibrated']:.2f} | {r['oracle']:.2f} | {r['calibrated'] - r['preset']:+.2f} | "
                     f"{r['oracle'] - r['calibrated']:.2f} | {chosen} | {free} | {r['calibration_nfe']:.0f} | "
                     f"{r['calibration_seconds']:.0f} |")

    def median(v):
        v = sorted(v)
        return (v[len(v) // 2] + v[(len(v) - 1) // 2]) / 2 if v else float("nan")

    main = [r for r in rows if r["solver"] in MAIN]
    baselines = [r for r in rows if r["solver"] in BASELINES]
    transfer = [r for r in rows if r["solver"] not in MAIN + BASELINES]
    losses = [r for r in rows if r["calibrated"] < r["preset"] - 0.5]
    with_free = [r for r in rows if "best_scored" in r]
    summary = (f"{len(rows)} rows ({len(main)} main, {len(transfer)} transfer, {len(baselines)} baseline); "
               f"median oracle gap (c) − (b) "
               f"{median([r['oracle'] - r['calibrated'] for r in rows]):.2f} dB (target ≤ 0.3; preset's (c) − (a) "
               f"{median([r['oracle'] - r['preset'] for r in rows]):.2f}); rows where calibration loses > 0.5 dB to the "
               f"preset: {len(losses)}"
               + "".join(f"; at σ {sig:g} ({len(part)} rows): median gap {median([r['oracle'] - r['calibrated'] for r in part]):.2f} "
                         f"(presets' {median([r['oracle'] - r['preset'] for r in part]):.2f}), median (b) − (a) "
                         f"{median([r['calibrated'] - r['preset'] for r in part]):+.2f}"
                         for sig in sorted({r['sigma'] for r in rows}) for part in [[r for r in rows if r['sigma'] == sig]])
               + (f" ({'; '.join(r['solver'] + ' ' + r['operator'] + ' σ ' + str(r['sigma']) for r in losses)})" if losses else "")
               + "; transfer rows (target (b) ≥ (a) + 0.5): "
               + ", ".join(f"{r['solver']} {r['operator']} {r['calibrated'] - r['preset']:+.2f}" for r in transfer)
               + (f"; baseline rows: median (b) − (a) {median([r['calibrated'] - r['preset'] for r in baselines]):+.2f} dB, "
                  f"median gap (c) − (b) {median([r['oracle'] - r['calibrated'] for r in baselines]):.2f}" if baselines else "")
               + (f"; for the best-scored candidate (no one-standard-error rule, no check) the median gap would be "
                  f"{median([r['oracle'] - r['best_scored'] for r in with_free]):.2f} over the {len(with_free)} rows "
                  f"that record it (with it: {median([r['oracle'] - r['calibrated'] for r in with_free]):.2f})"
                  if with_free else ""))
    table = "\n".join(lines)
    (out / "figures" / "calibration_rows.json").write_text(json.dumps(rows, indent=1))
    print(summary)
    print(table)
    return summary, table


def guess_loss(args):
    """How much the operator's initial guess from the kept entries (``restrict(...).initial_guess``:
    ``Operator.initial_guess_from_part``) loses against the guess from all of y, beside DPS-100's loss
    (the mean over ``--reps`` solver-seed sets), 20 % held out, split seeds 1 and 2: a yardstick that loses
    far more than a solve favours the solver in the held-out comparison (docs/calibration.md, "A
    handicapped initial guess").  One JSON line per (family, σ, operator, split), printed."""
    from ipsolve.operators.restrict import gather, restrict, split_entries

    families = {"blobs": images, "textures": lambda: datasets.unseen_structures(4)}
    prior, solver = prior_of("bundled:phantom-ddpm"), make_solver("dps_cpu", steps=100, progress=False)
    for family in args.families:
        truth = families[family]()
        for sigma in args.sigmas:
            for name in args.operators:
                op = make_operator(name, **({"views": 16} if name == "ct" else {}))
                y = op.measure(truth, sigma, generator=torch.Generator().manual_seed(1234))

                def score(x):
                    x = x.clamp(-1, 1)
                    return mean_psnr(op.align(x, truth) if hasattr(op, "align") else x, truth)

                def dps(meas, operator, rep):
                    gen = [torch.Generator().manual_seed(100 + i + 1000 * rep) for i in range(len(y))]
                    return score(solve(meas, operator, prior, solver, sigma=sigma, generator=gen).x)

                guess_all = score(op.initial_guess(y))
                dps_all = [dps(y, op, r) for r in range(args.reps)]
                for split in (1, 2):
                    kept, _ = split_entries(y[0].numel(), 0.2, torch.Generator().manual_seed(split),
                                            op.observed_entries(y.shape))
                    op_kept, y_kept = restrict(op, kept, tuple(y.shape[1:])), gather(y, kept)
                    t0 = time.perf_counter()
                    guess_kept = score(op_kept.initial_guess(y_kept))
                    seconds = time.perf_counter() - t0
                    losses = [dps(y_kept, op_kept, r) - dps_all[r] for r in range(args.reps)]
                    print(json.dumps({"family": family, "sigma": sigma, "operator": name, "split": split,
                                      "guess_all": guess_all, "guess_loss": guess_kept - guess_all,
                                      "dps_all": sum(dps_all) / len(dps_all), "dps_loss": sum(losses) / len(losses),
                                      "dps_losses": losses, "guess_seconds": seconds}), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="preset vs calibrated vs oracle PSNR per solver × operator × σ (rows appended to --out)")
    r.add_argument("--out", default="outputs/calibration/rows.jsonl", help="JSON-lines file the rows are appended to (finished rows are skipped)")
    r.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=list(SOLVERS),  # (quote "daps (paper)")
                   help="the study's solver rows to run (default: all)")
    r.add_argument("--operators", nargs="+", default=list(OPERATORS), choices=list(OPERATORS), help="operators (default: all)")
    r.add_argument("--sigmas", nargs="+", type=float, default=list(SIGMAS), help="noise levels on the [-1, 1] scale")
    r.add_argument("--shard", default="0/1", help="k/n: this process runs every n-th row from the k-th")
    r.add_argument("--reuse-oracle", nargs="*", default=[], metavar="ROWS.jsonl",
                   help="earlier rows whose oracle is reused where the preset reproduces")
    r.add_argument("--redo", nargs="*", default=[], metavar="ROWS.jsonl",
                   help="run exactly these files' rows again (of --solvers), reusing their oracles")
    p = sub.add_parser("report", help="the markdown table of rows files and figures/calibration_rows.json")
    p.add_argument("rows", nargs="+", help="JSON-lines files written by run")
    p.add_argument("--out", default="docs", help="folder whose figures/ receives the JSON")
    c = sub.add_parser("curves", help="held-out score vs PSNR curves for a few rows")
    c.add_argument("--out", default="docs", help="folder whose figures/ receives calibration_curves.csv/.png")
    b = sub.add_parser("best-of-k", help="phase retrieval: best of k runs by residual vs by the ground truth")
    b.add_argument("--k", type=int, default=4, help="runs per image")
    b.add_argument("--sigma", type=float, default=0.05, help="noise level on the [-1, 1] scale")
    b.add_argument("--out", default="docs", help="folder whose figures/ receives the result")
    s = sub.add_parser("second-family", help="a calibration change against calibration without it, on unseen structures")
    s.add_argument("--out", default="outputs/calibration/second_family.jsonl", help="JSON-lines file the rows are appended to")
    s.add_argument("--shard", default="0/1", help="k/n: this process runs every n-th row from the k-th")
    s.add_argument("--compare", choices=("end", "weakest"), default="end",
                   help="the change: extending the range at its end, or the weakest value within one SE")
    t = sub.add_parser("transfer", help="does calibration say when a solver will not beat the initial guess? (unseen images)")
    t.add_argument("--out", default="outputs/calibration/transfer.jsonl", help="JSON-lines file the rows are appended to")
    t.add_argument("--shard", default="0/1", help="k/n: this process runs every n-th row from the k-th")
    t.add_argument("--report", action="store_true", help="print the table of --out's rows, write its JSON under --docs")
    t.add_argument("--docs", default="docs", help="folder whose figures/ receives the --report JSON")
    ff = sub.add_parser("fresh-folds", help="the transfer rows' comparison with the initial guess on fresh splits")
    ff.add_argument("--rows", default="docs/figures/calibration_transfer.json", help="the transfer rows (their chosen values)")
    ff.add_argument("--out", default="outputs/calibration/fresh_folds.jsonl", help="JSON-lines file the rows are appended to")
    ff.add_argument("--folds", type=int, default=2, help="splits per row")
    ff.add_argument("--first-seed", type=int, default=1, help="0 repeats calibrate's own split (a check)")
    ff.add_argument("--shard", default="0/1", help="k/n: this process runs every n-th row from the k-th")
    it = sub.add_parser("iteration-rules", help="how DMPlug/FMPlug's iteration count is read off the held-out curve")
    it.add_argument("--rows", default="docs/figures/calibration_rows.json", help="the study's rows (their calibrated lr)")
    it.add_argument("--out", default="outputs/calibration/iteration_rules.jsonl", help="JSON-lines file the rows are appended to")
    it.add_argument("--shard", default="0/1", help="k/n: this process runs every n-th row from the k-th")
    g = sub.add_parser("guess-loss", help="what the initial guess from the kept entries loses, beside DPS-100's loss")
    g.add_argument("--operators", nargs="+", default=["mri", "phase_retrieval", "ct"], help="operators")
    g.add_argument("--families", nargs="+", default=["blobs", "textures"], choices=["blobs", "textures"], help="image families")
    g.add_argument("--sigmas", nargs="+", type=float, default=[0.01, 0.05], help="noise levels on the [-1, 1] scale")
    g.add_argument("--reps", type=int, default=2, help="DPS solver-seed sets averaged")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    {"run": run, "report": report, "curves": curves, "best-of-k": best_of_k,
     "second-family": second_family, "iteration-rules": iteration_rules, "transfer": transfer,
     "fresh-folds": fresh_folds, "guess-loss": guess_loss}[args.cmd](args)


if __name__ == "__main__":
    from ipsolve.runner.errors import script_main

    sys.exit(script_main(main))
