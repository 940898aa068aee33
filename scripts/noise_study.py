"""How well does ``sigma=auto`` estimate the noise of a measurement?  (ipsolve.estimate_sigma:
patch PCA, Chen, Zhu & Heng 2015; :mod:`ipsolve.operators.noise_level`.)

    python scripts/noise_study.py                  # the table in docs/calibration.md (10–15 s on 2 cores)
    python scripts/noise_study.py --sizes 32 64    # fewer sizes

Images: scikit-image's grey photos (the grey prior's held-out 128-px crops resized, up to 128 px;
centre crops of camera, coins, moon, page at 256 px), the held-out phantoms and three RGB photos
(coffee, flower, rocket; centre crops resized).  The estimator learns nothing, but its two constants
(the patch-size rule and the kernel bound of ``sigma=auto``) were chosen on images like these; the
tests check it on others (training photo crops, unseen structures, Shepp–Logan).
Each is measured by DPS's Gaussian blur (61 px, std 3), its motion blur (61 px, intensity 0.5, seed 0)
and the README's 32-px Gaussian blur (9 px, std 1) at several σ, and the ratio estimate ÷ σ is reported (median and range over the images).  The
unblurred rows (an identity: ``blur`` with a 1×1 kernel, which sigma=auto refuses) show why only
blurred measurements get an estimate: there the image's own detail counts as noise."""
from __future__ import annotations

import argparse

import numpy as np
import torch

from ipsolve import datasets, make_operator
from ipsolve.operators.blur import Blur
from ipsolve.operators.noise_level import patch_pca_noise_std

SIGMAS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)  # below 0.005 the estimate is an upper bound (LOW_ESTIMATE)


def families(size: int) -> dict[str, torch.Tensor]:
    grey = datasets.heldout_grey_crops(size) if size <= 128 else \
        torch.cat([datasets.grey_photo(name, size) for name in datasets.GREY_PHOTOS])
    rgb = torch.cat([datasets.photo_crop(name, size) for name in datasets.PHOTO_HELDOUT])
    return {"grey photos": grey, "phantoms": datasets.heldout_phantoms(8, size), "RGB photos": rgb}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 256],
                    help="image sides in pixels, at least 31 (the motion blur's 61-px kernel with reflection padding)")
    args = ap.parse_args()
    if min(args.sizes) < 31:
        ap.error(f"--sizes: {min(args.sizes)} is too small; at least 31 pixels (the motion blur's 61-px kernel "
                 "with reflection padding)")
    operators = {"gaussian_blur": make_operator("gaussian_blur"), "motion_blur": make_operator("motion_blur"),
                 # the README's 32-px tables' blur: a narrow kernel keeps fine detail, read as noise at low σ
                 "gaussian_blur 9 px, std 1": make_operator("gaussian_blur", size=9, std=1.0),
                 "none (refused)": Blur(kernel=torch.ones(1, 1))}
    print("| size | images | operator | " + " | ".join(f"σ = {s}" for s in SIGMAS) + " |")
    print("|---|---|---|" + "---|" * len(SIGMAS))
    for size in args.sizes:
        for fam, x in families(size).items():
            for name, op in operators.items():
                if name.startswith("none") and size != args.sizes[0]:
                    continue
                cells = []
                for sigma in SIGMAS:
                    y = op.measure(x, sigma, generator=torch.Generator().manual_seed(1))
                    ratio = patch_pca_noise_std(y).numpy() / sigma
                    cells.append(f"{np.median(ratio):.2f} ({ratio.min():.2f}–{ratio.max():.2f})")
                print(f"| {size} | {fam} ({len(x)}) | {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    from ipsolve.runner.errors import script_main

    script_main(main)
