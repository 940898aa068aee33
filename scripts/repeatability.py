"""Does a run repeat to the last bit?  The same reconstruction twice with torch's defaults and twice
with ``deterministic=True`` (:mod:`ipsolve.runner.determinism`), on the bundled phantoms: the
largest difference between the two runs of each mode, the PSNR spread, the seconds, and the
operations torch reported without a deterministic kernel.  On a CPU both modes repeat exactly; on
a GPU the default may not (cuDNN's timed algorithm choice, atomic adds in backward kernels).

    python scripts/repeatability.py --out outputs/repeatability [--device cuda] [--steps 250] [--solvers dps]

Writes ``repeatability.json`` and prints one line per solver and mode (run by scripts/gpu_check.sh)."""
from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

import torch

import ipsolve

# DPS as conf/solver/dps_cpu.yaml (its ζ rescaled to the steps); DMPlug as the main job's preset
SOLVERS = {"dps": ({"name": "dps", "rescale_zeta": True, "variance": "learned"}, "bundled:phantom-ddpm", "steps"),
           "dmplug": ("dmplug_cpu", "phantom_ddpm", None)}


def repeat(solver: str, prior: str, deterministic: bool, device: str, images: int) -> list[dict]:
    runs = []
    for _ in range(2):
        start = time.perf_counter()
        run = ipsolve.reconstruct("bundled:phantom", solver=solver, prior=prior, max_images=images, device=device,
                                  progress=False, metrics=["psnr"], deterministic=deterministic, threads="auto")
        runs.append({"x": run.x.double().cpu(), "psnr": [r["metrics"]["psnr"] for r in run.records],
                     "seconds": time.perf_counter() - start, "deterministic": run.summary["deterministic"]})
    return runs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/repeatability", help="folder for repeatability.json")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="cuda (the default where there is one) or cpu")
    ap.add_argument("--steps", type=int, default=250, help="DPS's steps (its CPU preset's budget)")
    ap.add_argument("--images", type=int, default=4, help="bundled phantom demo images per run")
    ap.add_argument("--solvers", nargs="+", choices=list(SOLVERS), default=list(SOLVERS), help="which solvers (default: both)")
    args = ap.parse_args()
    logging.getLogger("ipsolve").setLevel(logging.ERROR)  # the runs' logs are not what this measures
    warnings.simplefilter("ignore")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.solvers:
        solver, prior, budget = SOLVERS[name]
        spec = {**solver, budget: args.steps} if budget else solver
        for deterministic in (False, True):
            a, b = repeat(spec, prior, deterministic, args.device, args.images)
            row = {"solver": name, "deterministic": deterministic, "device": args.device,
                   "max_abs_difference": float((a["x"] - b["x"]).abs().max()),
                   "max_psnr_difference": max(abs(p - q) for p, q in zip(a["psnr"], b["psnr"])),
                   "seconds": [round(a["seconds"], 2), round(b["seconds"], 2)],
                   "nondeterministic_ops": b["deterministic"]["nondeterministic_ops"]}
            rows.append(row)
            print(f"{name} deterministic={str(deterministic).lower()}: max |x1 - x2| {row['max_abs_difference']:.3g}, "
                  f"max |ΔPSNR| {row['max_psnr_difference']:.3g} dB, {row['seconds'][1]:.1f} s per run"
                  + (f", without a deterministic kernel: {', '.join(row['nondeterministic_ops'])}"
                     if row["nondeterministic_ops"] else ""), flush=True)
    env = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "torch": torch.__version__,
           "cuda": torch.version.cuda}
    (out / "repeatability.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))


if __name__ == "__main__":
    from ipsolve.runner.errors import script_main

    script_main(main)
