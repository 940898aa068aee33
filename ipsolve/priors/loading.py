"""``load_prior``: one entry point for every source a prior can come from."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from ..notices import did_you_mean, shown
from .base import DiffusionPrior, FlowPrior, LatentPrior, Prior

log = logging.getLogger("ipsolve")

BUNDLED_DIR = Path(__file__).parent / "bundled"
SOURCE_KINDS = ("a diffusers directory or hub id (UNet2DModel + scheduler; LDM with vqvae/vae; flow matching "
                "with FlowMatchEulerDiscreteScheduler)", "a Stable Diffusion 1.x/2.x, SD3 or FLUX pipeline folder or "
                "hub id (model_index.json; or its preset: sd15, sd3_medium, flux_dev)",
                "an OpenAI guided-diffusion (ADM) checkpoint file (.pt/.pth)",
                "a CompVis latent-diffusion checkpoint (.ckpt, VQ first stage)",
                "bundled:<name>", "gaussian", "gmm")


def bundled_names() -> list[str]:
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "model_index.json").is_file()) if BUNDLED_DIR.is_dir() else []


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64}
DIFFUSERS_OPTIONS = ("gradient_checkpointing", "vae_tiling", "vae_slicing")
SPEED_OPTIONS = ("channels_last", "compile")  # any prior: Prior.optimize
TEXT_OPTIONS = ("prompt", "negative_prompt", "guidance_scale", "image_size", "use_t5", "max_sequence_length", "family")


def as_dtype(dtype) -> torch.dtype | None:
    """A torch dtype from a dtype or its name (``bf16``, ``float16``, ... as configs write it)."""
    if isinstance(dtype, torch.dtype) and not dtype.is_floating_point:  # torch's own error named nn.Module.to
        raise ValueError(f"dtype must be a floating-point type for the networks ({', '.join(DTYPES)}), got {dtype}")
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.").lower()
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of: {', '.join(DTYPES)}")
    return DTYPES[name]


def load_prior(source: str, /, *, device=None, dtype=None, **kwargs) -> Prior:
    """Load a prior.  ``source`` is one of: ``bundled:<name>``; ``gaussian`` / ``gmm`` (analytic,
    ``kwargs`` as in :func:`make_analytic_prior`); a diffusers directory (DDPM/DDIM pipeline
    layout, LDM layout with ``vqvae``/``vae``, a flow-matching UNet whose scheduler is
    ``FlowMatchEulerDiscreteScheduler``, or a Stable Diffusion 1.x/2.x, SD3 or FLUX pipeline —
    ``kwargs`` then as in :func:`ipsolve.priors.foundation.load_foundation`: ``prompt``,
    ``guidance_scale``, ``image_size``, ...); a hub id of such a repository (from the local
    Hugging Face cache when offline); an ADM checkpoint file (``kwargs``: ADM config, default
    DPS's FFHQ-256); or a CompVis latent-diffusion checkpoint (``kwargs``: ``config``, the LDM yaml,
    default beside the file or the FFHQ/CelebA-HQ VQ-f4 config; ``ema``), told apart by its keys.
    ``dtype``: the networks' dtype (a torch dtype or a name such as ``bf16``).
    ``channels_last`` (default ``"auto"``: on a CPU) / ``compile``: speed options for any prior
    (:meth:`Prior.optimize`)."""
    if not isinstance(source, (str, os.PathLike)):  # (str(None) became the source 'None')
        raise TypeError(f"source must be a prior's name or path (bundled:<name>, a folder, a hub id, a checkpoint), "
                        f"got {type(source).__name__}")
    source = str(source)
    dtype = as_dtype(dtype)
    check_device(device)
    speed = {"channels_last": "auto", **{k: kwargs.pop(k) for k in SPEED_OPTIONS if k in kwargs}}
    if source in ("gaussian", "gmm"):
        import inspect

        from .analytic import make_analytic_prior

        options = [k for k in inspect.signature(make_analytic_prior).parameters if k != "name"]
        unknown = [k for k in kwargs if k not in options]
        if unknown:  # (a raw "unexpected keyword argument" before)
            raise TypeError(f"load_prior({source!r}) has no option {unknown[0]!r}{did_you_mean(unknown[0], options)}; "
                            f"its options: {', '.join(options)} (image_size: the side in pixels, default 4)")
        prior = make_analytic_prior(source, **kwargs)
    elif source.startswith("bundled:"):
        name = source.split(":", 1)[1]
        if not (BUNDLED_DIR / name / "model_index.json").is_file():
            raise ValueError(f"unknown bundled prior {name!r}; bundled priors: {', '.join(bundled_names()) or 'none'}")
        prior = _load_diffusers_dir(BUNDLED_DIR / name, source, device, dtype, kwargs)
    elif os.path.isfile(source) or source.endswith((".pt", ".pth", ".ckpt")):
        prior = _load_checkpoint_file(source, kwargs)
    elif os.path.isdir(source):
        prior = _load_diffusers_dir(Path(source), source, device, dtype, kwargs)
    elif _looks_like_hub_id(source):
        prior = _load_diffusers_dir(_hub_snapshot(source), source, device, dtype, kwargs)
    else:
        where = "" if os.path.isabs(os.path.expanduser(source)) else f" in {os.getcwd()}"
        raise ValueError(f"cannot load a prior from {source!r}: no such file or directory{where}, and not a known source. "
                         f"Sources: {'; '.join(SOURCE_KINDS)}")
    prior.source = source
    prior.eval().requires_grad_(False)
    if device is not None or dtype is not None:
        _place(prior, device, dtype)
    if dtype == torch.float16:
        half_precision_notes(prior, check_device(device))
    prior.optimize(**speed)
    return prior


def half_precision_notes(prior: Prior, device) -> None:
    """fp16 weights: gradients through an fp16 decoder underflow — a mean squared residual over a
    512-px image gives ~2r/m per entry, below fp16's smallest value (audit 2026-12-06: ×4 SR at
    512 px, the latent gradient's cosine to fp32's 0.006, bf16 0.998; ReSample's latent fit did not
    move) — and fp16 convolutions on a CPU are hundreds of times slower (340× for a 3×3 conv)."""
    if isinstance(prior, LatentPrior) and prior.autoencoder is not None:
        log.warning("dtype fp16: gradients through the fp16 decoder underflow for the solvers that back-propagate "
                    "through it (DPS, ReSample, DMPlug, FMPlug, LatentDAPS): use dtype=bf16 (fp32's range, the same "
                    "memory)")
    if device is None or device.type == "cpu":
        log.warning("dtype fp16 on a CPU: its convolutions run hundreds of times slower than bf16 or fp32 here; "
                    "use dtype=bf16 or fp32")


def check_device(device) -> torch.device | None:
    """``device`` as a torch device, or one line for a name torch does not know, or a CUDA device
    this machine lacks (the runner's ``device=`` uses it too)."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {shown(device)}; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "mps" and not torch.backends.mps.is_available():  # (torch's RuntimeError at the first .to())
        raise ValueError(f"device {shown(device)}: Apple's MPS is not available here (torch {torch.__version__}); "
                         f"use cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: no CUDA GPU is available here (torch {torch.__version__}, "
                         f"torch.cuda.is_available() is False); use cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cpu") if dev.type == "cpu" else dev  # "cpu:0" is the one CPU (its tensors say "cpu")


def save_pretrained_prior(out, pipeline_class: str, components: dict) -> Path:
    """Write a prior in the diffusers pipeline layout ``load_prior`` reads: ``model_index.json``
    plus one ``save_pretrained`` folder per component (``unet``, ``scheduler``, ``vqvae``/``vae``).
    ``pipeline_class``: ``DDPMPipeline``, ``LDMPipeline`` or ``FlowMatchingPipeline``."""
    import diffusers

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index = {"_class_name": pipeline_class, "_diffusers_version": diffusers.__version__}
    for name, obj in components.items():
        obj.save_pretrained(out / name)
        index[name] = ["diffusers", type(obj).__name__]
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    return out


def _place(prior: Prior, device, dtype):
    """Move to ``device``; cast the networks (not the schedule tables) to ``dtype``."""
    prior.to(device=device)
    if dtype is not None:
        for name in ("network", "autoencoder"):
            for mod in (getattr(prior, name, None), getattr(getattr(prior, "inner", None), name, None)):
                # a foundation pipeline was loaded in dtype already: casting diffusers' VAE again only warns
                if isinstance(mod, torch.nn.Module) and any(p.dtype != dtype for p in mod.parameters()):
                    mod.to(dtype=dtype)


def _looks_like_hub_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "/", "~"))


class HubUnavailable(FileNotFoundError):
    """A hub id that is neither in the local cache nor downloadable (offline, or the download failed):
    ``repo_id`` and ``why`` (the first sentence), so that a preset's caller can say how to get it."""

    def __init__(self, repo_id: str, why: str):
        self.repo_id, self.why = repo_id, why
        super().__init__(f"{why}. On a machine with internet run `hf download {repo_id} --local-dir DIR`, copy DIR "
                         f"here and use it as the source (ipsolve prior=DIR, or load_prior('DIR'); a Stable Diffusion, "
                         f"SD3 or FLUX folder with its preset, which keeps the preset's dtype, size and checkpointing: "
                         f"ipsolve prior=PRESET prior.source=DIR, load_prior('PRESET', source='DIR'), PRESET one of "
                         f"sd15, sd3_medium, flux_dev)")


def _hub_snapshot(repo_id: str) -> Path:
    """The local snapshot of a hub repository; downloads only when online is allowed."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE

    offline = os.environ.get("HF_HUB_OFFLINE", "0").upper() in ("1", "ON", "YES", "TRUE")
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - not in the cache
        if offline:
            raise HubUnavailable(repo_id, f"prior {repo_id!r} is not available offline (HF_HUB_OFFLINE=1) and is not "
                                          f"in the Hugging Face cache {HF_HUB_CACHE}") from None
    try:
        return Path(snapshot_download(repo_id))
    except Exception as err:  # noqa: BLE001
        first = " ".join(str(err).split())[:200]  # (httpx's multi-line "Got: ConnectError" block, on one line)
        raise HubUnavailable(repo_id, f"could not download prior {repo_id!r} ({type(err).__name__}: {first})") from None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None


def _load_module(cls_name: str, path: Path):
    import diffusers

    cls = getattr(diffusers, cls_name, None)
    if cls is None:
        raise ValueError(f"{path}: unknown diffusers class {cls_name!r}")
    try:
        # low_cpu_mem_usage=False: a missing or extra weight is an error, never a silent random init
        return cls.from_pretrained(path, low_cpu_mem_usage=False)
    except Exception as err:  # noqa: BLE001 - corrupt or mismatched checkpoint
        raise ValueError(f"cannot load {cls_name} from {path}: {type(err).__name__}: {err}") from None


def _component(root: Path, index: dict, names) -> tuple[str, Path] | None:
    for name in names:
        if name in index and isinstance(index[name], list) and index[name][1]:
            if not (root / name / "config.json").is_file():  # (diffusers would go looking on the Hub for it)
                raise ValueError(f"{root}: model_index.json lists {name}/ ({index[name][1]}) but {root / name}/config.json "
                                 f"is missing (an incomplete copy?)")
            return index[name][1], root / name
        if (root / name / "config.json").is_file():
            return _read_json(root / name / "config.json").get("_class_name"), root / name
    return None


def _load_diffusers_dir(root: Path, source: str, device, dtype, options: dict) -> Prior:
    """A diffusers directory: a text-conditioned foundation pipeline (SD, SD3, FLUX), or a DDPM/DDIM
    pipeline, LDM pipeline or flow-matching UNet (unconditional, ``options`` as ``DIFFUSERS_OPTIONS``)."""
    from .foundation import family_of, load_foundation

    index = _read_json(root / "model_index.json") if (root / "model_index.json").is_file() else {}
    # as given, off included (summary.json's memory_options: "off" and "not given" read alike before)
    memory = {k: bool(options.get(k)) for k in ("gradient_checkpointing", "vae_tiling", "vae_slicing")}
    if family_of(index) is not None:
        prior = load_foundation(root, index, dtype=dtype, device=device,
                                **_check_options(source, options, True, family_of(index)))
        prior.memory_options = memory  # recorded in summary.json (not in the resume fingerprint)
        return prior
    _denoiser_component(root, index)  # the folder first: a preset's text options given a folder that is no
    _check_options(source, options, False)  # prior (or a component of one) said "the prior is unconditional"
    prior = _load_unconditional_dir(root, index)
    prior.training_record = training_record(root)  # (not "training": nn.Module's train/eval flag)
    if getattr(prior, "autoencoder", None) is None:  # a pixel prior: no VAE to tile or slice
        memory = {k: v for k, v in memory.items() if not k.startswith("vae_")}
    prior.memory_options = memory
    if options.get("gradient_checkpointing"):
        for module in (getattr(prior, "network", None), getattr(prior, "autoencoder", None),
                       getattr(getattr(prior, "inner", None), "network", None)):
            if module is None:
                continue
            if getattr(module, "_supports_gradient_checkpointing", False):
                module.enable_gradient_checkpointing()
            elif module is getattr(prior, "autoencoder", None):  # diffusers' VQModel has none
                log.warning("gradient_checkpointing: the %s of %s does not support it (only the denoiser is "
                            "checkpointed; the decoder's activations stay in memory)", type(module).__name__, source)
                memory["gradient_checkpointing"] = "denoiser only"
    ae = getattr(prior, "autoencoder", None)
    for option, method in (("vae_tiling", "enable_tiling"), ("vae_slicing", "enable_slicing")):
        if options.get(option):
            try:  # (diffusers' VQModel has the method and raises NotImplementedError)
                getattr(ae, method)()
            except (AttributeError, NotImplementedError):
                raise ValueError(f"{option} needs a prior with an AutoencoderKL; {source} has "
                                 f"{type(ae).__name__ if ae is not None else 'no autoencoder'}") from None
    return prior


def _check_options(source: str, options: dict, text_conditioned: bool, family=None) -> dict:
    """Reject options the prior cannot take: text options on unconditional priors, unknown names
    (listing the options this prior takes: ``family``'s, T5's only for SD3 and FLUX)."""
    allowed = DIFFUSERS_OPTIONS + (TEXT_OPTIONS if text_conditioned else ())
    pipeline = getattr(family, "pipeline", "StableDiffusion3Pipeline")  # (SD3 takes them all)
    takes = tuple(k for k in allowed if (k != "use_t5" or pipeline == "StableDiffusion3Pipeline")
                  and (k != "max_sequence_length" or pipeline != "StableDiffusionPipeline")
                  and (k != "negative_prompt" or pipeline != "FluxPipeline"))  # what the error lists
    text = [k for k in options if k in TEXT_OPTIONS]
    if text and not text_conditioned:
        raise ValueError(f"{', '.join(text)} applies only to text-conditioned pipelines (Stable Diffusion, SD3, FLUX); "
                         f"the prior {source} is unconditional")
    for key in ("use_t5", "gradient_checkpointing", "vae_tiling", "vae_slicing"):
        if key in options and not isinstance(options[key], bool):  # "no" / "off" were truthy strings: switched ON
            raise ValueError(f"{key} must be true or false, got {shown(options[key])}")
    unknown = [k for k in options if k not in allowed]
    if unknown and set(unknown) <= {"config", "ema"}:  # prior=ffhq_ldm / ldm_celebahq's checkpoint options
        raise ValueError(f"{source} is a diffusers folder, not a CompVis .ckpt: use it as prior={source} (the ldm "
                         f"presets' config/ema options are for .ckpt files)")
    if unknown:
        listed = (*takes, "dtype", *SPEED_OPTIONS)  # (load_prior takes these before the folder's own)
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for the prior {source}"
                         f"{did_you_mean(unknown[0], listed)}; options: {', '.join(listed)}")
    return options


NOT_DENOISERS = ("AutoencoderKL", "VQModel", "AutoencoderTiny", "AutoencoderDC")
FOUNDATION_DENOISERS = ("UNet2DConditionModel", "SD3Transformer2DModel", "FluxTransformer2DModel")


MEMORISING_RATIO = 1.25  # held-out ÷ training denoising loss above which a trained prior is said to memorise


def training_record(root: Path) -> dict | None:
    """What ``scripts/train_prior.py`` recorded about a prior it exported (``training.json``:
    steps done and asked, data, window, the held-out check), or None; a prior whose training
    stopped early (by ``--max-minutes``), or that denoises its training images clearly better than
    held-out ones (it memorises them), is said once here, as it would otherwise be used as if fine."""
    path = root / "training.json"
    if not path.is_file():
        return None
    try:
        record = _read_json(path)
    except ValueError:
        return None
    done, asked = record.get("step"), record.get("steps")
    ae_done, ae_asked = record.get("ae_step"), record.get("ae_steps") if record.get("kind") == "latent" else None
    bundled = root.resolve().is_relative_to(BUNDLED_DIR.resolve())  # their model cards give the steps they had
    if isinstance(done, int) and isinstance(asked, int) and done < asked and not bundled:
        log.warning("prior %s is part-trained: %d of its %d training steps%s (training.json; continue with the "
                    "same train_prior.py command)", root, done, asked,
                    f", autoencoder {ae_done} of {ae_asked}" if isinstance(ae_asked, int) and ae_done < ae_asked else "")
    checks = record.get("validation") or []
    if checks and isinstance(checks[-1], dict) and checks[-1].get("ratio", 0) > MEMORISING_RATIO and not bundled:
        log.warning("prior %s memorises its training images: its denoising loss on held-out images is %.2f× that on "
                    "its training images (README.md, training.json); reconstructions may copy training images",
                    root, checks[-1]["ratio"])
    return record


def _denoiser_component(root: Path, index: dict) -> tuple[str, Path]:
    """``(class name, folder)`` of an unconditional prior's denoiser, or a ``ValueError`` saying what
    ``root`` is instead (no prior; a component of a pipeline)."""
    unet = _component(root, index, ("unet", "transformer"))
    if unet is None and (root / "config.json").is_file():  # a bare model directory
        unet = (_read_json(root / "config.json").get("_class_name"), root)
        if unet[0] in NOT_DENOISERS or unet[0] in FOUNDATION_DENOISERS:
            what = ("a text-conditioned denoiser" if unet[0] in FOUNDATION_DENOISERS else "an autoencoder, not a denoiser")
            raise ValueError(f"{root} is a pipeline component ({unet[0]}: {what}); give the pipeline's folder, the one "
                             f"with model_index.json ({root.parent} if this is one of its subfolders)")
    if unet is None:
        raise ValueError(f"{root} is not a diffusers prior: expected a pipeline folder (model_index.json naming a "
                         f"'unet' or 'transformer') or a unet/ or transformer/ folder with config.json")
    return unet


def _load_unconditional_dir(root: Path, index: dict) -> Prior:
    """DDPM/DDIM pipeline, LDM pipeline, or flow-matching UNet directory (diffusers layout)."""
    unet = _denoiser_component(root, index)
    sched_dir = root / "scheduler"
    if "scheduler" in index and not (sched_dir / "scheduler_config.json").is_file():
        raise ValueError(f"{root}: model_index.json lists a scheduler but scheduler/scheduler_config.json is missing "
                         f"(an incomplete copy?); without it a flow prior would be taken for a DDPM one")
    network = _load_module(unet[0], unet[1])
    sched = _read_json(sched_dir / "scheduler_config.json") if (sched_dir / "scheduler_config.json").is_file() else {}
    sched_class = sched.get("_class_name", "DDPMScheduler")
    size = network.config.sample_size
    size = size[0] if isinstance(size, (list, tuple)) else size
    ch = network.config.in_channels
    if "FlowMatch" in sched_class:
        inner: Prior = FlowPrior(network, size, ch, network_convention="diffusers",
                                 timestep_scale=float(sched.get("num_train_timesteps", 1000)))
    else:
        import diffusers

        scheduler = getattr(diffusers, sched_class).from_config(sched) if sched else diffusers.DDPMScheduler()
        inner = DiffusionPrior(network, scheduler.alphas_cumprod, size, ch,
                               prediction_type=sched.get("prediction_type", "epsilon"),
                               variance_type=sched.get("variance_type"))
    ae = _component(root, index, ("vqvae", "vae"))
    if ae is None:
        return inner
    autoencoder = _load_module(ae[0], ae[1])
    cfg = autoencoder.config
    factor = 2 ** (len(cfg.block_out_channels) - 1)
    # a VQModel's latents have vq_embed_dim channels (its quant_conv's output) when it is set
    latent_channels = (getattr(cfg, "vq_embed_dim", None) if type(autoencoder).__name__ == "VQModel" else None) \
        or getattr(cfg, "latent_channels", None)
    if latent_channels is not None and latent_channels != ch:
        raise ValueError(f"{root}: the denoiser takes {ch}-channel latents but the autoencoder ({ae[1].name}/) makes "
                         f"{latent_channels}-channel ones; expected the two of one latent-diffusion model")
    scaling = latent_scaling(_read_json(ae[1] / "config.json"), type(autoencoder).__name__, ae[1])
    return LatentPrior(autoencoder, inner, image_size=size * factor, channels=cfg.in_channels, scaling_factor=scaling)


def latent_scaling(raw_config: dict, cls: str, where: Path) -> float:
    """The latent scale from the autoencoder's own ``config.json`` (not diffusers' filled-in
    default).  VQModel: 1.0 when absent or equal to diffusers' default 0.18215 — diffusers'
    ``save_pretrained`` writes that default into every VQ config, so it cannot be told from an
    intended factor, and CompVis/ldm-celebahq-256 (no key) is mis-decoded with it (diffusers#6725)
    — any other value is used (diffusers 0.42's LDMPipeline divides by it).  AutoencoderKL: the
    value given, else diffusers' default 0.18215 (Stable Diffusion's) with a warning."""
    given = raw_config.get("scaling_factor")
    if cls != "AutoencoderKL":
        return float(given) if given and abs(float(given) - 0.18215) > 1e-9 else 1.0
    if given:
        return float(given)
    log.warning("%s/config.json has no usable scaling_factor (%r): diffusers' default 0.18215 (Stable Diffusion's) is "
                "used; add the factor your latent denoiser was trained with", where, given)
    return 0.18215


def _load_checkpoint_file(path: str, kwargs: dict) -> Prior:
    """A checkpoint file: a CompVis latent-diffusion ``LatentDiffusion`` (``model.diffusion_model.*`` and
    ``first_stage_model.*`` keys; :func:`ipsolve.priors.ldm.load_compvis_ldm`) or an ADM UNet."""
    from ..checkpoints import read_lightning_state_dict
    from .adm import DPS_FFHQ_CHECKPOINT_URL
    from .ldm import is_compvis_ldm, load_compvis_ldm

    ldm = bool({"config", "ema"} & set(kwargs))  # the ldm presets' options: a latent-diffusion checkpoint is meant
    if not os.path.isfile(path):
        if ldm:
            raise FileNotFoundError(f"latent-diffusion checkpoint not found: {path} (the CompVis LDM's model.ckpt, e.g. "
                                    f"from ffhq.zip of CompVis/latent-diffusion; its yaml beside it or prior.config=)")
        return _load_adm(path, **kwargs)  # its error names what to download
    state = read_lightning_state_dict(path, "diffusion", f"Expected an ADM UNet (e.g. DPS's ffhq_10m.pt, "
                                      f"{DPS_FFHQ_CHECKPOINT_URL}) or a CompVis latent-diffusion .ckpt")
    if any(k.startswith("cond_stage_model.") for k in state):
        raise ValueError(f"{path} is a text-conditioned latent-diffusion checkpoint (Stable Diffusion style): ipsolve "
                         f"loads Stable Diffusion from a diffusers folder (prior=sd15 prior.source=DIR)")
    if ldm and not is_compvis_ldm(state):
        has_unet = any(k.startswith("model.diffusion_model.") for k in state)
        raise ValueError(f"{path} is " + ("a latent-diffusion checkpoint without its autoencoder (no first_stage_model.* "
                                          "keys)" if has_unet else "not a CompVis latent-diffusion checkpoint")
                         + "; the ldm presets expect model.diffusion_model.* and first_stage_model.* keys")
    if is_compvis_ldm(state):
        unknown = [k for k in kwargs if k not in ("config", "ema")]
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)} for the latent-diffusion checkpoint {path}; "
                             f"options: config (the LDM yaml), ema")
        return load_compvis_ldm(path, state, config=kwargs.get("config"), ema=bool(kwargs.get("ema", False)))
    return _load_adm(path, state_dict=state, **kwargs)


def _load_adm(path: str, state_dict: dict | None = None, **config) -> Prior:
    """An OpenAI guided-diffusion checkpoint (default: DPS's ``ffhq_10m.pt`` configuration)
    with the linear β schedule 1e-4…0.02 over 1000 steps; ε is the first half of a
    learned-sigma output."""
    from .adm import adm_config, load_adm_checkpoint
    from .analytic import linear_alphas_cumprod

    schedule = {k: config.pop(k) for k in ("beta_start", "beta_end", "num_train_timesteps") if k in config}
    net = load_adm_checkpoint(path, state_dict=state_dict, **config)
    cfg = adm_config(**config)
    ac = linear_alphas_cumprod(schedule.get("num_train_timesteps", 1000), schedule.get("beta_start", 1e-4),
                               schedule.get("beta_end", 0.02))
    return DiffusionPrior(net, ac, cfg["image_size"], net.in_channels if hasattr(net, "in_channels") else 3)
