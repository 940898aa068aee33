"""Stopping-rule study for the plug-in solvers (DMPlug, FMPlug): how far below the best iterate
of a long run does each ground-truth-free rule stop, and after how many iterations?

    python scripts/stopping_study.py record --out outputs/stopping.npz      # runs the solvers (GPU: minutes)
    python scripts/stopping_study.py analyse outputs/stopping*.npz          # replays the rules (seconds)

``record`` runs each CPU preset with its stopping rules off for ``--iterations`` (default 1500)
on held-out phantoms and stores, per iterate and image, what a rule may look at (the residual
‖y − A(x)‖/σ√m and the windowed moving variance of the iterates for several windows) and what
only the study may look at (the PSNR against the ground truth).  ``analyse`` replays every
candidate rule on those traces exactly as :class:`ipsolve.solvers.stopping.StoppingRule` runs
online (a test checks replay = online), picks the rule on a *tuning* set of images and reports it
on a disjoint *report* set (both from the held-out ``blobs`` family, different seeds)."""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

import numpy as np
import torch

from ipsolve import datasets, load_prior, make_operator, make_solver, solve
from ipsolve.metrics import psnr
from ipsolve.runner import load_preset
from ipsolve.solvers.stopping import WINDOWS, StoppingRule, replay, windowed_variance

PRESETS = {"dmplug_cpu": "bundled:phantom-ddpm", "fmplug_cpu": "bundled:phantom-flow"}
OPERATORS = {"super_resolution": dict(scale=4), "inpainting": dict(mask="random"),
             "gaussian_blur": dict(size=9, std=1.0)}
TUNE_SEED, REPORT_SEED = 777, datasets.HELDOUT_SEED  # two disjoint held-out draws of the blobs family


def image_sets(n: int):
    """Tuning images (blobs, seed 777) and report images (the held-out set + Shepp–Logan)."""
    tune = datasets.heldout_phantoms(n, 32, seed=TUNE_SEED)
    report = torch.cat([datasets.heldout_phantoms(n - 1, 32), datasets.shepp_logan(32)])
    return tune, report


def record(args):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    tune, report = image_sets(args.images)
    x = torch.cat([tune, report]).to(device)
    out = {}
    modes = ("full", "validation") if args.validation else ("full",)
    for op_name, preset, sigma, mode in itertools.product(args.operators, args.presets, args.sigmas, modes):
        params = dict(load_preset("solver", preset))
        name = params.pop("name")
        params.update(iterations=args.iterations, stop=[], progress=False)
        if mode == "validation":  # fit 80 % of y, record the held-out error of every iterate (never stopping)
            params.update(stop=["validation"], window=2, patience=10 ** 9, combine="first")
        prior = load_prior(PRESETS[preset], device=device)
        op = make_operator(op_name, **OPERATORS[op_name])
        op.to(device)
        y = op.measure(x, sigma, generator=torch.Generator().manual_seed(1234))
        trace = {"psnr": [], "residual": [], "x": [], "validation": []}

        def keep(it, s):
            trace["psnr"].append(psnr(s["x"].clamp(-1, 1), x).cpu())
            trace["residual"].append(s["residual"].cpu())
            trace["x"].append(s["x"].flatten(1).double())
            if "validation" in s:
                trace["validation"].append(s["validation"].cpu())

        t0 = time.perf_counter()
        solve(y, op, prior, make_solver(name, **params), sigma=sigma,
              generator=[torch.Generator().manual_seed(i) for i in range(len(x))], callback=keep)
        key = f"{preset}{'+validation' if mode == 'validation' else ''}|{op_name}|{sigma}"
        xs = torch.stack(trace["x"])  # (T, B, d)
        if trace["validation"]:
            out[f"{key}|validation"] = torch.stack(trace["validation"]).numpy()
        out[f"{key}|psnr"] = torch.stack(trace["psnr"]).numpy()
        out[f"{key}|residual"] = torch.stack(trace["residual"]).numpy()
        for w in WINDOWS:
            out[f"{key}|var{w}"] = windowed_variance(xs, w).cpu().numpy()
        out[f"{key}|m"] = np.array(y[0].numel())
        print(f"{key}: {time.perf_counter() - t0:.0f} s, best iterate {out[f'{key}|psnr'].max(0).mean():.2f} dB",
              file=sys.stderr, flush=True)
        # after every setting (atomically): a run cut short keeps what it has
        np.savez_compressed(args.out + ".tmp.npz", **out)
        os.replace(args.out + ".tmp.npz", args.out)


def candidates():
    """The rules compared: ES-WMV alone, the discrepancy principle alone, either-first (today's
    presets), and ES-WMV armed only once the discrepancy is met; for windows × patiences × τ."""
    taus = [None, 1.0, 1.5, 2.0]
    for w, p in itertools.product(WINDOWS, (10, 25, 50, 100, 200)):
        yield StoppingRule(("eswmv",), window=w, patience=p)
        for tau in taus:
            yield StoppingRule(("eswmv", "discrepancy"), window=w, patience=p, tau=tau)
            yield StoppingRule(("eswmv", "discrepancy"), window=w, patience=p, tau=tau, combine="armed")
    for tau in taus:
        yield StoppingRule(("discrepancy",), tau=tau)


def score(rule, trace, budget):
    """Per image: (best-in-hindsight PSNR over the whole recorded run − PSNR of the iterate the rule
    returns when it may run ``budget`` iterations, iterations used)."""
    stop, ret = replay(rule, trace, budget)
    best = trace["psnr"].max(0)
    return best - trace["psnr"][ret, np.arange(len(ret))], stop + 1


# the CPU presets' rule before this study (ES-WMV 20/50 or the χ²-calibrated discrepancy), for comparison
PREVIOUS = StoppingRule(("eswmv", "discrepancy"), window=20, patience=50, tau=None)


def analyse(args):
    data = {}
    for path in args.traces:
        with np.load(path) as f:
            data.update({k: f[k] for k in f.files})
    keys = sorted({k.rsplit("|", 1)[0] for k in data if "+validation" not in k})
    n = args.images

    def traces(split):
        sl = slice(0, n) if split == "tune" else slice(n, 2 * n)
        for key in keys:
            tr = {k.rsplit("|", 1)[1]: v for k, v in data.items() if k.startswith(key + "|")}
            yield key, {k: (v[:, sl] if v.ndim == 2 else v) for k, v in tr.items()}

    full = min(data[f"{k}|psnr"].shape[0] for k in keys)
    tune = [tr for _, tr in traces("tune")]
    rows = []
    for rule in candidates():
        per = [score(rule, tr, full) for tr in tune]
        rows.append((rule, float(np.mean([g.mean() for g, _ in per])), float(np.median([np.median(i) for _, i in per]))))
    rows.sort(key=lambda r: (round(r[1], 2), r[2]))  # least mean gap; then fewest iterations
    chosen = rows[0][0]
    print(f"# Tuning set: {n} held-out phantoms (blobs, seed {TUNE_SEED}) × {len(keys)} settings; budget {full}")
    print("\n| rule | mean gap to the best iterate, dB | median iterations |\n|---|---|---|")
    for r in rows[:args.top]:
        print(f"| {r[0].describe()} | {r[1]:.2f} | {r[2]:.0f} |")
    print(f"\nchosen: {chosen.describe()}")
    for budget in (full, args.preset_budget):
        print(f"\n# Report set: {n} other held-out images (blobs seed {REPORT_SEED} + Shepp–Logan); the rule may run "
              f"{budget} iterations; gap to the best iterate of the {full}-iteration run\n")
        print("| solver | operator | σ | best iterate dB | chosen rule: returned dB (gap) | iterations median / max | "
              "previous rule: returned dB (gap) | iterations median / max |\n|---|---|---|---|---|---|---|---|")
        gaps = {0: [], 1: []}
        for key, tr in traces("report"):
            cells = []
            for j, rule in enumerate((chosen, PREVIOUS)):
                gap, it = score(rule, tr, budget)
                gaps[j].append(gap.mean())
                best = tr["psnr"].max(0).mean()
                cells.append(f"{best - gap.mean():.2f} ({gap.mean():.2f}) | {np.median(it):.0f} / {it.max():.0f}")
            preset, op, sigma = key.split("|")
            print(f"| {preset} | {op} | {sigma} | {tr['psnr'].max(0).mean():.2f} | {cells[0]} | {cells[1]} |")
        print(f"| mean gap | | | | {np.mean(gaps[0]):.2f} | | {np.mean(gaps[1]):.2f} | |")
    if any("+validation" in k for k in data):
        validation_report(data, keys, n, full, chosen, args.preset_budget)


def validation_candidates():
    for w, p in itertools.product((2, 5, 20), (10, 25, 50, 100, 200)):
        yield StoppingRule(("validation",), window=w, patience=p)


def validation_report(data, keys, n, full, chosen, preset_budget):
    """The validation rule (fit 80 % of y, stop at the held-out error's minimum): chosen on the
    tuning images, reported on the report images, against the best iterate of the full-data run and
    the chosen residual rule there."""
    def split(key, sl):
        return {k.rsplit("|", 1)[1]: (v[:, sl] if v.ndim == 2 else v) for k, v in data.items() if k.startswith(key + "|")}

    pairs = [(k, k.replace("|", "+validation|", 1)) for k in keys if f"{k.replace('|', '+validation|', 1)}|psnr" in data]

    def gap(rule, full_tr, val_tr, budget):
        stop, ret = replay(rule, val_tr, budget)
        return full_tr["psnr"].max(0) - val_tr["psnr"][ret, np.arange(len(ret))], stop + 1

    tune = [(split(a, slice(0, n)), split(b, slice(0, n))) for a, b in pairs]
    scored = sorted(((float(np.mean([gap(r, f, v, full)[0].mean() for f, v in tune])), r) for r in validation_candidates()),
                    key=lambda t: t[0])
    best = scored[0][1]
    print(f"\n# Stopping by validation (20 % of y held out): chosen on the tuning set: {best.describe()}")
    for budget in (full, preset_budget):
        print(f"\nThe rules may run {budget} iterations; returned dB (gap to the best iterate of the full-data run):\n")
        print(f"| solver | operator | σ | best iterate, all of y | residual rule ({chosen.describe()}) | validation rule "
              f"| its iterations median / max |\n|---|---|---|---|---|---|---|")
        means = [[], []]
        for a, b in pairs:
            f, v = split(a, slice(n, 2 * n)), split(b, slice(n, 2 * n))
            g_res, _ = score(chosen, f, budget)
            g_val, it = gap(best, f, v, budget)
            means[0].append(g_res.mean())
            means[1].append(g_val.mean())
            top = f["psnr"].max(0).mean()
            preset, op, sigma = a.split("|")
            print(f"| {preset} | {op} | {sigma} | {top:.2f} | {top - g_res.mean():.2f} ({g_res.mean():.2f}) | "
                  f"{top - g_val.mean():.2f} ({g_val.mean():.2f}) | {np.median(it):.0f} / {it.max():.0f} |")
        print(f"| mean gap | | | | {np.mean(means[0]):.2f} | {np.mean(means[1]):.2f} | |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="run the presets with their stopping rules off and store the traces (.npz)")
    r.add_argument("--out", required=True, help="the .npz file of traces")
    r.add_argument("--presets", nargs="+", default=list(PRESETS), help="CPU presets (default: %(default)s)")
    r.add_argument("--operators", nargs="+", default=["super_resolution"], help="operators (default: %(default)s)")
    r.add_argument("--sigmas", nargs="+", type=float, default=[0.01, 0.05], help="noise levels on the [-1, 1] scale")
    r.add_argument("--iterations", type=int, default=1500, help="iterations per run (default: %(default)s)")
    r.add_argument("--images", type=int, default=8, help="images per set (tuning and report)")
    r.add_argument("--validation", action="store_true",
                   help="also record runs that hold out 20 %% of y and track the held-out error (stop: [validation])")
    a = sub.add_parser("analyse", help="replay every candidate stopping rule on recorded traces (seconds)")
    a.add_argument("traces", nargs="+", help="one or more .npz files from record")
    a.add_argument("--images", type=int, default=8, help="images per set, as recorded (tuning and report)")
    a.add_argument("--top", type=int, default=10, help="rules listed, best first")
    a.add_argument("--preset-budget", type=int, default=300, help="the CPU presets' iteration budget")
    args = ap.parse_args()
    record(args) if args.cmd == "record" else analyse(args)


if __name__ == "__main__":
    from ipsolve.runner.errors import script_main

    script_main(main)
