"""Write the demo images bundled with ipsolve (``ipsolve/demo_data/``), all held out from
the bundled priors' training data:

* ``phantom/``: ``--num`` images (default 8): Shepp–Logan (``shepp_logan.png``) and ``num − 1``
  phantoms of the held-out ``blobs`` family (never drawn in training), ``blobs_0.png`` …, drawn
  in order from ``torch.Generator().manual_seed(10_000)``; a drawn phantom whose object covers
  less than ``--min-object`` of the image (a near-empty, nearly all-background picture whose
  PSNR says little about a solver and dominates a mean) is rejected and the next one drawn.
  32×32 grayscale PNG.
* ``photo/``: the held-out photos ``coffee``, ``flower``, ``rocket`` (``PHOTO_HELDOUT``),
  centre crops resized to 32×32 RGB PNG.

Run from the repository root: ``python scripts/make_demo_data.py`` (deterministic; rewrites the files).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ipsolve.datasets import PHANTOM_HELDOUT_FAMILY, PHOTO_HELDOUT, phantoms, photo_crop, shepp_logan
from ipsolve.io import save_image

DEMO_SEED = 10_000  # the training data never uses this generator seed
MIN_OBJECT = 0.2    # fraction of pixels that must differ from the background
BACKGROUND_TOLERANCE = 0.02  # on the [0, 1] scale: a pixel this close to the background level is background


def object_fraction(x: torch.Tensor) -> float:
    """The fraction of pixels of ``x`` (``(C, H, W)`` in [-1, 1]) that differ from its background
    — its most common value — by more than :data:`BACKGROUND_TOLERANCE` (on the [0, 1] scale)."""
    v = (x.float().mean(0) + 1) / 2
    background = v.flatten().mode().values
    return float(((v - background).abs() > BACKGROUND_TOLERANCE).float().mean())


def demo_phantoms(count: int, size: int = 32, min_object: float = MIN_OBJECT, seed: int = DEMO_SEED,
                  max_draws: int = 1000) -> tuple[list[torch.Tensor], int]:
    """``count`` held-out phantoms ``(1, size, size)`` whose object covers at least
    ``min_object`` of the image, drawn in order from one seeded generator, and how many were
    rejected."""
    gen = torch.Generator().manual_seed(seed)
    kept, rejected = [], 0
    for _ in range(max_draws):
        if len(kept) == count:
            return kept, rejected
        (x,) = phantoms(1, size, gen, families=PHANTOM_HELDOUT_FAMILY)  # the same sequence as phantoms(n, ...)
        if object_fraction(x) >= min_object:
            kept.append(x)
        else:
            rejected += 1
    raise RuntimeError(f"only {len(kept)} of {count} phantoms cover {min_object:.0%} of the image in {max_draws} draws")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "ipsolve" / "demo_data"),
                    help="folder for phantom/ and photo/ (default: the package's ipsolve/demo_data)")
    ap.add_argument("--size", type=int, default=32, help="image side in pixels (the bundled priors' 32)")
    ap.add_argument("--num", type=int, default=8, help="phantom demo images, Shepp-Logan included (default 8)")
    ap.add_argument("--min-object", type=float, default=MIN_OBJECT,
                    help="reject a phantom whose object covers less than this fraction of the image")
    args = ap.parse_args(argv)
    if args.num < 1:
        ap.error("--num must be >= 1")
    out = Path(args.out)
    for old in (out / "phantom").glob("*.png"):
        old.unlink()
    held_out, rejected = demo_phantoms(args.num - 1, args.size, args.min_object)
    for i, x in enumerate(held_out):
        save_image(x[None], out / "phantom" / f"blobs_{i}.png")
    save_image(shepp_logan(args.size), out / "phantom" / "shepp_logan.png")
    print(f"rejected {rejected} near-empty phantom(s) (object < {args.min_object:.0%} of the image)")
    for name in PHOTO_HELDOUT:
        save_image(photo_crop(name, args.size), out / "photo" / f"{name}.png")
    for sub in ("phantom", "photo"):
        files = sorted(p.name for p in (out / sub).glob("*.png"))
        print(f"{out / sub}: {len(files)} images ({', '.join(files)})")


if __name__ == "__main__":
    from ipsolve.runner.errors import script_main

    script_main(main)
