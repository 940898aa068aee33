"""Foundation priors (Stable Diffusion 1.x/2.x, SD3, FLUX) loaded from pipeline folders: ipsolve's
ε / velocity and samplers equal the pipelines' own, the latent convention is the pipelines',
every solver that accepts the family runs end to end (API and command line), bad input gets a
clear error.  The pipelines are tiny random-weight ones built locally (tests/tiny_pipelines.py)."""
from __future__ import annotations

import shutil

import pytest
import torch

import ipsolve
from ipsolve import load_prior, make_operator, make_solver

from tiny_pipelines import IMAGE_SIZE, make_flux, make_sd, make_sd3

PROMPT = "a cat on a mat"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    return {"sd": make_sd(root / "sd"), "sd_v": make_sd(root / "sd_v", "v_prediction"), "sd3": make_sd3(root / "sd3"),
            "sd3_no_t5": make_sd3(root / "sd3_no_t5", with_t5=False), "flux": make_flux(root / "flux")}


def pipeline(folder, cls):
    import diffusers

    kw = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False} if cls == "StableDiffusionPipeline" else {}
    pipe = getattr(diffusers, cls).from_pretrained(folder, **kw)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def latents(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# -- equivalence with the pipelines ------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["sd", "sd_v"])
def test_sd_eps_equals_the_unet_with_the_pipelines_prompt_embedding(folders, variant):
    pipe = pipeline(folders[variant], "StableDiffusionPipeline")
    prior = load_prior(str(folders[variant]), prompt=PROMPT, image_size=IMAGE_SIZE)
    z = latents((2, 4, 16, 16))
    with torch.no_grad():
        emb, _ = pipe.encode_prompt(PROMPT, "cpu", 1, False)
        for t in (999, 500, 20):
            out = pipe.unet(z, t, encoder_hidden_states=emb.expand(2, -1, -1)).sample
            ours = prior.inner.eps(z, t)
            if variant == "sd_v":  # ε from v, as DDIMScheduler.step converts it
                a = pipe.scheduler.alphas_cumprod[t]
                out = a.sqrt() * out + (1 - a).sqrt() * z
            torch.testing.assert_close(ours, out, atol=1e-5, rtol=1e-5)


def pipeline_and_prior(folder, cls, guidance, seed):
    """The pipeline, ipsolve's prior of the same folder (same prompt and guidance), start latents
    and the pipeline's own 4-step latents from them."""
    pipe = pipeline(folder, cls)
    prior = load_prior(str(folder), prompt=PROMPT, negative_prompt="blurry" if guidance > 1 else "",
                       guidance_scale=guidance, image_size=IMAGE_SIZE)
    z = latents((1, 4, 16, 16), seed)
    with torch.no_grad():
        ref = pipe(PROMPT, negative_prompt="blurry" if guidance > 1 else None, num_inference_steps=4,
                   guidance_scale=guidance, latents=z.clone(), output_type="latent", height=IMAGE_SIZE,
                   width=IMAGE_SIZE).images
    return pipe, prior, z, ref


@pytest.mark.parametrize("variant,guidance", [("sd", 1.0), ("sd_v", 1.0), ("sd", 4.0)])
def test_sd_ddim_sampling_equals_the_pipeline(folders, variant, guidance):
    """The pipeline's DDIM loop (4 steps, CFG when guidance > 1) from the same latents, step by step
    with ipsolve's ``ddim_step`` on the scheduler's timesteps (ᾱ_prev = ᾱ_0 at the end:
    ``set_alpha_to_one=False``)."""
    pipe, prior, z, ref = pipeline_and_prior(folders[variant], "StableDiffusionPipeline", guidance, 1)
    with torch.no_grad():
        x, stride = z.clone(), 1000 // 4
        for t in pipe.scheduler.timesteps.tolist():
            x = prior.inner.ddim_step(x, t, max(t - stride, 0), prior.inner.eps(x, t))
    torch.testing.assert_close(x, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_sd3_sampling_equals_the_pipeline(folders, guidance):
    """SD3's own Euler loop on its shifted σ grid (shift 3) with the pipeline's prompt embeddings:
    ipsolve's velocity (t = 1 − σ, v = data − noise), ``time_grid`` and ``ode_step`` give the same latents."""
    _, prior, z, ref = pipeline_and_prior(folders["sd3"], "StableDiffusion3Pipeline", guidance, 2)
    with torch.no_grad():
        ts = prior.inner.time_grid(4)
        x = z.clone()
        for t, t_next in zip(ts[:-1], ts[1:]):
            x = prior.inner.ode_step(x, t, t_next, prior.inner.velocity(x, t))
    assert ts[0] == 0.0 and ts[-1] == 1.0 and 1 - ts[1] == pytest.approx(3 * 0.667 / (1 + 2 * 0.667), abs=1e-3)
    torch.testing.assert_close(x, ref, atol=1e-4, rtol=1e-4)


def test_flux_sampling_equals_the_pipeline(folders):
    """FLUX's loop: packed 2×2 latents, position ids, embedded guidance 3.5, resolution-shifted σ grid."""
    from diffusers import FluxPipeline

    pipe = pipeline(folders["flux"], "FluxPipeline")
    prior = load_prior(str(folders["flux"]), prompt=PROMPT, image_size=IMAGE_SIZE)
    z = latents((1, 4, 16, 16), 3)
    with torch.no_grad():
        ref = pipe(PROMPT, num_inference_steps=4, guidance_scale=3.5, latents=FluxPipeline._pack_latents(z, 1, 4, 16, 16),
                   output_type="latent", height=IMAGE_SIZE, width=IMAGE_SIZE).images
        x = z.clone()
        ts = prior.inner.time_grid(4)
        for t, t_next in zip(ts[:-1], ts[1:]):
            x = prior.inner.ode_step(x, t, t_next, prior.inner.velocity(x, t))
    torch.testing.assert_close(FluxPipeline._pack_latents(x, 1, 4, 16, 16), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name,cls", [("sd", "StableDiffusionPipeline"), ("sd3", "StableDiffusion3Pipeline"),
                                      ("flux", "FluxPipeline")])
def test_latents_follow_the_pipelines_shift_and_scale(folders, name, cls):
    """``encode`` = (mean − shift)·scale, ``decode`` = VAE(z/scale + shift), as the pipelines; the text
    encoders are gone after loading."""
    pipe = pipeline(folders[name], cls)
    prior = load_prior(str(folders[name]), image_size=IMAGE_SIZE)
    vae = pipe.vae
    scale, shift = vae.config.scaling_factor, vae.config.shift_factor or 0.0
    assert prior.scaling_factor == scale and prior.shift_factor == shift and (shift != 0) == (name != "sd")
    x = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(prior.encode(x), (vae.encode(x).latent_dist.mean - shift) * scale)
        z = latents((2, 4, 16, 16), 4)
        torch.testing.assert_close(prior.decode(z), vae.decode(z / scale + shift).sample)
    kept = {type(m).__name__ for m in prior.modules()}
    assert not kept & {"CLIPTextModel", "CLIPTextModelWithProjection", "T5EncoderModel"}, kept


def test_sd3_without_t5_and_the_default_size(folders):
    prior = load_prior(str(folders["sd3_no_t5"]), prompt=PROMPT)
    assert prior.image_size == 16 * 2 and prior.inner.shape == (4, 16, 16)  # transformer sample_size × VAE factor
    assert torch.isfinite(prior.inner.velocity(latents((1, 4, 16, 16)), 0.5)).all()


# -- solvers end to end --------------------------------------------------------------------------------

@pytest.mark.parametrize("name,solver", [("sd", "dps"), ("sd", "resample"), ("sd", "dmplug"), ("sd", "daps"),
                                         ("sd3", "fmplug"), ("flux", "fmplug")])
def test_solvers_run_on_foundation_priors(folders, name, solver):
    prior = load_prior(str(folders[name]), prompt=PROMPT, image_size=IMAGE_SIZE, gradient_checkpointing=True)
    op = make_operator("super_resolution", scale=4)
    x = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE) * 2 - 1
    y = op.measure(x, 0.03, generator=torch.Generator().manual_seed(0))
    settings = {"dps": {"steps": 4}, "resample": {"steps": 4, "hdc_every": 2, "pixel_iters": 3, "latent_iters": 3, "stagnation": 2},
                "dmplug": {"iterations": 3}, "daps": {"annealing_steps": 3, "ode_steps": 2, "mcmc_steps": 2},
                "fmplug": {"iterations": 3}}[solver]
    result = ipsolve.solve(y, op, prior, make_solver(solver, progress=False, **settings), sigma=0.03, generator=0)
    assert result.x.shape == x.shape and torch.isfinite(result.x).all()
    assert all(i["nfe"] > 0 for i in result.info)
    if solver == "daps":  # Stable Diffusion's UNet is told its own schedule's t(σ), as DAPS's SD model does
        assert result.info[0]["timestep"] == "schedule"
        assert make_solver("daps").timestep_for(load_prior("bundled:phantom-ddpm")) == "vp"


def test_guidance_counts_two_evaluations_per_call(folders):
    prior = load_prior(str(folders["sd"]), prompt=PROMPT, negative_prompt="blurry", guidance_scale=3.0,
                       image_size=IMAGE_SIZE)
    op = make_operator("inpainting")
    y = op.measure(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE), 0.03, generator=torch.Generator().manual_seed(0))
    result = ipsolve.solve(y, op, prior, make_solver("dps", steps=4, progress=False), sigma=0.03, generator=0)
    assert result.info[0]["nfe"] == 8 and prior.conditioning["evaluations_per_call"] == 2
    # calibration counts them alike (it counted the calls: half; audit 2026-12-07)
    cal = ipsolve.calibrate(y, op, prior, make_solver("dps", steps=4, progress=False), sigma=0.03, budget=3,
                            comparison_splits=0)
    assert [row["nfe"] for row in cal.table] == [8.0] * len(cal.table) and cal.nfe >= 8.0 * len(cal.table)


def test_command_line_runs_fmplug_on_an_sd3_folder(folders, tmp_path):
    from test_cli import check_ok, ipsolve as run_cli

    proc = run_cli(f"prior={folders['sd3']}", "prior.image_size=32", f"prior.prompt={PROMPT!r}", "solver=fmplug_cpu",
                   "solver.iterations=2", "data=photo_demo", "data.max_images=2", "data.batch_size=2", "progress=false", "samples=1",
                   "hydra.run.dir=run", cwd=tmp_path)
    check_ok(proc)
    assert len(list((tmp_path / "run" / "recon").glob("*.png"))) == 2


# -- bad input --------------------------------------------------------------------------------------------

def test_missing_text_encoder_or_tokenizer_is_named(folders, tmp_path):
    for missing in ("tokenizer_2", "text_encoder"):
        broken = tmp_path / missing
        shutil.copytree(folders["flux"], broken)
        shutil.rmtree(broken / missing)
        with pytest.raises(ValueError, match=f"missing {missing}"):
            load_prior(str(broken))
    broken = tmp_path / "no_t5"
    shutil.copytree(folders["sd3"], broken)
    shutil.rmtree(broken / "text_encoder_3")
    with pytest.raises(ValueError, match="text_encoder_3.*use_t5=False"):
        load_prior(str(broken))
    assert load_prior(str(broken), use_t5=False, image_size=IMAGE_SIZE).inner.kind == "flow"


def test_bad_options(folders):
    with pytest.raises(ValueError, match="prompt applies only to text-conditioned pipelines"):
        load_prior("bundled:phantom-latent", prompt="a phantom")
    with pytest.raises(ValueError, match="unknown option.*sampling_steps"):
        load_prior(str(folders["sd"]), sampling_steps=3)
    with pytest.raises(ValueError, match="image_size 30 .*multiple of 4"):
        load_prior(str(folders["sd3"]), image_size=30)
    with pytest.raises(ValueError, match="image_size 31 .*multiple of 2"):
        load_prior(str(folders["sd"]), image_size=31)
    with pytest.raises(ValueError, match="unknown dtype"):
        load_prior(str(folders["sd"]), dtype="float8")
    prior = load_prior(str(folders["sd3"]), image_size=IMAGE_SIZE)
    with pytest.raises(ValueError, match="cannot use a latent flow prior.*accepts: diffusion, latent diffusion"):
        make_solver("dps").check(make_operator("super_resolution", scale=4), prior)
    x = torch.zeros(1, 3, 64, 64)
    with pytest.raises(ValueError, match=r"takes images of shape \(B, 3, 32, 32\)"):
        prior.check_image(x)


def test_bf16_loading_and_memory_options(folders):
    prior = load_prior(str(folders["sd3"]), image_size=IMAGE_SIZE, dtype="bf16", gradient_checkpointing=True,
                       vae_slicing=True, vae_tiling=True)
    assert next(prior.inner.network.parameters()).dtype == torch.bfloat16
    assert prior.autoencoder.use_slicing and prior.autoencoder.use_tiling
    assert prior.inner.network.network.gradient_checkpointing and prior.autoencoder.decoder.gradient_checkpointing
    v = prior.inner.velocity(latents((1, 4, 16, 16)), 0.5)
    assert v.dtype == torch.float32 and torch.isfinite(v).all()


@pytest.mark.parametrize("preset,family", [("sd15", "sd"), ("sd3_medium", "sd3"), ("flux_dev", "flux")])
def test_presets_load_on_a_pipeline_of_their_family(folders, preset, family):
    """Every option of conf/prior/<preset>.yaml is one load_prior takes (the source and size swapped
    for the tiny pipeline of the same family)."""
    from ipsolve.runner.settings import prior_source

    source, kwargs = prior_source(preset)
    assert "/" in source and kwargs["image_size"] == 512
    prior = load_prior(str(folders[family]), **{**kwargs, "image_size": IMAGE_SIZE})
    assert prior.conditioning["prompt"] == kwargs["prompt"] and prior.image_size == IMAGE_SIZE
    z = latents((1, *prior.inner.shape))
    out = prior.inner.eps(z, 500) if prior.inner.kind == "diffusion" else prior.inner.velocity(z, 0.5)
    assert torch.isfinite(out).all()


def test_what_a_foundation_user_gets_wrong_is_one_line(folders, tmp_path):
    """A pipeline component's folder, an unsupported pipeline built on a supported denoiser, a list
    of prompts, a negative prompt that guidance would ignore, a size that is no integer, use_t5 on
    SD, a device that is not there — each one line, at load; a preset with a local folder keeps
    its other settings (``load_prior("sd3_medium", source=DIR)``), and fp16 loading casts once."""
    import json

    sd = folders["sd"]
    for sub, what in (("vae", "an autoencoder"), ("unet", "text-conditioned denoiser")):
        with pytest.raises(ValueError, match=f"pipeline component .*{what}.*model_index.json"):
            load_prior(str(sd / sub))
    xl = tmp_path / "sdxl_like"
    shutil.copytree(sd, xl)
    index = json.loads((xl / "model_index.json").read_text())
    (xl / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionXLPipeline"}))
    with pytest.raises(ValueError, match="holds a StableDiffusionXLPipeline; ipsolve's foundation priors load"):
        load_prior(str(xl))
    for kwargs, message in (({"prompt": ["a", "b"]}, "prompt must be one string"),
                            ({"negative_prompt": "blurry"}, "negative_prompt needs classifier-free guidance"),
                            ({"guidance_scale": -3}, "guidance_scale must be a number >= 0"),
                            ({"image_size": "32"}, "image_size must be a positive integer"),
                            ({"image_size": 0}, "image_size must be a positive integer"),
                            ({"use_t5": False}, "use_t5 applies only to Stable Diffusion 3"),
                            ({"device": "gpu"}, "unknown device 'gpu'")):
        with pytest.raises(ValueError, match=message):
            load_prior(str(sd), **kwargs)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is available"):
            load_prior(str(sd), device="cuda")
        with pytest.raises(ValueError, match=r"no CUDA GPU is available here \(.*\); use cpu$"):  # (a guess at the
            ipsolve.load_prior("sd3-medium", device="cuda")  # prior's name followed it: audit 2026-12-07)
    if not torch.backends.mps.is_available():  # (torch's RuntimeError at the first .to() before)
        with pytest.raises(ValueError, match="device 'mps': Apple's MPS is not available here"):
            load_prior(str(sd), device="mps")
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    library = logging.getLogger("diffusers")  # its messages do not reach the root logger
    library.addHandler(handler)
    try:
        prior = ipsolve.load_prior("sd3_medium", source=str(folders["sd3"]), image_size=IMAGE_SIZE)
    finally:
        library.removeHandler(handler)
    assert not [r for r in records if "kept in float32" in r.getMessage()]  # diffusers' note on a second cast
    assert next(prior.autoencoder.parameters()).dtype == torch.bfloat16  # the preset's dtype, kept
    assert prior.memory_options["gradient_checkpointing"] is True and "gradient_checkpointing" not in prior.conditioning
    assert (prior.conditioning["t5"], prior.conditioning["max_sequence_length"]) == (True, 256)
    from ipsolve.runner.settings import describe

    described = describe(make_operator("super_resolution", scale=4), make_solver("fmplug_sd3"), prior)["prior"]
    assert (described["kind"], described["dtype"]) == ("latent-flow", "bfloat16")  # summary.json's prior entry
    with pytest.raises(ValueError, match="source= replaces a preset's source"):
        ipsolve.load_prior(str(folders["sd3"]), source=str(folders["sd3"]))


def test_foundation_audit_findings(folders, caplog):
    """Audit 2026-12-06: SD3's timestep reaches the network in float32 (bf16 rounded σ·1000 to
    multiples of 4: its time embedding 17–41 % off), as StableDiffusion3Pipeline passes it; "no" /
    "off" are no booleans (they switched checkpointing on); guidance below 1, or with the same
    prompt and negative prompt (the unguided result at twice the cost), a bad max_sequence_length
    and a preset of another family are one line; T5's use is recorded (the resume fingerprint),
    checkpointing is not (memory only); fp16 warns about decoder gradients and CPU speed."""
    prior = load_prior(str(folders["sd3"]), prompt=PROMPT, image_size=IMAGE_SIZE, dtype="bf16")
    seen = []
    hook = prior.inner.network.network.register_forward_pre_hook(
        lambda m, a, k: seen.append(k["timestep"]), with_kwargs=True)
    prior.inner.velocity(latents((1, 4, 16, 16)), 1 - 0.98738)
    hook.remove()
    assert seen[0].dtype == torch.float32 and float(seen[0]) == pytest.approx(987.38, abs=1e-3)
    for key, value in (("use_t5", "no"), ("gradient_checkpointing", "off")):
        with pytest.raises(ValueError, match=f"{key} must be true or false, got '{value}'"):
            load_prior(str(folders["sd3"]), image_size=IMAGE_SIZE, **{key: value})
    with pytest.raises(ValueError, match="guidance_scale 0.5 < 1"):
        load_prior(str(folders["sd"]), prompt=PROMPT, guidance_scale=0.5, image_size=IMAGE_SIZE)
    with pytest.raises(ValueError, match="same prompt and negative prompt"):
        load_prior(str(folders["sd3"]), guidance_scale=2.0, image_size=IMAGE_SIZE)
    for bad in (-5, 0, 2.5, 1000):
        with pytest.raises(ValueError, match="max_sequence_length must be an integer in"):
            load_prior(str(folders["sd3"]), max_sequence_length=bad, image_size=IMAGE_SIZE)
    with pytest.raises(ValueError, match="applies to T5 prompts"):
        load_prior(str(folders["sd"]), max_sequence_length=77, image_size=IMAGE_SIZE)
    with pytest.raises(ValueError, match="holds a FLUX pipeline, but these settings are for Stable Diffusion 3"):
        ipsolve.load_prior("sd3_medium", source=str(folders["flux"]), image_size=IMAGE_SIZE)
    with caplog.at_level("WARNING", logger="ipsolve"):
        no_t5 = load_prior(str(folders["sd3_no_t5"]), prompt=PROMPT, image_size=IMAGE_SIZE)
        assert no_t5.conditioning["t5"] is False and "no T5 text encoder" in caplog.text
        with_t5 = load_prior(str(folders["sd3"]), prompt=PROMPT, image_size=IMAGE_SIZE, use_t5=False)
        assert with_t5.conditioning["t5"] is False
        caplog.clear()
        load_prior(str(folders["sd"]), prompt=PROMPT, image_size=IMAGE_SIZE, dtype="fp16")
    assert "gradients through the fp16 decoder underflow" in caplog.text and "fp16 on a CPU" in caplog.text


def test_second_foundation_audit_findings(folders, tmp_path, monkeypatch):
    """Audit 2026-12-06 (twenty-third session): a download folder named like its preset (the README's
    ``--local-dir sd15``) beside the script: ``load_prior("sd15", source="sd15")`` is the preset on it
    (it said "'sd15' is not a preset"), ``load_prior("sd15")`` loads the folder and says that the preset's
    settings are not applied; a preset given a folder that is no prior, or a component of one, says
    so (it said the folder was "unconditional"); FLUX without guidance embedding names the way out; a
    prior the solver cannot use names the solvers that can (the API named prior kinds only); a misspelt
    option or preset gets "did you mean"."""
    from ipsolve.operators.base import InputWarning

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sd15").symlink_to(folders["sd"], target_is_directory=True)
    prior = ipsolve.load_prior("sd15", source="sd15", image_size=IMAGE_SIZE)
    assert next(prior.autoencoder.parameters()).dtype == torch.bfloat16  # the preset's dtype
    with pytest.warns(InputWarning, match=r"'sd15' is a folder here and a preset .* source='sd15'\) loads it with"):
        assert next(ipsolve.load_prior("sd15", image_size=IMAGE_SIZE).autoencoder.parameters()).dtype == torch.float32
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty is not a diffusers prior: expected a pipeline folder"):
        ipsolve.load_prior("sd15", source=str(tmp_path / "empty"), image_size=IMAGE_SIZE)
    with pytest.raises(ValueError, match="is a pipeline component .*give the pipeline's folder"):
        ipsolve.load_prior("sd15", source=str(folders["sd"] / "unet"), image_size=IMAGE_SIZE)
    schnell = make_flux(tmp_path / "flux_nog", guidance_embeds=False)
    with pytest.raises(ValueError, match=r"no guidance embedding .* give guidance_scale=null \(prior.guidance_scale=null"):
        ipsolve.load_prior("flux_dev", source=str(schnell), image_size=IMAGE_SIZE)
    sd3 = load_prior(str(folders["sd3"]), image_size=IMAGE_SIZE)
    op = make_operator("super_resolution", scale=4)
    y = op.measure(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE), 0.01, generator=0)
    with pytest.raises(ValueError, match=r"cannot use a latent flow prior .*; the solvers that take this prior: fmplug, "):
        ipsolve.solve(y, op, sd3, make_solver("dps_cpu"), sigma=0.01)
    with pytest.raises(ValueError, match=r"unknown option\(s\) gradient_checkpoint .*did you mean 'gradient_checkpointing'"):
        load_prior(str(folders["sd"]), gradient_checkpoint=False, image_size=IMAGE_SIZE)
    with pytest.raises(ValueError, match=r"'sd3_meduim' is not a preset of conf/prior/ \(did you mean 'sd3_medium'\?\)"):
        ipsolve.load_prior("sd3_meduim", source=str(folders["sd3"]))


def test_third_foundation_audit_findings(folders, tmp_path, monkeypatch):
    """Audit 2026-12-07 (twenty-fifth session): ``prior.device=cpu`` was a raw TypeError; the README's
    ``prior.source=sd15`` without that folder said "(did you mean 'sd15'?)" and named no place; the
    offline message for a preset's hub id suggested ``prior=sd15`` for SD3/FLUX and a download
    without the preset's ``--exclude``; the prior's load warnings (SD3 without T5) were on the console
    only, not in summary.json; its local path was kept as typed; an unknown option's list left out
    ``dtype`` and listed T5 options for SD."""
    from ipsolve.runner.errors import RunError
    from ipsolve.runner.settings import build_prior

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RunError, match=r"prior.device is not a prior setting: the run's device is the top-level device="):
        build_prior({"source": str(folders["sd"]), "device": "cpu"})
    with pytest.raises(RunError, match=rf"prior.source=sd15: no folder 'sd15' in {tmp_path}.*download with: hf download "
                                       rf"stable-diffusion-v1-5/stable-diffusion-v1-5 --local-dir sd15"):
        build_prior({"source": "sd15", "dtype": "bf16"})
    with pytest.raises(RunError, match=r"`hf download black-forest-labs/FLUX.1-dev --local-dir flux-dev --exclude .*`, "
                                       r"copy the folder flux-dev here and use it: ipsolve prior=flux_dev prior.source=flux-dev$"):
        build_prior("flux_dev")
    with pytest.raises(FileNotFoundError, match=r"use it: load_prior\('sd3_medium', source='sd3-medium'\)$"):
        ipsolve.load_prior("sd3_medium")
    with pytest.raises(ValueError, match=r"unknown option\(s\) use_t55 .*options: gradient_checkpointing, .*, dtype, ") as err:
        load_prior(str(folders["sd"]), use_t55=True, image_size=IMAGE_SIZE)
    assert "use_t5," not in str(err.value) and "max_sequence_length" not in str(err.value)  # SD has no T5
    with pytest.raises(ValueError, match=r"use the FLUX preset on it \(prior=flux_dev prior.source=.*load_prior\('flux_dev'"):
        ipsolve.load_prior("sd3_medium", source=str(folders["flux"]), image_size=IMAGE_SIZE)
    (tmp_path / "no_t5").symlink_to(folders["sd3_no_t5"], target_is_directory=True)
    out = tmp_path / "run"
    ipsolve.reconstruct("bundled:photo", "super_resolution", make_solver("fmplug", iterations=1, progress=False),
                        {"source": "no_t5", "prompt": PROMPT, "image_size": IMAGE_SIZE}, out, sigma=0.01,
                        max_images=1, progress=False, metrics=["psnr"])
    import json

    summary = json.loads((out / "summary.json").read_text())
    assert any("no T5 text encoder" in w for w in summary["warnings"]), summary["warnings"]
    assert summary["prior"]["path"] == str(folders["sd3_no_t5"].resolve())
    assert summary["prior"]["source"] == "no_t5"  # (the fingerprinted record: as given)
    assert summary["prior"]["memory_options"] == {"gradient_checkpointing": False, "vae_tiling": False,
                                                              "vae_slicing": False}
