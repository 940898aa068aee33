"""Benchmark: quality (operator × solver on a fixed held-out set with fixed seeds) and speed
(wall time vs NFE × the network's own cost, images/s at batch 1 vs 8, peak memory).

    python scripts/benchmark.py --images 3 --speed-budget 20   # a shorter run (≈ 15 min on 2 CPU cores)
    python scripts/benchmark.py            # 8 + 1 held-out phantoms, longer
    python scripts/benchmark.py --quick    # fewer images / budgets, for a smoke run

Solvers never see the ground truth; the metrics are computed afterwards.  LPIPS is "n/a"
where its ImageNet backbone is not in the torch hub cache (offline machines)."""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

from ipsolve import datasets, load_prior, make_operator, make_solver, solve
from ipsolve.metrics import lpips, psnr, ssim
from ipsolve.profiling import autoencoder_seconds, network_seconds, peak_memory_bytes, synchronize
from ipsolve.runner import load_preset

# 32-px images: blur kernels scaled from the papers' 61 px at 256 px (÷8 → 9 px)
OPERATORS = {
    "super_resolution": dict(scale=4),
    "inpainting": dict(mask="random"),
    "gaussian_blur": dict(size=9, std=1.0),
    "nonlinear_blur": dict(size=9),
    # blind: DMPlug's / BlindDPS's convention (64 px at 256 px, zero padding) scaled to 8 px; the kernel of
    # seed 1 is held out from bundled:kernel-ddpm's training
    "blind_blur": dict(true_kernel="motion", size=8, seed=1, padding="zero"),
}
# Science operators (README, CT, MRI and phase retrieval) on the same held-out phantoms: registry name, parameters, baseline
SCIENCE_OPERATORS = {
    "CT 16 views": ("ct", dict(views=16)),
    "CT 8 views": ("ct", dict(views=8)),
    "CT limited angle 0–90°": ("ct", dict(views=45, angles=[0, 90])),
    "MRI 4×": ("mri", dict(acceleration=4, center_fraction=0.08)),
    "MRI 8×": ("mri", dict(acceleration=8, center_fraction=0.04)),
    "phase retrieval ×2": ("phase_retrieval", dict(oversampling=2.0)),
}
SCIENCE_BASELINE = {"ct": "FBP (ramp)", "mri": "zero-filled", "phase_retrieval": "HIO + ER"}
PRESETS = {"dps": ("bundled:phantom-ddpm", "dps_cpu"), "dmplug": ("bundled:phantom-ddpm", "dmplug_cpu"),
           "fmplug": ("bundled:phantom-flow", "fmplug_cpu"), "resample": ("bundled:phantom-latent", "resample_cpu")}
# the standard baselines of issue 20: variational diffusion and flow priors
PRESETS.update({"reddiff": ("bundled:phantom-ddpm", "reddiff_cpu"), "pnp_flow": ("bundled:phantom-flow", "pnp_flow_cpu"),
                "dflow": ("bundled:phantom-flow", "dflow_cpu"), "flowdps": ("bundled:phantom-flow", "flowdps_cpu")})
# ... and the SVD / pseudo-inverse baselines (DDRM needs a decomposable operator; ΠGDM and DiffPIR also run
# on linear operators without one, through conjugate gradients)
SVD_SOLVERS = {"ddrm": ("super_resolution", "inpainting", "gaussian_blur", "mri"),
               "pigdm": ("super_resolution", "inpainting", "gaussian_blur", "mri", "ct"),
               "diffpir": ("super_resolution", "inpainting", "gaussian_blur", "mri", "ct")}
PRESETS.update({name: ("bundled:phantom-ddpm", f"{name}_cpu") for name in SVD_SOLVERS})
# the parameter that sets each solver's budget (--quick, the speed table); "iterations" otherwise
BUDGET_KEY = {"dps": "steps", "resample": "steps", "reddiff": "steps", "pnp_flow": "steps", "flowdps": "steps",
              "dflow": "max_iter", "ddrm": "steps", "pigdm": "steps", "diffpir": "steps", "blind_dps": "steps"}
SCIENCE_SOLVERS = ("dps", "dmplug", "fmplug", "reddiff", "pnp_flow", "dflow", "flowdps", *SVD_SOLVERS)
NEW_SCIENCE_ROWS = ("CT 16 views", "MRI 4×")  # the science rows run for the flow / RED-diff baselines
BLIND_PRESETS = {"blind_dps": ("bundled:phantom-ddpm", "blind_dps_cpu")}  # quality table only


def preset_params(preset: str) -> dict:
    """A CPU preset's parameters (conf/solver/<preset>.yaml, with its registry ``name``) — the
    benchmark runs what the CLI runs."""
    return dict(load_preset("solver", preset))


SOLVERS = {name: (source, preset_params(preset)) for name, (source, preset) in PRESETS.items()}
QUALITY_SOLVERS = {**SOLVERS, **{name: (source, preset_params(preset)) for name, (source, preset) in BLIND_PRESETS.items()}}
TABLE = [  # (operator, solver) rows of the quality table
    *[(op, s) for op in ("super_resolution", "inpainting", "gaussian_blur") for s in SOLVERS],
    ("nonlinear_blur", "dps"), ("nonlinear_blur", "dmplug"), ("nonlinear_blur", "resample"),
    ("blind_blur", "dps"), ("blind_blur", "blind_dps"), ("blind_blur", "dmplug"),
]


def applies(op_name: str, solver: str) -> bool:
    """Whether a quality-table row is run: the SVD solvers only where they apply, the flow / RED-diff
    baselines on the science operators only for CT 16 views and MRI 4×."""
    registry = SCIENCE_OPERATORS[op_name][0] if op_name in SCIENCE_OPERATORS else op_name
    if solver in SVD_SOLVERS:
        return registry in SVD_SOLVERS[solver]
    if op_name in SCIENCE_OPERATORS and solver not in ("dps", "dmplug", "fmplug"):
        return op_name in NEW_SCIENCE_ROWS
    return True


def gens(n, base=0):
    return [torch.Generator().manual_seed(base + i) for i in range(n)]


def fmt(v, d=2):
    return "n/a" if v is None else f"{v:.{d}f}"


def quality(images, table, solvers, sigma, prior_override=None):
    rows = []
    priors = {}
    for op_name, solver_name in table:
        source, params = solvers[solver_name]
        source = prior_override or source
        priors.setdefault(source, load_prior(source))
        registry, op_params = (op_name, OPERATORS[op_name]) if op_name in OPERATORS else SCIENCE_OPERATORS[op_name]
        op = make_operator(registry, **op_params)
        y = op.measure(images, sigma, generator=torch.Generator().manual_seed(1234))
        t0 = time.perf_counter()
        params = dict(params)
        res = solve(y, op, priors[source], make_solver(params.pop("name"), progress=False, **params), sigma=sigma,
                    generator=gens(len(images)))
        secs = (time.perf_counter() - t0) / len(images)
        # metrics modulo the operator's true ambiguities (phase retrieval: translation, twin image)
        x_hat, guess = op.align(res.x, images), op.align(op.initial_guess(y).clamp(-1, 1), images)
        lp = lpips(x_hat, images)
        classical = op.classical_estimate(y)  # a blur's Tikhonov deconvolution (None where the guess is the method)
        reasons = {}
        for i in res.info:
            reasons[i["stop_reason"]] = reasons.get(i["stop_reason"], 0) + 1
        rows.append(dict(operator=op_name, solver=solver_name, prior=source, psnr=float(psnr(x_hat, images).mean()),
                         ssim=float(ssim(x_hat, images).mean()), lpips=None if lp is None else float(lp.mean()),
                         baseline_psnr=float(psnr(guess, images).mean()),
                         classical_psnr=None if classical is None else float(psnr(classical.clamp(-1, 1), images).mean()),
                         nfe=sum(i["nfe"] for i in res.info) / len(images), seconds=secs,
                         residual=sum(i["residual"] for i in res.info) / len(images), stops=reasons))
        print(f"  {op_name} / {solver_name}: {rows[-1]['psnr']:.2f} dB (initial guess {rows[-1]['baseline_psnr']:.2f})",
              file=sys.stderr, flush=True)
    return rows


def classical_cell(row) -> str:
    """The classical deconvolution beside a blur's initial guess (the blurred image), in its cell."""
    return "" if row.get("classical_psnr") is None else f" (Tikhonov {row['classical_psnr']:.2f})"


def quality_table(rows, title):
    out = [f"### {title}", "",
           "| operator | solver | PSNR ↑ | SSIM ↑ | LPIPS ↓ | initial guess PSNR | NFE/image | s/image | residual/σ√m | stops |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        stops = ", ".join(f"{k} {v}" for k, v in sorted(r["stops"].items()))
        out.append(f"| {r['operator']} | {r['solver']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {fmt(r['lpips'], 3)} | "
                   f"{r['baseline_psnr']:.2f}{classical_cell(r)} | {r['nfe']:.0f} | {r['seconds']:.2f} | {r['residual']:.2f} | {stops} |")
    return "\n".join(out)


def speed_one(solver_name, batch, budget):
    """Run in a fresh process so its peak memory is its own."""
    source, params = SOLVERS[solver_name]
    params = dict(params)
    params.pop("name")
    key = BUDGET_KEY.get(solver_name, "iterations")
    # D-Flow's budget is in LBFGS calls of lbfgs_iter iterations each: `budget` LBFGS iterations in all
    params[key] = max(1, budget // params.get("lbfgs_iter", 1)) if solver_name == "dflow" else budget
    params["stop"] = () if solver_name in ("dmplug", "fmplug") else params.get("stop")
    params = {k: v for k, v in params.items() if v is not None}
    prior = load_prior(source, device="cuda" if torch.cuda.is_available() else "cpu")
    op = make_operator("super_resolution", scale=4)
    images = datasets.random_ellipses(batch, 32, torch.Generator().manual_seed(7))
    y = op.measure(images, 0.01, generator=torch.Generator().manual_seed(0))
    quiet = logging.getLogger("ipsolve")
    with warnings.catch_warnings():  # (3 steps neither fit y nor divide a step grid: the warm-up's notes are no news)
        warnings.simplefilter("ignore")
        quiet.disabled = True
        try:
            solve(y[:1], op, prior, make_solver(solver_name, progress=False, **{**params, key: 3}),  # (ReSample needs 3)
                  sigma=0.01)
        finally:
            quiet.disabled = False
    # the network's sustained cost is timed just before and just after the solves and averaged: on a
    # shared CPU it drifts by a few per cent within minutes, as much as the overhead being measured
    # FMPlug's network call also differentiates with respect to the time (its learnable start t0):
    # its overhead is also given against that call, the cost the method itself sets
    own_call = (lambda: network_seconds(prior, batch, backward=True, repeats=30, time_grad=True)) \
        if solver_name == "fmplug" else None
    net_before = network_seconds(prior, batch, backward=True, repeats=30)
    own_before = own_call() if own_call else None
    walls = []
    for _ in range(3):  # the median of three solves: one in a few meets a 0.2-s stall on this shared CPU
        synchronize()
        t0 = time.perf_counter()
        res = solve(y, op, prior, make_solver(solver_name, progress=False, **params), generator=gens(batch), sigma=0.01)
        synchronize()
        walls.append(time.perf_counter() - t0)
    wall = sorted(walls)[1]
    net = (net_before + network_seconds(prior, batch, backward=True, repeats=30)) / 2
    own = (own_before + own_call()) / 2 if own_call else None
    nfe = res.info[0]["nfe"]
    peak = peak_memory_bytes(prior.device) / 2 ** 20
    # ReSample also runs the autoencoder (counted in its info): that is network time too
    auto = sum(res.info[0].get(k, 0) * secs for k, secs in autoencoder_seconds(prior, batch).items())
    return dict(solver=solver_name, batch=batch, wall=wall, nfe=nfe, net=net, autoencoder_s=auto,
                ratio=wall / (nfe * net + auto), images_per_s=batch / wall, peak_mb=peak,
                **({"ratio_own_call": wall / (nfe * own), "net_own_call": own} if own else {}))


def own_call_note(row) -> str:
    """FMPlug's ratio against its own network call (with the time's gradient), where measured."""
    return f" ({row['ratio_own_call']:.2f} against its call with the time's gradient)" if "ratio_own_call" in row else ""


def speed_table(budget):
    rows = []
    for name in SOLVERS:
        for batch in (1, 8):
            out = subprocess.run([sys.executable, __file__, "--speed-one", name, str(batch), str(budget)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"  speed {name} batch {batch}: {rows[-1]['images_per_s']:.2f} img/s", file=sys.stderr, flush=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''}"
    out = [f"### Speed (SR×4, 32 px, budget {budget} steps/iterations, CPU presets otherwise; {device})", "",
           "| solver | batch | NFE | wall s | network fwd+bwd s | wall ÷ (NFE × network + autoencoder) | images/s | peak memory MB |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['solver']} | {r['batch']} | {r['nfe']} | {r['wall']:.2f} | {r['net'] * 1000:.1f} ms | "
                   f"{r['ratio']:.2f}{own_call_note(r)} | {r['images_per_s']:.2f} | {r['peak_mb']:.0f} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 phantoms and 10-step budgets: a smoke run")
    ap.add_argument("--sigma", type=float, default=0.01, help="measurement noise std on the [-1, 1] scale")
    ap.add_argument("--speed-one", nargs=3, metavar=("SOLVER", "BATCH", "BUDGET"),
                    help="one row of the speed table in this process (JSON on stdout): a solver, batch size and "
                         "budget; its overhead wall ÷ (NFE × network) is the CPU figure in docs/performance.md")
    ap.add_argument("--skip-speed", action="store_true", help="without the speed table")
    ap.add_argument("--skip-photo", action="store_true", help="without the photo prior's table")
    ap.add_argument("--same-generator", action="store_true", help="also the narrow ellipse generator's phantoms")
    ap.add_argument("--images", type=int, default=8, help="random phantoms in the held-out set (+ Shepp–Logan)")
    ap.add_argument("--science-only", action="store_true", help="only the CT / MRI / phase-retrieval table")
    ap.add_argument("--speed-only", action="store_true", help="only the speed table")
    ap.add_argument("--skip-science", action="store_true", help="without the CT / MRI / phase-retrieval table")
    ap.add_argument("--solvers", nargs="+", choices=sorted({*QUALITY_SOLVERS, *SCIENCE_SOLVERS}), metavar="SOLVER",
                    help="only these solvers' rows of the quality tables: "
                         f"{', '.join(sorted({*QUALITY_SOLVERS, *SCIENCE_SOLVERS}))}")
    ap.add_argument("--stopping", action="store_true",
                    help="only the stopping study: gap to the best iterate and iterations used, per solver, operator "
                         "and σ (scripts/stopping_study.py record + analyse; minutes on a GPU, hours on 2 CPU cores)")
    ap.add_argument("--speed-budget", type=int, default=50, help="steps/iterations in the speed table")
    ap.add_argument("--calibration", action="store_true",
                    help="only tuning without the ground truth: preset vs calibrated vs oracle per solver, operator and σ "
                         "(scripts/calibration_study.py run + report + curves; hours on 2 CPU cores)")
    ap.add_argument("--docs", default="docs", help="with --calibration: the folder whose figures/ receives the report's "
                                                   "JSON and the curves (default: the committed docs/, REWRITTEN)")
    ap.add_argument("--scale", choices=("paper", "tiny"),
                    help="the paper-scale speed and memory tables instead (scripts/scale_benchmark.py; "
                         "further arguments are passed on to it)")
    args, rest = ap.parse_known_args()
    if args.scale:
        sys.path.insert(0, str(Path(__file__).parent))
        import scale_benchmark

        scale_benchmark.main(["--scale", args.scale, *rest])
        return
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.speed_one:
        name, batch, budget = args.speed_one
        if name not in SOLVERS:
            ap.error(f"--speed-one: unknown solver {name!r}; one of {', '.join(SOLVERS)}")
        if not (batch.isdigit() and budget.isdigit() and int(batch) > 0 and int(budget) > 0):
            ap.error(f"--speed-one SOLVER BATCH BUDGET: BATCH and BUDGET are positive whole numbers, got {batch!r} "
                     f"and {budget!r}")
        print(json.dumps(speed_one(name, int(batch), int(budget))))
        return
    if args.calibration:
        study = [sys.executable, str(Path(__file__).with_name("calibration_study.py"))]
        rows = "outputs/calibration/rows.jsonl"
        subprocess.run([*study, "run", "--out", rows], check=True)
        subprocess.run([*study, "report", rows, "--out", args.docs], check=True)
        subprocess.run([*study, "curves", "--out", args.docs], check=True)
        return
    if args.stopping:
        study = [sys.executable, str(Path(__file__).with_name("stopping_study.py"))]
        traces = "outputs/stopping/stopping.npz"
        subprocess.run([*study, "record", "--out", traces, "--operators", "super_resolution", "inpainting",
                        "gaussian_blur"], check=True)
        subprocess.run([*study, "analyse", traces], check=True)
        return
    if args.speed_only:
        print(speed_table(10 if args.quick else args.speed_budget))
        return
    n = 3 if args.quick else args.images
    phantoms = torch.cat([datasets.heldout_phantoms(n, 32), datasets.shepp_logan(32)])
    table, solvers = TABLE, QUALITY_SOLVERS
    if args.solvers:
        table = [(op, s) for op, s in TABLE if s in args.solvers]
    if args.quick:
        solvers = {k: (s, {**p, BUDGET_KEY.get(k, "iterations"): 2 if k == "dflow" else 20})
                   for k, (s, p) in QUALITY_SOLVERS.items()}
    threads = torch.get_num_threads()
    print(f"## ipsolve benchmark ({time.strftime('%Y-%m-%d')}, {threads} thread{'s' if threads > 1 else ''}, "
          f"device {'cuda' if torch.cuda.is_available() else 'cpu'}, σ = {args.sigma})\n")
    science = [(op, s) for op in SCIENCE_OPERATORS for s in SCIENCE_SOLVERS
               if s in (args.solvers or SCIENCE_SOLVERS) and applies(op, s)]
    if not args.skip_science:
        print(quality_table(quality(phantoms, science, solvers, args.sigma),
                            f"Science operators: {len(phantoms)} held-out phantoms ({n} `blobs` + Shepp–Logan), 32 px; "
                            "initial guess = the classical baseline: "
                            + ", ".join(f"{k} {v}" for k, v in SCIENCE_BASELINE.items())
                            + "; phase retrieval scored modulo translation and twin image"))
        print()
    if args.science_only:
        return
    print(quality_table(quality(phantoms, table, solvers, args.sigma),
                        f"Quality: {len(phantoms)} held-out phantoms ({n} of the held-out `blobs` family, never seen in "
                        "training, + Shepp–Logan), 32 px, bundled phantom priors"))
    if args.same_generator:
        ellipses = datasets.random_ellipses(n, 32, torch.Generator().manual_seed(99_999))
        print()
        print(quality_table(quality(ellipses, table, solvers, args.sigma),
                            f"Quality, second figure: {n} phantoms of the narrow random-ellipse generator (seed 99999; "
                            "the first priors' training distribution, a sub-family of today's training data)"))
    if not args.skip_photo:
        photos = torch.cat([datasets.photo_crop(p, 32) for p in datasets.PHOTO_HELDOUT])
        rows = quality(photos, [("super_resolution", "dps"), ("super_resolution", "dmplug")], solvers, args.sigma,
                       prior_override="bundled:photo-ddpm")
        print()
        print(quality_table(rows, "Quality: 3 held-out photos (coffee, flower, rocket), 32 px, bundled:photo-ddpm "
                                  "(a weak prior: see its model card)"))
    if not args.skip_speed:
        print()
        print(speed_table(10 if args.quick else args.speed_budget))


if __name__ == "__main__":
    from ipsolve.runner.errors import script_main

    script_main(main)
