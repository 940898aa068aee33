"""Offline image data: random-ellipse phantoms, the Shepp–Logan phantom and the
natural photos bundled with scikit-image / scikit-learn.

All functions return tensors in [-1, 1] (the ipsolve convention, DESIGN.md §2).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# Photos held out from training the bundled photo prior (used by the demo and tests).
PHOTO_TRAIN = ("astronaut", "chelsea", "motorcycle_left", "immunohistochemistry", "hubble_deep_field",
               "china", "camera")
PHOTO_HELDOUT = ("coffee", "flower", "rocket")


def random_ellipses(n: int, size: int = 32, generator: torch.Generator | None = None,
                    supersample: int = 2) -> torch.Tensor:
    """Random-ellipse phantoms, shape ``(n, 1, size, size)`` in [-1, 1].

    The family behind the CT "ellipses" benchmarks: with probability 0.7 a large
    body ellipse (intensity 0.5–1), plus 3–10 smaller ellipses with intensities in
    [-0.4, 0.6], summed and clipped to [0, 1]; rendered at ``supersample``× and
    average-pooled for anti-aliased edges.
    """
    g = generator
    res = size * supersample
    lin = (torch.arange(res, dtype=torch.float32) + 0.5) / res * 2 - 1
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    k = 11  # ellipse slots per image: slot 0 is the body, slots 1..10 the inner ellipses
    u = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    cx, cy = (u(n, k) * 2 - 1) * 0.6, (u(n, k) * 2 - 1) * 0.6
    ax, ay = 0.04 + u(n, k) * 0.4, 0.04 + u(n, k) * 0.4
    angle = u(n, k) * math.pi
    val = u(n, k) * 1.0 - 0.4
    count = 3 + (u(n) * 8).long()
    active = torch.arange(k).unsqueeze(0) <= count.unsqueeze(1)
    # body ellipse
    cx[:, 0], cy[:, 0] = (u(n) * 2 - 1) * 0.1, (u(n) * 2 - 1) * 0.1
    ax[:, 0], ay[:, 0] = 0.6 + u(n) * 0.3, 0.6 + u(n) * 0.3
    val[:, 0] = 0.5 + u(n) * 0.5
    active[:, 0] = u(n) < 0.7
    c, s = torch.cos(angle)[..., None, None], torch.sin(angle)[..., None, None]
    dx, dy = xx - cx[..., None, None], yy - cy[..., None, None]
    inside = ((dx * c + dy * s) / ax[..., None, None]) ** 2 + ((-dx * s + dy * c) / ay[..., None, None]) ** 2 <= 1
    img = (inside.float() * (val * active)[..., None, None]).sum(1, keepdim=True).clamp(0, 1)
    img = F.avg_pool2d(img, supersample)
    return img * 2 - 1


def shepp_logan(size: int = 32) -> torch.Tensor:
    """scikit-image's Shepp–Logan phantom, anti-aliased to ``size``, ``(1, 1, size, size)`` in [-1, 1]."""
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    img = resize(shepp_logan_phantom(), (size, size), anti_aliasing=True)
    return torch.from_numpy(np.clip(img, 0, 1)).float()[None, None] * 2 - 1


def photo(name: str) -> np.ndarray:
    """One bundled natural photo as an ``(H, W, 3)`` uint8 array."""
    import skimage.data as skd

    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    if name.startswith("motorcycle_"):
        left, right, _ = skd.stereo_motorcycle()
        return left if name.endswith("left") else right
    img = getattr(skd, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return img[..., :3]


def photo_crop(name: str, size: int = 32) -> torch.Tensor:
    """Centre square crop of a bundled photo resized to ``size``: ``(1, 3, size, size)`` in [-1, 1]."""
    from skimage.transform import resize

    img = photo(name)
    h, w = img.shape[:2]
    m = min(h, w)
    img = img[(h - m) // 2:(h - m) // 2 + m, (w - m) // 2:(w - m) // 2 + m]
    img = resize(img, (size, size), anti_aliasing=True)  # float in [0, 1]
    return torch.from_numpy(img).float().permute(2, 0, 1)[None] * 2 - 1


def random_photo_crops(n: int, size: int = 32, generator: torch.Generator | None = None,
                       names=PHOTO_TRAIN, _cache: dict = {}) -> torch.Tensor:
    """Multi-scale random crops (side 1–8× ``size``, random flips) of the training photos."""
    key = tuple(names)
    if key not in _cache:
        _cache[key] = [torch.from_numpy(np.array(photo(nm))).permute(2, 0, 1).float() / 127.5 - 1 for nm in names]
    photos = _cache[key]
    out = []
    for _ in range(n):
        p = photos[int(torch.randint(len(photos), (1,), generator=generator))]
        h, w = p.shape[1:]
        side = int(size * 2 ** (torch.rand(1, generator=generator).item() * 3))
        side = min(side, h, w)
        i = int(torch.randint(h - side + 1, (1,), generator=generator))
        j = int(torch.randint(w - side + 1, (1,), generator=generator))
        crop = p[None, :, i:i + side, j:j + side]
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        if torch.rand(1, generator=generator).item() < 0.5:
            crop = crop.flip(-1)
        out.append(crop)
    return torch.cat(out).clamp(-1, 1)
