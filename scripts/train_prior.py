"""Train a small prior and save it in the layouts ipsolve's loaders read.

Kinds (all diffusers networks, saved with ``save_pretrained``):
  ddpm    ε-prediction ``UNet2DModel`` + ``DDPMScheduler``      (DDPMPipeline layout)
  flow    velocity ``UNet2DModel`` + ``FlowMatchEulerDiscreteScheduler`` (diffusers'
          rectified-flow convention: timestep = σ·1000, x_σ = (1-σ)x + σz, target z - x)
  latent  ``AutoencoderKL`` (stage 1) + latent ε-prediction UNet (stage 2) (LDMPipeline layout)

Data: ``phantom`` (the broad phantom family, unlimited; its held-out family is never drawn), ``ellipses`` (the narrow generator), ``photo`` (bundled natural photos,
multi-scale crops), ``grey`` (half phantoms, half grey crops of those photos), a folder of images, or DICOM / NIfTI scans (a DICOM folder with any number of
series, a NIfTI file or folder: every slice of every volume, windowed per volume with ``--window``).  Training resumes from ``<work>/train_state.pt``;
``--steps`` is the total to reach, ``--max-minutes`` stops early (state saved, model
exported), so the job can run in the background and be continued later.  On a folder or scans,
``--val-fraction`` of the images (whole volumes) is held out and the exported weights' denoising
loss on them is compared with that on training images at every save (``README.md``, the prior's
model card, and ``training.json``): a ratio above 1.25 means the prior memorises its images.

    python scripts/train_prior.py --kind ddpm --data phantom --out ipsolve/priors/bundled/phantom-ddpm
    accelerate launch --multi_gpu scripts/train_prior.py ...   # several GPUs
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import (AutoencoderKL, DDPMScheduler, FlowMatchEulerDiscreteScheduler,
                       UNet2DModel)
from diffusers.training_utils import EMAModel

from ipsolve import datasets
from ipsolve.priors import save_pretrained_prior
from ipsolve.priors.loading import MEMORISING_RATIO


def make_unet(size, channels, widths):
    return UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels,
                       block_out_channels=widths, layers_per_block=1, norm_num_groups=8,
                       # no attention: at 32 px it costs 35% more time per step on a CPU for little gain
                       down_block_types=("DownBlock2D",) * len(widths), up_block_types=("UpBlock2D",) * len(widths))


def make_vae(channels, latent_channels):
    return AutoencoderKL(in_channels=channels, out_channels=channels, latent_channels=latent_channels,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=16)


BUILTIN_DATA = ("phantom", "ellipses", "photo", "grey", "kernels")


def batches(data, size, batch_size, generator, window="auto", val_fraction=0.0, seed=0, units=None):
    """``(next_batch, channels, validation, split, files)``: a function drawing a training batch in [-1, 1],
    its channel count, ``(held-out images, training images to compare with)`` for validation (None
    for the built-in generators — their data are unlimited — or too few images), how the held-out
    images were chosen and, for data read from disk, ``{"count", "digest"}`` of its sources (a resume
    on changed files is refused: the held-out split would change under the validation table).  A built-in name that is also an existing path is
    the path (with a note)."""
    if data in BUILTIN_DATA and Path(data).exists():
        print(f"note: --data {data} is a folder here: training on it, not on the built-in {data!r} data "
              f"(give ./{data}/ to silence this, or move it to use the built-in)")
        data = str(Path(data).resolve())
    elif data == "phantom":  # the broad family; its held-out family (blobs) is never drawn
        return (lambda: datasets.phantoms(batch_size, size, generator)), 1, None, GENERATED, None
    if data == "ellipses":  # the first bundled priors' narrow generator
        return (lambda: datasets.random_ellipses(batch_size, size, generator)), 1, None, GENERATED, None
    if data == "photo":
        return (lambda: datasets.random_photo_crops(batch_size, size, generator)), 3, None, GENERATED, None
    if data == "grey":  # half phantoms, half grey crops of the training photos
        return (lambda: datasets.phantoms_and_grey_crops(batch_size, size, generator)), 1, None, GENERATED, None
    if data == "kernels":  # BlindDPS's kernel prior: a pool of motion (75 %) and Gaussian (25 %) kernels, resampled
        pool = datasets.blur_kernels(8000, size, generator)
        return (lambda: pool[torch.randint(len(pool), (batch_size,), generator=generator)]), 1, None, GENERATED, None
    # a folder of images, DICOM series or NIfTI volumes (every slice, each volume windowed as a whole:
    # reconstruct with the same data.window)
    from ipsolve.io import load_training_slices
    images, sources = load_training_slices(data, size, window=window, groups=True, units=units)
    note_image_changes(data, sources, size)
    train_images, heldout, split = split_heldout(images, sources, val_fraction, seed)
    if heldout is not None and len(heldout) > len(train_images):
        print(f"warning: --val-fraction {val_fraction:g} holds out {len(heldout)} image(s) and trains on "
              f"{len(train_images)}: the prior learns from fewer images than it is checked on")
    print(f"training data: {len(train_images)} slice(s)/image(s) of {data}, {images.shape[1]} channel(s); "
          f"held out for validation: {split}")
    validation = None
    if heldout is not None:  # compared with up to 256 training images (seeded), the same for every check
        pick = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(seed + 104729))[:256]
        validation = (heldout, train_images[pick.sort().values])
    import hashlib

    names = sorted(dict.fromkeys(Path(src).name if Path(src).exists() else src for src in sources))
    files = {"count": len(names), "digest": hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]}
    return ((lambda: train_images[torch.randint(len(train_images), (batch_size,), generator=generator)]),
            images.shape[1], validation, split, files)


def note_image_changes(data, sources, size: int) -> None:
    """Say what reading a folder of images did that the user did not ask for (as the ``ipsolve`` command
    line does): files that are no images skipped, non-square images centre-cropped, small ones enlarged."""
    from PIL import Image

    from ipsolve.io.images import IMAGE_SUFFIXES

    folder = Path(data)
    if not folder.is_dir():
        return
    files = [Path(s) for s in dict.fromkeys(sources) if Path(s).suffix.lower() in IMAGE_SUFFIXES]
    if not files:  # scans: their slices are windowed and resized as documented
        return
    others = [p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
              and p.suffix.lower() not in (*IMAGE_SUFFIXES, ".npy")]
    sizes = {}
    for f in files:
        try:
            with Image.open(f) as im:
                sizes[f.name] = im.size
        except OSError:
            continue
    cropped = [n for n, (w, h) in sizes.items() if w != h]
    enlarged = [n for n, (w, h) in sizes.items() if min(w, h) < size]
    for what, names in (("file(s) that are not images skipped", others),
                        (f"non-square image(s) centre-cropped to a square before resizing to {size} px", cropped),
                        (f"image(s) smaller than {size} px enlarged", enlarged)):
        if names:
            print(f"note: {len(names)} {what}: {', '.join(sorted(names)[:5])}{', ...' if len(names) > 5 else ''}")


GENERATED = "none (generated data: every batch is new)"


def split_heldout(images, sources, fraction: float, seed: int):
    """``(training, held_out, description)``: whole sources (image files, volumes — neighbouring
    slices are nearly the same image, so slices are never split from their volume) held out for
    validation, ``fraction`` of them (at least 1, at most all but 1), seeded; one volume alone
    gives a block of slices at its end (only one of them touches a training slice).  ``fraction``
    0, or fewer than 2 sources and 10 slices: nothing held out."""
    if fraction <= 0:
        return images, None, "none (--val-fraction 0)"
    names = list(dict.fromkeys(sources))
    if len(names) >= 2:
        # in a seeded order, the sources that fit within the fraction of the slices (volumes differ in size:
        # a count of sources held out 48 of 73 slices for 10 %); none fitting, the smallest one
        sizes = {nm: sources.count(nm) for nm in names}
        order = [names[i] for i in torch.randperm(len(names), generator=torch.Generator().manual_seed(seed + 7919))]
        held, count = [], 0
        for nm in order:
            if count + sizes[nm] <= fraction * len(images) and len(held) < len(names) - 1:
                held.append(nm)
                count += sizes[nm]
        held = held or [min(order, key=lambda nm: sizes[nm])]
        mask = torch.tensor([src in held for src in sources])
        unit = "volume(s)" if names[0].startswith("volume ") else "image(s)"
        what = (f"{len(held)} of {len(names)} {unit} ({int(mask.sum())} of {len(images)} slice(s)/image(s), "
                f"{100 * float(mask.float().mean()):.0f} %; --val-fraction {fraction:g})")
    elif len(images) >= 10:
        k = min(len(images) - 1, max(1, round(fraction * len(images))))
        mask = torch.zeros(len(images), dtype=torch.bool)
        mask[-k:] = True
        what = (f"the last {k} of the {len(images)} slices of the one volume (the first of them touches a training "
                f"slice: the gap below is a lower bound)")
    else:
        return images, None, f"none ({len(images)} image(s) from one source: too few to hold any out)"
    return images[~mask], images[mask], what


LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)  # noise levels of the validation loss: DDPM t = 1000·level, flow σ = level


@torch.no_grad()
def denoising_loss(unet, images, kind, sched, vae=None, seed=1234, draws=200):
    """Mean squared denoising error (the training objective) at the fixed :data:`LEVELS`, with
    noise from a fixed seed and at least ``draws`` (image, level, noise) draws: comparable between
    image sets and between checkpoints.  Latent priors: in the autoencoder's latent space (its mean)."""
    g = torch.Generator().manual_seed(seed)
    param = next(unet.parameters())
    repeats = max(1, math.ceil(draws / (len(images) * len(LEVELS))))
    total, count = 0.0, 0
    for chunk in images.split(64):
        x = chunk.to(param.device)
        if vae is not None:
            x = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
        for level in LEVELS * repeats:
            noise = torch.randn(x.shape, generator=g).to(x.device)
            if kind == "flow":
                pred = unet(((1 - level) * x + level * noise).to(param.dtype),
                            torch.full((len(x),), level * 1000, device=x.device)).sample.float()
                target = noise - x
            else:
                t = torch.full((len(x),), int(level * 1000), device=x.device, dtype=torch.long)
                pred = unet(sched.add_noise(x, noise, t).to(param.dtype), t).sample.float()
                target = noise
            total += float((pred - target).pow(2).mean(dim=(1, 2, 3)).sum())
            count += len(x)
    return total / count


@torch.no_grad()
def autoencoder_psnr(vae, images) -> dict | None:
    """Mean PSNR (dB) of ``decode(encode(x))`` (the latent mean) against ``x``: no latent prior
    reconstructs better than its autoencoder returns the images."""
    if images is None:
        return None
    from ipsolve.metrics import psnr

    was_training = vae.training
    vae.eval()
    device = next(vae.parameters()).device
    rec = torch.cat([vae.decode(vae.encode(c.to(device)).latent_dist.mean).sample.clamp(-1, 1).float().cpu()
                     for c in images.split(32)])  # a chunk at a time on the device
    vae.train(was_training)
    return {"psnr": round(float(psnr(rec, images.float().cpu()).mean()), 2), "images": len(images)}


def validate(unet, heldout, compared, kind, sched, vae, step) -> dict:
    """The exported (EMA) network's denoising loss on the held-out images and on as many training
    images: a ratio well above 1 means the prior denoises the images it was trained on better
    than new ones of the same kind — it memorises them, and would paint them into reconstructions."""
    was_training = unet.training
    unet.eval()
    held, train = (denoising_loss(unet, x, kind, sched, vae) for x in (heldout, compared))
    unet.train(was_training)
    return {"step": step, "heldout_loss": round(held, 5), "train_loss": round(train, 5),
            "ratio": round(held / max(train, 1e-12), 3)}


def main():
    class Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        """The module docstring as written, and each flag's default."""

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=Help)
    ap.add_argument("--kind", choices=["ddpm", "flow", "latent"], required=True,
                    help="pixel DDPM (DPS, DAPS, DMPlug, …), flow matching (FMPlug, PnP-Flow, …) or latent diffusion (ReSample)")
    ap.add_argument("--data", default="phantom",
                    help="phantom (broad family) | ellipses (narrow) | photo | grey (half phantoms, half grey photo crops) | kernels (motion + Gaussian kernels, "
                         "BlindDPS kernel prior) | a folder of images, a DICOM folder or NIfTI file/folder (every slice)")
    ap.add_argument("--window", default="auto",
                    help="DICOM/NIfTI intensity window per volume: auto | ct_soft_tissue | lo,hi (use the same "
                         "data.window when reconstructing)")
    ap.add_argument("--units", default=None, choices=["HU"],
                    help="NIfTI volumes hold Hounsfield units (NIfTI records none), so --window ct_soft_tissue "
                         "applies; as data.units=HU when reconstructing")
    ap.add_argument("--out", required=True, help="export directory (the prior loaded by ipsolve)")
    ap.add_argument("--work", default=None,
                    help="training state directory (default outputs/training/<out name>-<hash of the --out path>)")
    ap.add_argument("--size", type=int, default=32, help="image size in pixels (the prior's)")
    ap.add_argument("--widths", default="32,64,64", help="UNet block widths")
    ap.add_argument("--steps", type=int, default=3000, help="total steps to reach (UNet)")
    ap.add_argument("--ae-steps", type=int, default=1500, help="autoencoder steps (latent kind)")
    ap.add_argument("--batch-size", type=int, default=64, help="images per training step")
    ap.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate")
    ap.add_argument("--max-minutes", type=float, default=float("inf"),
                    help="stop after this long (state saved, prior exported; run again to continue)")
    ap.add_argument("--save-every", type=int, default=200, help="steps between saves of the state and the export")
    ap.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"], help="accelerate's autocast")
    ap.add_argument("--seed", type=int, default=0, help="batches, initial weights and the held-out split")
    ap.add_argument("--export-fp16", action="store_true",
                    help="store the exported UNet weights in float16 (half the size; loaded as float32)")
    ap.add_argument("--val-fraction", type=float, default=0.1,
                    help="a folder or scans: the fraction of its images (whole volumes for scans) held out to check "
                         "that the prior does not memorise its training images (0: none)")
    ap.add_argument("--init-from", default=None,
                    help="start a new run from the UNet of this prior directory (e.g. a flow prior from a DDPM one)")
    argv = sys.argv[1:]
    for i, a in enumerate(argv[:-1]):  # "--window -160,240": argparse would take the value for an option
        if a == "--window" and argv[i + 1][:1] == "-" and argv[i + 1][1:2].isdigit():
            argv[i:i + 2] = [f"--window={argv[i + 1]}"]
            break
    args = ap.parse_args(argv)

    try:
        check_numbers(args)
        train(args)
    except (ValueError, FileNotFoundError, NotADirectoryError, TrainingMismatch) as err:
        raise SystemExit(f"train_prior: error: {as_flags(str(err))}") from None
    except KeyboardInterrupt:  # before training began (train() saves what it has on Ctrl-C during it)
        print("\ntrain_prior: interrupted before training began; nothing was saved", file=sys.stderr)
        raise SystemExit(130) from None


def check_numbers(args) -> None:
    """One line naming the flag for values that made tracebacks deep in training (``--batch-size 0``,
    ``--widths 16,0``) or trained nothing (``--lr 0``, ``--max-minutes 0``: a random-weight prior)."""
    try:
        widths = [int(w) for w in args.widths.split(",")]
    except ValueError:
        raise ValueError(f"--widths must be comma-separated integers (e.g. 32,64,64), got {args.widths!r}") from None
    if not widths or any(w < 8 or w % 8 for w in widths):  # GroupNorm in 8 groups (make_unet)
        raise ValueError(f"--widths must be multiples of 8 (the UNet's normalisation groups), at least 8, got "
                         f"{args.widths!r}")
    for flag, value, least in (("--batch-size", args.batch_size, 1), ("--save-every", args.save_every, 1),
                               ("--size", args.size, 8)):
        if value < least:
            raise ValueError(f"{flag} must be an integer >= {least}, got {value}")
    if not args.lr > 0 or not math.isfinite(args.lr):
        raise ValueError(f"--lr must be a positive number (AdamW's learning rate, e.g. 2e-3), got {args.lr}")
    if not args.max_minutes > 0:
        raise ValueError(f"--max-minutes must be > 0 (it stops training after that long; a prior with no training "
                         f"is random weights), got {args.max_minutes}")


def as_flags(message: str) -> str:
    """A message from ipsolve.io, which names the run's settings (``data.window=[-160, 240]``,
    ``data.units=HU``), with this script's flags instead (``--window -160,240``, ``--units HU``)."""
    import re

    message = re.sub(r"data\.window=\[(-?[\d.]+), (-?[\d.]+)\]", r"--window \1,\2", message)
    for setting, flag in (("data.units=", "--units "), ("data.window=", "--window "), ("data.units", "--units"),
                          ("data.window", "--window"), ("[lo, hi]", "lo,hi")):
        message = message.replace(setting, flag)
    return message


def check_out(out: Path, resuming: bool = False) -> None:
    """``--out`` must be a folder that can be made and written, checked before any training (it was
    checked at the first save, after the training: a traceback for a file given as --out), and new,
    empty or this script's export (``training.json``; ``resuming``: its training state exists)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the exported prior")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"--out {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise ValueError(f"--out {out}: cannot write in {existing}")
    held = sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) if out.is_dir() else []
    if held and not (out / "training.json").is_file() and not resuming:  # (a downloaded prior, a user's files: overwritten)
        raise ValueError(f"--out {out} holds files this script did not write ({', '.join(held[:4])}"
                         f"{', ...' if len(held) > 4 else ''}): give a new or empty folder for the prior")


class TrainingMismatch(Exception):
    """A training state or export folder that belongs to another run (one line)."""


def work_dir(args, out: Path) -> Path:
    """The training state's folder: ``--work``, else ``outputs/training/<out name>-<hash of the
    absolute --out>`` — so two runs whose exports share a folder name do not share a state (the
    old default ``outputs/training/<out name>`` is still used when its state was made for this --out)."""
    import hashlib

    if args.work:
        return Path(args.work)
    legacy = Path("outputs/training") / out.name
    if (legacy / "train_state.pt").exists():
        try:
            saved = torch.load(legacy / "train_state.pt", map_location="cpu", weights_only=False)
            if saved.get("settings", {}).get("out") in (None, str(out.resolve())):
                return legacy
        except Exception:  # noqa: BLE001 - an unreadable legacy state: not this run's
            pass
    digest = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:8]
    return Path("outputs/training") / f"{out.name}-{digest}"


def check_resume(saved: dict, settings: dict, ckpt: Path) -> None:
    """Refuse a saved state made with other network or data settings (was: resumed silently — a
    flow run continued a DDPM network, a 64-px run a 32-px one, new data exported old weights)."""
    before = saved.get("settings")
    if before is None:
        return  # a state from before settings were recorded: taken as it is
    if before.get("data_files") and settings.get("data_files") and before["data_files"] != settings["data_files"]:
        was, now = before["data_files"]["count"], settings["data_files"]["count"]
        raise TrainingMismatch(f"the training data changed since {ckpt} was made ({was} → {now} source file(s), or "
                               f"others under the same count): the held-out images would change under the validation "
                               f"table; continue on the same files, or start a new run from these weights on the new "
                               f"data (--init-from {settings['out']} with another --out)")
    settings = {k: v for k, v in settings.items() if k != "data_files"}
    legacy = {"val_fraction": 0.0, "val_seed": None, "units": None}  # states from before the validation split trained on every image
    flag = {"val_seed": "seed"}  # (the split is seeded by --seed)
    differ = [f"--{flag.get(k, k).replace('_', '-')} {before.get(k, legacy.get(k))!r} (now {v!r})"
              for k, v in settings.items() if k != "out" and before.get(k, legacy.get(k)) != v]
    if differ:
        raise TrainingMismatch(f"the training state {ckpt} was made with {', '.join(differ)}; continue with its "
                               f"settings, or start afresh with another --work (or remove {ckpt.parent})")


def train(args):
    acc = Accelerator(mixed_precision=args.mixed_precision)
    out = Path(args.out)
    if args.steps < 1 or (args.kind == "latent" and args.ae_steps < 1):
        raise ValueError(f"--steps must be >= 1 (got {args.steps}): a prior with no training is random weights"
                         + (f"; --ae-steps too (got {args.ae_steps})" if args.kind == "latent" else ""))
    work = work_dir(args, out)
    check_out(out, resuming=(work / "train_state.pt").exists())
    gen = torch.Generator().manual_seed(args.seed + acc.process_index)
    widths = tuple(int(w) for w in args.widths.split(","))
    if args.size % 2 ** (len(widths) - 1) or (args.kind == "latent" and args.size % 2 ** len(widths)):
        raise ValueError(f"--size {args.size} must be divisible by {2 ** (len(widths) - (args.kind != 'latent'))} "
                         f"for {len(widths)} UNet levels ({args.widths})")
    ckpt = work / "train_state.pt"
    exported = out / "training.json"
    if not ckpt.exists() and exported.is_file():  # a prior trained before, whose state is not where we look
        before = json.loads(exported.read_text())
        if before.get("step", 0) > 0 and not args.init_from:
            raise TrainingMismatch(f"{out} holds a prior trained for {before['step']} steps, but its training state is "
                                   f"not in {work}" + (f" (it was in {before['work']})" if before.get("work") else "")
                                   + "; pass --work with that folder to continue, or another --out (or remove it) "
                                     "to start afresh")
    if (args.window != "auto" or args.units) and data_kind(args.data) in ("builtin", "images"):
        raise ValueError(f"--window and --units map DICOM/NIfTI intensities; --data {args.data} is "
                         f"{'built-in data' if data_kind(args.data) == 'builtin' else 'a folder of images'}: drop them")
    if not 0 <= args.val_fraction < 1:
        raise ValueError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    next_batch, channels, validation, split, files = batches(args.data, args.size, args.batch_size, gen, args.window,
                                                          args.val_fraction, args.seed, args.units)
    data = args.data if args.data in BUILTIN_DATA and not Path(args.data).exists() else str(Path(args.data).resolve())
    settings = {"kind": args.kind, "size": args.size, "widths": list(widths), "channels": channels, "data": data,
                "window": args.window, "units": args.units, "out": str(out.resolve()),
                "val_fraction": args.val_fraction if validation is not None else 0.0,
                "val_seed": args.seed if validation is not None else None,  # the split's seed: the same held-out images
                **({"data_files": files} if files else {})}
    ae_images = None
    if args.kind == "latent":  # the autoencoder's round trip: on held-out images, or a fresh draw of generated data
        ae_images = validation[0] if validation is not None else (
            batches(args.data, args.size, 32, torch.Generator().manual_seed(args.seed + 31337), args.window,
                    units=args.units)[0]()
            if data in BUILTIN_DATA else None)
    work.mkdir(parents=True, exist_ok=True)

    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                          clip_sample=False)
    vae = make_vae(channels, 4) if args.kind == "latent" else None
    unet_size, unet_ch = (args.size // 2, 4) if vae is not None else (args.size, channels)
    unet = make_unet(unet_size, unet_ch, widths)
    state = {"step": 0, "ae_step": 0, "seconds": 0.0, "validation": []}
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    ae_opt = torch.optim.AdamW(vae.parameters(), lr=1e-3) if vae is not None else None
    if args.init_from and not ckpt.exists():
        init = UNet2DModel.from_pretrained(Path(args.init_from) / "unet")
        theirs = (init.config.sample_size, init.config.in_channels, tuple(init.config.block_out_channels))
        ours = (unet.config.sample_size, unet.config.in_channels, tuple(unet.config.block_out_channels))
        if theirs != ours:
            raise TrainingMismatch(f"--init-from {args.init_from} has a UNet of size {theirs[0]}, {theirs[1]} channel(s), "
                                   f"widths {','.join(map(str, theirs[2]))}; this run builds size {ours[0]}, {ours[1]} "
                                   f"channel(s), widths {','.join(map(str, ours[2]))} (--size, the data's channels, "
                                   f"--widths must match it)")
        unet.load_state_dict(init.state_dict())
        if vae is not None and (Path(args.init_from) / "vqvae").is_dir():
            vae.load_state_dict(AutoencoderKL.from_pretrained(Path(args.init_from) / "vqvae").state_dict())
        acc.print(f"initialised the networks from {args.init_from}")
    ema = EMAModel(unet.parameters(), decay=0.999, use_ema_warmup=True, power=0.75)
    if ckpt.exists():
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        check_resume(saved, settings, ckpt)
        if vae is not None and saved["state"]["step"] > 0 and saved["state"]["ae_step"] < args.ae_steps:
            raise TrainingMismatch(f"the denoiser in {ckpt} was trained on the autoencoder of {saved['state']['ae_step']} "
                                   f"steps; --ae-steps {args.ae_steps} would retrain the autoencoder under it (their "
                                   f"latents would no longer match): keep --ae-steps {saved['state']['ae_step']}, or "
                                   f"start afresh with another --work")
        unet.load_state_dict(saved["unet"]); opt.load_state_dict(saved["opt"]); ema.load_state_dict(saved["ema"])
        if vae is not None:
            vae.load_state_dict(saved["vae"]); ae_opt.load_state_dict(saved["ae_opt"])
        state = saved["state"]; gen.set_state(saved["gen"])
        state.setdefault("validation", [])  # a state from before the validation split
        state.setdefault("schedule", [{"step": 0, "lr": saved["opt"]["param_groups"][0]["lr"], "batch_size": None}])
        for group in opt.param_groups:  # the saved optimiser's lr was restored over --lr (and recorded as used)
            group["lr"] = args.lr
        if vae is not None and "scaling_factor" in state:  # the factor the UNet's latents were scaled by
            vae.register_to_config(scaling_factor=state["scaling_factor"])
        acc.print(f"resumed from {ckpt} at step {state['step']} (ae {state['ae_step']})")
    state.setdefault("schedule", [])
    last = state["schedule"][-1] if state["schedule"] else None
    if last is None or ((last["lr"], last["batch_size"]) != (args.lr, args.batch_size) and state["step"] < args.steps):
        if last is not None:
            acc.print(f"note: from step {state['step']} on: --lr {args.lr:g}, --batch-size {args.batch_size} (before: "
                      f"lr {last['lr']:g}, batch {last['batch_size'] or 'not recorded'}); training.json and the model "
                      f"card record which steps ran with which")
        state["schedule"].append({"step": state["step"], "lr": args.lr, "batch_size": args.batch_size})
    if state["step"] >= args.steps and (vae is None or state["ae_step"] >= args.ae_steps):
        acc.print(f"already trained for {state['step']} steps (--steps {args.steps}): nothing to train; the prior is "
                  f"exported again")
    acc.print(f"unet parameters: {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M")
    unet, opt = acc.prepare(unet, opt)
    if vae is not None:
        vae, ae_opt = acc.prepare(vae, ae_opt)
    t_start = time.time() - state["seconds"]
    budget_end = time.time() + 60 * args.max_minutes

    exported_steps = []  # the steps exported by this invocation

    def save_and_export():
        exported_steps.append(state["step"])
        state["seconds"] = time.time() - t_start
        if not acc.is_main_process:
            return
        raw_unet, raw_vae = acc.unwrap_model(unet), (acc.unwrap_model(vae) if vae is not None else None)
        export = copy.deepcopy(raw_unet); ema.copy_to(export.parameters())
        if validation is not None and state["step"] > 0 and state["step"] not in [v["step"] for v in state["validation"]]:
            check = validate(export, *validation, args.kind, sched, raw_vae, state["step"])  # the exported weights
            state["validation"].append(check)
            acc.print(f"validation at step {check['step']}: denoising loss held-out {check['heldout_loss']:.4f}, "
                      f"training {check['train_loss']:.4f} (ratio {check['ratio']:.2f})")
        payload = {"unet": raw_unet.state_dict(), "opt": opt.state_dict(), "ema": ema.state_dict(),
                   "state": state, "gen": gen.get_state(), "settings": settings}
        if raw_vae is not None:
            payload.update(vae=raw_vae.state_dict(), ae_opt=ae_opt.state_dict())
        torch.save(payload, str(ckpt) + ".tmp"); os.replace(str(ckpt) + ".tmp", ckpt)
        if args.export_fp16:
            export = export.half()
        out.mkdir(parents=True, exist_ok=True)
        if args.kind == "ddpm":
            save_pretrained_prior(out, "DDPMPipeline", {"unet": export, "scheduler": sched})
        elif args.kind == "flow":
            save_pretrained_prior(out, "FlowMatchingPipeline",
                        {"unet": export, "scheduler": FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000)})
        else:
            save_pretrained_prior(out, "LDMPipeline", {"unet": export, "vqvae": raw_vae, "scheduler": sched})
        record = {**state, **vars(args), "work": str(work.resolve()), "data_resolved": data, "channels": channels,
                  "data_kind": data_kind(args.data)}
        record["max_minutes"] = None if math.isinf(args.max_minutes) else args.max_minutes  # JSON has no Infinity
        record["heldout"] = split
        if raw_vae is not None and state["ae_step"] > 0:  # the autoencoder bounds every latent reconstruction
            record["autoencoder_psnr"] = autoencoder_psnr(raw_vae, ae_images)
        (out / "training.json").write_text(json.dumps(record, indent=2))
        write_model_card(out, record, sum(p.numel() for p in raw_unet.parameters()))
        acc.print(f"saved step {state['step']} (ae {state['ae_step']}) after {state['seconds'] / 60:.1f} min")

    try:  # Ctrl-C: the steps done are saved and exported (they were lost back to the last save, with a traceback)
        # Stage 1 (latent kind): the autoencoder, L1 + small KL; then fix its latent scaling.
        if vae is not None and state["ae_step"] < args.ae_steps:
            vae.train()
            while state["ae_step"] < args.ae_steps and time.time() < budget_end:
                x = next_batch().to(acc.device)
                with acc.autocast():
                    post = acc.unwrap_model(vae).encode(x).latent_dist
                    rec = acc.unwrap_model(vae).decode(post.sample()).sample
                    loss = F.l1_loss(rec, x) + 1e-6 * post.kl().mean()
                ae_opt.zero_grad(set_to_none=True); acc.backward(loss); ae_opt.step()
                state["ae_step"] += 1
                if state["ae_step"] % 50 == 0 or state["ae_step"] == args.ae_steps:
                    acc.print(f"ae step {state['ae_step']} loss {loss.item():.4f}")
            with torch.no_grad():
                z = acc.unwrap_model(vae).encode(torch.cat([next_batch() for _ in range(4)]).to(acc.device)).latent_dist.mean
            acc.unwrap_model(vae).register_to_config(scaling_factor=float(1.0 / z.std()))
            state["scaling_factor"] = acc.unwrap_model(vae).config.scaling_factor  # restored on resume
            save_and_export()
            if state["ae_step"] < args.ae_steps:
                acc.print(f"stopped by --max-minutes in the autoencoder stage (step {state['ae_step']} of "
                          f"{args.ae_steps}); the exported prior's denoiser is untrained: run the same command again")
                return

        unet.train()
        if vae is not None:
            vae.eval()
        last_save = state["step"]
        window_losses = []  # detached, summed at each print: no host sync per step
        while state["step"] < args.steps and time.time() < budget_end:
            x = next_batch().to(acc.device)
            if vae is not None:
                with torch.no_grad():
                    v = acc.unwrap_model(vae)
                    x = v.encode(x).latent_dist.sample() * v.config.scaling_factor
            noise = torch.randn(x.shape, generator=gen).to(acc.device)
            with acc.autocast():
                if args.kind == "flow":
                    sigma = torch.rand(x.shape[0], generator=gen).to(acc.device)
                    xs = (1 - sigma[:, None, None, None]) * x + sigma[:, None, None, None] * noise
                    loss = F.mse_loss(unet(xs, sigma * 1000).sample.float(), noise - x)
                else:
                    t = torch.randint(0, 1000, (x.shape[0],), generator=gen).to(acc.device)
                    loss = F.mse_loss(unet(sched.add_noise(x, noise, t), t).sample.float(), noise)
            opt.zero_grad(set_to_none=True); acc.backward(loss); opt.step()
            ema.step(acc.unwrap_model(unet).parameters())
            state["step"] += 1
            window_losses.append(loss.detach())
            if state["step"] % 50 == 0 or state["step"] == args.steps:  # (and the last step: a short run shows one)
                state["loss"] = float(torch.stack(window_losses).mean())  # the mean since the last print, not one batch's
                acc.print(f"step {state['step']} loss {state['loss']:.4f} (mean of the last {len(window_losses)} steps; "
                          f"{(time.time() - t_start) / 60:.1f} min)")
                window_losses = []
            if state["step"] - last_save >= args.save_every:
                save_and_export(); last_save = state["step"]
        if not exported_steps or exported_steps[-1] != state["step"]:  # (not twice at one step; a finished run is exported again)
            save_and_export()
        if state["step"] < args.steps:
            acc.print(f"stopped by --max-minutes at step {state['step']} of {args.steps}: the exported prior is "
                      f"part-trained (its training.json says so); run the same command again to continue")

    except KeyboardInterrupt:
        if not exported_steps or exported_steps[-1] != state["step"]:
            save_and_export()
        print(f"\ntrain_prior: interrupted at step {state['step']} of {args.steps}"
              + (f" (autoencoder {state['ae_step']} of {args.ae_steps})" if vae is not None else "")
              + "; saved and exported (part-trained): run the same command again to continue", file=sys.stderr)
        raise SystemExit(130) from None

CARD_MARK = "<!-- written by scripts/train_prior.py: rewritten at every save -->"
_KEPT_CARDS: set = set()  # README.md files of --out not written here (noted once)


def schedule_text(record: dict) -> str:
    """``batch 64, lr 0.002``, or per segment when a resume changed them: ``batch 8, lr 0.0001 from
    step 60 (steps 0–60: batch 4, lr 0.002)``."""
    segments = record.get("schedule") or [{"step": 0, "lr": record["lr"], "batch_size": record["batch_size"]}]
    last = segments[-1]
    text = f"batch {last['batch_size']}, lr {last['lr']:g}" + (f" from step {last['step']}" if len(segments) > 1 else "")
    earlier = [f"steps {a['step']}–{b['step']}: batch {a['batch_size'] or 'not recorded'}, lr {a['lr']:g}"
               for a, b in zip(segments, segments[1:])]
    return text + (f" ({'; '.join(earlier)})" if earlier else "")


def write_model_card(out: Path, record: dict, parameters: int) -> None:
    """``README.md`` in the exported prior: what it was trained on, for how long, and whether it
    memorises its training images (the held-out check).  A README not written here (the bundled
    priors' model cards, made by scripts/model_card.py) is left alone."""
    card = out / "README.md"
    if card.is_file() and CARD_MARK not in card.read_text():
        if card not in _KEPT_CARDS:  # said once per run, not at every save
            _KEPT_CARDS.add(card)
            print(f"note: {card} is not this script's model card: kept, and no card written (training.json has the record)")
        return
    done, asked = record["step"], record["steps"]
    window = f", window {record['window']}" if record.get("data_kind") in ("dicom", "nifti") else ""
    lines = [CARD_MARK, f"# {out.name}: a {record['kind']} prior trained with ipsolve", "",
             f"* **Data**: {record['data_resolved']} ({record['data_kind']}{window}), {record['channels']} channel(s), "
             f"{record['size']} px.",
             f"* **Held out for validation**: {record['heldout']}.",
             f"* **Training**: {done} of {asked} steps" + (" — **part-trained**" if done < asked else "")
             + (f" (autoencoder {record['ae_step']} of {record['ae_steps']})" if record["kind"] == "latent" else "")
             + f", {schedule_text(record)}, UNet widths {record['widths']} "
             f"({parameters / 1e6:.2f} M parameters), {record['seconds'] / 60:.1f} min"
             + (f"; last loss {record['loss']:.4f} (mean of the last steps)" if "loss" in record else "")
             + (f"; started from the weights of {record['init_from']}" if record.get("init_from") else "") + "."]
    ae = record.get("autoencoder_psnr")
    if ae:
        lines.append(f"* **Autoencoder round trip**: {ae['psnr']:.2f} dB on {ae['images']} "
                     f"{'held-out' if record['heldout'] != GENERATED and not record['heldout'].startswith('none') else 'generated'}"
                     f" image(s) — no latent reconstruction can be better"
                     + (" (**below 25 dB: the autoencoder, not the prior, limits every latent solver; train it longer, "
                        "--ae-steps**)" if ae["psnr"] < 25 else "") + ".")
    checks = record.get("validation") or []
    if checks:
        last = checks[-1]
        verdict = (f"**it denoises its training images clearly better than new ones: it memorises them** (ratio above "
                   f"{MEMORISING_RATIO}) — it would paint them into reconstructions; train on more images or for fewer steps "
                   f"(the earliest check below with a ratio near 1)" if last["ratio"] > MEMORISING_RATIO else
                   "no sign of memorising its training images")
        lines += ["", f"Denoising loss of the exported (EMA) weights at noise levels {', '.join(map(str, LEVELS))} "
                      f"with fixed noise: held-out {last['heldout_loss']:.4f}, training {last['train_loss']:.4f}, "
                      f"ratio {last['ratio']:.2f} — {verdict}.", "",
                  "| step | held-out loss | training loss | ratio |", "|---|---|---|---|"]
        lines += [f"| {c['step']} | {c['heldout_loss']:.4f} | {c['train_loss']:.4f} | {c['ratio']:.2f} |" for c in checks]
    where = str(out.resolve())
    lines += ["", f"Use it: `ipsolve prior={where}` (or `ipsolve.load_prior({where!r})`)"
              + (f" with `data.window={record['window']}`" if window else "")
              + (" and `data.units=HU`" if window and record.get("units") else "") + ".",
              "`training.json` holds every setting; the same train_prior.py command continues the training.", ""]
    card.write_text("\n".join(lines))
    if ae and ae["psnr"] < 25:
        print(f"warning: the autoencoder returns images at {ae['psnr']:.2f} dB (below 25): it, not the prior, limits every "
              f"latent reconstruction; train it longer (--ae-steps); see {card}")
    if checks and checks[-1]["ratio"] > MEMORISING_RATIO:
        print(f"warning: the prior denoises its training images clearly better than the held-out ones (loss ratio "
              f"{checks[-1]['ratio']:.2f} > {MEMORISING_RATIO}): it memorises them; see {card}")


def data_kind(data: str) -> str:
    """``builtin`` / ``images`` / ``dicom`` / ``nifti``: what the prior was trained on (a medical
    prior's window then matters when reconstructing; ipsolve warns when they differ)."""
    if data in BUILTIN_DATA and not Path(data).exists():
        return "builtin"
    from ipsolve.io.sources import guess_format

    return guess_format(data)


if __name__ == "__main__":
    from ipsolve.runner.errors import script_main

    script_main(main)
