"""CompVis latent-diffusion checkpoints (``.ckpt``) loaded as diffusers UNet2DModel + VQModel
(ipsolve/priors/ldm.py) against the original LDM code.

How tests/fixtures/ldm_layout.json and ldm_reference_outputs.pt were produced
------------------------------------------------------------------------------
Reference: CompVis/latent-diffusion @ a506df5 — ``ldm/modules/diffusionmodules/openaimodel.py``
``UNetModel``, ``ldm/models/autoencoder.py`` ``VQModelInterface`` (Encoder/Decoder of
``ldm/modules/diffusionmodules/model.py``), ``ldm/modules/diffusionmodules/util.py``
``make_beta_schedule`` — and CompVis/taming-transformers @ 3ba01b2
(``taming/modules/vqvae/quantize.py`` ``VectorQuantizer2``), extracted with ``git show`` and run
unchanged (``pytorch_lightning`` replaced by a module whose ``LightningModule`` is
``torch.nn.Module``) on CPU, torch 2.14, float32, by a generation script kept outside the repository:

* ``ldm_layout.json``: the state-dict layouts (key, shape) of the FFHQ LDM
  (``configs/latent-diffusion/ffhq-ldm-vq-4.yaml``: the UNet and the VQ-f4 first stage, built on
  the meta device) and of a tiny UNet (``tiny_unet_config``: 32 channels, mult 1,2, attention at
  downsampling 2, 16-channel heads) and tiny VQ autoencoder (``tiny_vq_config``: 32 channels, mult
  1,2, 16 codes).
* ``ldm_reference_outputs.pt``: with weights ``deterministic_state_dict(layout, seed, 0.1)``
  (tests/test_adm.py's rule; UNet seed 1000, a second UNet "EMA" copy seed 5000, VQ seed 9000):
  the UNet's ε for x = randn(2, 3, 8, 8) (Generator(seed + 999999)), t = [3, 871.5]; the VQ
  model's ``encode(x)`` for x = 0.5·randn(2, 3, 16, 16), ``decode(z)`` (quantised: nearest code,
  smallest margin between the two nearest codes 1.4e-3) and ``decode(z, force_not_quantize=True)``
  for z = randn(2, 3, 8, 8) (Generator(424242)); ᾱ of ``make_beta_schedule("linear", 1000,
  0.0015, 0.0195)`` (float64).

The tests write those weights as a ``LatentDiffusion`` checkpoint (``model.diffusion_model.*``,
``model_ema.*`` as ``LitEma`` names it, ``first_stage_model.*``, the schedule buffers) with an LDM
yaml beside it and load it through ``load_prior``.
"""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml
from tolerance import assert_matches_float32_reference, in_dtype

from ipsolve import load_prior, make_operator, make_solver, solve
from ipsolve.priors import LatentPrior
from ipsolve.priors.ldm import LDM_VQ4_256, convert_unet, convert_vq, ldm_alphas_cumprod, unet_config, vq_config

FIXTURES = Path(__file__).parent / "fixtures"
LAYOUT = json.loads((FIXTURES / "ldm_layout.json").read_text())
REF = torch.load(FIXTURES / "ldm_reference_outputs.pt", weights_only=True)
TINY_UNET, TINY_VQ = LAYOUT["tiny_unet_config"], LAYOUT["tiny_vq_config"]




def deterministic_state_dict(layout, seed, scale):
    """Entry i (in key order): ``randn(shape, generator=Generator().manual_seed(seed + i)) * scale``."""
    return {k: torch.randn(tuple(s), generator=torch.Generator().manual_seed(seed + i)) * scale
            for i, (k, s) in enumerate(layout)}


def ldm_yaml(unet=TINY_UNET, vq=TINY_VQ, **params) -> dict:
    """An LDM config in the layout of configs/latent-diffusion/*.yaml."""
    return {"model": {"target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": {
        "linear_start": 0.0015, "linear_end": 0.0195, "timesteps": 1000, "image_size": unet["image_size"], "channels": 3,
        "unet_config": {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel", "params": unet},
        "first_stage_config": {"target": "ldm.models.autoencoder.VQModelInterface", "params": vq},
        "cond_stage_config": "__is_unconditional__", **params}}}


def tiny_state() -> dict:
    """The tiny weights as a LatentDiffusion state dict (with LitEma's copy and LDM's schedule buffers)."""
    seeds, scale = LAYOUT["seeds"], LAYOUT["scale"]
    unet = deterministic_state_dict(LAYOUT["tiny"]["unet"], seeds["unet"], scale)
    ema = deterministic_state_dict(LAYOUT["tiny"]["unet"], seeds["unet_ema"], scale)
    vq = deterministic_state_dict(LAYOUT["tiny"]["vq"], seeds["vq"], scale)
    state = {f"model.diffusion_model.{k}": v for k, v in unet.items()}
    state.update({"model_ema." + f"diffusion_model.{k}".replace(".", ""): v for k, v in ema.items()})
    state.update({"model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(0, dtype=torch.int)})
    state.update({f"first_stage_model.{k}": v for k, v in vq.items()})
    ac = REF["alphas_cumprod"]
    state.update({"betas": (1 - ac / torch.cat([ac.new_ones(1), ac[:-1]])).float(), "alphas_cumprod": ac.float()})
    return state


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """``tiny.ckpt`` (a Lightning checkpoint: state_dict, epoch, global_step) with ``tiny.yaml`` beside it."""
    folder = tmp_path_factory.mktemp("ldm")
    torch.save({"state_dict": tiny_state(), "epoch": 3, "global_step": 12345}, folder / "tiny.ckpt")
    (folder / "tiny.yaml").write_text(yaml.safe_dump(ldm_yaml()))
    return folder / "tiny.ckpt"


@pytest.fixture(scope="module")
def tiny_prior(tiny_ckpt):
    return load_prior(str(tiny_ckpt))


def _meta_state(layout):
    return {k: torch.empty(tuple(s), device="meta") for k, s in layout}


def test_ffhq_ldm_layout_converts_to_diffusers():
    """The FFHQ LDM's UNet and VQ-f4 autoencoder (layouts recorded from the reference code) map key for
    key, shape for shape onto UNet2DModel / VQModel built from the built-in ffhq-ldm-vq-4 config —
    the same architecture as diffusers' own conversion CompVis/ldm-celebahq-256."""
    from diffusers import UNet2DModel, VQModel

    params = LDM_VQ4_256
    with torch.device("meta"):
        unet = UNet2DModel(**unet_config(params["unet_config"]["params"]))
        vq = VQModel(**vq_config(params["first_stage_config"]["params"], 1.0))
    for model, conv, layout, p in ((unet, convert_unet, "unet", params["unet_config"]["params"]),
                                   (vq, convert_vq, "vq", params["first_stage_config"]["params"])):
        got = {k: tuple(v.shape) for k, v in conv(_meta_state(LAYOUT["ffhq_ldm_vq_4"][layout]), p).items()}
        assert got == {k: tuple(v.shape) for k, v in model.state_dict().items()}, layout
    assert list(unet.config.block_out_channels) == [224, 448, 672, 896] and unet.config.attention_head_dim == 32
    assert list(unet.config.down_block_types) == ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"]


def test_schedule_is_ldms():
    """``make_beta_schedule("linear")`` is √-linear in β (util.py L21-25): ᾱ equal in float64."""
    assert torch.equal(ldm_alphas_cumprod(0.0015, 0.0195, 1000), REF["alphas_cumprod"].double())


def test_tiny_checkpoint_equals_the_reference_forward(tiny_prior):
    """load_prior on a LatentDiffusion .ckpt: the converted UNet's ε, the VQ encoder, the quantising
    decoder and the decoder alone equal the original LDM code's outputs (float64 ours vs float32
    reference, tolerance from the measured float32 rounding, tests/tolerance.py); ᾱ is LDM's."""
    assert isinstance(tiny_prior, LatentPrior) and tiny_prior.scaling_factor == 1.0
    inner, vq = tiny_prior.inner, tiny_prior.autoencoder
    assert (tiny_prior.image_size, tiny_prior.channels, inner.image_size, inner.channels) == (16, 3, 8, 3)
    assert torch.allclose(inner.alphas_cumprod.double().cpu(), REF["alphas_cumprod"].double(), rtol=1e-6, atol=0)
    x, t = REF["unet_x"], REF["unet_t"]
    assert_matches_float32_reference(lambda dt: in_dtype(inner.network, dt)(x.to(dt), t.to(dt)).sample,
                                     REF["unet_out"], "UNet epsilon")
    assert_matches_float32_reference(lambda dt: in_dtype(vq, dt).encode(REF["vq_x"].to(dt)).latents,
                                     REF["vq_encode"], "VQ encode")
    assert_matches_float32_reference(lambda dt: in_dtype(vq, dt).decode(REF["vq_z"].to(dt)).sample,
                                     REF["vq_decode"], "VQ decode (quantised)")
    assert_matches_float32_reference(lambda dt: in_dtype(vq, dt).decode(REF["vq_z"].to(dt), force_not_quantize=True).sample,
                                     REF["vq_decode_unquantized"], "VQ decode (not quantised)")
    # through the prior's own maps (what the solvers call), float32
    assert torch.allclose(tiny_prior.encode(REF["vq_x"]), REF["vq_encode"], atol=1e-5)
    assert torch.allclose(tiny_prior.decode(REF["vq_z"]), REF["vq_decode"], atol=1e-5)


def test_ema_weights_on_request(tiny_ckpt):
    """``ema=True`` loads LitEma's copy (``model_ema.diffusion_model…`` with the dots removed), what
    LDM's sample_diffusion.py samples with; the default loads ``model.diffusion_model.*`` as ReSample
    and DAPS do."""
    prior = load_prior(str(tiny_ckpt), ema=True)
    net = prior.inner.network
    assert_matches_float32_reference(lambda dt: in_dtype(net, dt)(REF["unet_ema_x"].to(dt), REF["unet_ema_t"].to(dt)).sample,
                                     REF["unet_ema_out"], "UNet epsilon (EMA)")


def test_lightning_classes_in_the_checkpoint_stay_inert(tmp_path, monkeypatch):
    """A PL 1.x checkpoint keys ``callbacks`` by Lightning's ``ModelCheckpoint`` class, which the
    weights-only unpickler refuses; such classes load as inert stand-ins, any other class is still
    refused (one line naming the file)."""
    def fake_class(module: str, name: str):
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            monkeypatch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
        cls = type(name, (), {"__module__": module, "__qualname__": name})
        setattr(sys.modules[module], name, cls)
        return cls

    checkpoint = fake_class("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint")
    other = fake_class("somepackage.evil", "Payload")
    state = tiny_state()
    torch.save({"state_dict": state, "callbacks": {checkpoint: {"best_model_score": torch.tensor(0.1)}}},
               tmp_path / "pl.ckpt")
    torch.save({"state_dict": state, "payload": other()}, tmp_path / "other.ckpt")
    for name in ("pytorch_lightning", "somepackage"):  # gone at load time, as on a user's machine
        for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            monkeypatch.delitem(sys.modules, mod)
    for f in ("pl", "other"):
        (tmp_path / f"{f}.yaml").write_text(yaml.safe_dump(ldm_yaml()))
    prior = load_prior(str(tmp_path / "pl.ckpt"))
    assert torch.allclose(prior.inner.network(REF["unet_x"], REF["unet_t"]).sample, REF["unet_out"], atol=1e-4)
    with pytest.raises(ValueError, match=r"other\.ckpt.*(weights-only|unsupported)") as err:
        load_prior(str(tmp_path / "other.ckpt"))
    assert "\n" not in str(err.value)


def test_bad_ldm_checkpoints_and_configs_fail_in_one_line(tmp_path, tiny_ckpt):
    state = tiny_state()
    torch.save({"state_dict": state}, tmp_path / "m.ckpt")
    cases = [  # (yaml params, expected message)
        (ldm_yaml(cond_stage_config={"target": "ldm.modules.encoders.modules.ClassEmbedder"}), "conditional LDM"),
        (ldm_yaml(vq={**TINY_VQ, "ddconfig": {**TINY_VQ["ddconfig"], "double_z": True}}), "KL autoencoder"),
        (ldm_yaml(unet={**TINY_UNET, "use_spatial_transformer": True}), "use_spatial_transformer"),
        ({"model": {"target": "ldm.models.autoencoder.VQModel"}}, "only ldm.models.diffusion.ddpm.LatentDiffusion"),
        (ldm_yaml(beta_schedule="cosine"), "beta_schedule 'cosine'"),  # was built as linear without a word
    ]
    for cfg, message in cases:
        (tmp_path / "m.yaml").write_text(yaml.safe_dump(cfg))
        with pytest.raises(ValueError, match=message):
            load_prior(str(tmp_path / "m.ckpt"))
    (tmp_path / "m.yaml").unlink()  # no config: the built-in FFHQ config does not fit the tiny weights
    with pytest.raises(ValueError, match="does not match its config") as err:
        load_prior(str(tmp_path / "m.ckpt"))
    assert "ffhq/celebahq-ldm-vq-4" in str(err.value)
    torch.save({"state_dict": {k: v for k, v in state.items() if not k.startswith("model_ema.")}}, tmp_path / "n.ckpt")
    (tmp_path / "n.yaml").write_text(yaml.safe_dump(ldm_yaml()))
    with pytest.raises(ValueError, match="no EMA weights"):
        load_prior(str(tmp_path / "n.ckpt"), ema=True)
    with pytest.raises(ValueError, match="unknown option.*num_channels"):
        load_prior(str(tiny_ckpt), num_channels=64)
    with pytest.raises(FileNotFoundError, match="LDM config not found"):
        load_prior(str(tiny_ckpt), config=str(tmp_path / "missing.yaml"))


def test_resample_runs_on_the_converted_ldm(tiny_prior):
    """ReSample's loop (its reference DDIM grid, DPS step, pixel and latent fits, resampling, final
    fit) on the converted prior: finite output, the documented NFE (steps + look-ahead calls)."""
    op = make_operator("super_resolution", scale=2)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = op.measure(x, 0.01, generator=torch.Generator().manual_seed(1))
    solver = make_solver("resample", steps=12, hdc_every=2, pixel_iters=3, latent_iters=3, stagnation=2, progress=False)
    res = solve(y, op, tiny_prior, solver, sigma=0.01, generator=torch.Generator().manual_seed(2))
    assert torch.isfinite(res.x).all() and res.x.shape == x.shape
    assert res.info[0]["nfe"] > 12


def test_cli_runs_resample_on_a_compvis_checkpoint(tmp_path):
    """``ipsolve prior=ffhq_ldm prior.source=ffhq-ldm-vq-4.ckpt solver=resample`` (budgets shrunk) on the
    tiny checkpoint, its yaml beside it: a finished run whose summary names the prior."""
    from test_cli import check_ok, ipsolve

    torch.save({"state_dict": tiny_state()}, tmp_path / "ffhq-ldm-vq-4.ckpt")
    (tmp_path / "ffhq-ldm-vq-4.yaml").write_text(yaml.safe_dump(ldm_yaml()))
    run = tmp_path / "run"
    check_ok(ipsolve("prior=ffhq_ldm", "prior.source=ffhq-ldm-vq-4.ckpt", "solver=resample", "solver.steps=6",
                     "solver.hdc_every=2", "solver.pixel_iters=2", "solver.latent_iters=2", "solver.stagnation=1",
                     "operator.scale=2", "data=photo_demo", "data.max_images=1", "progress=false",
                     f"hydra.run.dir={run}", cwd=tmp_path))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["num_finished"] == 1 and summary["prior"]["source"].endswith("ffhq-ldm-vq-4.ckpt")
    assert summary["prior"]["kind"] == "latent-diffusion" and summary["prior"]["image_size"] == 16


def test_latent_prior_audit_findings(tmp_path):
    """Audit 2026-12-05 (latent priors): a diffusers LDM folder's VQ ``scaling_factor`` is used
    when its config gives one (was always 1.0; diffusers 0.42 divides by it) and 1.0 when absent,
    a KL autoencoder without one is warned; a denoiser/autoencoder latent-channel mismatch, VAE
    tiling on a VQ model and the ldm presets on a missing, non-LDM, first-stage-free or
    text-conditioned checkpoint are one line each (were tracebacks or pointed at DPS's ADM file)."""
    from diffusers import DDPMScheduler, UNet2DModel, VQModel

    from ipsolve.priors import save_pretrained_prior

    def folder(name, latent_channels=3, scaling=None):
        unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                           norm_num_groups=4, down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2)
        vq = VQModel(in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=(8, 16),
                     down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                     norm_num_groups=4, num_vq_embeddings=16)
        save_pretrained_prior(tmp_path / name, "LDMPipeline", {"unet": unet, "vqvae": vq, "scheduler": DDPMScheduler()})
        cfg = json.loads((tmp_path / name / "vqvae" / "config.json").read_text())
        cfg.pop("scaling_factor", None)
        if scaling is not None:
            cfg["scaling_factor"] = scaling
        (tmp_path / name / "vqvae" / "config.json").write_text(json.dumps(cfg))
        return str(tmp_path / name)

    assert load_prior(folder("scaled", scaling=0.5)).scaling_factor == 0.5
    plain = folder("plain")
    assert load_prior(plain).scaling_factor == 1.0  # CompVis/ldm-celebahq-256's case: no key
    assert load_prior(folder("resaved", scaling=0.18215)).scaling_factor == 1.0  # what save_pretrained writes
    with pytest.raises(ValueError, match="takes 3-channel latents but the autoencoder"):
        load_prior(folder("mismatch", latent_channels=4))
    with pytest.raises(ValueError, match="vae_tiling needs a prior with an AutoencoderKL; .* has VQModel"):
        load_prior(plain, vae_tiling=True)
    with pytest.raises(ValueError, match="is a diffusers folder, not a CompVis .ckpt"):
        load_prior(plain, config=None, ema=False)  # what prior=ffhq_ldm prior.source=FOLDER passes
    with pytest.raises(FileNotFoundError, match="latent-diffusion checkpoint not found"):
        load_prior(str(tmp_path / "missing.ckpt"), config=None, ema=False)
    state = tiny_state()
    torch.save({"state_dict": {k: v for k, v in state.items() if not k.startswith("first_stage_model.")}},
               tmp_path / "unet_only.ckpt")
    with pytest.raises(ValueError, match="without its autoencoder"):
        load_prior(str(tmp_path / "unet_only.ckpt"), config=None, ema=False)
    torch.save({"state_dict": {**state, "cond_stage_model.transformer.weight": torch.zeros(2)}}, tmp_path / "sd.ckpt")
    with pytest.raises(ValueError, match=r"text-conditioned .*\(prior=sd15"):
        load_prior(str(tmp_path / "sd.ckpt"))
    # ReSample's steps setting: a grid without hard data consistency, or longer than asked, is said
    from ipsolve.solvers import make_solver

    assert "no hard data-consistency step" in make_solver("resample", steps=10).grid_note(10)
    assert "steps=400 runs 500 DDIM steps" in make_solver("resample", steps=400).grid_note(500)
    assert make_solver("resample", steps=250).grid_note(250) is None


def test_latent_solvers_report_their_autoencoder_work(tiny_prior):
    """The NFE counts denoiser calls; a latent solver's decoder passes (most of ReSample's and
    LatentDAPS's work at small sizes, audit 2026-12-05) are recorded beside it and summed into
    the run summary and its report line."""
    from ipsolve.runner.reports import autoencoder_passes

    op = make_operator("super_resolution", scale=4)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = op.measure(x, 0.05, generator=torch.Generator().manual_seed(1))
    daps = solve(y, op, tiny_prior, make_solver("daps", annealing_steps=2, ode_steps=1, mcmc_steps=3,
                                                progress=False), sigma=0.05, generator=0)
    assert daps.info[0]["decoder_backward"] == 6 and autoencoder_passes(daps.info[0]) == 7
    assert autoencoder_passes({"nfe": 10}) is None
