"""Offline image data: random-ellipse phantoms, the Shepp–Logan phantom and the
natural photos bundled with scikit-image / scikit-learn.

All functions return tensors in [-1, 1] (the ipsolve convention).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from .notices import shown

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


# --- The broad phantom family (training) and the held-out family --------------------------
#
# Every phantom is painted shape by shape at ``supersample``× resolution on a background, in
# [0, 1], then average-pooled and mapped to [-1, 1].  Training draws the families in
# ``PHANTOM_TRAIN_FAMILIES``; ``blobs`` (smooth, non-convex star-shaped curves) is never drawn
# in training: it is the held-out *distribution* every quality figure and test uses (README, Benchmark).
PHANTOM_TRAIN_FAMILIES = ("ellipses", "polygons", "nested", "head")
PHANTOM_HELDOUT_FAMILY = "blobs"
HELDOUT_SEED = 99_999

# Shepp–Logan (modified, Toft) ellipses: intensity, a, b, x0, y0, angle (degrees); as scikit-image.
_SHEPP_LOGAN = ((1.0, .69, .92, 0, 0, 0), (-.8, .6624, .874, 0, -.0184, 0), (-.2, .11, .31, .22, 0, -18),
                (-.2, .16, .41, -.22, 0, 18), (.1, .21, .25, 0, .35, 0), (.1, .046, .046, 0, .1, 0),
                (.1, .046, .046, 0, -.1, 0), (.1, .046, .023, -.08, -.605, 0), (.1, .023, .023, 0, -.606, 0),
                (.1, .023, .046, .06, -.605, 0))


class _Canvas:
    """One phantom being painted on a ``res``×``res`` grid over [-1, 1]² (y down, as images)."""

    def __init__(self, res: int, rand):
        lin = (torch.arange(res, dtype=torch.float32) + 0.5) / res * 2 - 1
        self.yy, self.xx = torch.meshgrid(lin, lin, indexing="ij")
        self.rand = rand
        self.img = torch.zeros(res, res)

    def polar(self, cx, cy, angle):
        dx, dy = self.xx - cx, self.yy - cy
        return torch.sqrt(dx * dx + dy * dy), torch.atan2(dy, dx) - angle

    def ellipse(self, cx, cy, ax, ay, angle):
        c, s = math.cos(angle), math.sin(angle)
        dx, dy = self.xx - cx, self.yy - cy
        return ((dx * c + dy * s) / ax) ** 2 + ((-dx * s + dy * c) / ay) ** 2 <= 1

    def polygon(self, cx, cy, radius, vertices, angle, irregular):
        """Star-shaped polygon: ``vertices`` corners at sorted random angles and radii, straight edges."""
        r = self.rand
        # corners on a jittered regular grid of angles: every angular gap stays below π, so each
        # ray from the centre meets exactly one edge
        jitter = torch.tensor([r() - 0.5 for _ in range(vertices)]) * 0.4 * (irregular > 0)
        theta = (torch.arange(vertices, dtype=torch.float32) + jitter) * 2 * math.pi / vertices
        rad = radius * (1 - irregular * torch.tensor([r() for _ in range(vertices)]))
        px, py = rad * torch.cos(theta), rad * torch.sin(theta)
        rho, phi = self.polar(cx, cy, angle)
        phi = torch.remainder(phi, 2 * math.pi)
        inside = torch.zeros_like(rho, dtype=torch.bool)
        for i in range(vertices):  # the edge whose angular sector holds phi bounds the radius there
            j = (i + 1) % vertices
            t0, t1 = float(theta[i]), float(theta[j]) + (2 * math.pi if j == 0 else 0.0)
            sector = ((phi >= t0) & (phi < t1)) | ((phi + 2 * math.pi >= t0) & (phi + 2 * math.pi < t1))
            ex, ey = float(px[j] - px[i]), float(py[j] - py[i])
            nx, ny = ey, -ex                                   # normal of the edge line n·p = d
            d = nx * float(px[i]) + ny * float(py[i])
            denom = nx * torch.cos(phi) + ny * torch.sin(phi)
            limit = torch.where(denom.abs() > 1e-9, d / denom, torch.full_like(phi, 1e9))
            inside |= sector & (rho <= limit)
        return inside

    def blob(self, cx, cy, radius, angle):
        """Smooth star-shaped curve ρ ≤ r(φ) = radius·(1 + Σ_k a_k cos(kφ + φ_k)), k = 2..5 (held out)."""
        r = self.rand
        rho, phi = self.polar(cx, cy, angle)
        bound = torch.ones_like(phi)
        amps = torch.tensor([r() for _ in range(4)])
        amps = amps / amps.sum() * (0.2 + 0.35 * r())         # total modulation 0.2–0.55: non-convex
        for k, a in zip(range(2, 6), amps):
            bound = bound + a * torch.cos(k * phi + 2 * math.pi * r())
        return rho <= radius * bound

    def paint(self, mask, value, additive):
        self.img = self.img + mask.float() * value if additive else torch.where(mask, torch.tensor(value), self.img)


def _shape(canvas: _Canvas, family: str, cx, cy, size, angle):
    r = canvas.rand
    if family == "blobs":
        return canvas.blob(cx, cy, size, angle)
    if family == "polygons" or (family == "nested" and r() < 0.5):
        return canvas.polygon(cx, cy, size, 3 + int(r() * 6), angle, irregular=0.5 * r())
    return canvas.ellipse(cx, cy, size * (0.3 + 0.7 * r()), size, angle)


def _paint_phantom(canvas: _Canvas, family: str):
    r = canvas.rand
    u = lambda a, b: a + (b - a) * r()  # noqa: E731
    if family == "head":  # Shepp–Logan with every ellipse parameter perturbed
        for val, a, b, x0, y0, ang in _SHEPP_LOGAN:
            mask = canvas.ellipse(x0 * 0.9 + u(-.04, .04), -y0 * 0.9 + u(-.04, .04), a * 0.9 * u(.8, 1.2),
                                  b * 0.9 * u(.8, 1.2), math.radians(-ang + u(-15, 15)) + math.pi / 2)
            canvas.paint(mask, val * u(0.7, 1.3) if abs(val) < 0.5 else val, additive=True)
        for _ in range(int(u(0, 4))):  # a few extra lesions
            canvas.paint(canvas.ellipse(u(-.4, .4), u(-.5, .5), u(.02, .1), u(.02, .1), u(0, math.pi)),
                         u(-.15, .25), additive=True)
        return
    if r() < 0.75:  # a body
        canvas.paint(_shape(canvas, family, u(-.1, .1), u(-.1, .1), u(.6, .92), u(0, math.pi)), u(.3, 1.0), False)
    count = int(u(2, 13))
    for _ in range(count):
        size = u(.04, .45) if family != "nested" else u(.15, .5)
        cx, cy, angle = u(-.6, .6), u(-.6, .6), u(0, 2 * math.pi)
        additive = r() < 0.5
        value = u(-.4, .5) if additive else u(0, 1)
        canvas.paint(_shape(canvas, family, cx, cy, size, angle), value, additive)
        if family == "nested" or r() < 0.15:  # a structure inside the last one
            for _ in range(int(u(1, 3))):
                size *= u(.3, .7)
                canvas.paint(_shape(canvas, family, cx + u(-.3, .3) * size, cy + u(-.3, .3) * size, size,
                                    u(0, 2 * math.pi)), u(0, 1), additive=False)


def phantoms(n: int, size: int = 32, generator: torch.Generator | None = None,
             families=PHANTOM_TRAIN_FAMILIES, supersample: int = 2) -> torch.Tensor:
    """The broad phantom family, ``(n, 1, size, size)`` in [-1, 1].

    Each image draws one of ``families``: ``ellipses`` (random ellipses, painted or added),
    ``polygons`` (regular and irregular star-shaped polygons, 3–8 corners), ``nested`` (shapes
    holding shapes), ``head`` (Shepp–Logan with every ellipse parameter perturbed, plus
    lesions), or the held-out ``blobs`` (smooth non-convex curves). On top: a background
    level (0–0.3, half the images), a smooth intensity gradient (half) and mild smoothed
    texture (a third); clipped to [0, 1], rendered at ``supersample``× and average-pooled.
    """
    families = (families,) if isinstance(families, str) else tuple(families)
    unknown = set(families) - set(PHANTOM_TRAIN_FAMILIES) - {PHANTOM_HELDOUT_FAMILY}
    if unknown:
        raise ValueError(f"unknown phantom families {sorted(unknown)}; expected some of "
                         f"{list(PHANTOM_TRAIN_FAMILIES) + [PHANTOM_HELDOUT_FAMILY]}")
    rand = lambda: float(torch.rand((), generator=generator))  # noqa: E731
    res = size * supersample
    out = []
    for _ in range(n):
        canvas = _Canvas(res, rand)
        family = families[min(int(rand() * len(families)), len(families) - 1)]
        _paint_phantom(canvas, family)
        img = canvas.img
        if rand() < 0.5:  # smooth gradient across the object
            a = rand() * 2 * math.pi
            img = img * (1 + 0.3 * rand() * (canvas.xx * math.cos(a) + canvas.yy * math.sin(a)))
        if rand() < 0.33:  # mild texture inside the object
            noise = torch.randn(1, 1, res, res, generator=generator)
            noise = F.avg_pool2d(noise, 5, stride=1, padding=2, count_include_pad=False)[0, 0]
            img = img + (img > 0.02).float() * noise * 0.1 * rand()
        if rand() < 0.5:  # background level
            img = img + (img <= 0.02).float() * 0.3 * rand()
        out.append(img.clamp(0, 1))
    img = F.avg_pool2d(torch.stack(out)[:, None], supersample)
    return img * 2 - 1


def heldout_phantoms(n: int = 16, size: int = 32, seed: int = HELDOUT_SEED) -> torch.Tensor:
    """The held-out set: ``n`` phantoms of the ``blobs`` family (never seen in training)."""
    return phantoms(n, size, torch.Generator().manual_seed(seed), families=PHANTOM_HELDOUT_FAMILY)


def _fixed_blob(canvas: _Canvas, cx, cy, radius, angle, amps, phases):
    """:meth:`_Canvas.blob` with its modulation given (so that a shape keeps it from slice to slice)."""
    rho, phi = canvas.polar(cx, cy, angle)
    bound = torch.ones_like(phi)
    for k, a, p in zip(range(2, 6), amps, phases):
        bound = bound + a * torch.cos(k * phi + p)
    return rho <= radius * bound


def heldout_volume(depth: int = 16, size: int = 32, seed: int = HELDOUT_SEED + 1, supersample: int = 2) -> torch.Tensor:
    """A volume of the held-out ``blobs`` family whose shapes vary smoothly along z, ``(depth, 1,
    size, size)`` in [-1, 1] (slice z at index z) — the test volume of the z-coupling measurements.

    A body blob spans every slice (its radius shrinks by up to 15 % towards the ends); 4–9 inner
    blobs are 3-D objects: each has a centre slice and a half-height (0.3–1 × depth), its
    cross-section radius follows an ellipsoid's, √(1 − ((z − z_c)/h)²), and its centre, angle
    and intensity are fixed or drift linearly with z; the modulation of each outline is drawn once."""
    g = torch.Generator().manual_seed(seed)
    r = lambda: float(torch.rand((), generator=g))  # noqa: E731
    u = lambda a, b: a + (b - a) * r()  # noqa: E731

    def outline():
        amps = torch.tensor([r() for _ in range(4)])
        return amps / amps.sum() * (0.2 + 0.35 * r()), [2 * math.pi * r() for _ in range(4)]

    body = {"cx": u(-.1, .1), "cy": u(-.1, .1), "radius": u(.6, .85), "angle": u(0, 2 * math.pi),
            "value": u(.3, .9), "outline": outline()}
    inner = []
    for _ in range(int(u(4, 10))):
        inner.append({"cx": u(-.5, .5), "cy": u(-.5, .5), "radius": u(.1, .35), "zc": u(0, depth - 1),
                      "h": u(.3, 1.0) * depth, "vx": u(-.15, .15), "vy": u(-.15, .15), "angle": u(0, 2 * math.pi),
                      "spin": u(-.6, .6), "additive": r() < 0.5, "value": None, "outline": outline()})
        inner[-1]["value"] = u(-.4, .5) if inner[-1]["additive"] else u(0, 1)
    res = size * supersample
    out = []
    for z in range(depth):
        canvas = _Canvas(res, r)
        t = (z - (depth - 1) / 2) / depth
        canvas.paint(_fixed_blob(canvas, body["cx"], body["cy"], body["radius"] * (1 - 0.6 * t * t), body["angle"],
                                 *body["outline"]), body["value"], additive=False)
        for b in inner:
            q = 1 - ((z - b["zc"]) / b["h"]) ** 2
            if q <= 0.05:
                continue
            tz = (z - b["zc"]) / depth
            mask = _fixed_blob(canvas, b["cx"] + b["vx"] * tz, b["cy"] + b["vy"] * tz, b["radius"] * math.sqrt(q),
                               b["angle"] + b["spin"] * tz, *b["outline"])
            canvas.paint(mask, b["value"], b["additive"])
        out.append(canvas.img.clamp(0, 1))
    img = F.avg_pool2d(torch.stack(out)[:, None], supersample)
    return img * 2 - 1


def example_dicom_folder(dest, kind: str = "ct"):
    """A small DICOM folder made from a scan pydicom ships with its package (for the README
    commands and tests; nothing is downloaded): ``kind="ct"`` — ``CT_small.dcm`` (one real
    128×128 CT slice, HU via RescaleIntercept −1024); ``"mr"`` — ``MR_small.dcm`` (one real 64×64
    MR slice).  Returns ``dest``."""
    import shutil
    from pathlib import Path

    from .io import require

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    files = {"ct": "CT_small.dcm", "mr": "MR_small.dcm"}
    if kind not in files:
        raise ValueError(f"kind must be 'ct' or 'mr', got {shown(kind)}")
    require("pydicom")
    from pydicom.data import get_testdata_file

    shutil.copyfile(get_testdata_file(files[kind]), dest / files[kind])
    return dest


def example_nifti(dest, name: str = "anatomical.nii"):
    """A NIfTI file that nibabel ships (``nibabel.testing.data_path``) copied to ``dest`` (a folder):
    ``anatomical.nii`` (a real structural MRI, 33×41×25 at 2 mm, 3-D), ``example4d.nii.gz``
    (128×96×24, 2 volumes) or ``functional.nii`` (17×21×3, 20 volumes).  Returns the file's path."""
    import shutil
    from pathlib import Path

    from .io import require

    require("nibabel")
    from nibabel.testing import data_path

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    src = Path(data_path) / name
    if not src.is_file():
        raise FileNotFoundError(f"nibabel has no test file {name} (in {data_path})")
    shutil.copyfile(src, dest / name)
    return dest / name


def fastmri_phantom_file(path, volume: torch.Tensor, coils: int = 4, acceleration: float = 4,
                         center_fraction: float = 0.08, sigma: float = 0.0, seed: int = 0, scale: float = 1e-4,
                         undersample: bool = True, phase: float = 0.0, pad_columns: int = 0,
                         readout_oversampling: int = 1):
    """Write ``volume`` ``(slices, 1, H, W)`` in [-1, 1] as a file in fastMRI's HDF5 layout
    (``fastmri/data/mri_data.py``): ``kspace`` (slices, coils, H, W) complex64 =
    ``scale ·`` :func:`~ipsolve.operators.fft2c` of the coil images ``S_c · (x + 1)/2``
    (:func:`~ipsolve.operators.mri.synthetic_sensitivities`; ``coils=1`` writes single-coil
    ``(slices, H, W)``), plus complex Gaussian noise of std ``sigma·scale`` per real/imaginary part;
    with ``undersample`` the columns outside a fastMRI random mask (``acceleration``,
    ``center_fraction``, ``seed``) are zero, as in fastMRI's test sets.  ``reconstruction_rss``
    (``reconstruction_esc`` single-coil) = ``scale · (x + 1)/2`` (the RSS of the coil images, since
    Σ_c |S_c|² = 1); a minimal ``ismrmrd_header`` (1 mm pixels).  ``phase`` (radians): the image is
    multiplied by a smooth phase ``exp(i·phase·(0.6 u + 0.4 v + 0.25))`` (u, v ∈ [-1, 1]), as a
    scan's is; ``pad_columns``: that many columns at each edge set to zero (padding, as fastMRI's
    acquisitions have); ``readout_oversampling``: the field of view along the readout (H) that many
    times the image's, empty outside it (fastMRI's files: 2, 640 rows for a 320-px image), so the
    k-space has ``readout_oversampling·H`` rows.  Returns ``(path, mask)``."""
    from pathlib import Path

    from .io import require
    from .operators.fourier import fft2c
    from .operators.mri import column_mask, synthetic_sensitivities

    h5py = require("h5py")
    x01 = ((volume[:, 0].double() + 1) / 2).clamp(0, 1)
    n, h, w = x01.shape
    sens = synthetic_sensitivities(coils, h, seed).to(torch.complex128) if coils > 1 else torch.ones(1, h, w,
                                                                                                 dtype=torch.complex128)
    v, u = torch.meshgrid(torch.linspace(-1, 1, h, dtype=torch.float64), torch.linspace(-1, 1, w, dtype=torch.float64),
                          indexing="ij")
    ramp = torch.exp(1j * phase * (0.6 * u + 0.4 * v + 0.25))
    coil_images = x01[:, None].to(torch.complex128) * ramp * sens[None]
    if readout_oversampling > 1:  # the object in the middle of a longer field of view along H
        extra = (readout_oversampling - 1) * h
        coil_images = torch.nn.functional.pad(coil_images, (0, 0, extra // 2, extra - extra // 2))
    k = fft2c(coil_images) * scale
    g = torch.Generator().manual_seed(seed + 1)
    if sigma > 0:
        k = k + sigma * scale * torch.complex(torch.randn(k.shape, generator=g, dtype=torch.float64),
                                              torch.randn(k.shape, generator=g, dtype=torch.float64))
    mask = column_mask(w, acceleration, center_fraction, "random", seed) if undersample else np.ones(w, dtype=bool)
    if pad_columns:
        mask = mask.copy()
        mask[:pad_columns] = mask[w - pad_columns:] = False
    k = k * torch.from_numpy(mask)
    kspace = k.numpy().astype(np.complex64)
    header = ("<?xml version='1.0'?><ismrmrdHeader xmlns='http://www.ismrm.org/ISMRMRD'><encoding>"
              f"<encodedSpace><matrixSize><x>{h * readout_oversampling}</x><y>{w}</y><z>1</z></matrixSize>"
              f"<fieldOfView_mm><x>{h * readout_oversampling}</x>"
              f"<y>{w}</y><z>1</z></fieldOfView_mm></encodedSpace><reconSpace><matrixSize><x>{h}</x><y>{w}</y>"
              f"<z>1</z></matrixSize><fieldOfView_mm><x>{h}</x><y>{w}</y><z>1</z></fieldOfView_mm></reconSpace>"
              "</encoding></ismrmrdHeader>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=kspace if coils > 1 else kspace[:, 0])
        f.create_dataset("reconstruction_rss" if coils > 1 else "reconstruction_esc",
                         data=(x01.numpy() * scale).astype(np.float32))
        f.create_dataset("ismrmrd_header", data=header.encode())
        f.attrs["acquisition"] = "ipsolve phantom"
        f.attrs["max"] = float(x01.max() * scale)
        if undersample:
            f.attrs["acceleration"] = float(acceleration)
            f.attrs["num_low_frequency"] = int(round(w * center_fraction))
    return path, mask


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


# --- inputs the phantom priors were never meant for (uncertainty / selective-reconstruction tests) ----
GREY_PHOTOS = ("camera", "coins", "moon", "page")  # scikit-image grey photos: none is a phantom


def grey_photo(name: str, size: int = 32) -> torch.Tensor:
    """Centre crop of a scikit-image grey photo (:data:`GREY_PHOTOS`), ``(1, 1, size, size)`` in [-1, 1]."""
    from skimage.transform import resize

    img = photo(name)[..., 0].astype(np.float64)
    img = img / max(img.max(), 1e-12)
    h, w = img.shape
    m = min(h, w)
    img = img[(h - m) // 2:(h - m) // 2 + m, (w - m) // 2:(w - m) // 2 + m]
    return torch.from_numpy(resize(img, (size, size), anti_aliasing=True)).float()[None, None] * 2 - 1


def unseen_structures(n: int, size: int = 32, seed: int = 4242) -> torch.Tensor:
    """Held-out phantoms overlaid with a checkerboard (4-px squares, even i) or stripes (3 px, odd
    i) of contrast 0.6: textures no training family has, ``(n, 1, size, size)`` in [-1, 1]."""
    base = heldout_phantoms(n, size, seed=seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    patterns = (((yy // 4 + xx // 4) % 2).float(), ((xx // 3) % 2).float())
    return torch.stack([(base[i] + 0.6 * (patterns[i % 2] - 0.5)).clamp(-1, 1) for i in range(n)])


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


# 128-px crops (top-left corner) of scikit-image photos that none of the training photos
# (PHOTO_TRAIN) shows: the grey prior's held-out family — texture (brick, grass, gravel), print (text,
# page), objects (coins, clock, coffee, rocket), microscopy (cell) and the moon's surface
GREY_HELDOUT = {"brick": (100, 100), "coins": (40, 120), "grass": (150, 150), "moon": (200, 200), "text": (20, 60),
                "gravel": (200, 200), "page": (40, 120), "clock": (100, 150), "coffee": (100, 200),
                "rocket": (150, 250), "cell": (250, 250)}


def heldout_grey_crops(size: int = 32, names=tuple(GREY_HELDOUT)) -> torch.Tensor:
    """The grey prior's held-out images (:data:`GREY_HELDOUT`): each 128-px crop anti-aliased to
    ``size`` and stretched to the full range, ``(n, 1, size, size)`` in [-1, 1]."""
    import skimage.data as skd
    from skimage.color import rgb2gray
    from skimage.transform import resize

    out = []
    for name in names:
        img = getattr(skd, name)().astype(np.float64)
        img = rgb2gray(img / 255.0) if img.ndim == 3 else img
        i, j = GREY_HELDOUT[name]
        crop = resize(img[i:i + 128, j:j + 128], (size, size), anti_aliasing=True)
        crop = (crop - crop.min()) / max(crop.max() - crop.min(), 1e-12)
        out.append(torch.from_numpy(crop).float()[None, None] * 2 - 1)
    return torch.cat(out)


def random_grey_crops(n: int, size: int = 32, generator: torch.Generator | None = None,
                      names=PHOTO_TRAIN) -> torch.Tensor:
    """:func:`random_photo_crops` as grey images (ITU-R BT.601 luma), ``(n, 1, size, size)`` in [-1, 1]."""
    rgb = random_photo_crops(n, size, generator, names)
    return (rgb * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)


def phantoms_and_grey_crops(n: int, size: int = 32, generator: torch.Generator | None = None) -> torch.Tensor:
    """Half :func:`phantoms`, half :func:`random_grey_crops` of the training photos (the grey prior's
    family: smooth shapes and natural texture, edges and strokes)."""
    half = n // 2
    return torch.cat([phantoms(half, size, generator), random_grey_crops(n - half, size, generator)])


# --- blur kernels (BlindDPS's kernel prior) --------------------------------------------------------
KERNEL_TRAIN_SEEDS = (1_000_000, 2**31 - 1)  # training draws motion-kernel seeds here; smaller seeds are held out


def motion_kernels(n: int, size: int = 8, generator: torch.Generator | None = None,
                   intensity: tuple[float, float] = (0.0, 1.0), seeds=None) -> torch.Tensor:
    """``n`` motion-blur kernels (:func:`ipsolve.operators.blur.motion_kernel`, the papers'
    generator) of random intensity, as ``(n, 1, size, size)`` images in [-1, 1]: each kernel is
    divided by its maximum and mapped ``2k − 1`` — the inverse of BlindDPS's ``(k̂ + 1)/2``
    followed by normalisation to sum 1.  Seeds are drawn from :data:`KERNEL_TRAIN_SEEDS` unless
    given (held-out kernels: seeds below 1,000,000)."""
    from .operators.blur import motion_kernel

    if seeds is None:
        seeds = torch.randint(*KERNEL_TRAIN_SEEDS, (n,), generator=generator).tolist()
    lo, hi = intensity
    strengths = (lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)).tolist()
    kernels = torch.stack([motion_kernel(size, s, int(seed)) for s, seed in zip(strengths, seeds)])
    return (kernels / kernels.amax((-2, -1), keepdim=True) * 2 - 1)[:, None].float()


def gaussian_kernels(n: int, size: int = 8, generator: torch.Generator | None = None,
                     std: tuple[float, float] = (0.4, 2.0)) -> torch.Tensor:
    """``n`` anisotropic Gaussian blur kernels, centred, each axis' std U(``std``) px and a random
    orientation, as ``(n, 1, size, size)`` images in [-1, 1] mapped like :func:`motion_kernels`."""
    lo, hi = std
    sx, sy = (lo + (hi - lo) * torch.rand(2, n, generator=generator, dtype=torch.float64))
    theta = torch.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    c, s = theta.cos()[:, None, None], theta.sin()[:, None, None]
    u, v = c * xx + s * yy, -s * xx + c * yy
    k = torch.exp(-0.5 * ((u / sx[:, None, None]) ** 2 + (v / sy[:, None, None]) ** 2))
    return (k / k.amax((-2, -1), keepdim=True) * 2 - 1)[:, None].float()


def blur_kernels(n: int, size: int = 8, generator: torch.Generator | None = None,
                 gaussian_fraction: float = 0.25) -> torch.Tensor:
    """The kernel prior's training data: a ``gaussian_fraction`` of :func:`gaussian_kernels`, the
    rest :func:`motion_kernels` (training seeds only), in random order."""
    n_gauss = round(gaussian_fraction * n)
    kernels = torch.cat([gaussian_kernels(n_gauss, size, generator), motion_kernels(n - n_gauss, size, generator)])
    return kernels[torch.randperm(n, generator=generator)]
