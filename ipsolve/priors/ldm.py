"""CompVis latent-diffusion checkpoints (``.ckpt``: a ``LatentDiffusion`` state dict with
``model.diffusion_model.*`` and ``first_stage_model.*``), converted in memory to diffusers'
``UNet2DModel`` + ``VQModel`` — the LDMs ReSample (soominkwon/resample ``sample_condition.py``)
and LatentDAPS (zhangbingliang2019/DAPS ``configs/model/ffhq256ldm.yaml``) run on, e.g. the FFHQ
LDM ``ffhq.zip`` → ``model.ckpt`` of CompVis/latent-diffusion ``scripts/download_models.sh``.

The key mapping follows diffusers' ``scripts/convert_ldm_original_checkpoint_to_diffusers.py``
(UNet; its ``assign_to_checkpoint`` per-head qkv split) and ``convert_ldm_vae_checkpoint`` in
``diffusers/loaders/single_file_utils.py`` (autoencoder).  It is written out here because the
script is not an importable API and ``from_single_file`` supports neither ``UNet2DModel`` nor
``VQModel`` (diffusers 0.42: ``SINGLE_FILE_LOADABLE_CLASSES``); it walks the blocks from the
config instead of scanning key names, and the models are loaded strictly."""
from __future__ import annotations

import os
from pathlib import Path

import torch

# configs/latent-diffusion/ffhq-ldm-vq-4.yaml (= celebahq-ldm-vq-4.yaml, models/ldm/ffhq256/config.yaml,
# models/ldm/celeba256/config.yaml; DAPS's configs/model/ffhq256ldm.yaml): model.params
LDM_VQ4_256 = {
    "linear_start": 0.0015, "linear_end": 0.0195, "timesteps": 1000, "parameterization": "eps", "scale_factor": 1.0,
    "unet_config": {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel", "params": {
        "image_size": 64, "in_channels": 3, "out_channels": 3, "model_channels": 224, "attention_resolutions": [8, 4, 2],
        "num_res_blocks": 2, "channel_mult": [1, 2, 3, 4], "num_head_channels": 32}},
    "first_stage_config": {"target": "ldm.models.autoencoder.VQModelInterface", "params": {
        "embed_dim": 3, "n_embed": 8192, "ddconfig": {
            "double_z": False, "z_channels": 3, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
            "ch_mult": [1, 2, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}}},
    "cond_stage_config": "__is_unconditional__",
}
UNET_PREFIX, AE_PREFIX, EMA_PREFIX = "model.diffusion_model.", "first_stage_model.", "model_ema."
HINT = ("CompVis latent-diffusion checkpoints: the FFHQ LDM is models/ldm/ffhq256/model.ckpt after "
        "`wget https://ommer-lab.com/files/latent-diffusion/ffhq.zip && unzip ffhq.zip` (CompVis/latent-diffusion "
        "scripts/download_models.sh; CelebA-HQ: celeba.zip)")


def is_compvis_ldm(state: dict) -> bool:
    """A ``LatentDiffusion`` state dict: UNet under ``model.diffusion_model.``, autoencoder under
    ``first_stage_model.``."""
    return any(k.startswith(UNET_PREFIX) for k in state) and any(k.startswith(AE_PREFIX) for k in state)


def ldm_alphas_cumprod(linear_start: float, linear_end: float, timesteps: int) -> torch.Tensor:
    """ᾱ of LDM's ``make_beta_schedule("linear")`` (``ldm/modules/diffusionmodules/util.py`` L21-25):
    β = linspace(√start, √end, T)², in float64 (diffusers' ``scaled_linear``)."""
    betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


def find_config(path: str | os.PathLike, config: str | os.PathLike | None) -> Path | None:
    """The LDM config: ``config`` if given, else ``<checkpoint stem>.yaml`` or ``config.yaml`` beside
    the checkpoint (the layout of the CompVis zips' folders), else None (the built-in VQ-f4 256)."""
    if config is not None:
        if not os.path.isfile(config):
            raise FileNotFoundError(f"LDM config not found: '{config}'")
        return Path(config)
    p = Path(path)
    for cand in (p.with_suffix(".yaml"), p.parent / "config.yaml"):
        if cand.is_file():
            return cand
    return None


def read_ldm_config(path: Path | None) -> dict:
    """``model.params`` of an LDM yaml (``target: ldm.models.diffusion.ddpm.LatentDiffusion``), or
    :data:`LDM_VQ4_256` for ``None``."""
    if path is None:
        return LDM_VQ4_256
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        model = cfg["model"]
    except Exception as err:  # noqa: BLE001 - unreadable yaml or another layout
        raise ValueError(f"{path}: not a latent-diffusion config (expected model: target/params): {err}") from None
    if not str(model.get("target", "")).endswith("LatentDiffusion"):
        raise ValueError(f"{path}: model.target is {model.get('target')!r}; only ldm.models.diffusion.ddpm.LatentDiffusion "
                         f"checkpoints can be loaded")
    return model.get("params", {})


# ---- UNet: ldm/modules/diffusionmodules/openaimodel.py UNetModel -> diffusers UNet2DModel ----------------
def unet_config(p: dict) -> dict:
    """The ``UNet2DModel`` config of an LDM ``UNetModel``'s parameters."""
    unsupported = {"use_spatial_transformer": False, "resblock_updown": False, "num_classes": None, "dims": 2,
                   "conv_resample": True}
    for key, ok in unsupported.items():
        if p.get(key, ok) != ok:
            raise ValueError(f"LDM UNet with {key}={p[key]!r} cannot be converted to diffusers' UNet2DModel "
                             f"(unconditional UNets with {key}={ok!r} only)")
    mult, ch = list(p.get("channel_mult", (1, 2, 4, 8))), int(p["model_channels"])
    attn = {int(a) for a in p["attention_resolutions"]}
    levels = [ch * m for m in mult]
    heads_dim = int(p.get("num_head_channels", -1))
    if heads_dim == -1:  # a fixed number of heads: diffusers has one head size for all blocks
        heads = int(p.get("num_heads", -1))
        dims = {c // heads for i, c in enumerate(levels) if 2 ** i in attn} | {levels[-1] // heads}
        if len(dims) != 1:
            raise ValueError(f"LDM UNet with num_heads={heads} has head sizes {sorted(dims)}; diffusers' UNet2DModel "
                             f"needs one head size (num_head_channels)")
        heads_dim = dims.pop()
    if p.get("num_heads_upsample", -1) not in (-1, p.get("num_heads", -1)):
        raise ValueError("LDM UNet with num_heads_upsample != num_heads cannot be converted")
    down = ["AttnDownBlock2D" if 2 ** i in attn else "DownBlock2D" for i in range(len(mult))]
    return {"sample_size": int(p["image_size"]), "in_channels": int(p["in_channels"]),
            "out_channels": int(p["out_channels"]), "block_out_channels": levels,
            "layers_per_block": int(p["num_res_blocks"]), "down_block_types": down,
            "up_block_types": [b.replace("Down", "Up") for b in reversed(down)], "attention_head_dim": heads_dim,
            "norm_num_groups": 32, "attn_norm_num_groups": 32, "norm_eps": 1e-5, "act_fn": "silu",
            "time_embedding_type": "positional", "flip_sin_to_cos": True, "freq_shift": 0, "downsample_padding": 1,
            "mid_block_scale_factor": 1, "center_input_sample": False, "dropout": 0.0,
            "resnet_time_scale_shift": "scale_shift" if p.get("use_scale_shift_norm", False) else "default"}


RESNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj", "out_layers.0": "norm2",
          "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}


def _take(state: dict, used: set, key: str) -> torch.Tensor:
    if key not in state:
        raise KeyError(key)
    used.add(key)
    return state[key]


def _resnet(state, used, old: str, new: str, out: dict):
    for o, n in RESNET.items():
        for wb in ("weight", "bias"):
            if f"{old}.{o}.{wb}" in state:
                out[f"{new}.{n}.{wb}"] = _take(state, used, f"{old}.{o}.{wb}")


def _unet_attention(state, used, old: str, new: str, out: dict, head_dim: int, new_order: bool):
    """``AttentionBlock``: norm, qkv (conv1d 3C→C), proj_out → group_norm, to_q/to_k/to_v, to_out.0.
    Legacy order (``QKVAttentionLegacy``) interleaves q, k, v per head — the per-head split of the
    diffusers script's ``assign_to_checkpoint``; the new order (``QKVAttention``) splits q, k, v first."""
    for wb in ("weight", "bias"):
        out[f"{new}.group_norm.{wb}"] = _take(state, used, f"{old}.norm.{wb}")
        qkv = _take(state, used, f"{old}.qkv.{wb}")
        c = qkv.shape[0] // 3
        rest = qkv.shape[1:2] if wb == "weight" else ()  # conv1d (3C, C, 1) -> linear (C, C)
        if new_order:
            q, k, v = qkv.reshape(3, c, *qkv.shape[1:]).unbind(0)
        else:
            q, k, v = qkv.reshape(c // head_dim, 3 * head_dim, *qkv.shape[1:]).split(head_dim, dim=1)
        for name, t in (("to_q", q), ("to_k", k), ("to_v", v)):
            out[f"{new}.{name}.{wb}"] = t.reshape(c, *rest)
        proj = _take(state, used, f"{old}.proj_out.{wb}")
        out[f"{new}.to_out.0.{wb}"] = proj[:, :, 0] if wb == "weight" else proj


def convert_unet(state: dict, p: dict) -> dict:
    """An LDM ``UNetModel`` state dict (without prefix) → ``UNet2DModel``'s, for parameters ``p``."""
    cfg, used, out = unet_config(p), set(), {}
    new_order, hd = bool(p.get("use_new_attention_order", False)), cfg["attention_head_dim"]
    attn = [b.startswith("Attn") for b in cfg["down_block_types"]]
    n_levels, n_res = len(attn), cfg["layers_per_block"]
    for wb in ("weight", "bias"):
        out[f"time_embedding.linear_1.{wb}"] = _take(state, used, f"time_embed.0.{wb}")
        out[f"time_embedding.linear_2.{wb}"] = _take(state, used, f"time_embed.2.{wb}")
        out[f"conv_in.{wb}"] = _take(state, used, f"input_blocks.0.0.{wb}")
        out[f"conv_norm_out.{wb}"] = _take(state, used, f"out.0.{wb}")
        out[f"conv_out.{wb}"] = _take(state, used, f"out.2.{wb}")
    idx = 0
    for lv in range(n_levels):
        for j in range(n_res):
            idx += 1
            _resnet(state, used, f"input_blocks.{idx}.0", f"down_blocks.{lv}.resnets.{j}", out)
            if attn[lv]:
                _unet_attention(state, used, f"input_blocks.{idx}.1", f"down_blocks.{lv}.attentions.{j}", out, hd, new_order)
        if lv != n_levels - 1:
            idx += 1
            for wb in ("weight", "bias"):
                out[f"down_blocks.{lv}.downsamplers.0.conv.{wb}"] = _take(state, used, f"input_blocks.{idx}.0.op.{wb}")
    _resnet(state, used, "middle_block.0", "mid_block.resnets.0", out)
    _unet_attention(state, used, "middle_block.1", "mid_block.attentions.0", out, hd, new_order)
    _resnet(state, used, "middle_block.2", "mid_block.resnets.1", out)
    idx = 0
    for u, lv in enumerate(reversed(range(n_levels))):
        for j in range(n_res + 1):
            _resnet(state, used, f"output_blocks.{idx}.0", f"up_blocks.{u}.resnets.{j}", out)
            if attn[lv]:
                _unet_attention(state, used, f"output_blocks.{idx}.1", f"up_blocks.{u}.attentions.{j}", out, hd, new_order)
            if lv != 0 and j == n_res:
                for wb in ("weight", "bias"):
                    out[f"up_blocks.{u}.upsamplers.0.conv.{wb}"] = _take(state, used, f"output_blocks.{idx}.{2 if attn[lv] else 1}.conv.{wb}")
            idx += 1
    left = sorted(set(state) - used)
    if left:
        raise ValueError(f"UNet keys not in the configured architecture: {left[:5]}{' ...' if len(left) > 5 else ''}")
    return out


# ---- autoencoder: ldm/models/autoencoder.py VQModel (Encoder/Decoder of diffusionmodules/model.py) -> VQModel ----
def vq_config(p: dict, scale_factor: float) -> dict:
    """The ``VQModel`` config of an LDM ``VQModelInterface``'s parameters."""
    dd = p["ddconfig"]
    if dd.get("double_z", False):
        raise ValueError("an LDM first stage with double_z=True is a KL autoencoder; only VQ first stages "
                         "(VQModelInterface, e.g. ffhq/celebahq-ldm-vq-4) can be loaded")
    mult, res, attn = list(dd["ch_mult"]), int(dd["resolution"]), {int(a) for a in dd.get("attn_resolutions", [])}
    down = ["AttnDownEncoderBlock2D" if res // 2 ** i in attn else "DownEncoderBlock2D" for i in range(len(mult))]
    return {"in_channels": int(dd["in_channels"]), "out_channels": int(dd["out_ch"]),
            "down_block_types": down, "up_block_types": [b.replace("DownEncoder", "UpDecoder") for b in reversed(down)],
            "block_out_channels": [int(dd["ch"]) * m for m in mult], "layers_per_block": int(dd["num_res_blocks"]),
            "act_fn": "silu", "latent_channels": int(dd["z_channels"]), "sample_size": res,
            "num_vq_embeddings": int(p["n_embed"]), "norm_num_groups": 32, "vq_embed_dim": int(p["embed_dim"]),
            "scaling_factor": float(scale_factor)}


def _ae_resnet(state, used, old, new, out):
    for o, n in (("norm1", "norm1"), ("conv1", "conv1"), ("norm2", "norm2"), ("conv2", "conv2"),
                 ("nin_shortcut", "conv_shortcut")):
        for wb in ("weight", "bias"):
            if f"{old}.{o}.{wb}" in state:
                out[f"{new}.{n}.{wb}"] = _take(state, used, f"{old}.{o}.{wb}")


def _ae_attention(state, used, old, new, out):
    """``AttnBlock`` (single head; 1×1 convs q, k, v, proj_out) → ``Attention`` (linear layers)."""
    for o, n in (("norm", "group_norm"), ("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("proj_out", "to_out.0")):
        for wb in ("weight", "bias"):
            t = _take(state, used, f"{old}.{o}.{wb}")
            out[f"{new}.{n}.{wb}"] = t[:, :, 0, 0] if t.ndim == 4 else t


def convert_vq(state: dict, p: dict) -> dict:
    """An LDM ``VQModelInterface`` state dict (without prefix; loss weights ignored) → ``VQModel``'s."""
    cfg, used, out = vq_config(p, 1.0), set(), {}
    attn = [b.startswith("Attn") for b in cfg["down_block_types"]]
    n_levels, n_res = len(attn), cfg["layers_per_block"]
    for wb in ("weight", "bias"):
        for name in ("quant_conv", "post_quant_conv", "encoder.conv_in", "encoder.conv_out", "decoder.conv_in",
                     "decoder.conv_out"):
            out[f"{name}.{wb}"] = _take(state, used, f"{name}.{wb}")
        for part in ("encoder", "decoder"):
            out[f"{part}.conv_norm_out.{wb}"] = _take(state, used, f"{part}.norm_out.{wb}")
    out["quantize.embedding.weight"] = _take(state, used, "quantize.embedding.weight")
    for part in ("encoder", "decoder"):
        _ae_resnet(state, used, f"{part}.mid.block_1", f"{part}.mid_block.resnets.0", out)
        _ae_attention(state, used, f"{part}.mid.attn_1", f"{part}.mid_block.attentions.0", out)
        _ae_resnet(state, used, f"{part}.mid.block_2", f"{part}.mid_block.resnets.1", out)
    for lv in range(n_levels):
        for j in range(n_res):
            _ae_resnet(state, used, f"encoder.down.{lv}.block.{j}", f"encoder.down_blocks.{lv}.resnets.{j}", out)
            if attn[lv]:
                _ae_attention(state, used, f"encoder.down.{lv}.attn.{j}", f"encoder.down_blocks.{lv}.attentions.{j}", out)
        if lv != n_levels - 1:
            for wb in ("weight", "bias"):
                out[f"encoder.down_blocks.{lv}.downsamplers.0.conv.{wb}"] = _take(state, used, f"encoder.down.{lv}.downsample.conv.{wb}")
        u = n_levels - 1 - lv  # LDM's up[lv] is diffusers' up_blocks[n − 1 − lv]
        for j in range(n_res + 1):
            _ae_resnet(state, used, f"decoder.up.{lv}.block.{j}", f"decoder.up_blocks.{u}.resnets.{j}", out)
            if attn[lv]:
                _ae_attention(state, used, f"decoder.up.{lv}.attn.{j}", f"decoder.up_blocks.{u}.attentions.{j}", out)
        if lv != 0:
            for wb in ("weight", "bias"):
                out[f"decoder.up_blocks.{u}.upsamplers.0.conv.{wb}"] = _take(state, used, f"decoder.up.{lv}.upsample.conv.{wb}")
    left = sorted(k for k in set(state) - used if not k.startswith("loss."))
    if left:
        raise ValueError(f"autoencoder keys not in the configured architecture: {left[:5]}{' ...' if len(left) > 5 else ''}")
    return out


def _build(model_cls, config: dict, convert, state: dict, params: dict, what: str, where: str) -> torch.nn.Module:
    """``model_cls(**config)`` loaded strictly with ``convert(state, params)``; a checkpoint that does
    not fit the config is one ``ValueError`` line."""
    from ..checkpoints import layout_mismatch

    fix = "pass the checkpoint's LDM yaml as config=, or place it beside the checkpoint as config.yaml"
    try:
        converted = convert(state, params)
    except KeyError as err:
        raise ValueError(f"{where}: the {what} does not match its config ({fix}): no {err.args[0]} in the checkpoint") from None
    except ValueError as err:
        raise ValueError(f"{where}: the {what} does not match its config ({fix}): {err}") from None
    model = model_cls(**config)
    lines = layout_mismatch(model.state_dict(), converted)
    if lines:
        raise ValueError(f"{where}: the {what} does not match its config ({fix}): " + "; ".join(ln.strip() for ln in lines))
    model.load_state_dict(converted, strict=True)
    return model.float().eval()


def load_compvis_ldm(path: str | os.PathLike, state: dict | None = None, config: str | os.PathLike | None = None,
                     ema: bool = False):
    """A :class:`~ipsolve.priors.LatentPrior` from a CompVis ``LatentDiffusion`` checkpoint: the
    UNet as ``UNet2DModel`` with LDM's ε schedule (linear_start/linear_end/timesteps of the config,
    :func:`ldm_alphas_cumprod`), the VQ first stage as ``VQModel`` (decode quantizes, as LDM's
    ``decode_first_stage``), latents scaled by the config's ``scale_factor`` (1.0 for the VQ-f4 LDMs).
    ``config``: the LDM yaml (default: beside the checkpoint, else the FFHQ/CelebA-HQ VQ-f4 256
    config).  ``ema``: the EMA copy (``model_ema.*``, what LDM's ``scripts/sample_diffusion.py`` samples
    with via ``ema_scope``) instead of ``model.diffusion_model.*`` (what ReSample and DAPS load:
    ``load_state_dict`` without ``ema_scope``)."""
    from diffusers import UNet2DModel, VQModel

    from ..checkpoints import read_lightning_state_dict
    from .base import DiffusionPrior, LatentPrior

    if state is None:
        state = read_lightning_state_dict(path, "latent-diffusion", HINT)
    if not is_compvis_ldm(state):
        raise ValueError(f"{path} is not a CompVis latent-diffusion checkpoint (no model.diffusion_model.* and "
                         f"first_stage_model.* keys)")
    cfg_path = find_config(path, config)
    params = read_ldm_config(cfg_path)
    if params.get("cond_stage_config", "__is_unconditional__") != "__is_unconditional__":
        raise ValueError(f"{path}: a conditional LDM ({params.get('cond_stage_config')}); only unconditional ones "
                         f"(FFHQ, CelebA-HQ, LSUN) can be loaded")
    if params.get("parameterization", "eps") not in ("eps", "x0"):
        raise ValueError(f"{path}: unknown parameterization {params.get('parameterization')!r}")
    if "VQModel" not in str(params["first_stage_config"].get("target", "VQModel")):
        raise ValueError(f"{path}: first stage {params['first_stage_config'].get('target')}; only VQ first stages "
                         f"(VQModelInterface) can be loaded")
    unet_params = params["unet_config"]["params"]
    unet_state = {k[len(UNET_PREFIX):]: v for k, v in state.items() if k.startswith(UNET_PREFIX)}
    if ema:
        ema_keys = {k: EMA_PREFIX + ("diffusion_model." + k).replace(".", "") for k in unet_state}
        missing = [v for v in ema_keys.values() if v not in state]
        if missing:
            raise ValueError(f"{path} has no EMA weights (model_ema.*, e.g. {missing[0]}); use ema=false")
        unet_state = {k: state[v] for k, v in ema_keys.items()}
    where = f"{path} ({cfg_path or 'built-in ffhq/celebahq-ldm-vq-4 config'})"
    unet = _build(UNet2DModel, unet_config(unet_params), convert_unet, unet_state, unet_params, "UNet", where)
    scale = float(params.get("scale_factor", 1.0))
    if "scale_factor" in state:  # scale_by_std models keep it as a buffer
        scale = float(state["scale_factor"])
    ae_params = params["first_stage_config"]["params"]
    ae_state = {k[len(AE_PREFIX):]: v for k, v in state.items() if k.startswith(AE_PREFIX)}
    vq = _build(VQModel, vq_config(ae_params, scale), convert_vq, ae_state, ae_params, "autoencoder", where)
    schedule = params.get("beta_schedule", "linear")
    if schedule != "linear" or params.get("given_betas") is not None:  # only the linear schedule is converted
        raise ValueError(f"{where}: beta_schedule {schedule!r}{' with given_betas' if params.get('given_betas') is not None else ''}"
                         f" — ipsolve converts LDMs with the linear schedule (the published unconditional LDMs') only")
    ac = ldm_alphas_cumprod(float(params.get("linear_start", 1e-4)), float(params.get("linear_end", 2e-2)),
                            int(params.get("timesteps", 1000)))
    inner = DiffusionPrior(unet, ac, int(unet_params["image_size"]), int(unet_params["in_channels"]),
                           prediction_type="epsilon" if params.get("parameterization", "eps") == "eps" else "sample",
                           variance_type=None)
    factor = 2 ** (len(ae_params["ddconfig"]["ch_mult"]) - 1)
    return LatentPrior(vq, inner, image_size=int(unet_params["image_size"]) * factor,
                       channels=int(ae_params["ddconfig"]["out_ch"]), scaling_factor=scale)
