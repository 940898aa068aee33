"""Z-coupled vs slice-by-slice reconstruction of volumes (README "Medical and volume data").

Volumes: :func:`ipsolve.datasets.heldout_volume` — held-out ``blobs`` phantoms whose shapes vary
smoothly along z (never seen by the bundled prior) — written as NIfTI files (values (x+1)·500,
window [0, 1000]) and reconstructed through the real pipeline (``data=nifti``,
:func:`ipsolve.runner.volumes.reconstruct_volumes`).  The coupling weight is chosen per
operator × solver on a *validation* volume (its own seed) from a small grid — with the ground
truth, as a reference — then the test volumes (other seeds) are reconstructed slice by slice,
z-coupled with that weight, and z-coupled with ``data.z_coupling=auto`` (the weight calibrated
on each test volume's own measurements, 4 middle slices, held-out entries: what a user can do).

    OMP_NUM_THREADS=1 nice python scripts/volume_study.py --out docs/figures/volume_study.json

The README's table ran with the arguments docs/medical.md gives ("Made by ..."); the defaults run
every operator × solver pair on a larger weight grid (hours) and add their rows to ``--out``.

Reports per-slice PSNR/SSIM (mean ± std over all test slices), volume PSNR and 3-D SSIM (mean
over the test volumes), seconds per slice (solver time, all slices of a volume in one batch in
both modes, so the timing compares like with like).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ipsolve.datasets import heldout_volume
from ipsolve.runner.volumes import reconstruct_volumes

VALIDATION_SEED = 31_001
TEST_SEEDS = (31_002, 31_003)


def write_volume(path: Path, vol: torch.Tensor) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(((vol[:, 0].permute(1, 2, 0).numpy() + 1) * 500).astype(np.float32), np.eye(4)), path)
    return path


def run(path: Path, out: Path, operator: str, solver: str, weight, depth: int) -> dict:
    t = time.perf_counter()
    res = reconstruct_volumes(path, "nifti", out, operator=operator, solver=solver, window=[0, 1000],
                              batch_size=depth, z_coupling=weight, metrics=("psnr", "ssim"))
    wall = time.perf_counter() - t
    (vol,) = res.summary["volumes"].values()
    batches = {tuple(r["batch"]): r["info"]["seconds"] for r in res.records}
    return {"slice_psnr": [r["metrics"]["psnr"] for r in res.records],
            "slice_ssim": [r["metrics"]["ssim"] for r in res.records],
            "initial_psnr": [r["initial_metrics"]["psnr"] for r in res.records],
            "initial_ssim": [r["initial_metrics"]["ssim"] for r in res.records],
            "volume": vol["metrics"], "volume_initial": vol["initial_metrics"],
            "seconds_per_slice": sum(batches.values()) / len(res.records), "wall": wall,
            "residual": float(np.mean([r["info"]["residual"] for r in res.records])),
            "stop": sorted({r["info"]["stop_reason"] for r in res.records}),
            **({"weight": res.summary["calibration"]["coupling"],
                "calibration_seconds": res.summary["calibration"]["seconds"]} if weight == "auto" else {})}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/figures/volume_study.json", help="the results (JSON)")
    ap.add_argument("--work", default="outputs/volume_study", help="folder for the volumes and the runs (kept: a rerun resumes)")
    ap.add_argument("--depth", type=int, default=16, help="slices per generated 32-px volume")
    ap.add_argument("--operators", default="ct_sparse,mri_4x", help="operator presets, comma-separated")
    ap.add_argument("--solvers", default="dps_cpu,dmplug_cpu", help="solver presets, comma-separated")
    ap.add_argument("--weights", default="0.001,0.003,0.01,0.03", help="z-coupling weights tried on the validation volume, comma-separated")
    ap.add_argument("--modes", default="slice,coupled,auto", help="test-volume runs to make (missing ones only)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work)
    weights = [float(w) for w in args.weights.split(",")]
    val = write_volume(work / "inputs" / "validation.nii.gz", heldout_volume(args.depth, 32, seed=VALIDATION_SEED))
    tests = [write_volume(work / "inputs" / f"test{s}.nii.gz", heldout_volume(args.depth, 32, seed=s))
             for s in TEST_SEEDS]
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    for op in args.operators.split(","):
        for solver in args.solvers.split(","):
            key = f"{op}/{solver}"
            entry = results.get(key, {})
            if "tuning" not in entry:
                entry["tuning"] = {}
                for w in [None, *weights]:
                    r = run(val, work / key / f"val_{w}", op, solver, w, args.depth)
                    entry["tuning"][str(w)] = {"volume_psnr": r["volume"]["psnr"],
                                               "slice_psnr": float(np.mean(r["slice_psnr"]))}
                    print(key, "validation weight", w, entry["tuning"][str(w)], flush=True)
                best = max(weights, key=lambda w: entry["tuning"][str(w)]["volume_psnr"])
                entry["weight"] = best
                results[key] = entry
                out_path.parent.mkdir(parents=True, exist_ok=True)
                out_path.write_text(json.dumps(results, indent=1))
            for mode, w in (("slice", None), ("coupled", entry["weight"]), ("auto", "auto")):
                if mode in entry or mode not in args.modes.split(","):
                    continue
                runs = [run(t, work / key / f"{t.stem}_{mode}{'' if w is None else w}", op, solver, w, args.depth)
                        for t in tests]
                entry[mode] = runs
                results[key] = entry
                out_path.write_text(json.dumps(results, indent=1))
                sp = np.concatenate([r["slice_psnr"] for r in runs])
                print(key, mode, "weight", w, "slice PSNR %.2f ± %.2f" % (sp.mean(), sp.std()),
                      "volume PSNR", [round(r["volume"]["psnr"], 2) for r in runs],
                      "s/slice %.2f" % np.mean([r["seconds_per_slice"] for r in runs]), flush=True)
    print(table(results))


def table(results: dict) -> str:
    lines = ["| operator | solver | mode | PSNR per slice (dB) | SSIM per slice | volume PSNR (dB) | volume SSIM (3-D) "
             "| s / slice | slices better than slice by slice |", "|---|---|---|---|---|---|---|---|---|"]
    for key, e in results.items():
        op, solver = key.split("/")
        if "slice" not in e or "coupled" not in e:
            continue
        first = e["slice"]
        ip = np.concatenate([r["initial_psnr"] for r in first])
        iss = np.concatenate([r["initial_ssim"] for r in first])
        lines.append(f"| {op} | {solver} | initial guess | {ip.mean():.2f} ± {ip.std():.2f} | {iss.mean():.3f} | "
                     f"{np.mean([r['volume_initial']['psnr'] for r in first]):.2f} | "
                     f"{np.mean([r['volume_initial']['ssim_3d'] for r in first]):.3f} | – | – |")
        base = np.concatenate([r["slice_psnr"] for r in first])
        modes = [("slice", "slice by slice"), ("coupled", f"z-coupled ({e['weight']:g}, chosen with ground truth)")]
        if "auto" in e:
            chosen = ", ".join(f"{r['weight']:.2g}" for r in e["auto"])
            modes.append(("auto", f"z-coupled (auto: {chosen}; calibration "
                                  f"{np.mean([r['calibration_seconds'] for r in e['auto']]):.0f} s / volume)"))
        for mode, label in modes:
            runs = e[mode]
            sp = np.concatenate([r["slice_psnr"] for r in runs])
            gain = sp - base
            better = (f"{int((gain > 0).sum())} of {len(gain)} (gain {gain.mean():+.2f} dB, {gain.min():+.2f} … "
                      f"{gain.max():+.2f})" if mode != "slice" else "–")
            ss = np.concatenate([r["slice_ssim"] for r in runs])
            lines.append(f"| {op} | {solver} | {label} | {sp.mean():.2f} ± {sp.std():.2f} | {ss.mean():.3f} | "
                         f"{np.mean([r['volume']['psnr'] for r in runs]):.2f} | "
                         f"{np.mean([r['volume']['ssim_3d'] for r in runs]):.3f} | "
                         f"{np.mean([r['seconds_per_slice'] for r in runs]):.2f} | {better} |")
    return "\n".join(lines)


if __name__ == "__main__":
    from ipsolve.runner.errors import script_main

    script_main(main)
