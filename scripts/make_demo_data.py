"""Write the demo images bundled with ipsolve (``ipsolve/demo_data/``), all held out from
the bundled priors' training data:

* ``phantom/``: 7 phantoms of the held-out ``blobs`` family (never drawn in training) from
  ``torch.Generator().manual_seed(10_000)`` (``blobs_0.png`` … ``blobs_6.png``) and
  ``shepp_logan.png``; 32×32 grayscale PNG.
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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "ipsolve" / "demo_data"))
    ap.add_argument("--size", type=int, default=32)
    args = ap.parse_args(argv)
    out = Path(args.out)
    for old in (out / "phantom").glob("*.png"):
        old.unlink()
    held_out = phantoms(7, args.size, torch.Generator().manual_seed(DEMO_SEED), families=PHANTOM_HELDOUT_FAMILY)
    for i, x in enumerate(held_out):
        save_image(x[None], out / "phantom" / f"blobs_{i}.png")
    save_image(shepp_logan(args.size), out / "phantom" / "shepp_logan.png")
    for name in PHOTO_HELDOUT:
        save_image(photo_crop(name, args.size), out / "photo" / f"{name}.png")
    for sub in ("phantom", "photo"):
        files = sorted(p.name for p in (out / sub).glob("*.png"))
        print(f"{out / sub}: {len(files)} images ({', '.join(files)})")


if __name__ == "__main__":
    main()
