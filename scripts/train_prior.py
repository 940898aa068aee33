"""Train a small prior and save it in the layouts ipsolve's loaders read.

Kinds (all diffusers networks, saved with ``save_pretrained``):
  ddpm    ε-prediction ``UNet2DModel`` + ``DDPMScheduler``      (DDPMPipeline layout)
  flow    velocity ``UNet2DModel`` + ``FlowMatchEulerDiscreteScheduler`` (diffusers'
          rectified-flow convention: timestep = σ·1000, x_σ = (1-σ)x + σz, target z - x)
  latent  ``AutoencoderKL`` (stage 1) + latent ε-prediction UNet (stage 2) (LDMPipeline layout)

Data: ``phantom`` (the broad phantom family, unlimited; its held-out family is never drawn), ``ellipses`` (the narrow generator), ``photo`` (bundled natural photos,
multi-scale crops), a folder of images, or DICOM / NIfTI scans (a DICOM folder with any number of
series, a NIfTI file or folder: every slice of every volume, windowed per volume with ``--window``).  Training resumes from ``<work>/train_state.pt``;
``--steps`` is the total to reach, ``--max-minutes`` stops early (state saved, model
exported), so the job can run in the background and be continued later.

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


def make_unet(size, channels, widths):
    return UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels,
                       block_out_channels=widths, layers_per_block=1, norm_num_groups=8,
                       # no attention: at 32 px it costs 35% more time per step on a CPU for little gain
                       down_block_types=("DownBlock2D",) * len(widths), up_block_types=("UpBlock2D",) * len(widths))


def make_vae(channels, latent_channels):
    return AutoencoderKL(in_channels=channels, out_channels=channels, latent_channels=latent_channels,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=16)


BUILTIN_DATA = ("phantom", "ellipses", "photo", "kernels")


def batches(data, size, batch_size, generator, window="auto"):
    """``(next_batch, channels)``: a function drawing a training batch in [-1, 1], and its channel count.
    A built-in name that is also an existing path is the path (with a note)."""
    if data in BUILTIN_DATA and Path(data).exists():
        print(f"note: --data {data} is a folder here: training on it, not on the built-in {data!r} data "
              f"(give ./{data}/ to silence this, or move it to use the built-in)")
        data = str(Path(data).resolve())
    elif data == "phantom":  # the broad family; its held-out family (blobs) is never drawn
        return (lambda: datasets.phantoms(batch_size, size, generator)), 1
    if data == "ellipses":  # the first bundled priors' narrow generator
        return (lambda: datasets.random_ellipses(batch_size, size, generator)), 1
    if data == "photo":
        return (lambda: datasets.random_photo_crops(batch_size, size, generator)), 3
    if data == "kernels":  # BlindDPS's kernel prior: a pool of motion (75 %) and Gaussian (25 %) kernels, resampled
        pool = datasets.blur_kernels(8000, size, generator)
        return (lambda: pool[torch.randint(len(pool), (batch_size,), generator=generator)]), 1
    # a folder of images, DICOM series or NIfTI volumes (every slice, each volume windowed as a whole:
    # reconstruct with the same data.window)
    from ipsolve.io import load_training_slices
    images = load_training_slices(data, size, window=window)
    print(f"training data: {len(images)} slice(s)/image(s) of {data}, {images.shape[1]} channel(s)")
    return (lambda: images[torch.randint(len(images), (batch_size,), generator=generator)]), images.shape[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=["ddpm", "flow", "latent"], required=True)
    ap.add_argument("--data", default="phantom",
                    help="phantom (broad family) | ellipses (narrow) | photo | kernels (motion + Gaussian kernels, "
                         "BlindDPS kernel prior) | a folder of images, a DICOM folder or NIfTI file/folder (every slice)")
    ap.add_argument("--window", default="auto",
                    help="DICOM/NIfTI intensity window per volume: auto | ct_soft_tissue | lo,hi (use the same "
                         "data.window when reconstructing)")
    ap.add_argument("--out", required=True, help="export directory (the prior loaded by ipsolve)")
    ap.add_argument("--work", default=None,
                    help="training state directory (default outputs/training/<out name>-<hash of the --out path>)")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--widths", default="32,64,64", help="UNet block widths")
    ap.add_argument("--steps", type=int, default=3000, help="total steps to reach (UNet)")
    ap.add_argument("--ae-steps", type=int, default=1500, help="autoencoder steps (latent kind)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--max-minutes", type=float, default=float("inf"))
    ap.add_argument("--save-every", type=int, default=200)
    ap.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--export-fp16", action="store_true",
                    help="store the exported UNet weights in float16 (half the size; loaded as float32)")
    ap.add_argument("--init-from", default=None,
                    help="start a new run from the UNet of this prior directory (e.g. a flow prior from a DDPM one)")
    argv = sys.argv[1:]
    for i, a in enumerate(argv[:-1]):  # "--window -160,240": argparse would take the value for an option
        if a == "--window" and argv[i + 1][:1] == "-" and argv[i + 1][1:2].isdigit():
            argv[i:i + 2] = [f"--window={argv[i + 1]}"]
            break
    args = ap.parse_args(argv)

    try:
        train(args)
    except (ValueError, FileNotFoundError, NotADirectoryError, TrainingMismatch) as err:
        raise SystemExit(f"train_prior: error: {err}") from None


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
    differ = [f"--{k.replace('_', '-')} {before.get(k)!r} (now {v!r})" for k, v in settings.items()
              if k != "out" and before.get(k) != v]
    if differ:
        raise TrainingMismatch(f"the training state {ckpt} was made with {', '.join(differ)}; continue with its "
                               f"settings, or start afresh with another --work (or remove {ckpt.parent})")


def train(args):
    acc = Accelerator(mixed_precision=args.mixed_precision)
    out = Path(args.out)
    work = work_dir(args, out)
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
    next_batch, channels = batches(args.data, args.size, args.batch_size, gen, args.window)
    data = args.data if args.data in BUILTIN_DATA and not Path(args.data).exists() else str(Path(args.data).resolve())
    settings = {"kind": args.kind, "size": args.size, "widths": list(widths), "channels": channels, "data": data,
                "window": args.window, "out": str(out.resolve())}
    work.mkdir(parents=True, exist_ok=True)

    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                          clip_sample=False)
    vae = make_vae(channels, 4) if args.kind == "latent" else None
    unet_size, unet_ch = (args.size // 2, 4) if vae is not None else (args.size, channels)
    unet = make_unet(unet_size, unet_ch, widths)
    state = {"step": 0, "ae_step": 0, "seconds": 0.0}
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
        if vae is not None and "scaling_factor" in state:  # the factor the UNet's latents were scaled by
            vae.register_to_config(scaling_factor=state["scaling_factor"])
        acc.print(f"resumed from {ckpt} at step {state['step']} (ae {state['ae_step']})")
    acc.print(f"unet parameters: {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M")
    unet, opt = acc.prepare(unet, opt)
    if vae is not None:
        vae, ae_opt = acc.prepare(vae, ae_opt)
    t_start = time.time() - state["seconds"]
    budget_end = time.time() + 60 * args.max_minutes

    def save_and_export():
        state["seconds"] = time.time() - t_start
        if not acc.is_main_process:
            return
        raw_unet, raw_vae = acc.unwrap_model(unet), (acc.unwrap_model(vae) if vae is not None else None)
        payload = {"unet": raw_unet.state_dict(), "opt": opt.state_dict(), "ema": ema.state_dict(),
                   "state": state, "gen": gen.get_state(), "settings": settings}
        if raw_vae is not None:
            payload.update(vae=raw_vae.state_dict(), ae_opt=ae_opt.state_dict())
        torch.save(payload, str(ckpt) + ".tmp"); os.replace(str(ckpt) + ".tmp", ckpt)
        export = copy.deepcopy(raw_unet); ema.copy_to(export.parameters())
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
        (out / "training.json").write_text(json.dumps(record, indent=2))
        acc.print(f"saved step {state['step']} (ae {state['ae_step']}) after {state['seconds'] / 60:.1f} min")

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
            if state["ae_step"] % 50 == 0:
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
        if state["step"] % 50 == 0 or state["step"] == args.steps:  # (and the last step: a short run shows one)
            acc.print(f"step {state['step']} loss {loss.item():.4f} ({(time.time() - t_start) / 60:.1f} min)")
        if state["step"] - last_save >= args.save_every:
            save_and_export(); last_save = state["step"]
    save_and_export()
    if state["step"] < args.steps:
        acc.print(f"stopped by --max-minutes at step {state['step']} of {args.steps}: the exported prior is "
                  f"part-trained (its training.json says so); run the same command again to continue")


def data_kind(data: str) -> str:
    """``builtin`` / ``images`` / ``dicom`` / ``nifti``: what the prior was trained on (a medical
    prior's window then matters when reconstructing; ipsolve warns when they differ)."""
    if data in BUILTIN_DATA and not Path(data).exists():
        return "builtin"
    from ipsolve.io.sources import guess_format

    return guess_format(data)


if __name__ == "__main__":
    main()
