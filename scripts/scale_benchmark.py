"""Speed and memory at the papers' scale: random-weight networks with the real architectures,
built from their published configurations (no downloads), each solver at its paper NFE.

    python scripts/scale_benchmark.py --scale paper --device cuda --out OUT   # one GPU, ≈ 6 min (scripts/gpu_check.sh)
    python scripts/scale_benchmark.py --scale tiny --device cpu --size 64 --budget 2   # smoke: the same code path
    python scripts/benchmark.py --scale paper ...                                     # the same, from the benchmark

Networks: DPS's FFHQ-256 ADM (``ffhq_adm``: 128 channels, 1 res-block, attention at 16, learned
sigma), SD 1.5's UNet + VAE at 512 px, SD3-medium's transformer + VAE at 512 px, FLUX.1-dev's
transformer + VAE at 512 px (the last two with bf16 weights).  Text conditioning is a fixed random
embedding of the right shape (the encoders are not part of the loop).  ``--scale tiny``: the same
classes with a few thousand parameters (for tests and CPU smoke runs).

Every solver is timed for a fixed number of its steps/iterations (``--budget``) after a warm-up,
and the time is extrapolated linearly to the paper's count (DPS 1000 steps, DAPS-1K 200 × 5,
DMPlug 5000 iterations × 3 calls, ReSample 500 steps — the last from its measured components and
its step plan, see :func:`resample_rows`).  Columns: seconds per image, images per hour, peak
memory (``torch.cuda.max_memory_allocated``; the process's peak RSS on a CPU) and the overhead
wall ÷ (NFE × the same network's cost at the same batch and precision, measured in the same
run) — forward + backward for the guided solvers, forward only for DAPS's ODE (its MCMC steps
call only the operator and count as overhead).  Results: ``scale.csv``, ``performance.md``,
``scale.png`` (s/image vs batch) and ``env.json`` in ``--out``; a section that fails records its
error and the others go on; ``--deadline`` skips what would not finish in time.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

from ipsolve import make_operator, make_solver, solve
from ipsolve.priors.architectures import FLUX_DEV, SD3_MEDIUM, SD15_UNET, VAE_SD
from ipsolve.priors.base import DiffusionPrior, FlowPrior, LatentPrior
from ipsolve.profiling import (autoencoder_seconds, graph_breaks, network_seconds, peak_memory_bytes, reset_peak_memory,
                               synchronize)

GIB = 2 ** 30
START = time.time()

# ---------------------------------------------------------------- architectures
# published configurations: ipsolve.priors.architectures (foundation_memory.py uses the same)
# text tokens and pooled width each family conditions on: (sequence, width, pooled)
TEXT = {"sd15": (77, 768, None), "sd3": (333, 4096, 2048), "flux": (512, 4096, 768)}
# tiny stand-ins: the same classes (a few thousand parameters), for tests and CPU smoke runs
TINY = {
    "adm": dict(num_channels=32, num_res_blocks=1, attention_resolutions="8", num_head_channels=16),
    "sd15_unet": dict(in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
                      cross_attention_dim=16, attention_head_dim=4, norm_num_groups=8,
                      down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
    "sd3": dict(patch_size=2, in_channels=16, num_layers=1, attention_head_dim=8, num_attention_heads=2,
                joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=16, out_channels=16,
                pos_embed_max_size=32),
    "flux": dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
                 num_attention_heads=2, joint_attention_dim=16, pooled_projection_dim=16, guidance_embeds=True,
                 axes_dims_rope=(4, 6, 6)),
    "vae": dict(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4),
}
TINY_TEXT = {"sd15": (8, 16, None), "sd3": (8, 16, 16), "flux": (8, 16, 16)}
PAPER_NFE = {"dps": 1000, "daps": 1000, "dmplug": 5000 * 3, "resample": 500}
# DMPlug with a stopping rule: the median share of the budget the armed rule (the CPU presets')
# used in scripts/stopping_study.py's 1500-iteration runs (README "Stopping"): ≈ 450 / 1500
STOPPING_SHARE = 0.3


def log(msg: str) -> None:
    print(f"[{time.time() - START:6.1f} s] {msg}", flush=True)


def scaled_linear_alphas_cumprod(start=0.00085, end=0.012, steps=1000) -> torch.Tensor:
    """Stable Diffusion's ``scaled_linear`` β schedule."""
    betas = torch.linspace(start ** 0.5, end ** 0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


def text_embeddings(family: str, tiny: bool, device, dtype) -> dict:
    seq, width, pooled = (TINY_TEXT if tiny else TEXT)[family]
    g = torch.Generator().manual_seed(0)
    out = {"prompt_embeds": torch.randn(1, seq, width, generator=g).to(device, dtype)}
    if pooled:
        out["pooled_prompt_embeds"] = torch.randn(1, pooled, generator=g).to(device, dtype)
    return out


def _build(cls, config, device, dtype):
    """``cls(**config)`` with its parameters created on ``device`` (no CPU copy of a 12B-parameter
    model), then cast to ``dtype`` as ``from_pretrained(torch_dtype=...)`` does; random init — only
    the architecture matters for speed and memory."""
    with torch.device(device):
        module = cls(**config)
    return module.to(dtype=dtype).eval().requires_grad_(False)


def build_prior(name: str, scale: str, size: int, device, dtype=torch.float32, checkpointing: bool = False):
    """A random-weight prior of the named paper architecture: ``adm`` (pixel diffusion at
    ``size``), ``sd15`` (latent diffusion), ``sd3`` / ``flux`` (latent flow; ``size`` in pixels)."""
    import diffusers

    from ipsolve.priors.adm import DEFAULT_CHANNEL_MULT as ADM_CHANNEL_MULT, ADMUNet, adm_config, create_adm_unet
    from ipsolve.priors.analytic import linear_alphas_cumprod
    from ipsolve.priors.foundation import FluxNetwork, SD3Network, StableDiffusionNetwork

    tiny = scale == "tiny"
    if name == "adm":
        # guided-diffusion defines channel_mult for 64-512 px only; other sizes (a 32-px smoke run)
        # take improved-diffusion's 32-px (1, 2, 2, 2)
        mult = {} if size in ADM_CHANNEL_MULT else {"channel_mult": "1,2,2,2"}
        cfg = adm_config(image_size=size, **(TINY["adm"] if tiny else {}), **mult)
        previous = torch.get_default_dtype()
        with torch.device(device):
            net = create_adm_unet(**cfg)
        assert isinstance(net, ADMUNet) and torch.get_default_dtype() == previous
        net = net.to(device=device, dtype=dtype).eval().requires_grad_(False)
        if checkpointing:
            raise ValueError("the ADM network has no gradient checkpointing switch here")
        return DiffusionPrior(net, linear_alphas_cumprod(), size, 3)
    vae_cfg = dict(TINY["vae"] if tiny else VAE_SD)
    if name == "sd15":
        vae = _build(diffusers.AutoencoderKL, {**vae_cfg, "latent_channels": 4}, device, dtype)
        unet = _build(diffusers.UNet2DConditionModel, {**(TINY["sd15_unet"] if tiny else SD15_UNET),
                                                       "sample_size": size // 8}, device, dtype)
        if checkpointing:
            unet.enable_gradient_checkpointing(), vae.enable_gradient_checkpointing()
        net = StableDiffusionNetwork(unet, text_embeddings("sd15", tiny, device, dtype))
        inner = DiffusionPrior(net, scaled_linear_alphas_cumprod(), size // 8, 4)
        return LatentPrior(vae, inner, size, 3, scaling_factor=0.18215)
    if name not in ("sd3", "flux"):
        raise ValueError(f"unknown architecture {name!r}; known: adm, sd15, sd3, flux")
    vae_cfg.update(latent_channels=16, use_quant_conv=False, use_post_quant_conv=False)
    vae = _build(diffusers.AutoencoderKL, vae_cfg, device, dtype)
    emb = text_embeddings(name, tiny, device, dtype)
    if name == "sd3":
        model = _build(diffusers.SD3Transformer2DModel, {**(TINY["sd3"] if tiny else SD3_MEDIUM),
                                                         "sample_size": size // 8}, device, dtype)
        net, scale_shift = SD3Network(model, emb), (1.5305, 0.0609)
    else:
        model = _build(diffusers.FluxTransformer2DModel, TINY["flux"] if tiny else FLUX_DEV, device, dtype)
        text_ids = torch.zeros(emb["prompt_embeds"].shape[1], 3, device=device, dtype=dtype)
        net, scale_shift = FluxNetwork(model, emb, text_ids, 3.5), (0.3611, 0.1159)
    if checkpointing:
        model.enable_gradient_checkpointing(), vae.enable_gradient_checkpointing()
    inner = FlowPrior(net, size // 8, 16, network_convention="diffusers", timestep_scale=1000.0)
    return LatentPrior(vae, inner, size, 3, scaling_factor=scale_shift[0], shift_factor=scale_shift[1])


def parameters_of(prior) -> int:
    return sum(p.numel() for p in prior.parameters())


# ---------------------------------------------------------------- measuring one solver
def phantom_batch(batch: int, size: int, device, channels: int = 3) -> torch.Tensor:
    from ipsolve import datasets

    x = datasets.heldout_phantoms(batch, size).to(device)
    return x.expand(-1, channels, -1, -1).contiguous()


def timed_solve(prior, op, name: str, params: dict, batch: int, size: int, autocast: bool, warm: dict,
                channels: int = 3):
    """Wall seconds and peak memory of one ``solve`` (after a warm-up run with ``warm``'s budget)."""
    device = prior.device
    y = op.measure(phantom_batch(batch, size, device, channels), 0.01, generator=torch.Generator().manual_seed(0))
    gens = [torch.Generator().manual_seed(i) for i in range(batch)]
    solve(y, op, prior, make_solver(name, progress=False, autocast=autocast, **{**params, **warm}), generator=gens)
    synchronize(device)
    reset_peak_memory(device)
    t0 = time.perf_counter()
    res = solve(y, op, prior, make_solver(name, progress=False, autocast=autocast, **params), generator=gens)
    synchronize(device)
    return time.perf_counter() - t0, peak_memory_bytes(device), res


def row(model, solver, batch, precision, options, units, per_image, net_s, nfe_timed, wall, peak, note=""):
    """One table row: ``per_image`` seconds at the paper's NFE; overhead = wall ÷ (NFE × network)."""
    overhead = wall / (nfe_timed * net_s) if net_s and nfe_timed else float("nan")
    return dict(model=model, solver=solver, batch=batch, precision=precision, options=options, timed=units,
                s_per_image=per_image, images_per_hour=3600 / per_image if per_image else float("nan"),
                peak_gib=peak / GIB, network_ms=net_s * 1000 if net_s else float("nan"), overhead=overhead, note=note)


def precisions(args):
    return [p for p in ("fp32", "bf16") if p in args.precisions]


def adm_rows(args, device):
    """DPS-1000, DAPS-1K and DMPlug (5000 × 3) with DPS's FFHQ-256 ADM, SR ×4."""
    size = args.size or 256
    prior = build_prior("adm", args.scale, size, device)
    log(f"ADM {size} px: {parameters_of(prior) / 1e6:.1f} M parameters")
    op = make_operator("super_resolution", scale=4).to(device)
    rows = []
    for batch in args.batches:
        for precision in precisions(args):
            bf16 = precision == "bf16"
            # at the largest batch in bf16 also channels_last and cuDNN's autotuner (torch.backends.cudnn.benchmark:
            # fixed shapes in a solver's loop, so each convolution's fastest algorithm is found once; off by default
            # in torch and ipsolve — the chosen algorithms may vary between runs at rounding level)
            for options in (["plain", "channels_last", "cudnn_benchmark"] if bf16 and batch == max(args.batches)
                            else ["plain"]):
                if options == "channels_last":
                    prior.optimize(channels_last=True)
                torch.backends.cudnn.benchmark = options == "cudnn_benchmark"
                net_fb = network_seconds(prior, batch, backward=True, autocast=bf16)
                k = args.budget
                wall, peak, _ = timed_solve(prior, op, "dps", dict(steps=k), batch, size, bf16, dict(steps=2))
                rows.append(row("ADM FFHQ-256", "dps", batch, precision, options, f"{k} of 1000 steps",
                                wall / k * 1000 / batch, net_fb, k, wall, peak))
                log(f"  dps b{batch} {precision} {options}: {rows[-1]['s_per_image']:.2f} s/image, overhead {rows[-1]['overhead']:.2f}")
                wall, peak, _ = timed_solve(prior, op, "dmplug", dict(iterations=k, stop=()), batch, size, bf16,
                                            dict(iterations=2))
                r = row("ADM FFHQ-256", "dmplug", batch, precision, options, f"{k} of 5000 iterations × 3 calls",
                        wall / k * 5000 / batch, net_fb, 3 * k, wall, peak,
                        note=f"with the stopping rule (≈{STOPPING_SHARE:.0%} of the budget): "
                             f"{3600 / (wall / k * 5000 * STOPPING_SHARE / batch):.1f} images/hour")
                rows.append(r)
                log(f"  dmplug b{batch} {precision} {options}: {r['s_per_image']:.1f} s/image")
                levels = max(1, k // 10)
                net_f = network_seconds(prior, batch, backward=False, autocast=bf16)
                wall, peak, _ = timed_solve(prior, op, "daps", dict(annealing_steps=levels, ode_steps=5), batch, size,
                                            bf16, dict(annealing_steps=1))
                rows.append(row("ADM FFHQ-256", "daps", batch, precision, options,
                                f"{levels} of 200 levels × 5 ODE steps (+100 Langevin steps each)",
                                wall / levels * 200 / batch, net_f, 5 * levels, wall, peak,
                                note="network = forward only; the Langevin steps are operator-only"))
                log(f"  daps b{batch} {precision} {options}: {rows[-1]['s_per_image']:.2f} s/image")
                if options == "channels_last":
                    prior.optimize(channels_last=False)  # back to the plain layout
                torch.backends.cudnn.benchmark = False
    return rows


def compile_rows(args, device):
    """``torch.compile`` of the denoiser (compile time reported): DPS on the bundled 32-px prior at
    batch 1 — the launch-bound case — in the default mode and with CUDA graphs
    (``reduce-overhead``), then DPS with the FFHQ-256 ADM at the largest batch in bf16."""
    from ipsolve import load_prior

    rows = []
    op = make_operator("super_resolution", scale=4).to(device)
    # (model, build, batch, size, bf16, mode, seconds a case needs on an H200: compile + timing)
    cases = [("bundled 32 px (CPU presets)", lambda: load_prior("bundled:phantom-ddpm", device=device), 1, 32, False, mode,
              40) for mode in (True, "reduce-overhead")]
    cases.append(("ADM FFHQ-256", lambda: build_prior("adm", args.scale, args.size or 256, device), max(args.batches),
                  args.size or 256, True, True, 100))
    for model, make, batch, size, bf16, mode, needs in cases:
        if args.deadline is not None and time.time() - START > args.deadline - needs:
            log(f"  compile {model} {mode}: skipped (deadline)")
            continue
        try:
            prior = make()
            channels = prior.channels
            graphs, breaks = graph_breaks(prior)  # dynamo's trace of the module compiled below
            plain = network_seconds(prior, batch, backward=True, autocast=bf16)
            k = args.budget
            wall0, _, _ = timed_solve(prior, op, "dps", dict(steps=k), batch, size, bf16, dict(steps=2), channels)
            prior.optimize(compile=mode)
            t0 = time.perf_counter()
            network_seconds(prior, batch, backward=True, autocast=bf16, repeats=1)
            compile_s = time.perf_counter() - t0
            net = network_seconds(prior, batch, backward=True, autocast=bf16)
            wall, peak, _ = timed_solve(prior, op, "dps", dict(steps=k), batch, size, bf16, dict(steps=2), channels)
        except Exception as err:  # noqa: BLE001 - a mode that does not work here is a finding, not a crash
            log(f"  compile {model} {mode}: {type(err).__name__}: {str(err)[:200]}")
            continue
        label = "compile" if mode is True else f"compile {mode}"
        rows.append(row(model, "dps", batch, "bf16" if bf16 else "fp32", label, f"{k} of 1000 steps",
                        wall / k * 1000 / batch, net, k, wall, peak,
                        note=f"compiled in {compile_s:.0f} s, {graphs} graph(s), {len(breaks)} break(s); uncompiled: network {plain * 1e3:.1f} ms, "
                             f"{wall0 / k * 1000 / batch:.2f} s/image, overhead {wall0 / (k * plain):.2f}"))
        log(f"  compile {model} {mode}: {compile_s:.0f} s; network {plain * 1e3:.1f} → {net * 1e3:.1f} ms; "
            f"overhead {rows[-1]['overhead']:.2f}")
        del prior
    return rows


def resample_plan(steps: int = 500, hdc_every: int = 10) -> dict:
    """How many steps of each kind ReSample's reference schedule runs (ReSample.hdc_kind)."""
    from ipsolve.solvers.resample import ReSample

    solver = ReSample(steps=steps, hdc_every=hdc_every)
    kinds = [solver.hdc_kind(i, steps) for i in range(steps)]
    return {"steps": steps, "pixel": kinds.count("pixel"), "latent": kinds.count("latent")}


# ReSample's fit iterations per image with ``fit_stop="noise_level"`` (SR ×4, σ = 0.01), counted on a
# trained latent prior by scripts/resample_fits.py (docs/performance.md, "ReSample's fits"): random
# weights never reach the noise level, so this run can only project them onto its component times
NOISE_LEVEL_FITS = {"pixel": 3145, "latent": 772}


def resample_rows(args, device):
    """ReSample (500 steps) with SD 1.5's UNet + VAE at 512 px, SR ×4: per-component times in this
    run, combined by the reference's step plan (:func:`resample_plan`): 500 DPS steps (UNet
    forward + backward through the decoder), a 5-step look-ahead before each hard-data-consistency
    step, pixel fits (2000 AdamW iterations on the operator, then an encode) and latent fits
    (through the decoder; between 201 and 500 iterations by the reference's stagnation rule — both
    bounds given), plus the final latent fit."""
    from ipsolve.solvers.resample import fit_measurement

    size = args.size or 512
    plan = resample_plan()
    rows = []
    for precision in precisions(args):
        bf16 = precision == "bf16"
        prior = build_prior("sd15", args.scale, size, device, dtype=torch.float32)
        op = make_operator("super_resolution", scale=4).to(device)
        inner = prior.inner
        for batch in [b for b in args.batches if b <= 4]:
            y = op.measure(phantom_batch(batch, size, device), 0.01, generator=torch.Generator().manual_seed(0))
            k = max(3, args.budget // 4)
            params = dict(steps=k, hdc_every=10 ** 6, final_fit=False)  # DPS steps only
            wall_dps, peak, _ = timed_solve(prior, op, "resample", params, batch, size, bf16, dict(steps=3))
            step = wall_dps / k
            z = torch.randn(batch, inner.channels, inner.image_size, inner.image_size, device=device)
            solver = make_solver("resample", progress=False)
            ctx = lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)  # noqa: E731
            from ipsolve.profiling import timed

            def look():
                with torch.no_grad(), ctx():
                    solver.lookahead_x0(inner, z, list(range(999, 0, -2)), 0)
            look_s = timed(look, device, repeats=1)
            target = torch.zeros(batch, device=device)
            with torch.no_grad(), ctx():
                x_init = prior.decode(z).float()
            iters = max(20, args.budget * 10)

            def pixel():
                fit_measurement(x_init, op, y, 1e-2, iters, "reference", target)
            pix_iter = timed(pixel, device, repeats=1) / iters

            def encode():
                with torch.no_grad(), ctx():
                    prior.encode(x_init)
            enc_s = timed(encode, device, repeats=1)
            lat_n = max(2, args.budget // 4)

            def latent():
                with torch.enable_grad(), ctx():
                    fit_measurement(z, lambda v: op(prior.decode(v).float()), y, 5e-3, lat_n, "reference", target)
            lat_iter = timed(latent, device, repeats=1) / lat_n
            peak = max(peak, peak_memory_bytes(device))
            fixed = plan["steps"] * step + (plan["pixel"] + plan["latent"]) * look_s + plan["pixel"] * (2000 * pix_iter + enc_s)
            low, high = (fixed + (plan["latent"] + 1) * n * lat_iter for n in (201, 500))
            unet_fb = network_seconds(prior, batch, backward=True, autocast=bf16)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                dec_fb = autoencoder_seconds(prior, batch)["decoder_backward"]
            noise_level = (plan["steps"] * step + (plan["pixel"] + plan["latent"]) * look_s + plan["pixel"] * enc_s
                           + NOISE_LEVEL_FITS["pixel"] * pix_iter + NOISE_LEVEL_FITS["latent"] * lat_iter)
            note = (f"per image: DPS step {step / batch * 1e3:.0f} ms, look-ahead {look_s / batch * 1e3:.0f} ms, "
                    f"pixel-fit iteration {pix_iter / batch * 1e3:.2f} ms, latent-fit iteration {lat_iter / batch * 1e3:.0f} ms; "
                    f"{plan['pixel']} pixel + {plan['latent']} latent HDC steps + the final fit; "
                    f"latent fits at 500 iterations: {high / batch:.0f} s/image; projected with fit_stop=noise_level "
                    f"({NOISE_LEVEL_FITS['pixel']} pixel- and {NOISE_LEVEL_FITS['latent']} latent-fit iterations per "
                    f"image, counted on a trained prior): {noise_level / batch:.0f} s/image")
            rows.append(row("SD 1.5 (UNet + VAE) 512 px", "resample", batch, precision, "plain",
                            f"components ({k} DPS steps, {iters} pixel- and {lat_n} latent-fit iterations)",
                            low / batch, unet_fb, k, wall_dps, peak, note=note))
            rows[-1]["overhead"] = wall_dps / (k * (unet_fb + dec_fb))  # a DPS step: UNet + decoder, forward + backward
            log(f"  resample b{batch} {precision}: {low / batch:.0f}–{high / batch:.0f} s/image "
                f"(fit_stop=noise_level, projected: {noise_level / batch:.0f}); DPS-step overhead "
                f"{rows[-1]['overhead']:.2f} (over UNet + decoder, forward + backward)")
        prior = None  # released before the next batch size (the closures above keep the name, not the model)
        torch.cuda.empty_cache() if device.type == "cuda" else None
    return rows


def vae_memory_rows(args, device):
    """SD 1.5's decoder forward + backward at batch 4, 512 px: peak memory plain, with
    ``vae_slicing`` and with gradient checkpointing (the options ipsolve exposes)."""
    import diffusers

    size = args.size or 512
    rows = []
    batch = min(4, max(args.batches))
    for option in ("plain", "slicing", "checkpointing"):
        vae = _build(diffusers.AutoencoderKL, TINY["vae"] if args.scale == "tiny" else VAE_SD, device, torch.float32)
        if option == "slicing":
            vae.enable_slicing()
        if option == "checkpointing":
            vae.enable_gradient_checkpointing()
            vae.train()  # diffusers checkpoints only in training mode
        z = torch.randn(batch, 4, size // 8, size // 8, device=device, requires_grad=True)

        def run():
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                vae.decode(z).sample.float().sum().backward()
        synchronize(device)
        reset_peak_memory(device)
        from ipsolve.profiling import timed
        secs = timed(run, device, repeats=1)
        rows.append(row("SD 1.5 VAE decoder 512 px", "decode+backward", batch, "bf16", option, "1 call", secs / batch,
                        None, None, secs, peak_memory_bytes(device)))
        log(f"  vae {option}: {rows[-1]['peak_gib']:.2f} GiB, {secs:.2f} s")
        vae = None  # released before the next option
    return rows


def fmplug_rows(args, device, family: str):
    """One FMPlug iteration (3 Euler steps + decode + backward) on SD3-medium or FLUX.1-dev at 512
    px with bf16 weights, batch 1: time and peak memory with and without gradient checkpointing."""
    size = args.size or 512
    rows = []
    label = {"sd3": "SD3-medium (MMDiT + VAE) 512 px", "flux": "FLUX.1-dev (MMDiT + VAE) 512 px"}[family]
    estimate = {"sd3": 7.1, "flux": 30.7}[family]  # docs/foundation_memory.md (checkpointing, batch 1)
    for checkpointing in (True, False):
        if device.type == "cuda":
            torch.cuda.empty_cache()
        prior = build_prior(family, args.scale, size, device, dtype=torch.bfloat16, checkpointing=checkpointing)
        if checkpointing:
            log(f"{family}: {parameters_of(prior) / 1e9:.2f} B parameters")
        op = make_operator("super_resolution", scale=4).to(device)
        try:
            wall, peak, _ = timed_solve(prior, op, "fmplug", dict(iterations=2, stop=()), 1, size, False,
                                        dict(iterations=1))
        except torch.OutOfMemoryError as err:  # without checkpointing FLUX may not fit
            log(f"  {family} checkpointing={checkpointing}: out of memory ({err})")
            continue
        finally:
            del prior
        options = "checkpointing" if checkpointing else "plain"
        rows.append(row(label, "fmplug", 1, "bf16 weights", options, "2 iterations × 3 calls", wall / 2, None, None,
                        wall, peak, note=f"one iteration; estimate {estimate} GiB with checkpointing" if checkpointing else
                        "one iteration"))
        log(f"  fmplug {family} {options}: {wall / 2:.2f} s/iteration, peak {peak / GIB:.2f} GiB")
    return rows


def small_rows(args, device):
    """The launch-bound case: the bundled 32-px priors (the CPU presets), budget 50, batch 1 and 8."""
    import subprocess

    rows = []
    script = str(Path(__file__).with_name("benchmark.py"))
    for name in ("dps", "dmplug", "fmplug", "resample"):
        for batch in (1, 8):
            out = subprocess.run([sys.executable, script, "--speed-one", name, str(batch), "50"], capture_output=True,
                                 text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row("bundled 32 px (CPU presets)", name, batch, "fp32", "plain", f"{r['nfe']} NFE",
                            r["wall"] / batch, r["net"], r["nfe"], r["wall"], r["peak_mb"] * 2 ** 20,
                            note="overhead counts ReSample's autoencoder calls as network time" if r["autoencoder_s"] else ""))
            rows[-1]["overhead"] = r["ratio"]
            log(f"  32 px {name} b{batch}: overhead {rows[-1]['overhead']:.2f}")
    return rows


SECTIONS = {"adm": (adm_rows, 60), "resample": (resample_rows, 60), "vae": (vae_memory_rows, 15),
            "sd3": (lambda a, d: fmplug_rows(a, d, "sd3"), 40), "flux": (lambda a, d: fmplug_rows(a, d, "flux"), 90),
            "compile": (compile_rows, 90), "small": (small_rows, 60)}
COLUMNS = ["model", "solver", "batch", "precision", "options", "timed", "s_per_image", "images_per_hour", "peak_gib",
           "network_ms", "overhead", "note"]
TARGETS = [("dps", "ADM FFHQ-256", 15.0, "DPS-1000 with the ADM ≤ 15 s/image at batch 16"),
           ("daps", "ADM FFHQ-256", 6.0, "DAPS-1K ≤ 6 s/image at batch ≥ 10"),
           ("resample", "SD 1.5 (UNet + VAE) 512 px", 60.0, "ReSample (500 steps, SD 1.5 at 512 px) ≤ 60 s/image")]


def environment(device) -> dict:
    env = {"date": time.strftime("%Y-%m-%d %H:%M"), "python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "device": str(device), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / GIB, 1)
    try:
        import diffusers
        env["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    return env


def fmt(v, digits=2):
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def markdown(rows, env) -> str:
    lines = [f"# Speed at the papers' scale ({env.get('gpu', env['device'])}, {env['date']})", "",
             f"torch {env['torch']}, CUDA {env['cuda']}, diffusers {env.get('diffusers', '?')}; "
             "`python scripts/scale_benchmark.py --scale paper` (random-weight networks of the real "
             "architectures; times for a fixed number of steps extrapolated to the paper's NFE).", "",
             "| model | solver | batch | precision | options | timed | s/image | images/hour | peak GiB | network ms | overhead | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r[c], 1 if c in ("images_per_hour",) else 3 if c == "overhead" else 2)
                                       for c in COLUMNS) + " |")
    smoke = env.get("scale") == "tiny" or env.get("device", "").startswith("cpu")
    lines += ["", "Targets" + (" (a smoke run — tiny networks or a CPU: the figures below say nothing about the "
                               "GPU targets, no verdict):" if smoke else ":"), ""]
    for solver, model, limit, text in TARGETS:
        cands = [r for r in rows if r["solver"] == solver and r["model"] == model]
        best = min(cands, key=lambda r: r["s_per_image"], default=None)
        lines.append(f"* {text}: " + ("not measured" if best is None else
                                       f"best {best['s_per_image']:.2f} s/image (batch {best['batch']}, {best['precision']}, "
                                       f"{best['options']})" + ("" if smoke else
                                                                  f" — {'met' if best['s_per_image'] <= limit else 'NOT met'}")))
    return "\n".join(lines) + "\n"


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    keys = sorted({(r["model"], r["solver"], r["precision"]) for r in rows if r["options"] == "plain"})
    for model, solver, precision in keys:
        pts = sorted((r["batch"], r["s_per_image"]) for r in rows if (r["model"], r["solver"], r["precision"]) ==
                     (model, solver, precision) and r["options"] == "plain")
        if len(pts) > 1:
            ax.plot(*zip(*pts), marker="o", label=f"{solver} ({model.split(' ')[0]}, {precision})")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch")
    ax.set_ylabel("seconds per image (paper NFE)")
    if ax.lines:
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(rows, env, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "scale.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    (out / "env.json").write_text(json.dumps(env, indent=1))
    (out / "performance.md").write_text(markdown(rows, env))
    if rows:
        plot(rows, out / "scale.png")


def merge(folders, out: Path) -> list[dict]:
    """Rows of several runs' ``scale.csv`` (a later run's row replaces an earlier one with the same
    model, solver, batch, precision and options), written to ``out`` with the last run's environment."""
    rows, env = {}, {}
    for folder in folders:
        folder = Path(folder)
        with open(folder / "scale.csv") as f:
            for r in csv.DictReader(f):
                for c in ("batch",):
                    r[c] = int(r[c])
                for c in ("s_per_image", "images_per_hour", "peak_gib", "network_ms", "overhead"):
                    r[c] = float(r[c]) if r[c] not in ("", "nan") else float("nan")
                rows[(r["model"], r["solver"], r["batch"], r["precision"], r["options"])] = r
        if (folder / "env.json").is_file():
            previous = env
            env = json.loads((folder / "env.json").read_text())
            env["failed"] = {**previous.get("failed", {}), **env.get("failed", {})}
    out_rows = list(rows.values())
    write(out_rows, env, out)
    return out_rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--merge", nargs="+", metavar="DIR", help="merge earlier runs' folders into --out and stop")
    ap.add_argument("--scale", choices=("paper", "tiny"), default="paper",
                    help="paper: the real architectures' configs; tiny: small random networks (a smoke run)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="cuda (the default where there is one) or cpu")
    ap.add_argument("--size", type=int, default=None, help="image size (default: each model's paper size)")
    ap.add_argument("--budget", type=int, default=20, help="steps/iterations timed before extrapolating")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16], help="batch sizes (as memory allows)")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], help="fp32 and/or bf16 (autocast)")
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS), help="which tables to measure")
    ap.add_argument("--deadline", type=float, default=None, help="seconds: skip sections that would not finish")
    ap.add_argument("--out", default="outputs/scale", help="folder for the CSV, markdown tables, plot and environment")
    args = ap.parse_args(argv)
    if args.merge:
        return merge(args.merge, Path(args.out))
    device = torch.device(args.device)
    env = environment(device)
    env["scale"] = args.scale
    log(json.dumps(env))
    out, rows = Path(args.out), []
    env["skipped"], env["failed"] = [], {}
    for name in args.sections:
        fn, cost = SECTIONS[name]
        if args.deadline is not None and time.time() - START + cost > args.deadline:
            log(f"skip {name}: {cost} s would pass the deadline")
            env["skipped"].append(name)
            continue
        log(f"section {name}")
        try:
            rows += fn(args, device)
        except Exception as err:  # noqa: BLE001 - one section's failure must not lose the others
            traceback.print_exc()
            env["failed"][name] = f"{type(err).__name__}: {err}"[:500]
        if device.type == "cuda":
            torch.cuda.empty_cache()
        write(rows, env, out)
    log(f"done: {len(rows)} rows in {out}")
    print(markdown(rows, env))
    return rows


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ipsolve.runner.errors import script_main

    script_main(main)
