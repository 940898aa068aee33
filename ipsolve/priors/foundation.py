"""Text-conditioned foundation priors from diffusers pipeline folders: Stable Diffusion 1.x/2.x,
Stable Diffusion 3 and FLUX.

The pipeline is loaded with its own diffusers class, the prompt is embedded once with the
pipeline's own ``encode_prompt``, and the text encoders and tokenizers are then released (a
T5-XXL holds ~9 GB).  What remains is an ordinary ipsolve prior:

* SD 1.x/2.x → ``LatentPrior(AutoencoderKL, DiffusionPrior(UNet2DConditionModel))``, ε or v
  prediction and ``alphas_cumprod`` from the pipeline's scheduler;
* SD3 → ``LatentPrior(AutoencoderKL, FlowPrior(SD3Transformer2DModel))``;
* FLUX → ``LatentPrior(AutoencoderKL, FlowPrior(FluxTransformer2DModel))``: latents stay
  ``(B, 16, H/8, W/8)`` images for the solvers; packing into 2×2 patches and the position ids
  happen inside the network call, as ``FluxPipeline`` does.

Latents are ``(z − shift_factor) · scaling_factor`` as in the pipelines.  The network receives
the timestep exactly as the pipeline's denoising loop passes it (SD: the integer t; SD3: σ·1000;
FLUX: σ, i.e. the pipeline's ``timestep / 1000``), so ε / velocity equal the pipeline's.
"""
from __future__ import annotations

import gc
import logging
import sys
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..notices import shown
from .base import DiffusionPrior, FlowPrior, LatentPrior

log = logging.getLogger("ipsolve")


@dataclass(frozen=True)
class Family:
    name: str
    pipeline: str  # diffusers pipeline class used to load the folder and encode the prompt
    network: str  # component holding the denoiser
    required: tuple[str, ...]
    t5: str | None = None  # the optional T5 component (SD3 runs without it)


FAMILIES = {
    "UNet2DConditionModel": Family("Stable Diffusion", "StableDiffusionPipeline", "unet",
                                   ("unet", "vae", "scheduler", "text_encoder", "tokenizer")),
    "SD3Transformer2DModel": Family("Stable Diffusion 3", "StableDiffusion3Pipeline", "transformer",
                                    ("transformer", "vae", "scheduler", "text_encoder", "tokenizer",
                                     "text_encoder_2", "tokenizer_2"), t5="text_encoder_3"),
    "FluxTransformer2DModel": Family("FLUX", "FluxPipeline", "transformer",
                                     ("transformer", "vae", "scheduler", "text_encoder", "tokenizer",
                                      "text_encoder_2", "tokenizer_2")),
}
TEXT_COMPONENTS = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "text_encoder_3", "tokenizer_3")


def family_of(index: dict) -> Family | None:
    """The foundation family of a ``model_index.json``, from its denoiser's class."""
    for key in ("unet", "transformer"):
        entry = index.get(key)
        if isinstance(entry, list) and len(entry) == 2 and entry[1] in FAMILIES:
            return FAMILIES[entry[1]]
    return None


def check_pipeline_class(root: Path, index: dict, family: Family) -> None:
    """Only the pipelines ipsolve loads: SDXL, SD-inpainting (a 9-channel UNet), img2img, ... share
    a family's denoiser class but not its conditioning, and would fail deep inside diffusers."""
    cls = index.get("_class_name")
    if cls is not None and cls != family.pipeline:
        supported = ", ".join(f"{f.pipeline} ({f.name})" for f in FAMILIES.values())
        raise ValueError(f"{root} holds a {cls}; ipsolve's foundation priors load {supported} folders")


def check_text_options(family: Family, prompt, negative_prompt, guidance_scale, image_size, use_t5) -> tuple[str, str]:
    """``(prompt, negative_prompt)`` as strings (None: empty), or one line naming the bad option."""
    out = []
    for name, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise ValueError(f"{name} must be one string (the prior embeds it once; load one prior per prompt), "
                             f"got {shown(text)}")
        out.append(text)
    if guidance_scale is not None and (isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float))
                                       or not guidance_scale >= 0):
        raise ValueError(f"guidance_scale must be a number >= 0 (SD/SD3: > 1 turns classifier-free guidance on), "
                         f"got {shown(guidance_scale)}")
    if guidance_scale is not None and family.pipeline != "FluxPipeline" and guidance_scale < 1:
        raise ValueError(f"guidance_scale {guidance_scale} < 1: classifier-free guidance runs only above 1 (as the "
                         f"pipelines: at or below 1 the prompt alone, unguided); use 1 (none) or > 1")
    if out[1] and family.pipeline != "FluxPipeline" and not (guidance_scale or 1.0) > 1.0:
        raise ValueError("negative_prompt needs classifier-free guidance, guidance_scale > 1; with "
                         f"guidance_scale {guidance_scale if guidance_scale is not None else 1} it would be ignored")
    if family.pipeline != "FluxPipeline" and (guidance_scale or 1.0) > 1.0 and out[0] == out[1]:
        # u + g(c − u) = c when the two embeddings are the same: twice the network calls for the unguided result
        raise ValueError(f"guidance_scale {guidance_scale} with the same prompt and negative prompt ({out[0]!r}) gives "
                         f"the unguided result at twice the cost: give a prompt (e.g. prior.prompt='a photo of a "
                         f"face'), or guidance_scale 1")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be a positive integer (pixels, square images), got {shown(image_size)}")
    if use_t5 is not True and family.t5 is None:
        raise ValueError(f"use_t5 applies only to Stable Diffusion 3 pipelines; this is {family.name}")
    return out[0], out[1]


def attention_backends(device: torch.device):
    """Scaled-dot-product attention without cuDNN's fused kernel on CUDA: its backward failed on
    FLUX.1-dev's shapes at 512 px (bf16, 24 heads × 128, 1536 tokens; torch 2.11 / CUDA 13 on an
    H200, 2026-12-04: "mha_graph.execute(...).is_good()", then an illegal memory access), which
    every solver that back-propagates through the network hits.  Flash and memory-efficient
    attention compute the same function; the backward uses the kernel the forward chose."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if torch.device(device).type != "cuda":
        return nullcontext()
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


class TextConditionedNetwork(nn.Module):
    """``forward(x, timestep)`` of a diffusers denoiser with prompt embeddings fixed at load.

    ``guidance_scale > 1`` (SD, SD3): classifier-free guidance as the pipelines do it — one call
    on ``[negative, prompt]``, ``out = u + g·(c − u)`` on the raw network output (two network
    evaluations per call); otherwise one evaluation on the prompt."""

    def __init__(self, network: nn.Module, cond: dict, uncond: dict | None = None, guidance_scale: float = 1.0):
        super().__init__()
        self.network, self.guidance_scale = network, float(guidance_scale)
        self.guided = uncond is not None and self.guidance_scale > 1.0
        self.keys = sorted(cond)
        for k in self.keys:
            self.register_buffer(f"cond_{k}", cond[k], persistent=False)
            if self.guided:
                self.register_buffer(f"uncond_{k}", uncond[k], persistent=False)

    @property
    def evaluations_per_call(self) -> int:
        return 2 if self.guided else 1

    def _embeddings(self, prefix: str, batch: int, dtype) -> dict:
        out = {}
        for k in self.keys:
            e = getattr(self, f"{prefix}_{k}")
            out[k] = e.expand(batch, *e.shape[1:]).to(dtype if e.is_floating_point() else e.dtype)
        return out

    def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        with attention_backends(x.device):
            return self._forward(x, timestep)

    def _forward(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        timestep = torch.as_tensor(timestep, device=x.device).reshape(-1).expand(b)
        if not self.guided:
            return self.call(x, timestep, self._embeddings("cond", b, x.dtype))
        emb = {k: torch.cat([u, c]) for (k, u), c in zip(self._embeddings("uncond", b, x.dtype).items(),
                                                          self._embeddings("cond", b, x.dtype).values())}
        uncond, cond = self.call(torch.cat([x, x]), torch.cat([timestep, timestep]), emb).chunk(2)
        return uncond + self.guidance_scale * (cond - uncond)

    def call(self, x, timestep, emb) -> torch.Tensor:
        raise NotImplementedError


class StableDiffusionNetwork(TextConditionedNetwork):
    """``UNet2DConditionModel(x, t, encoder_hidden_states)`` (StableDiffusionPipeline's loop)."""

    def call(self, x, timestep, emb):
        return self.network(x, timestep, encoder_hidden_states=emb["prompt_embeds"], return_dict=False)[0]


class SD3Network(TextConditionedNetwork):
    """``SD3Transformer2DModel`` with ``encoder_hidden_states`` and ``pooled_projections``;
    ``timestep`` is σ·1000 (StableDiffusion3Pipeline passes ``scheduler.timesteps``)."""

    def call(self, x, timestep, emb):
        return self.network(hidden_states=x, timestep=timestep, encoder_hidden_states=emb["prompt_embeds"],
                            pooled_projections=emb["pooled_prompt_embeds"], return_dict=False)[0]


class FluxNetwork(TextConditionedNetwork):
    """``FluxTransformer2DModel`` on 2×2-packed latents with text/image position ids and, where
    the model has one, the guidance embedding (FluxPipeline's loop: ``timestep / 1000``)."""

    def __init__(self, network, cond, text_ids: torch.Tensor, guidance: float | None):
        super().__init__(network, cond)
        self.register_buffer("text_ids", text_ids, persistent=False)
        self.embedded_guidance = guidance

    def call(self, x, timestep, emb):
        from diffusers import FluxPipeline

        b, c, h, w = x.shape
        packed = FluxPipeline._pack_latents(x, b, c, h, w)
        img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, x.device, x.dtype)
        guidance = (torch.full((b,), self.embedded_guidance, device=x.device, dtype=torch.float32)
                    if self.embedded_guidance is not None else None)
        # FluxPipeline casts the timestep to the latents' dtype before / 1000 (bf16: σ·1000 rounded), as here
        out = self.network(hidden_states=packed, timestep=timestep.to(x.dtype) / 1000, guidance=guidance,
                           pooled_projections=emb["pooled_prompt_embeds"], encoder_hidden_states=emb["prompt_embeds"],
                           txt_ids=self.text_ids, img_ids=img_ids, return_dict=False)[0]
        # _unpack_latents takes the image size and VAE factor; with factor 1 it is the latent size
        return FluxPipeline._unpack_latents(out, h, w, 1)


@contextmanager
def loading_bars(show: bool):
    """diffusers' and transformers' loading progress bars only on a terminal (logs stay clean)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    if show:
        yield
        return
    dlog.disable_progress_bar(); tlog.disable_progress_bar()
    try:
        yield
    finally:
        dlog.enable_progress_bar(); tlog.enable_progress_bar()


def check_components(root: Path, index: dict, family: Family, use_t5: bool) -> None:
    """One clear error naming every component the pipeline needs but the folder lacks."""
    needed = list(family.required)
    if family.t5 and use_t5 and isinstance(index.get(family.t5), list) and index[family.t5][0] is not None:
        needed += [family.t5, family.t5.replace("text_encoder", "tokenizer")]
    missing = [n for n in needed if not (root / n).is_dir() or not isinstance(index.get(n), list) or index[n][0] is None]
    if missing:
        hint = (" (SD3 runs without T5: load with use_t5=False, ipsolve prior.use_t5=false)"
                if family.t5 and any(m.endswith("_3") for m in missing) else "")
        raise ValueError(f"{root}: the {family.name} pipeline is missing {', '.join(missing)} "
                         f"(needs {', '.join(needed)}){hint}")


def check_image_size(size: int, multiple: int, family: Family, max_size: int | None = None) -> None:
    if size < multiple or size % multiple:
        raise ValueError(f"image_size {size} cannot be taken by this {family.name} prior: it must be a positive "
                         f"multiple of {multiple} (VAE downsampling{' × 2×2 patches' if family.network == 'transformer' else ''})")
    if max_size is not None and size > max_size:
        raise ValueError(f"image_size {size} exceeds the {family.name} transformer's position-embedding limit of {max_size} px")


def load_foundation(root: Path, index: dict, *, prompt: str = "", negative_prompt: str = "",
                    guidance_scale: float | None = None, image_size: int | None = None, use_t5: bool = True,
                    max_sequence_length: int | None = None, family: str | None = None,
                    dtype: torch.dtype | None = None, device=None,
                    gradient_checkpointing: bool = False, vae_tiling: bool = False, vae_slicing: bool = False):
    """A Stable Diffusion / SD3 / FLUX pipeline folder as a latent prior (module docstring).

    ``prompt`` / ``negative_prompt``: embedded once, then the text encoders are released.
    ``guidance_scale``: SD/SD3 classifier-free guidance (default 1: none, one evaluation per
    call); FLUX: the embedded guidance of guidance-distilled models (default 3.5, FluxPipeline's).
    ``image_size``: pixels (default the pipeline's native size).  ``gradient_checkpointing``:
    diffusers' block-level checkpointing in the denoiser and the VAE (for solvers that
    back-propagate through them: DPS, ReSample, DMPlug, FMPlug).  ``vae_tiling`` /
    ``vae_slicing``: the AutoencoderKL's tiled / per-image decoding.  ``family``: the family a
    preset's settings are for (``Stable Diffusion``, ``Stable Diffusion 3``, ``FLUX``); a folder of
    another one is refused (``sd3_medium`` on a FLUX folder set FLUX's embedded guidance to 1)."""
    import diffusers

    expected = family
    family = family_of(index)
    check_pipeline_class(root, index, family)
    if expected is not None and str(expected) != family.name:
        known = ", ".join(f.name for f in FAMILIES.values())
        if str(expected) not in known.split(", "):
            raise ValueError(f"family must be one of {known}, got {shown(expected)}")
        preset = {"Stable Diffusion": "sd15", "Stable Diffusion 3": "sd3_medium", "FLUX": "flux_dev"}[family.name]
        raise ValueError(f"{root} holds a {family.name} pipeline, but these settings are for {expected} (family="
                         f"{expected}: a {expected} preset's dtype, guidance and size): use the {family.name} preset on "
                         f"it (prior={preset} prior.source={root}; load_prior({preset!r}, source='{root}')), or the "
                         f"folder with your own settings (prior={root}; load_prior('{root}'))")
    t5_prompt = family.pipeline in ("StableDiffusion3Pipeline", "FluxPipeline")  # T5 tokens (SD3 optionally)
    if max_sequence_length is not None:
        if not t5_prompt:
            raise ValueError(f"max_sequence_length applies to T5 prompts (SD3, FLUX); {family.name} encodes the prompt "
                             f"with CLIP (77 tokens)")
        if isinstance(max_sequence_length, bool) or not isinstance(max_sequence_length, int) \
                or not 1 <= max_sequence_length <= 512:
            raise ValueError(f"max_sequence_length must be an integer in [1, 512] (T5 tokens), got {shown(max_sequence_length)}")
    prompt, negative_prompt = check_text_options(family, prompt, negative_prompt, guidance_scale, image_size, use_t5)
    check_components(root, index, family, use_t5)
    extra = {}
    if family.pipeline == "StableDiffusionPipeline":
        extra = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
        if "image_encoder" in index:
            extra["image_encoder"] = None
    if family.t5 and not use_t5:
        extra.update(text_encoder_3=None, tokenizer_3=None)
    extra.update({k: None for k, v in index.items() if isinstance(v, list) and v and v[0] is None})  # saved as absent
    try:
        with loading_bars(sys.stderr.isatty()), warnings.catch_warnings():
            # torch_dtype works from diffusers 0.30 on; newer releases prefer `dtype` and warn
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            pipe = getattr(diffusers, family.pipeline).from_pretrained(root, torch_dtype=dtype, **extra)
    except Exception as err:  # noqa: BLE001 - corrupt or mismatched component
        raise ValueError(f"cannot load the {family.name} pipeline in {root}: {type(err).__name__}: {err}") from None
    network, vae, scheduler = getattr(pipe, family.network), pipe.vae, pipe.scheduler
    vae_factor = pipe.vae_scale_factor
    enc_device = torch.device(device) if device is not None else torch.device("cpu")
    for name in TEXT_COMPONENTS:  # encode where the prior will run; only the encoders move there
        enc = getattr(pipe, name, None)
        if isinstance(enc, nn.Module):
            enc.to(enc_device)
    t5_used = t5_prompt and isinstance(getattr(pipe, family.t5 or "text_encoder_2", None), nn.Module)
    if family.t5 and use_t5 and not t5_used:
        log.warning("%s: the folder holds no T5 text encoder; the prompt is embedded without it (zeros in its place, "
                    "as the pipeline does): say use_t5=false", root)
    with torch.no_grad():
        if family.pipeline == "StableDiffusionPipeline":
            g = 1.0 if guidance_scale is None else float(guidance_scale)
            cond, uncond = pipe.encode_prompt(prompt, enc_device, 1, g > 1.0, negative_prompt=negative_prompt or None)
            net = StableDiffusionNetwork(network, {"prompt_embeds": cond},
                                         {"prompt_embeds": uncond} if g > 1.0 else None, g)
        elif family.pipeline == "StableDiffusion3Pipeline":
            g = 1.0 if guidance_scale is None else float(guidance_scale)
            pe, npe, ppe, nppe = pipe.encode_prompt(prompt=prompt, prompt_2=None, prompt_3=None, device=enc_device,
                                                   do_classifier_free_guidance=g > 1.0,
                                                   negative_prompt=negative_prompt or None,
                                                   max_sequence_length=max_sequence_length or 256)
            net = SD3Network(network, {"prompt_embeds": pe, "pooled_prompt_embeds": ppe},
                             {"prompt_embeds": npe, "pooled_prompt_embeds": nppe} if g > 1.0 else None, g)
        else:
            if negative_prompt:
                raise ValueError("negative_prompt needs classifier-free guidance, which ipsolve's FLUX prior does not do "
                                 "(FLUX-dev is guidance-distilled: guidance_scale sets its embedded guidance)")
            pe, ppe, text_ids = pipe.encode_prompt(prompt=prompt, prompt_2=None, device=enc_device,
                                                   max_sequence_length=max_sequence_length or 512)
            guided = bool(network.config.guidance_embeds)
            if guidance_scale is not None and not guided:
                raise ValueError("guidance_scale does not apply: this FLUX transformer has no guidance embedding "
                                 "(e.g. FLUX.1-schnell), and ipsolve's FLUX prior does no classifier-free guidance; "
                                 "give guidance_scale=null (prior.guidance_scale=null; the flux_dev preset sets 3.5) "
                                 "or load the folder itself (prior=DIR)")
            net = FluxNetwork(network, {"prompt_embeds": pe, "pooled_prompt_embeds": ppe}, text_ids,
                              (3.5 if guidance_scale is None else float(guidance_scale)) if guided else None)
    for name in TEXT_COMPONENTS:  # release the text encoders and tokenizers
        if hasattr(pipe, name):
            setattr(pipe, name, None)
    del pipe
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    if gradient_checkpointing:
        network.enable_gradient_checkpointing()
        vae.enable_gradient_checkpointing()
    if vae_tiling:
        vae.enable_tiling()
    if vae_slicing:
        vae.enable_slicing()
    cfg = network.config
    if family.network == "unet":
        size = image_size or cfg.sample_size * vae_factor
        check_image_size(size, vae_factor, family)
        inner = DiffusionPrior(net, scheduler.alphas_cumprod, size // vae_factor, cfg.in_channels,
                               prediction_type=scheduler.config.get("prediction_type", "epsilon"))
    else:
        patch = cfg.patch_size if family.pipeline == "StableDiffusion3Pipeline" else 2
        default = (cfg.sample_size if family.pipeline == "StableDiffusion3Pipeline" else 128) * vae_factor
        size = image_size or default
        max_size = cfg.pos_embed_max_size * patch * vae_factor if getattr(cfg, "pos_embed_max_size", None) else None
        check_image_size(size, vae_factor * patch, family, max_size)
        latent = size // vae_factor
        channels = cfg.in_channels // (4 if family.pipeline == "FluxPipeline" else 1)
        inner = FlowPrior(net, latent, channels, network_convention="diffusers",
                          timestep_scale=float(scheduler.config.num_train_timesteps),
                          sigma_schedule=lambda steps: pipeline_sigmas(scheduler, steps, (latent // patch) ** 2,
                                                                       family.pipeline == "FluxPipeline"))
    prior = LatentPrior(vae, inner, image_size=size, channels=vae.config.in_channels,
                        scaling_factor=vae.config.scaling_factor, shift_factor=vae.config.shift_factor or 0.0)
    prior.conditioning = {"family": family.name, "prompt": prompt, "negative_prompt": negative_prompt,
                          "guidance_scale": getattr(net, "embedded_guidance", None) if family.pipeline == "FluxPipeline"
                          else net.guidance_scale, "evaluations_per_call": net.evaluations_per_call}
    if t5_prompt:  # change the prompt embedding: part of what defines the results (and the resume fingerprint)
        prior.conditioning.update(t5=t5_used, max_sequence_length=max_sequence_length or
                                  (512 if family.pipeline == "FluxPipeline" else 256))
    tile = getattr(vae, "tile_sample_min_size", None)
    if vae_tiling and tile is not None and size > tile:  # tiled decoding changes the decoded image: its tile side
        prior.conditioning["vae_tile_px"] = int(tile)
    elif vae_tiling and tile is not None:
        log.warning("vae_tiling: the VAE tiles only images larger than its %s px (tile_sample_min_size, its config's "
                    "sample_size); %s-px images are decoded whole, as without tiling", tile, size)
    # (gradient checkpointing changes memory only: prior.memory_options records it, outside the fingerprint)
    return prior


def pipeline_sigmas(scheduler, steps: int, image_seq_len: int, flux: bool) -> torch.Tensor:
    """The σ grid (``steps + 1`` values, 1 → 0) the pipeline would sample on: SD3's
    ``set_timesteps(steps)`` with its ``shift`` (and ``mu`` when it shifts dynamically); FLUX's
    ``sigmas = linspace(1, 1/steps, steps)`` shifted by ``mu`` for the image's token count."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    c = scheduler.config
    kwargs = {}
    if c.get("use_dynamic_shifting"):
        kwargs["mu"] = calculate_shift(image_seq_len, c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096),
                                       c.get("base_shift", 0.5), c.get("max_shift", 1.15 if flux else 1.16))
    if flux and not c.get("use_flow_sigmas"):
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), **kwargs)
    else:
        scheduler.set_timesteps(steps, **kwargs)
    return scheduler.sigmas.detach().cpu().clone()
