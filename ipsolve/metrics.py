"""Image-quality metrics on [0, 1] with data range 1 (inputs are ipsolve's [-1, 1] tensors).

PSNR and SSIM are scikit-image's; LPIPS is the ``lpips`` package (AlexNet by default, as
DMPlug reports; VGG as DPS/ReSample report).  LPIPS needs torchvision's ImageNet backbone
in the torch hub cache; it is downloaded there once when missing (as ``lpips`` would), except
with ``HF_HUB_OFFLINE=1``; without it ``lpips`` returns None and warns once."""
from __future__ import annotations

import os
import logging
import warnings

import numpy as np
import torch
from .notices import shown

# torchvision's backbone files that lpips loads (pretrained=True) for each network.
LPIPS_BACKBONES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
BACKBONE_URL = "https://download.pytorch.org/models/"  # torchvision's weights (AlexNet_Weights.IMAGENET1K_V1.url)
BACKBONE_MB = {"alex": 233, "vgg": 528}
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_lpips_models: dict = {}
_warned: set = set()
_not_fetched: dict[str, str] = {}  # net -> why its backbone is not in the cache (asked once per process)


def _to01(x: torch.Tensor) -> np.ndarray:
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) / 2).numpy()


def _check_pair(x, ref):
    """Two float ``(B, C, H, W)`` tensors of one shape, the reference on [-1, 1] (a reconstruction or
    an initial guess beyond it is clamped: scored as shown): else one line saying what is expected."""
    for name, t in (("x", x), ("ref", ref)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"metrics take torch tensors (B, C, H, W) on [-1, 1]; {name} is a {type(t).__name__} "
                            f"(torch.from_numpy(...))")
        if not t.is_floating_point():
            raise TypeError(f"metrics take float images on [-1, 1]; {name} has dtype {t.dtype} (from uint8: "
                            f"x.float() / 127.5 - 1)")
    top = float(ref.detach().abs().amax()) if ref.numel() else 0.0
    if top > 1.0 + 1e-3:  # [0, 255] images scored as if on [-1, 1] came out 20 dB off, unsaid
        raise ValueError(f"ref has values up to {top:.4g}: metrics take images on [-1, 1] (from [0, 255]: "
                         f"x / 127.5 - 1; from [0, 1]: 2·x - 1)")
    if x.shape != ref.shape or x.ndim != 4:
        raise ValueError(f"metrics need two (B, C, H, W) tensors of the same shape, got {tuple(x.shape)} "
                         f"and {tuple(ref.shape)}")


def psnr(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB, shape ``(B,)``."""
    from skimage.metrics import peak_signal_noise_ratio

    _check_pair(x, ref)
    a, b = _to01(x), _to01(ref)
    return torch.tensor([peak_signal_noise_ratio(r, i, data_range=1.0) for i, r in zip(a, b)])


def ssim(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (scikit-image, Gaussian-free 7×7 window, data range 1), shape ``(B,)``."""
    from skimage.metrics import structural_similarity

    _check_pair(x, ref)
    if min(x.shape[-2:]) < 7:
        raise ValueError(f"SSIM needs images of at least 7×7 pixels (its window), got {x.shape[-2]}x{x.shape[-1]}")
    a, b = _to01(x), _to01(ref)
    return torch.tensor([structural_similarity(r, i, data_range=1.0, channel_axis=0) for i, r in zip(a, b)])


def lpips_backbone_path(net: str = "alex") -> str:
    """Where ``lpips`` loads torchvision's ImageNet weights for ``net`` (``alex``/``vgg``) from:
    ``<torch hub dir>/checkpoints/<LPIPS_BACKBONES[net]>`` (a KeyError for another ``net``)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", LPIPS_BACKBONES[net])


def lpips_available(net: str = "alex") -> bool:
    """Whether LPIPS can run: its ImageNet backbone is in the torch hub cache, or was just downloaded
    there (tried once per process, not with ``HF_HUB_OFFLINE=1``).  The cache was only looked at
    before: a user with a network got n/a on every run unless they placed the file by hand."""
    path = lpips_backbone_path(net)
    if os.path.isfile(path):
        return True
    if net not in _not_fetched:
        _not_fetched[net] = fetch_backbone(net, path)
    return os.path.isfile(path)


def fetch_backbone(net: str, path: str) -> str:
    """Download ``net``'s torchvision backbone to ``path`` (hash-checked, written under a temporary
    name first, as torchvision does); ``""`` on success, else the reason, for the notice."""
    offline = [v for v in OFFLINE_VARIABLES if os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")]
    if offline:
        return f"{offline[0]}={os.environ[offline[0]]}: not downloaded"
    import socket

    url = BACKBONE_URL + LPIPS_BACKBONES[net]
    logging.getLogger("ipsolve").info("downloading LPIPS's %s backbone (%d MB, once) from %s to %s", net,
                                      BACKBONE_MB[net], url, os.path.dirname(path))
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)  # (torch.hub's urlopen has none: an unreachable host must not stall a run)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.hub.download_url_to_file(url, path, hash_prefix=LPIPS_BACKBONES[net].rsplit("-", 1)[1].split(".")[0],
                                       progress=False)
        return ""
    except Exception as err:  # noqa: BLE001 - no network, a proxy, a full disk: LPIPS is n/a, said once
        why = getattr(err, "reason", None) or err  # (urllib's URLError: "<urlopen error [Errno -2] …>" around it)
        why = getattr(why, "strerror", None) or str(why) or type(err).__name__
        return f"could not be downloaded from {url}: {why.splitlines()[0][:120]}"
    finally:
        socket.setdefaulttimeout(before)


def lpips_unavailable_message(net: str = "alex") -> str:
    """The one-line notice when LPIPS cannot run: the missing backbone file, why it was not
    downloaded, and the folder to place it in (LPIPS is then reported as n/a)."""
    path = lpips_backbone_path(net)
    why = _not_fetched.get(net)
    return (f"LPIPS ({net}) unavailable: torchvision's ImageNet weights {LPIPS_BACKBONES[net]} are not in "
            f"{os.path.dirname(path)}{f' ({why})' if why else ''}; place the file there to enable LPIPS "
            f"(reported as n/a)")


def lpips(x: torch.Tensor, ref: torch.Tensor, net: str = "alex") -> torch.Tensor | None:
    """Per-image LPIPS ``(B,)``, or None (with one warning) when the backbone weights are not
    in the torch hub cache — never a number from random weights."""
    if net not in LPIPS_BACKBONES:
        raise ValueError(f"LPIPS net must be one of {sorted(LPIPS_BACKBONES)}, got {shown(net)}")
    _check_pair(x, ref)
    if net not in _lpips_models:
        if not lpips_available(net):
            if net not in _warned:  # a log line (no source line), once per process; on the console once per run
                _warned.add(net)
                from .notices import main_process

                logging.getLogger("ipsolve").log(logging.WARNING if main_process() else logging.INFO,
                                                 lpips_unavailable_message(net))
            return None
        import lpips as lpips_pkg

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _lpips_models[net] = lpips_pkg.LPIPS(net=net, verbose=False).eval()
    model = _lpips_models[net].to(x.device)
    xs, rs = x.float().clamp(-1, 1), ref.float().clamp(-1, 1)
    if xs.shape[1] == 1:  # grey images: replicate to the RGB the network expects
        xs, rs = xs.repeat(1, 3, 1, 1), rs.repeat(1, 3, 1, 1)
    with torch.no_grad():
        return model(xs, rs).flatten().cpu()  # lpips takes [-1, 1] inputs
