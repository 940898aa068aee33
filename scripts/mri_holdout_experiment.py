"""Can a different hold-out split see MRI's blind spot?  An experiment, not used by ipsolve.

On MRI the held-out entries come from the sampled k-space lines; the image's error comes from the lines
never sampled (Parseval), which no held-out entry sees (docs/calibration.md, transfer audit: DPS on grey
photo crops lost 1.32 dB to zero-filling and scored below it).  This script swaps
:func:`ipsolve.solvers.calibration.split_entries` for a split that holds out only the sampled lines
outside the fully sampled centre — whole lines (``line``) or k-space locations with all their channels
(``point``) — scores per held-out unit (the standard error over units, not entries), and runs
``calibrate`` with its defaults as the transfer audit does (4 images, σ = 0.01, noise seed 1234).
``entry`` is today's split.  ``--columns`` prints, with the ground truth, each k-space column's error of
the solve and of the zero-filled initial guess (the error a perfect split would have to see).

    python scripts/mri_holdout_experiment.py split line photos dps [--out rows.jsonl]
    python scripts/mri_holdout_experiment.py columns photos dps --zeta 0.6
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

import calibration_study as study
import ipsolve.solvers.calibration as C
from ipsolve import make_operator, solve
from ipsolve.operators.fourier import fft2c


def problem(family: str):
    truth = study.family_images(family)
    op = make_operator("mri", acceleration=4, center_fraction=0.08)
    return truth, op, op.measure(truth, 0.01, generator=torch.Generator().manual_seed(1234))


def outer_units(op, y, mode: str):
    """``(unit of each flattened entry, eligible units)``: the sampled columns outside the centre block
    (:func:`ipsolve.operators.mri.column_mask`'s ``round(W · center_fraction)`` columns)."""
    mask = op.mask.cpu()
    width = mask.numel()
    low = round(width * op.center_fraction)
    pad = (width - low + 1) // 2
    outer = torch.tensor([not pad <= int(c) < pad + low for c in mask.nonzero().flatten()])
    channels, h, k = y.shape[1:]
    if mode == "line":
        return torch.arange(k).repeat(channels * h), outer
    return (torch.arange(h)[:, None] * k + torch.arange(k)[None]).flatten().repeat(channels), outer.repeat(h)


def split(args):
    truth, op, y = problem(args.family)
    units = {}
    original_split, original_misfit = C.split_entries, C.HoldoutObjective.with_kept_misfit

    def split_entries(m, fraction, generator, observed=None):
        if args.mode == "entry":
            kept, held = original_split(m, fraction, generator, observed)
            units["held"] = torch.arange(len(held))
            return kept, held
        unit, eligible = outer_units(op, y, args.mode)
        candidates = eligible.nonzero().flatten()
        n_held = min(max(round(fraction * len(eligible)), 1), len(candidates))  # the share of all units, as today
        held_units = candidates[torch.randperm(len(candidates), generator=generator)[:n_held]]
        is_held = torch.isin(unit, held_units)
        held = is_held.nonzero().flatten()
        units["held"] = torch.unique(unit[held], return_inverse=True)[1]
        return (~is_held).nonzero().flatten(), held

    def per_unit(self, errors, kept):  # each held-out unit's mean: the standard errors are over units
        e = original_misfit(self, errors, kept)
        index = units["held"].to(e.device)
        n = int(index.max()) + 1
        sums = torch.zeros(e.shape[0], n, dtype=e.dtype).index_add_(1, index, e)
        return sums / torch.bincount(index, minlength=n).to(e.dtype)

    C.split_entries, C.HoldoutObjective.with_kept_misfit = split_entries, per_unit
    prior, solver = study.prior_of(study.SOLVERS[args.solver][0]), study.preset_solver(args.solver)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # compared with the initial guess on the split that chose the values (as measured on 2026-12-06,
        # before the fresh splits: fresh_split_differences would draw more of these splits)
        cal = C.calibrate(y, op, prior, solver, sigma=0.01, generator=study.gens(len(y)), comparison_splits=0)
        x = cal.result.x if cal.result is not None else \
            solve(y, op, prior, cal.solver, sigma=0.01, generator=study.gens(len(y))).x
    row = {"mode": args.mode, "family": args.family, "solver": args.solver, "sampled_columns": int(y.shape[-1]),
           "held_out_units": int(units["held"].max()) + 1, "initial": study.mean_psnr(op.initial_guess(y), truth),
           "calibrated": study.mean_psnr(x, truth), "chosen": cal.params, "score": cal.score,
           "initial_guess_score": cal.initial_guess_score, "against_initial_guess": cal.against_initial_guess,
           "initial_guess_se": cal.initial_guess_se, "seconds": time.perf_counter() - t0}
    print(json.dumps(row))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


def columns(args):
    truth, op, y = problem(args.family)
    prior, solver = study.prior_of(study.SOLVERS[args.solver][0]), study.preset_solver(args.solver)
    if args.zeta is not None:
        solver = C.with_params(solver, zeta=args.zeta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = solve(y, op, prior, solver, sigma=0.01, generator=study.gens(len(y))).x.clamp(-1, 1)
    guess = op.initial_guess(y).clamp(-1, 1)

    def kspace(image):
        return fft2c(((image + 1) / 2).to(torch.complex64))

    def error(image):  # per column: mean squared k-space error / σ² (the ground truth: this study only)
        return (kspace(image) - kspace(truth)).abs().pow(2).mean((0, 1, 2)) / 0.01 ** 2

    solved, zero_filled, sampled = error(x), error(guess), op.mask.cpu()
    print(f"PSNR: solve {study.mean_psnr(x, truth):.2f}, initial guess {study.mean_psnr(guess, truth):.2f}")
    for c in range(len(sampled)):
        print(f"{c:3d} {'sampled' if sampled[c] else '       '} {float(solved[c]):9.1f} {float(zero_filled[c]):9.1f}")
    unsampled = ~sampled
    print(f"unsampled columns: the solve's error is larger at {int((solved > zero_filled)[unsampled].sum())} of "
          f"{int(unsampled.sum())}; summed {float(solved[unsampled].sum()):.0f} against {float(zero_filled[unsampled].sum()):.0f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("split", help="calibrate with another hold-out split (entry: today's; point; line)")
    p.add_argument("mode", choices=("entry", "point", "line"), help="what is held out: entries, k-space points, whole lines")
    p.add_argument("family", choices=tuple(study.TRANSFER_FAMILIES), help="image family")
    p.add_argument("solver", choices=study.MAIN, help="the study's solver")
    p.add_argument("--out", type=Path, help="JSON-lines file the row is appended to")
    p.set_defaults(func=split)
    p = sub.add_parser("columns", help="each k-space column's error of the solve and of zero-filling (ground truth)")
    p.add_argument("family", choices=tuple(study.TRANSFER_FAMILIES), help="image family")
    p.add_argument("solver", choices=study.MAIN, help="the study's solver")
    p.add_argument("--zeta", type=float, help="DPS's zeta instead of the preset's")
    p.set_defaults(func=columns)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    from ipsolve.runner.errors import script_main

    script_main(main)
