"""Quality against cost across all solvers on one task — the picture a user wants before choosing:
each solver's CPU preset and the same preset at a quarter and half of its budget, SR ×4, σ = 0.01,
on the held-out phantoms (3 ``blobs`` + Shepp–Logan, 32 px), PSNR against network evaluations per
image (a DMPlug/FMPlug/D-Flow evaluation includes its backward pass).

    python scripts/quality_vs_nfe.py --out docs/figures        # quality_vs_nfe.csv / .png (≈ 20 min on 2 CPU cores)
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from benchmark import BUDGET_KEY, PRESETS, preset_params  # noqa: E402

from ipsolve import datasets, load_prior, make_operator, make_solver, solve  # noqa: E402
from ipsolve.metrics import psnr  # noqa: E402

FRACTIONS = (0.25, 0.5, 1.0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/figures", help="folder for quality_vs_nfe.csv and the figure (the "
                    "committed ones by default; rows of solvers not re-run are kept)")
    ap.add_argument("--solvers", nargs="+", default=list(PRESETS), choices=list(PRESETS), metavar="SOLVER",
                    help=f"benchmark presets (default: all of them): {', '.join(PRESETS)}")
    ap.add_argument("--plot-only", action="store_true", help="redraw the figure from --out's quality_vs_nfe.csv")
    args = ap.parse_args(argv)
    if args.plot_only:
        rows = list(csv.DictReader(open(Path(args.out) / "quality_vs_nfe.csv")))
        plot(rows, float(rows[0]["initial_psnr"]), Path(args.out) / "quality_vs_nfe.png")
        return
    torch.set_num_threads(1)
    truth = torch.cat([datasets.heldout_phantoms(3, 32), datasets.shepp_logan(32)])
    op = make_operator("super_resolution", scale=4)
    y = op.measure(truth, 0.01, generator=torch.Generator().manual_seed(1234))
    initial = float(psnr(op.initial_guess(y).clamp(-1, 1), truth).mean())
    rows = []
    for name in args.solvers:
        source, preset = PRESETS[name]
        params = preset_params(preset)
        registry = params.pop("name")
        key = BUDGET_KEY.get(name, "iterations")
        prior = load_prior(source)
        for fraction in FRACTIONS:
            p = dict(params)
            p[key] = max(2, round(p[key] * fraction))
            t0 = time.perf_counter()
            res = solve(y, op, prior, make_solver(registry, progress=False, **p), sigma=0.01,
                        generator=[torch.Generator().manual_seed(i) for i in range(len(y))])
            rows.append({"solver": name, "preset": preset, key: p[key], "fraction": fraction,
                         "nfe": sum(i["nfe"] for i in res.info) / len(y),
                         "psnr": float(psnr(res.x, truth).mean()), "initial_psnr": initial,
                         "seconds_per_image": (time.perf_counter() - t0) / len(y)})
            print(rows[-1], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = kept_rows(out / "quality_vs_nfe.csv", args.solvers, initial) + rows
    rows.sort(key=lambda r: list(PRESETS).index(r["solver"]) if r["solver"] in PRESETS else len(PRESETS))
    with open(out / "quality_vs_nfe.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k)
                                                if k in rows[0] else 99))
        w.writeheader()
        w.writerows(rows)
    plot(rows, initial, out / "quality_vs_nfe.png")


def kept_rows(path: Path, rerun: list[str], initial: float) -> list[dict]:
    """The rows of ``path`` for solvers not in ``rerun`` (a ``--solvers`` subset rewrote the committed
    table and figure with its own rows only: an audit, 2026-12-07), where they were made on the same
    images (the same initial PSNR)."""
    try:
        with open(path, newline="") as f:
            earlier = list(csv.DictReader(f))
    except OSError:
        return []
    kept = [r for r in earlier if r.get("solver") not in rerun]
    if kept and any(abs(float(r["initial_psnr"]) - initial) > 1e-6 for r in kept):
        print(f"note: {path}'s other rows were made on other images (initial PSNR differs): not kept", file=sys.stderr)
        return []
    if kept:
        print(f"kept the rows of {', '.join(dict.fromkeys(r['solver'] for r in kept))} from {path}", file=sys.stderr)
    return kept


def plot(rows: list[dict], initial: float, path: Path) -> None:
    """PSNR against NFE per solver (the papers' methods solid, the standard baselines dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.4))
    colours = plt.get_cmap("tab20").colors
    for k, name in enumerate(dict.fromkeys(r["solver"] for r in rows)):
        pts = sorted((float(r["nfe"]), float(r["psnr"])) for r in rows if r["solver"] == name)
        style = "o-" if name in ("dps", "dmplug", "fmplug", "resample", "daps") else "s--"
        ax.plot(*zip(*pts), style, color=colours[(2 * k) % 20 if k < 10 else (2 * k + 1) % 20], label=name)
    ax.axhline(initial, color="0.5", ls=":", label="bicubic")
    ax.set_xscale("log")
    ax.set_xlabel("network evaluations per image (DMPlug/FMPlug/D-Flow: with the backward pass)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("SR ×4, σ = 0.01, 3 held-out blobs + Shepp–Logan, CPU presets at ¼, ½, 1 of their budget",
                 fontsize=8)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    from ipsolve.runner.errors import script_main

    script_main(main)
