"""Inpainting: ``A(x) = m ⊙ x`` with a random, box or user-supplied mask (1 = observed)."""
from __future__ import annotations

import zlib
from pathlib import Path

import torch
import torch.nn.functional as F

from ..notices import shown
from ..tensors import cached_on
from .base import Operator
from .decomposition import MaskDecomposition


def harmonic_fill(y: torch.Tensor, mask: torch.Tensor, iters: int = 100) -> torch.Tensor:
    """Fill the missing pixels (``mask == 0``) with a harmonic (Laplace) interpolation of the
    observed ones: coarse-to-fine Jacobi iterations of the 4-neighbour average, keeping the
    observed pixels fixed.  Written here because it must run batched on the tensor's device
    (scikit-image's ``inpaint_biharmonic`` is a per-image CPU solve)."""
    if min(y.shape[-2:]) > 8:  # initialise from a half-resolution fill
        m_small = F.avg_pool2d(mask, 2)
        y_small = F.avg_pool2d(y * mask, 2) / m_small.clamp_min(1e-8)
        coarse = harmonic_fill(y_small, (m_small > 0).to(y.dtype), iters)
        x = F.interpolate(coarse, size=y.shape[-2:], mode="bilinear", align_corners=False)
    else:
        x = torch.full_like(y, 0.0) + (y * mask).sum((-2, -1), keepdim=True) / mask.sum((-2, -1), keepdim=True).clamp_min(1)
    x = torch.where(mask > 0, y, x)
    stencil = torch.tensor([[0, 0.25, 0], [0.25, 0, 0.25], [0, 0.25, 0]], dtype=y.dtype, device=y.device)
    stencil = stencil.expand(y.shape[1], 1, 3, 3)
    for _ in range(iters):
        avg = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), stencil, groups=y.shape[1])
        x = torch.where(mask > 0, y, avg)
    return x


class Inpainting(Operator):
    """Masked observation.  ``mask="random"``: a fraction ``missing`` (0.7) of the pixels is
    missing, the same for all channels; ``"box"``: a square hole of side ``box_fraction`` (1/2,
    i.e. 128 px at 256 px) of the image at a random position with a margin of 1/16 of the
    size; or a path to a mask image (white = observed).  The mask is drawn from ``seed`` for
    ``image_size`` (or for the first image size seen) and then fixed.

    ``missing=[lo, hi]`` (random masks only): every image gets its own mask, its missing fraction
    drawn from U(lo, hi) — DPS's random inpainting (``util/img_utils.py`` ``mask_generator``,
    ``mask_prob_range=(0.3, 0.7)``).  Image ``k``'s mask is drawn from (``seed``, key ``k``): the
    runner sets each image's name as its key (:meth:`set_images`), so a mask follows its image
    whatever the batch; without keys, the images of a batch are keyed by position 0, 1, …"""

    # the initial guess from 80 % of y loses no more than a solve does (4 phantoms, 32 px, DPS 100 steps; guess /
    # DPS, dB): 70 % missing −0.75 / −0.44: "better" may be claimed (Operator.holdout_guess_handicap)
    holdout_guess_handicap = None
    is_linear = True

    @property
    def task(self) -> str:
        return "inpainting_box" if self.kind == "box" else "inpainting_random"

    def __init__(self, mask: str = "random", missing: float | list[float] = 0.7, box_fraction: float = 0.5,
                 image_size: int | None = None, seed: int = 0):
        super().__init__()
        self.per_image = hasattr(missing, "__len__") and not isinstance(missing, str)  # a list, tuple or ListConfig
        if self.per_image:
            missing = [float(v) for v in missing]
            if len(missing) != 2 or not 0.0 <= missing[0] <= missing[1] < 1.0:
                raise ValueError(f"missing must be a fraction in [0, 1) or a range [lo, hi] with 0 <= lo <= hi < 1, "
                                 f"got {shown(missing)}")
            if mask != "random":
                raise ValueError(f"missing=[lo, hi] (a per-image missing fraction) needs mask='random', got {shown(mask)}")
        elif not isinstance(missing, (int, float)) or not 0.0 <= missing < 1.0:
            raise ValueError(f"missing must be a fraction in [0, 1), got {shown(missing)}")
        if not isinstance(mask, (str, Path)):  # (a tensor's repr filled the message)
            raise TypeError(f"mask must be 'random', 'box' or the path of a mask image (.png, .npy: 1 = observed), "
                            f"got a {type(mask).__name__}; save a mask array with np.save('mask.npy', m) and give "
                            f"its path")
        if mask not in ("random", "box") and not Path(str(mask)).is_file():
            raise FileNotFoundError(f"mask must be 'random', 'box' or the path of a mask image; "
                                    f"no file at {mask!r}")
        if isinstance(box_fraction, bool) or not isinstance(box_fraction, (int, float)) or not 0 < box_fraction < 1:
            raise ValueError(f"box_fraction must be a fraction in (0, 1) (the hole's side per image side), got "
                             f"{shown(box_fraction)}")
        self.kind, self.missing, self.box_fraction, self.seed = mask, missing, box_fraction, seed
        self.params = {"mask": mask, "missing": missing, "seed": seed}
        self.register_buffer("mask", None)
        self.image_keys: list[str] | None = None
        self._masks: dict = {}
        if self.per_image:
            pass  # drawn per image key in mask_for
        elif mask not in ("random", "box"):
            from ..io import load_image

            m = load_image(mask)[:, :1]
            self.mask = (m > 0).float()
        elif image_size is not None:
            self.mask = self._draw(image_size, image_size)

    def _draw(self, h: int, w: int, key: str | None = None) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed if key is None else zlib.crc32(f"{self.seed}:{key}:mask".encode()))
        if self.kind == "random":
            missing = self.missing
            if self.per_image:
                lo, hi = self.missing
                missing = lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))
            flat = torch.ones(h * w)
            flat[torch.randperm(h * w, generator=g)[:round(missing * h * w)]] = 0
            return flat.view(1, 1, h, w)
        side_h, side_w = round(h * self.box_fraction), round(w * self.box_fraction)
        mh, mw = h // 16, w // 16
        i = mh + int(torch.randint(max(h - 2 * mh - side_h, 0) + 1, (1,), generator=g))
        j = mw + int(torch.randint(max(w - 2 * mw - side_w, 0) + 1, (1,), generator=g))
        m = torch.ones(1, 1, h, w)
        m[..., i:i + side_h, j:j + side_w] = 0
        return m

    def set_images(self, keys) -> None:
        """Name the images of the next batches (their masks are drawn from these keys); ``None``:
        key by position in the batch."""
        self.image_keys = None if keys is None else [str(k) for k in keys]

    def image_names(self) -> list[str] | None:
        return None if self.image_keys is None else list(self.image_keys)

    HOLE_CONTENT = 0.05  # RMS in a hole beyond 3σ by this: image content, not noise (images span [-1, 1])

    def check_consistent(self, y: torch.Tensor, sigma: float) -> None:
        """Per-image masks: each image's holes in ``y`` hold noise only (zeros once projected); image
        content there means the masks are not those ``y`` was measured with — a reordered batch keyed by
        position got other images' masks and was solved silently wrong (an audit, 2026-12-07: residuals
        7–10× the noise level, told only to check sigma and the solver)."""
        if not self.per_image:  # (a shared or file mask: a measurement from elsewhere may fill its holes)
            return
        holes = (self.mask_for(tuple(y.shape)) == 0).to(y.device).expand_as(y)
        count = holes.flatten(1).sum(1)
        rms = ((y * holes).pow(2).flatten(1).sum(1) / count.clamp_min(1)).sqrt()
        bad = [i for i in range(y.shape[0]) if count[i] > 0 and float(rms[i]) > 3 * sigma + self.HOLE_CONTENT]
        if bad:
            keyed = ("keyed by position in the batch" if self.image_keys is None
                     else f"drawn for the images named {self.image_keys[bad[0]]!r}, …")
            raise ValueError(f"y's image {bad[0]} holds image content where its inpainting mask has holes (RMS "
                             f"{float(rms[bad[0]]):.3g} there, noise σ {sigma:g}; {len(bad)} of {y.shape[0]} image(s)): "
                             f"the per-image masks ({keyed}) are not those y was measured with — a reordered or sliced "
                             f"batch; name the images with op.set_images([...]) before measure and solve")

    def mask_for(self, shape) -> torch.Tensor:
        h, w = shape[-2:]
        if self.per_image:
            b = shape[0] if len(shape) == 4 else 1
            keys = self.image_keys if self.image_keys is not None else [str(i) for i in range(b)]
            if len(keys) != b:
                raise ValueError(f"per-image inpainting masks: {len(keys)} image keys were set (set_images) but the "
                                 f"batch has {b} images; expected one key per image")
            for k in keys:
                if (k, h, w) not in self._masks:
                    self._masks[(k, h, w)] = self._draw(h, w, k)
            batch = (tuple(keys), h, w)
            if getattr(self, "_batch_mask", (None,))[0] != batch:  # the same tensor while the batch stays
                self._batch_mask = (batch, torch.cat([self._masks[(k, h, w)] for k in keys]))
            return self._batch_mask[1]
        if self.mask is None:
            self.mask = self._draw(h, w)
        if tuple(self.mask.shape[-2:]) != (h, w):
            raise ValueError(f"the inpainting mask is {tuple(self.mask.shape[-2:])} but the image is {(h, w)}; "
                             f"expected images of the mask's size")
        return self.mask

    def output_shape(self, shape):
        self.mask_for(shape)
        return tuple(shape)

    def apply(self, x):
        return x * cached_on(self, "mask", self.mask_for(x.shape), x.device, x.dtype)

    def svd(self, shape):
        """V = U = I and the mask as singular values (per image with per-image masks)."""
        return MaskDecomposition(tuple(shape), self.mask_for(shape))

    def observed_entries(self, y_shape):
        """The observed pixels (all channels) of a shared mask; per-image masks: those observed in
        at least one image of the batch (one split serves the batch; a pixel missing in every image
        carries only noise and is never held out — was: all pixels)."""
        mask = self.mask_for(y_shape)
        if self.per_image:
            mask = mask.amax(0, keepdim=True)
        return mask[0].expand(y_shape[-3], -1, -1).flatten() > 0

    def observed_mask(self, y_shape):
        """The mask of each image (its holes are zeros in y), over every channel."""
        mask = self.mask_for(y_shape)
        return mask.expand(mask.shape[0], y_shape[-3], -1, -1)

    def unused_settings(self):
        if self.kind == "random":
            return {"box_fraction": "mask=box"}
        if self.kind == "box":
            return {"missing": "mask=random"}
        return {k: "mask=random or box (a mask file decides)" for k in ("missing", "box_fraction", "seed")}

    def seeded_state(self):
        if self.per_image:
            return "its per-image random masks (from the seed and each image's name)"
        return f"its {self.kind} mask" if self.kind in ("random", "box") else None

    def project_measurement(self, y):
        return self.apply(y)

    def initial_guess(self, y):
        """Harmonic fill of the missing pixels."""
        return harmonic_fill(y, self.mask_for(y.shape).to(y).expand_as(y)).clamp(-1, 1)
