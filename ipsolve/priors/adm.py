"""ADM UNet (OpenAI *guided-diffusion*), re-implemented for checkpoint compatibility.

This module rebuilds ``guided_diffusion.unet.UNetModel`` (Dhariwal & Nichol,
"Diffusion Models Beat GANs on Image Synthesis", 2021) with identical module
and parameter names, so that released checkpoints -- in particular DPS's
FFHQ-256 model ``ffhq_10m.pt`` -- load with ``load_state_dict(strict=True)``
and produce the same outputs as the reference network.

Only the 2-D image UNet is provided.  The fp16 conversion machinery of the
reference is omitted: weights are loaded in float32 and the whole module can
be cast afterwards (``model.half()`` / ``model.to(torch.bfloat16)``); group
norms and the attention softmax are still computed in float32 as in the
reference.

Public API: :func:`adm_config`, :func:`create_adm_unet`,
:func:`load_adm_checkpoint`, :class:`ADMUNet`, :func:`timestep_embedding`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint as _grad_checkpoint

from ..checkpoints import layout_mismatch, read_state_dict

__all__ = [
    "ADMUNet",
    "DPS_FFHQ_CHECKPOINT_URL",
    "adm_config",
    "create_adm_unet",
    "load_adm_checkpoint",
    "timestep_embedding",
]

#: Where DPS distributes its pretrained FFHQ-256 model ``ffhq_10m.pt``.
DPS_FFHQ_CHECKPOINT_URL = (
    "https://drive.google.com/drive/folders/1jElnRoFv7b31fG0v6pTSQkelbSX3xGZh"
)

NUM_CLASSES = 1000  # ImageNet, as in guided-diffusion's ``class_cond``

# FFHQ-256 configuration used by DPS (configs/model_config.yaml), expressed in
# the vocabulary of guided-diffusion's ``script_util.create_model``.
_DEFAULTS: dict[str, Any] = dict(
    image_size=256,
    num_channels=128,
    num_res_blocks=1,
    channel_mult="",
    learn_sigma=True,
    class_cond=False,
    use_checkpoint=False,
    attention_resolutions="16",
    num_heads=4,
    num_head_channels=64,
    num_heads_upsample=-1,
    use_scale_shift_norm=True,
    dropout=0.0,
    resblock_updown=True,
    use_fp16=False,
    use_new_attention_order=False,
    grayscale=False,  # BlindDPS's create_model (guided_diffusion/unet.py L42-49): 1 channel, e.g. its kernel model
)

# Channel multipliers chosen by ``create_model`` when ``channel_mult == ""``.
DEFAULT_CHANNEL_MULT = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}


# --------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------


def _at_least_float32(dtype: torch.dtype) -> torch.dtype:
    """float32 for half/bfloat16 (as the reference), float64 stays float64 (for validation)."""
    return torch.promote_types(dtype, torch.float32)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm evaluated in (at least) float32 and cast back to the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = _at_least_float32(x.dtype)
        weight = None if self.weight is None else self.weight.to(dt)
        bias = None if self.bias is None else self.bias.to(dt)
        out = F.group_norm(x.to(dt), self.num_groups, weight, bias, self.eps)
        return out.to(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    """The reference normalisation layer: 32-group GroupNorm (eps=1e-5)."""
    return GroupNorm32(32, channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero all parameters of ``module`` in place and return it."""
    for p in module.parameters():
        p.detach().zero_()
    return module


def timestep_embedding(
    timesteps: torch.Tensor, dim: int, max_period: int = 10000
) -> torch.Tensor:
    """Sinusoidal timestep embedding ``[cos(t f_i), sin(t f_i)]`` of shape (N, dim).

    ``f_i = max_period ** (-i / (dim // 2))``; ``timesteps`` is a 1-D tensor of
    (possibly fractional) indices.  Computed in float32 exactly as the
    reference (an extra zero column is appended when ``dim`` is odd).
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(0, half, dtype=torch.float32) / half
    ).to(device=timesteps.device)
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepBlock(nn.Module):
    """Marker base class: ``forward(x, emb)`` takes the timestep embedding."""


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    """``nn.Sequential`` that passes ``emb`` to the children that accept it."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling, optionally followed by a 3x3 conv ``conv``."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, self.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """2x downsampling ``op``: strided 3x3 conv, or 2x2 average pooling."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        if use_conv:
            self.op = nn.Conv2d(channels, self.out_channels, 3, stride=2, padding=1)
        else:
            if self.out_channels != channels:
                raise ValueError("average-pool downsampling cannot change channels")
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(TimestepBlock):
    """Residual block conditioned on the timestep embedding.

    ``in_layers`` = (norm, SiLU, conv3x3); ``emb_layers`` = (SiLU, linear);
    ``out_layers`` = (norm, SiLU, dropout, zero-initialised conv3x3);
    ``skip_connection`` = identity or 1x1 conv (3x3 when ``use_conv``).
    With ``use_scale_shift_norm`` the embedding gives a FiLM scale/shift
    applied after the output norm; otherwise it is added before it.
    ``up``/``down`` resample (nearest / avg-pool) both branches between the
    input activation and the first convolution.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_conv: bool = False,
        use_scale_shift_norm: bool = False,
        use_checkpoint: bool = False,
        up: bool = False,
        down: bool = False,
    ):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.use_checkpoint = use_checkpoint

        self.in_layers = nn.Sequential(
            normalization(channels),
            nn.SiLU(),
            nn.Conv2d(channels, self.out_channels, 3, padding=1),
        )
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()

        emb_out = 2 * self.out_channels if use_scale_shift_norm else self.out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(
            normalization(self.out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_module(nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1)),
        )
        if self.out_channels == channels:
            self.skip_connection = nn.Identity()
        elif use_conv:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 3, padding=1)
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and torch.is_grad_enabled():
            return _grad_checkpoint(self._forward, x, emb, use_reentrant=False)
        return self._forward(x, emb)

    def _forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.h_upd(h)
            x = self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class QKVAttentionLegacy(nn.Module):
    """QKV attention, heads split *before* q/k/v (``use_new_attention_order=False``).

    Input ``(N, H*3*C, T)`` -> output ``(N, H*C, T)``.
    """

    def __init__(self, n_heads: int):
        super().__init__()
        self.n_heads = n_heads

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        bs, width, length = qkv.shape
        ch = width // (3 * self.n_heads)
        q, k, v = qkv.reshape(bs * self.n_heads, ch * 3, length).split(ch, dim=1)
        return _attend(q, k, v, ch).reshape(bs, -1, length)


class QKVAttention(nn.Module):
    """QKV attention, q/k/v split *before* heads (``use_new_attention_order=True``).

    Input ``(N, 3*H*C, T)`` -> output ``(N, H*C, T)``.
    """

    def __init__(self, n_heads: int):
        super().__init__()
        self.n_heads = n_heads

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        bs, width, length = qkv.shape
        ch = width // (3 * self.n_heads)
        q, k, v = (
            t.reshape(bs * self.n_heads, ch, length) for t in qkv.chunk(3, dim=1)
        )
        return _attend(q, k, v, ch).reshape(bs, -1, length)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ch: int) -> torch.Tensor:
    """softmax(q^T k / sqrt(ch)) applied to v; (B, C, T) layout, softmax in float32."""
    scale = 1 / math.sqrt(math.sqrt(ch))  # split between q and k, as the reference
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    weight = torch.softmax(weight.to(_at_least_float32(weight.dtype)), dim=-1).to(weight.dtype)
    return torch.einsum("bts,bcs->bct", weight, v)


class AttentionBlock(nn.Module):
    """Spatial self-attention: ``norm`` -> 1x1 ``qkv`` -> attention -> zero-init ``proj_out``.

    The head count is ``channels // num_head_channels`` when
    ``num_head_channels != -1``, else ``num_heads``.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_checkpoint: bool = False,
        use_new_attention_order: bool = False,
    ):
        super().__init__()
        self.channels = channels
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(
                    f"attention channels {channels} not divisible by "
                    f"num_head_channels={num_head_channels}"
                )
            self.num_heads = channels // num_head_channels
        if channels % self.num_heads:
            raise ValueError(f"attention channels {channels} not divisible by {self.num_heads} heads")
        self.use_checkpoint = use_checkpoint
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        attention = QKVAttention if use_new_attention_order else QKVAttentionLegacy
        self.attention = attention(self.num_heads)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and torch.is_grad_enabled():
            return _grad_checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        h = self.proj_out(self.attention(self.qkv(self.norm(x))))
        return (x + h).reshape(b, c, *spatial)


# --------------------------------------------------------------------------
# The UNet
# --------------------------------------------------------------------------


class ADMUNet(nn.Module):
    """guided-diffusion ``UNetModel`` (2-D), state-dict compatible with the reference.

    :param image_size: nominal resolution (informational; any size divisible
        by ``2 ** (len(channel_mult) - 1)`` works).
    :param in_channels: input channels (3 for RGB).
    :param model_channels: base width (``num_channels`` in the configs).
    :param out_channels: output channels (6 = ε and variance interpolation
        ``v`` when ``learn_sigma``; ε is ``out[:, :in_channels]``).
    :param num_res_blocks: residual blocks per resolution level.
    :param attention_resolutions: downsampling *rates* ``ds`` (not pixel
        resolutions) at which attention is applied.
    :param channel_mult: width multiplier per level.
    :param conv_resample: learned (conv) up/downsampling when not ``resblock_updown``.
    :param num_classes: enables ``label_emb`` class conditioning.
    :param num_heads, num_head_channels, num_heads_upsample: attention heads;
        ``num_head_channels != -1`` overrides ``num_heads``.  These do not
        change the parameter layout, so a wrong value cannot be detected at
        load time -- DPS FFHQ uses ``num_head_channels=64``.
    :param use_scale_shift_norm: FiLM-style conditioning in the ResBlocks.
    :param resblock_updown: ResBlocks (instead of conv layers) for resampling.
    :param use_new_attention_order: ``QKVAttention`` instead of the legacy order.
    :param use_checkpoint: gradient checkpointing (activation recomputation)
        of ResBlocks and attention blocks when gradients are enabled.
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Iterable[int],
        dropout: float = 0.0,
        channel_mult: Iterable[float] = (1, 2, 4, 8),
        conv_resample: bool = True,
        num_classes: int | None = None,
        use_checkpoint: bool = False,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
    ):
        super().__init__()
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        channel_mult = tuple(channel_mult)
        attention_resolutions = tuple(attention_resolutions)
        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_res_blocks = num_res_blocks
        self.attention_resolutions = attention_resolutions
        self.channel_mult = channel_mult
        self.num_classes = num_classes

        emb_dim = model_channels * 4
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_dim)

        def res_block(ch_in, ch_out, **kw):
            return ResBlock(
                ch_in, emb_dim, dropout, out_channels=ch_out,
                use_scale_shift_norm=use_scale_shift_norm,
                use_checkpoint=use_checkpoint, **kw,
            )

        def attn_block(ch, heads):
            return AttentionBlock(
                ch, num_heads=heads, num_head_channels=num_head_channels,
                use_checkpoint=use_checkpoint,
                use_new_attention_order=use_new_attention_order,
            )

        # Encoder.
        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))]
        )
        skip_chans = [ch]
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res_block(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(attn_block(ch, num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(channel_mult) - 1:
                down = (
                    res_block(ch, ch, down=True)
                    if resblock_updown
                    else Downsample(ch, conv_resample, out_channels=ch)
                )
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_chans.append(ch)
                ds *= 2

        # Bottleneck.
        self.middle_block = TimestepEmbedSequential(
            res_block(ch, ch), attn_block(ch, num_heads), res_block(ch, ch)
        )

        # Decoder.
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res_block(ch + skip_chans.pop(), int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attention_resolutions:
                    layers.append(attn_block(ch, num_heads_upsample))
                if level and i == num_res_blocks:
                    layers.append(
                        res_block(ch, ch, up=True)
                        if resblock_updown
                        else Upsample(ch, conv_resample, out_channels=ch)
                    )
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(
            normalization(ch),
            nn.SiLU(),
            zero_module(nn.Conv2d(input_ch, out_channels, 3, padding=1)),
        )

    @property
    def learn_sigma(self) -> bool:
        """True when the network also outputs the variance channels."""
        return self.out_channels == 2 * self.in_channels

    def forward(
        self, x: torch.Tensor, timesteps: torch.Tensor | float, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Predict ``(B, out_channels, H, W)`` from ``x`` ``(B, C, H, W)``.

        ``timesteps`` are the diffusion step indices the model was trained on
        (integers in ``[0, 1000)`` for ADM/DPS, fractional values allowed); a
        scalar is broadcast over the batch.  ``y`` (``(B,)`` class labels) is
        required iff the model is class-conditional.
        """
        if (y is None) != (self.num_classes is None):
            raise ValueError("pass y if and only if the model is class-conditional")
        t = torch.as_tensor(timesteps, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb_dtype = self.time_embed[0].weight.dtype
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(emb_dtype))
        if y is not None:
            emb = emb + self.label_emb(y)

        hs = []
        h = x
        for module in self.input_blocks:
            h = module(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


# --------------------------------------------------------------------------
# Configuration and construction
# --------------------------------------------------------------------------


def adm_config(**overrides: Any) -> dict[str, Any]:
    """Configuration dict in guided-diffusion ``create_model`` vocabulary.

    Defaults are DPS's FFHQ-256 model (``configs/model_config.yaml``):
    ``image_size=256, num_channels=128, num_res_blocks=1, channel_mult=""``
    (-> ``(1, 1, 2, 2, 4, 4)``), ``learn_sigma=True``, attention at 16x16 with
    64-channel heads, scale-shift norm and ResBlock up/downsampling.
    Unknown keys raise ``TypeError``.
    """
    unknown = sorted(set(overrides) - set(_DEFAULTS))
    if unknown:
        raise TypeError(
            f"unknown ADM config key(s) {unknown}; valid keys: {sorted(_DEFAULTS)}"
        )
    cfg = dict(_DEFAULTS)
    cfg.update(overrides)
    return cfg


def _parse_channel_mult(channel_mult: Any, image_size: int) -> tuple[float, ...]:
    if channel_mult in ("", None):
        if image_size not in DEFAULT_CHANNEL_MULT:
            raise ValueError(
                f"no default channel_mult for image_size={image_size}; "
                f"pass channel_mult explicitly (e.g. '1,2,2,4')"
            )
        return DEFAULT_CHANNEL_MULT[image_size]
    if isinstance(channel_mult, str):
        channel_mult = channel_mult.split(",")
    mults = tuple(float(m) for m in channel_mult)
    return tuple(int(m) if m.is_integer() else m for m in mults)


def _parse_attention_ds(attention_resolutions: Any, image_size: int) -> tuple[int, ...]:
    """Pixel resolutions ("16,8" / 16 / [16, 8]) -> downsampling rates."""
    if isinstance(attention_resolutions, str):
        res = [int(r) for r in attention_resolutions.split(",") if r.strip()]
    elif isinstance(attention_resolutions, int):
        res = [attention_resolutions]
    else:
        res = [int(r) for r in attention_resolutions]
    return tuple(image_size // r for r in res)


def create_adm_unet(**config: Any) -> ADMUNet:
    """Build an :class:`ADMUNet` following ``script_util.create_model`` semantics.

    ``config`` overrides :func:`adm_config` defaults (DPS FFHQ-256).
    ``channel_mult=""`` picks the reference default for ``image_size``;
    ``attention_resolutions`` are pixel resolutions converted to rates
    ``image_size // res``; ``learn_sigma`` gives 6 output channels, else 3
    (``grayscale``: 1 input channel, 2 or 1 outputs, as BlindDPS's fork);
    ``class_cond`` adds a 1000-class label embedding.  Parameters follow the
    reference initialisation (PyTorch defaults, zeroed output convs).
    """
    cfg = adm_config(**config)
    if cfg["use_fp16"]:
        raise ValueError(
            "use_fp16=True is not supported: build the model in float32 and cast "
            "it afterwards (e.g. model.half()); checkpoints are stored in float32"
        )
    image_size = int(cfg["image_size"])
    channels = 1 if cfg["grayscale"] else 3
    model = ADMUNet(
        image_size=image_size,
        in_channels=channels,
        model_channels=int(cfg["num_channels"]),
        out_channels=2 * channels if cfg["learn_sigma"] else channels,
        num_res_blocks=int(cfg["num_res_blocks"]),
        attention_resolutions=_parse_attention_ds(cfg["attention_resolutions"], image_size),
        dropout=float(cfg["dropout"]),
        channel_mult=_parse_channel_mult(cfg["channel_mult"], image_size),
        num_classes=NUM_CLASSES if cfg["class_cond"] else None,
        use_checkpoint=bool(cfg["use_checkpoint"]),
        num_heads=int(cfg["num_heads"]),
        num_head_channels=int(cfg["num_head_channels"]),
        num_heads_upsample=int(cfg["num_heads_upsample"]),
        use_scale_shift_norm=bool(cfg["use_scale_shift_norm"]),
        resblock_updown=bool(cfg["resblock_updown"]),
        use_new_attention_order=bool(cfg["use_new_attention_order"]),
    )
    model.config = cfg
    return model


# --------------------------------------------------------------------------
# Checkpoint loading
# --------------------------------------------------------------------------


def _config_hints(sd: Mapping[str, torch.Tensor], model: ADMUNet) -> list[str]:
    """Config settings suggested by the checkpoint's tensors."""
    hints = []
    w = sd.get("time_embed.0.weight")
    if w is not None and w.ndim == 2 and w.shape[1] != model.model_channels:
        hints.append(f"num_channels={w.shape[1]}")
    w = sd.get("out.2.weight")
    if w is not None and w.ndim == 4 and w.shape[0] != model.out_channels:
        hints.append(f"learn_sigma={w.shape[0] == 2 * model.in_channels}")
    has_label = "label_emb.weight" in sd
    if has_label != (model.num_classes is not None):
        hints.append(f"class_cond={has_label}")
    w = sd.get("middle_block.0.emb_layers.1.weight")
    m = model.middle_block[0]
    if w is not None and w.ndim == 2 and w.shape[1] == 4 * model.model_channels:
        ss = w.shape[0] == 2 * m.out_channels
        if ss != m.use_scale_shift_norm and w.shape[0] in (m.out_channels, 2 * m.out_channels):
            hints.append(f"use_scale_shift_norm={ss}")
    ckpt_ops = any(k.endswith(".op.weight") or k.endswith(".conv.weight") for k in sd)
    model_ops = any(
        k.endswith(".op.weight") or k.endswith(".conv.weight") for k in model.state_dict()
    )
    if ckpt_ops != model_ops:
        hints.append(f"resblock_updown={not ckpt_ops}")

    def n_blocks(prefix):
        return len({k.split(".")[1] for k in sd if k.startswith(prefix)})

    if n_blocks("input_blocks.") != len(model.input_blocks):
        hints.append(
            f"num_res_blocks / channel_mult / image_size (checkpoint has "
            f"{n_blocks('input_blocks.')} input blocks, model has {len(model.input_blocks)})"
        )
    def attn_blocks(keys):
        return sorted({k.rsplit(".qkv.", 1)[0] for k in keys if ".qkv." in k})

    if attn_blocks(sd) != attn_blocks(model.state_dict()):
        hints.append("attention_resolutions (attention blocks are at different places)")
    return hints


def _check_layout(sd: Mapping[str, torch.Tensor], model: ADMUNet, path: str) -> None:
    """Raise ``ValueError`` describing any key or shape mismatch."""
    problems = layout_mismatch(model.state_dict(), sd)
    if not problems:
        return
    lines = [f"ADM checkpoint '{path}' does not match the model configuration.", *problems]
    hints = _config_hints(sd, model)
    if hints:
        lines.append("  Suggested config: " + "; ".join(hints) + ".")
    lines.append(
        "  The layout is set by image_size/channel_mult, num_channels, "
        "num_res_blocks, attention_resolutions, learn_sigma, "
        "use_scale_shift_norm, resblock_updown and class_cond; "
        f"current config: {getattr(model, 'config', None)}"
    )
    raise ValueError("\n".join(lines))


def load_adm_checkpoint(path: str | os.PathLike, state_dict: dict | None = None, **config: Any) -> ADMUNet:
    """Build an ADM UNet (see :func:`create_adm_unet`) and strictly load ``path``.

    ``path`` holds a raw state_dict (as DPS's ``ffhq_10m.pt``) or a dict with a
    ``state_dict``/``model`` entry; it is read with
    ``torch.load(map_location="cpu", weights_only=True)`` (``state_dict``: its tensors, already
    read).  The returned model
    is in float32, in eval mode, on the CPU.

    :raises FileNotFoundError: ``path`` does not exist (with download hints).
    :raises ValueError: the file is unreadable/corrupt, holds no state_dict,
        or its keys/shapes do not match ``config`` (never a partial load).
    """
    path = os.fspath(path)
    sd = state_dict if state_dict is not None else read_state_dict(
        path, "ADM",
        f"Expected a guided-diffusion UNet state_dict there; for the default (FFHQ-256) config this is DPS's "
        f"pretrained 'ffhq_10m.pt', downloadable from {DPS_FFHQ_CHECKPOINT_URL} (see the DPS README), to be "
        f"placed at that path.")
    model = create_adm_unet(**config)
    _check_layout(sd, model, path)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as err:  # should be unreachable after _check_layout
        raise ValueError(f"loading ADM checkpoint '{path}' failed: {err}") from err
    return model.float().eval()
