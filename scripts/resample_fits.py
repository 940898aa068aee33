"""ReSample's fit budgets at the paper's schedule: the reference's stopping rules against ipsolve's
``fit_stop="noise_level"``, measured on a trained prior, and what that projects to at 512 px.

    python scripts/resample_fits.py [--images 4] [--out docs/figures/resample_fits.json]

ReSample (500 DDIM steps, hard data consistency every 10 steps) spends most of its time in its fits:
17 pixel fits of up to 2000 AdamW iterations and 16 latent fits (+ the final one) of up to 500
iterations through the decoder.  The reference stops a fit at MSE < 1e-6 (reached only where the
fit can absorb the noise) or, in latent space, when the loss stagnates over 200 iterations;
``fit_stop="noise_level"`` stops each image's fit once ‖y − A(x)‖ ≤ τσ√m (τ from the χ²_m 95 %
quantile).  With random weights (the scale benchmark) the noise level cannot be reached, so the
iteration counts are measured here, on ``bundled:phantom-latent`` (a trained latent prior, 32 px)
with the paper's settings otherwise (``make_solver("resample")``), on held-out phantoms (4 ``blobs`` +
Shepp–Logan), σ = 0.01: PSNR, each image's optimiser steps (``info``'s ``pixel_fit_iterations`` /
``latent_fit_iterations``) and the CPU wall time.  The projection to SD 1.5 at 512 px multiplies the
measured counts by the per-iteration times of the last GPU run (``docs/performance.md``, H200, batch
4, bf16: DPS step 72 ms, look-ahead 41 ms, pixel-fit iteration 0.50 ms, latent-fit iteration 37 ms
per image) — a projection, labelled so, until ``scripts/gpu_check.sh`` measures it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ipsolve import datasets, load_prior, make_operator, make_solver, solve
from ipsolve.metrics import psnr

OPERATORS = {"SR ×4": ("super_resolution", dict(scale=4)),
             "inpainting 70 %": ("inpainting", dict(mask="random")),
             "Gaussian blur 9 px": ("gaussian_blur", dict(size=9, std=1.0))}
SHORT = {"sr": "SR ×4", "inpainting": "inpainting 70 %", "blur": "Gaussian blur 9 px"}  # --operators' names
# per-image seconds of ReSample's components, SD 1.5 (UNet + VAE) at 512 px, H200, batch 4, bf16
# (docs/performance.md, the ReSample row's note)
H200_SECONDS = {"dps_step": 0.072, "lookahead": 0.041, "pixel_iteration": 0.00050, "latent_iteration": 0.037}


def project_512(steps: int, hdc_steps: int, pixel_iterations: float, latent_iterations: float) -> float:
    """Seconds per image at 512 px from the H200 component times and the measured iteration counts."""
    s = H200_SECONDS
    return (steps * s["dps_step"] + hdc_steps * s["lookahead"] + pixel_iterations * s["pixel_iteration"]
            + latent_iterations * s["latent_iteration"])


def measure(images: torch.Tensor, prior, op_label: str, fit_stop: str, sigma: float = 0.01) -> dict:
    registry, params = OPERATORS[op_label]
    op = make_operator(registry, **params)
    y = op.measure(images, sigma, generator=torch.Generator().manual_seed(1234))
    solver = make_solver("resample", progress=False, fit_stop=fit_stop)
    t0 = time.perf_counter()
    res = solve(y, op, prior, solver, sigma=sigma, generator=[torch.Generator().manual_seed(100 + i) for i in range(len(y))])
    wall = time.perf_counter() - t0
    hdc = sum(solver.hdc_kind(i, solver.steps) is not None for i in range(solver.steps))
    pixel = sum(i["pixel_fit_iterations"] for i in res.info) / len(y)
    latent = sum(i["latent_fit_iterations"] for i in res.info) / len(y)
    return dict(operator=op_label, fit_stop=fit_stop, sigma=sigma, images=len(y),
                psnr=float(psnr(res.x, images).mean()), initial=float(psnr(op.initial_guess(y).clamp(-1, 1), images).mean()),
                pixel_fit_iterations=pixel, latent_fit_iterations=latent, cpu_seconds_per_image=wall / len(y),
                projected_512_seconds=project_512(solver.steps, hdc, pixel, latent),
                residual=sum(i["residual"] for i in res.info) / len(y))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=4, help="held-out blobs phantoms (+ Shepp–Logan)")
    ap.add_argument("--operators", nargs="+", default=list(SHORT), choices=list(SHORT),
                    help="which operators (" + ", ".join(f"{k}: {v}" for k, v in SHORT.items()).replace("%", "%%") + ")")
    ap.add_argument("--out", default="docs/figures/resample_fits.json", help="the results (JSON)")
    args = ap.parse_args(argv)
    images = torch.cat([datasets.heldout_phantoms(args.images, 32), datasets.shepp_logan(32)])
    prior = load_prior("bundled:phantom-latent")
    rows = []
    for op_label in (SHORT[k] for k in args.operators):
        for fit_stop in ("reference", "noise_level"):
            rows.append(measure(images, prior, op_label, fit_stop))
            r = rows[-1]
            print(f"{op_label} / {fit_stop}: {r['psnr']:.2f} dB (initial {r['initial']:.2f}), fit iterations per image "
                  f"pixel {r['pixel_fit_iterations']:.0f}, latent {r['latent_fit_iterations']:.0f}; "
                  f"CPU {r['cpu_seconds_per_image']:.1f} s/image; projected 512 px {r['projected_512_seconds']:.0f} s/image",
                  file=sys.stderr, flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    print("| operator | fits stopped by | PSNR | initial guess | pixel-fit iterations / image | latent-fit iterations / image "
          "| CPU s/image (32 px) | projected s/image, SD 1.5 at 512 px (H200) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['operator']} | {r['fit_stop']} | {r['psnr']:.2f} | {r['initial']:.2f} | {r['pixel_fit_iterations']:.0f} | "
              f"{r['latent_fit_iterations']:.0f} | {r['cpu_seconds_per_image']:.1f} | {r['projected_512_seconds']:.0f} |")


if __name__ == "__main__":
    from ipsolve.runner.errors import script_main

    script_main(main)
