"""BKSE blur-kernel network (``KernelWizard``) used by the non-linear deblurring task.

Re-implementation of the network from

    P. Tran, A. Tran, Q. Phung, M. Hoai, "Explore Image Deblurring via Encoded Blur
    Kernel Space", CVPR 2021 (arXiv:2104.00317),
    https://github.com/VinAIResearch/blur-kernel-space-exploring (Apache-2.0),

as it is used by DPS (Chung et al., ICLR 2023) and DMPlug for the "non-linear deblur"
inverse problem: ``NonlinearBlurOperator`` builds ``KernelWizard`` with the options of
BKSE's ``options/generate_blur/default.yml``, loads ``GOPRO_wVAE.pth`` strictly, and
blurs an image with ``adaptKernel(x, torch.randn(1, 512, 2, 2) * 1.2)``.

Module and parameter names, shapes, and the forward computation follow the reference
code (BKSE master: ``models/kernel_encoding/kernel_wizard.py``,
``models/backbones/{resnet,unet_parts}.py``, ``models/arch_util.py``), so the published
checkpoint loads with ``load_state_dict(strict=True)``. This module does not depend on
the bkse package.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..checkpoints import layout_mismatch, read_state_dict

__all__ = [
    "BKSE_CHECKPOINT_NAME",
    "BKSE_CHECKPOINT_URL",
    "KernelWizard",
    "load_bkse_checkpoint",
]

BKSE_CHECKPOINT_NAME = "GOPRO_wVAE.pth"
#: Download link from the "Model Zoo" section of the BKSE README.
BKSE_CHECKPOINT_URL = "http://public.vinai.io/models/blur-kernel-space-exploring/GOPRO_wVAE.pth"

#: Total spatial downsampling between the image and the kernel code: 4 in the feature
#: extractor (two stride-2 convs), then 32 in the U-Net adapter (five stride-2 convs).
DOWNSAMPLING = 128


# --------------------------------------------------------------------------- helpers


def _norm_layer(norm_type: str):
    """Normalization factory of BKSE's ``arch_util.get_norm_layer``.

    Returns ``(factory, use_bias)``. As in the reference, convolutions carry a bias only
    with instance norm, so with ``"none"`` (the default.yml setting) most convs are
    bias-free.
    """
    if norm_type == "batch":
        return (lambda c: nn.BatchNorm2d(c, affine=True, track_running_stats=True)), False
    if norm_type == "instance":
        return (lambda c: nn.InstanceNorm2d(c, affine=False, track_running_stats=False)), True
    if norm_type == "none":
        return (lambda c: nn.Identity()), False
    raise ValueError(f"unknown norm type {norm_type!r}; expected 'batch', 'instance' or 'none'")


def _pad(padding_type: str) -> tuple[list[nn.Module], int]:
    if padding_type == "reflect":
        return [nn.ReflectionPad2d(1)], 0
    if padding_type == "replicate":
        return [nn.ReplicationPad2d(1)], 0
    if padding_type == "zero":
        return [], 1
    raise ValueError(f"unknown padding type {padding_type!r}; expected 'reflect', 'replicate' or 'zero'")


class ResidualBlockNoBN(nn.Module):
    """``x + conv2(relu(conv1(x)))``; BKSE's ``ResidualBlock_noBN`` (EDVR style)."""

    def __init__(self, nf: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
        self.conv2 = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
        for conv in (self.conv1, self.conv2):  # reference init: scaled Kaiming, zero bias
            if conv.weight.is_meta:  # nothing to initialize (and normal_ on meta is slow)
                continue
            nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_in")
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class ResnetBlock(nn.Module):
    """``x + conv_block(x)`` with pad-conv-norm-ReLU-[dropout]-pad-conv-norm (DeblurGAN style)."""

    def __init__(self, dim: int, padding_type: str, norm_layer, use_dropout: bool, use_bias: bool):
        super().__init__()
        layers: list[nn.Module] = []
        pad, p = _pad(padding_type)
        layers += pad + [nn.Conv2d(dim, dim, 3, padding=p, bias=use_bias), norm_layer(dim), nn.ReLU()]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        pad, p = _pad(padding_type)
        layers += pad + [nn.Conv2d(dim, dim, 3, padding=p, bias=use_bias), norm_layer(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)


class UnetSkipConnectionBlock(nn.Module):
    """One level of the pix2pix-style U-Net of the kernel adapter.

    ``down`` halves the resolution (4x4 stride-2 conv), ``up`` doubles it (4x4 stride-2
    transposed conv). The innermost level concatenates the kernel code to its bottleneck
    features; the non-outermost levels concatenate their (activated) input as skip.
    """

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        submodule: UnetSkipConnectionBlock | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm_layer=None,
        use_bias: bool = False,
        use_dropout: bool = False,
    ):
        super().__init__()
        self.outermost = outermost
        self.innermost = innermost
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)

        # Attribute order (down, submodule, up) matches the reference state_dict order.
        if outermost:
            self.down = nn.Sequential(downconv)
            self.submodule = submodule
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            self.up = nn.Sequential(nn.ReLU(), upconv, nn.Tanh())
        elif innermost:
            self.down = nn.Sequential(nn.LeakyReLU(0.2), downconv)
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            self.up = nn.Sequential(nn.ReLU(), upconv, norm_layer(outer_nc))
        else:
            self.down = nn.Sequential(nn.LeakyReLU(0.2), downconv, norm_layer(inner_nc))
            self.submodule = submodule
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            up: list[nn.Module] = [nn.ReLU(), upconv, norm_layer(outer_nc)]
            if use_dropout:
                up.append(nn.Dropout(0.5))
            self.up = nn.Sequential(*up)

    def forward(self, x: Tensor, code: Tensor) -> Tensor:
        if self.outermost:
            return self.up(self.submodule(self.down(x), code))
        # The reference applies this LeakyReLU in place, so the skip branch also carries
        # the activated input; reproduce that explicitly (without the in-place op).
        x = self.down[0](x)
        h = x
        for layer in list(self.down)[1:]:
            h = layer(h)
        if self.innermost:
            h = torch.cat((h, code), dim=1)
        else:
            h = self.submodule(h, code)
        return torch.cat((self.up(h), x), dim=1)


class KernelExtractor(nn.Module):
    """The encoder F of the paper: (sharp features, blurred features) -> kernel code."""

    def __init__(
        self,
        nf: int,
        kernel_dim: int,
        use_vae: bool,
        norm: str,
        use_sharp: bool,
        n_blocks: int,
        padding_type: str,
        use_dropout: bool,
    ):
        super().__init__()
        self.kernel_dim = kernel_dim
        self.use_sharp = use_sharp
        self.use_vae = use_vae
        norm_layer, use_bias = _norm_layer(norm)
        input_nc = nf * 2 if use_sharp else nf
        output_nc = kernel_dim * 2 if use_vae else kernel_dim

        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, nf, kernel_size=7, padding=0, bias=use_bias),
            norm_layer(nf),
            nn.ReLU(),
        ]
        for i in range(5):  # downsampling; channel counts capped at output_nc
            mult = 2**i
            inc, ouc = min(nf * mult, output_nc), min(nf * mult * 2, output_nc)
            layers += [
                nn.Conv2d(inc, ouc, kernel_size=3, stride=2, padding=1, bias=use_bias),
                norm_layer(nf * mult * 2),  # (sic) reference sizes the norm uncapped
                nn.ReLU(),
            ]
        for _ in range(n_blocks):
            layers.append(ResnetBlock(output_nc, padding_type, norm_layer, use_dropout, use_bias))
        self.model = nn.Sequential(*layers)

    def forward(self, sharp: Tensor, blur: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat((sharp, blur), dim=1) if self.use_sharp else blur
        out = self.model(x)
        if self.use_vae:
            return out[:, : self.kernel_dim], out[:, self.kernel_dim :]
        return out, torch.zeros_like(out)


class KernelAdapter(nn.Module):
    """The blur operator G of the paper: a 5-level U-Net taking the kernel code at its bottleneck."""

    def __init__(self, nf: int, norm: str):
        super().__init__()
        norm_layer, use_bias = _norm_layer(norm)
        kw = dict(norm_layer=norm_layer, use_bias=use_bias)
        block = UnetSkipConnectionBlock(nf * 8, nf * 8, innermost=True, **kw)
        block = UnetSkipConnectionBlock(nf * 4, nf * 8, submodule=block, **kw)
        block = UnetSkipConnectionBlock(nf * 2, nf * 4, submodule=block, **kw)
        block = UnetSkipConnectionBlock(nf, nf * 2, submodule=block, **kw)
        self.model = UnetSkipConnectionBlock(nf, nf, input_nc=nf, submodule=block, outermost=True, **kw)

    def forward(self, x: Tensor, code: Tensor) -> Tensor:
        return self.model(x, code)


# --------------------------------------------------------------------------- network


class KernelWizard(nn.Module):
    """BKSE network: blur a sharp image with an encoded blur kernel (``adaptKernel``), or
    encode the blur of a sharp/blurred pair (``forward``).

    Keyword defaults are the ``KernelWizard`` options of BKSE's
    ``options/generate_blur/default.yml`` (the configuration of ``GOPRO_wVAE.pth``).
    ``N_frames`` and ``adapter_use_dropout`` are accepted for parity with the YAML but,
    as in the reference, do not affect the network.
    """

    def __init__(
        self,
        *,
        input_nc: int = 3,
        nf: int = 64,
        front_RBs: int = 10,
        back_RBs: int = 20,
        N_frames: int = 1,
        kernel_dim: int = 512,
        use_vae: bool = True,
        extractor_norm: str = "none",
        extractor_use_sharp: bool = True,
        extractor_n_blocks: int = 4,
        extractor_padding_type: str = "reflect",
        extractor_use_dropout: bool = False,
        adapter_norm: str = "none",
        adapter_use_dropout: bool = False,
    ):
        super().__init__()
        self.input_nc = input_nc
        self.nf = nf
        self.kernel_dim = kernel_dim
        self.use_vae = use_vae
        self.N_frames = N_frames

        lrelu = nn.LeakyReLU(negative_slope=0.1)
        self.feature_extractor = nn.Sequential(
            nn.Conv2d(input_nc, nf, 3, 1, 1, bias=True),
            lrelu,
            nn.Conv2d(nf, nf, 3, 2, 1, bias=True),
            lrelu,
            nn.Conv2d(nf, nf, 3, 2, 1, bias=True),
            lrelu,
            *[ResidualBlockNoBN(nf) for _ in range(front_RBs)],
        )
        self.kernel_extractor = KernelExtractor(
            nf,
            kernel_dim,
            use_vae,
            norm=extractor_norm,
            use_sharp=extractor_use_sharp,
            n_blocks=extractor_n_blocks,
            padding_type=extractor_padding_type,
            use_dropout=extractor_use_dropout,
        )
        self.adapter = KernelAdapter(nf, norm=adapter_norm)
        # Reconstruction; the 64 channels after the first pixel shuffle are hard-coded
        # in the reference (independent of nf).
        self.recon_trunk = nn.Sequential(
            *[ResidualBlockNoBN(nf) for _ in range(back_RBs)],
            nn.Conv2d(nf, nf * 4, 3, 1, 1, bias=True),
            nn.PixelShuffle(2),
            lrelu,
            nn.Conv2d(nf, 64 * 4, 3, 1, 1, bias=True),
            nn.PixelShuffle(2),
            lrelu,
            nn.Conv2d(64, 64, 3, 1, 1, bias=True),
            lrelu,
            nn.Conv2d(64, input_nc, 3, 1, 1, bias=True),
        )

    @classmethod
    def from_options(cls, opt: Mapping[str, Any]) -> KernelWizard:
        """Build from a BKSE options dict (the ``KernelWizard`` section of the YAML)."""
        ke = opt.get("KernelExtractor", {})
        ad = opt.get("Adapter", {})
        top = ("input_nc", "nf", "front_RBs", "back_RBs", "N_frames", "kernel_dim", "use_vae")
        kwargs = {k: opt[k] for k in top if k in opt}
        for src, prefix in ((ke, "extractor_"), (ad, "adapter_")):
            for k, v in src.items():
                kwargs[prefix + k] = v
        return cls(**kwargs)

    @property
    def code_channels(self) -> int:
        """Channels of the kernel code taken by :meth:`adaptKernel` (``8 * nf`` = 512)."""
        return self.nf * 8

    def kernel_code_shape(self, height: int, width: int, batch: int = 1) -> tuple[int, int, int, int]:
        """Shape of the kernel code for an image of size ``height x width``."""
        self._check_size(height, width)
        return (batch, self.code_channels, height // DOWNSAMPLING, width // DOWNSAMPLING)

    @staticmethod
    def _check_size(height: int, width: int) -> None:
        if height % DOWNSAMPLING or width % DOWNSAMPLING or height <= 0 or width <= 0:
            raise ValueError(
                f"BKSE KernelWizard needs image height and width divisible by {DOWNSAMPLING}, got {height}x{width}"
            )

    def adaptKernel(self, x_sharp: Tensor, kernel: Tensor) -> Tensor:
        """Blur ``x_sharp`` (B, C, H, W), values in [0, 1], with the kernel code ``kernel``.

        ``kernel`` has shape (B, 8*nf, H/128, W/128), i.e. (1, 512, 2, 2) for one
        256x256 image (DPS draws ``torch.randn(1, 512, 2, 2) * 1.2``); a batch-1 code
        is broadcast over the image batch. Returns ``x_sharp + residual`` in the same
        [0, 1] scale, unclamped (as in the reference).
        """
        if x_sharp.dim() != 4 or x_sharp.shape[1] != self.input_nc:
            raise ValueError(
                f"x_sharp must have shape (B, {self.input_nc}, H, W), got {tuple(x_sharp.shape)}"
            )
        b, _, h, w = x_sharp.shape
        expected = self.kernel_code_shape(h, w, b)
        if kernel.dim() == 4 and kernel.shape[0] == 1 and b > 1:
            kernel = kernel.expand(b, *kernel.shape[1:])
        if tuple(kernel.shape) != expected:
            raise ValueError(
                f"kernel code must have shape {expected} for a {b}x{self.input_nc}x{h}x{w} image, "
                f"got {tuple(kernel.shape)}"
            )
        feats = self.feature_extractor(x_sharp)
        out = self.recon_trunk(self.adapter(feats, kernel))
        return out + x_sharp

    def forward(self, x_sharp: Tensor, x_blur: Tensor) -> tuple[Tensor, Tensor]:
        """Encode the blur between a sharp/blurred pair (both (B, C, H, W) in [0, 1]).

        Returns ``(mean, sigma)`` of the kernel code, each (B, kernel_dim, H/128, W/128);
        BKSE samples ``mean + sigma * eps``. Without VAE, ``sigma`` is zeros. Needs
        H, W >= 256 (reflection padding in the residual blocks).
        """
        return self.kernel_extractor(self.feature_extractor(x_sharp), self.feature_extractor(x_blur))


# --------------------------------------------------------------------------- loading



def load_bkse_checkpoint(path: str | os.PathLike, **options: Any) -> KernelWizard:
    """Build :class:`KernelWizard` (``**options`` as in its constructor) and load ``path`` strictly.

    ``path`` is BKSE's ``GOPRO_wVAE.pth`` (raw state_dict; a dict wrapping it under
    ``"state_dict"`` etc. or ``module.``-prefixed keys are accepted too). Raises
    ``FileNotFoundError`` if the file is missing, ``ValueError`` if it cannot be read or
    its keys/shapes do not match; never loads partially. Returns the network on CPU in
    eval mode.
    """
    path_str = os.fspath(path)
    state = read_state_dict(
        path_str, "BKSE",
        f"The non-linear blur operator expects BKSE's pretrained '{BKSE_CHECKPOINT_NAME}' (download: "
        f"{BKSE_CHECKPOINT_URL}, from the model zoo of https://github.com/VinAIResearch/blur-kernel-space-exploring) "
        f"placed at this path.")

    # Build without initializing weights (they are all overwritten), then load strictly.
    with torch.device("meta"):
        model = KernelWizard(**options)
    problems = layout_mismatch(model.state_dict(), state)
    if problems:
        raise ValueError(f"BKSE checkpoint '{path_str}' does not match KernelWizard with these options:\n"
                         + "\n".join(problems))
    model = model.to_empty(device="cpu")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # e.g. a non-floating dtype that cannot be copied
        raise ValueError(f"could not load BKSE checkpoint '{path_str}': {exc}") from exc
    return model.eval()
