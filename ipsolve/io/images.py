"""Image I/O: the only place (with metrics) where [0, 1] / uint8 meets ipsolve's [-1, 1]."""
from __future__ import annotations

import contextlib
import logging
import numbers
import os
from pathlib import Path

import numpy as np
import torch

from ..notices import shown

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
log = logging.getLogger("ipsolve")
_TRANSPARENCY_SAID: list[str] = []  # the first file read with transparent pixels (said once per process)
_COLLECTING: list[list[str]] = []  # open read_notices() lists: every notice reaches them, also those logged once
_QUIET: list[bool] = []  # read_notices(quiet=...) of the open blocks: the innermost one decides whether notices log


@contextlib.contextmanager
def read_notices(quiet: bool = False):
    """Collect what reading images inside the ``with`` block changed about them (transparency composited on
    white, a 16-bit file holding 12-bit values, a multi-page TIFF's first page): a list of one-line notices,
    each file's — the log says them (transparency for the first file only; not at all with ``quiet``: a
    first read whose reads are repeated later, as σ's estimate before the batches), and a run records them
    per image (they were in the log only: an inputs audit, 2026-12-07)."""
    notes: list[str] = []
    _COLLECTING.append(notes)
    _QUIET.append(quiet)
    try:
        yield notes
    finally:
        _COLLECTING.remove(notes)
        _QUIET.pop()


def _notice(note: str, *, logged: str | None = "") -> None:
    """``note`` given to every open :func:`read_notices`, and logged as a warning — as ``logged`` where
    that is given, not at all where it is None."""
    if logged is not None and not (_QUIET and _QUIET[-1]):
        log.warning("%s", logged or note)
    for notes in _COLLECTING:
        notes.append(note)
ARRAY_SUFFIX = ".npy"  # exact values: an image on the [-1, 1] scale, or a measurement as the operator makes it


def load_array(path) -> torch.Tensor:
    """A ``.npy`` array ``(H, W)``, ``(C, H, W)`` or ``(1, C, H, W)`` as a float32 ``(1, C, H, W)`` tensor."""
    try:
        arr = np.load(path, allow_pickle=False)
    except EOFError:  # numpy's "No data left in file": a 0-byte file
        raise ValueError(f"cannot read array {path}: the file is empty") from None
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read array {path}: {err}") from None
    if np.iscomplexobj(arr) or arr.dtype.kind not in "fiu":
        raise ValueError(f"{path} holds {arr.dtype} values; expected real numbers (complex data as real channels)")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{path} holds {int((~np.isfinite(arr)).sum())} NaN or inf value(s); expected finite numbers")
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim == 3 and arr.shape[-1] in (1, 3, 4) and arr.shape[0] not in (1, 3, 4):  # read as C = H, W = C
        raise ValueError(f"{path} has shape {arr.shape}, channels last (H, W, C); ipsolve's arrays are (C, H, W): "
                         f"np.save(path, np.moveaxis(a, -1, 0))")
    if arr.ndim != 3:
        raise ValueError(f"{path} has shape {arr.shape}; expected (H, W), (C, H, W) or (1, C, H, W)")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None]


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """``(C,H,W)`` or ``(1,C,H,W)`` in [-1, 1] → ``(H,W)`` / ``(H,W,C)`` uint8."""
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f"expected a single image (1, C, H, W), got shape {tuple(x.shape)}")
        x = x[0]
    arr = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def load_image(path, size: int | None = None, channels: int | None = None) -> torch.Tensor:
    """Read an image as ``(1, C, H, W)`` float32 in [-1, 1].

    ``size``: centre-crop to a square and resize (anti-aliased) to ``size×size``.
    ``channels``: 1 (luminance) or 3 (grey replicated) to match a prior."""
    from skimage import io as skio
    from skimage.color import rgb2gray, rgba2rgb

    if size is not None and (isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1):
        raise ValueError(f"size must be an integer >= 1 (pixels) or None, got {shown(size)}")
    if channels not in (None, 1, 3) or isinstance(channels, bool):
        raise ValueError(f"channels must be 1, 3 or None (as stored), got {shown(channels)}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {path}")
    if path.suffix.lower() == ARRAY_SUFFIX:
        arr = load_array(path)
        if arr.abs().max() > 1:
            raise ValueError(f"{path} has values outside [-1, 1]; an image array must be on ipsolve's [-1, 1] scale")
        img = ((arr[0].permute(1, 2, 0).numpy() + 1) / 2).astype(np.float64)
    else:
        try:
            img = skio.imread(path)
        except Exception as err:  # noqa: BLE001 - any decoder failure means the same thing here
            # imageio's "no backend" message suggests plugins (pyav, opencv) that cannot read a damaged file either
            reason = "" if "Could not find a backend" in str(err) else f": {str(err).splitlines()[0]}"
            raise ValueError(f"cannot read image {path}: not a readable {path.suffix.lstrip('.').upper() or 'image'} "
                             f"file (damaged, empty or in another format){reason}") from None
        img = exif_oriented(pil_checked(img, path), path)
    if img.dtype == bool:  # 1-bit images (and masks): 0/1, not 0/255
        img = img.astype(np.float64)
    elif img.dtype == np.uint16:
        if 0 < img.max() <= 4095:
            _notice(f"{path.name} is 16-bit with values up to {img.max()} only (12-bit data?): read as "
                    f"{img.max()}/65535 of full scale, so it looks dark; scale it to the 16-bit range if it is 12-bit")
        img = img / 65535.0
    elif img.dtype.kind == "f":
        if not np.isfinite(img).all():
            raise ValueError(f"{path.name} holds {int((~np.isfinite(img)).sum())} NaN or inf value(s); expected finite "
                             f"[0, 1] intensities")
        lo, hi = float(img.min()), float(img.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"{path.name} holds floating-point values in [{lo:g}, {hi:g}]; ipsolve reads a float "
                             f"image as [0, 1] intensities — rescale it, or save a .npy on the [-1, 1] scale")
    elif img.dtype == np.uint8 or (img.size and 0 <= img.min() and img.max() <= 255):
        img = img / 255.0
    else:  # an int32 TIFF of 0…25500 was divided by 255: white, scored and accepted (an audit, 2026-12-07)
        raise ValueError(f"{path.name} holds {img.dtype} values from {img.min()} to {img.max()}; ipsolve reads 8-bit "
                         f"(/255) and 16-bit (/65535) integer images — save it as one of those, as a float TIFF in "
                         f"[0, 1], or as a .npy on the [-1, 1] scale")
    if img.ndim == 3 and img.shape[-1] in (2, 4) and img[..., -1].min() < 1:
        note = (f"{path.name} has transparent pixels (alpha down to {float(img[..., -1].min()):.2f}): composited on "
                f"white, as scikit-image's rgba2rgb")
        _notice(note, logged=None if _TRANSPARENCY_SAID else note + " (said for the first such file only)")
        if not (_QUIET and _QUIET[-1]):  # (a quiet read says nothing, so the next read still says it)
            _TRANSPARENCY_SAID[:] = [path.name]
    if img.ndim == 3 and img.shape[-1] == 4:
        img = rgba2rgb(img)
    elif img.ndim == 3 and img.shape[-1] == 2:  # grey + alpha: over white, as rgba2rgb does colour
        img = img[..., :1] * img[..., 1:] + (1 - img[..., 1:])
    if img.ndim == 2:
        img = img[..., None]
    if channels == 1 and img.shape[-1] == 3:
        img = rgb2gray(img)[..., None]
    elif channels == 3 and img.shape[-1] == 1:
        img = np.repeat(img, 3, -1)
    elif channels not in (None, img.shape[-1]):
        raise ValueError(f"cannot convert {path} with {img.shape[-1]} channels to {channels}")
    if size is not None:
        img, _ = square_crop_resize(img, size)
    x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
    return x.clamp(0, 1) * 2 - 1


def pil_checked(img: np.ndarray, path: Path) -> np.ndarray:
    """``img`` as read, except what PIL's header shows to be otherwise: a CMYK file (JPEG, TIFF) as RGB
    through PIL's conversion — read as RGBA, its black channel was taken for alpha and the image came out
    white, silently (an audit, 2026-12-07) — and a multi-page TIFF's first page, with a warning (its
    pages were stacked as channels)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as pil:
            mode, pages = pil.mode, getattr(pil, "n_frames", 1)
            if mode == "CMYK":
                img = np.asarray(pil.convert("RGB"))
            elif pages > 1:  # (scikit-image stacks the pages: 3 pages read as 3 channels)
                img = np.asarray(pil)
    except (OSError, UnidentifiedImageError):
        return img
    if pages > 1:
        _notice(f"{path.name} holds {pages} pages (a multi-page TIFF): only the first is read; save each page "
                f"(slice) as its own file, or a volume as NIfTI (data=nifti)")
    return img


def exif_oriented(img: np.ndarray, path: Path) -> np.ndarray:
    """``img`` as it is meant to be seen: the EXIF Orientation tag (phone photos store the sensor's
    rows and say how to turn them; scikit-image's reader ignores it) applied as Pillow's
    ``ImageOps.exif_transpose`` does.  Written here, not by calling it: the pixels stay scikit-
    image's decoding (16-bit, float TIFF), so the turn is applied to that array; the test checks
    all 8 orientations against ``exif_transpose``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            orientation = im.getexif().get(0x0112, 1)
    except (OSError, UnidentifiedImageError):
        return img
    turns = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
             5: lambda a: np.swapaxes(a, 0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1),
             8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(turns[orientation](img)) if orientation in turns else img


def square_crop(h: int, w: int) -> tuple[int, int, int]:
    """``(row0, col0, side)`` of the centred square crop of an ``h×w`` image."""
    m = min(h, w)
    return (h - m) // 2, (w - m) // 2, m


def square_crop_resize(img: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The runner's resizing of an input image ``(H, W[, C])`` to the prior's ``size×size``:
    centre-crop to a square, then scikit-image's ``resize`` (anti-aliased when shrinking).
    Returns the image and the crop ``(row0, col0, side)``; output pixel centre ``i`` sits at input
    index ``row0 + (i + 0.5)·side/size − 0.5`` (scikit-image's pixel-centre convention), which is
    what :func:`ipsolve.io.volume.resized_affine` uses to keep a volume's geometry."""
    from skimage.transform import resize

    r0, c0, m = square_crop(*img.shape[:2])
    img = img[r0:r0 + m, c0:c0 + m]
    if m != size:
        img = resize(img, (size, size), anti_aliasing=m > size)
    return img, (r0, c0, m)


def image_channels(path) -> int | None:
    """The channel count of an image file from its header (1 grey, 3 colour; alpha not
    counted), or None if it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    if Path(path).suffix.lower() == ARRAY_SUFFIX:  # (H, W), (C, H, W), (1, C, H, W): its conversion is said too
        try:
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        except (OSError, ValueError, EOFError):
            return None
        return 1 if len(shape) == 2 else int(shape[-3]) if len(shape) in (3, 4) and shape[-3] in (1, 3) else None
    try:
        with Image.open(path) as img:
            bands = img.getbands()
    except (OSError, UnidentifiedImageError):
        return None
    if bands == ("P",) or bands == ("C", "M", "Y", "K"):  # a palette or CMYK image is read as colour
        return 3
    colour = [b for b in bands if b != "A"]
    return 1 if len(colour) == 1 else 3


def image_size(path) -> tuple[int, int] | None:
    """``(height, width)`` of an image file from its header (a ``.npy`` from its array header),
    or None if it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.suffix.lower() == ARRAY_SUFFIX:
        try:
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        except (OSError, ValueError, EOFError):  # EOFError: a 0-byte file
            return None
        return (int(shape[-2]), int(shape[-1])) if len(shape) >= 2 else None
    try:
        with Image.open(path) as img:
            w, h = img.size
            turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientation: read as shown (exif_oriented)
    except (OSError, UnidentifiedImageError):
        return None
    return (w, h) if turned else (h, w)


def save_image(x: torch.Tensor, path) -> Path:
    """Write ``(1,C,H,W)`` / ``(C,H,W)`` / ``(H,W)`` in [-1, 1] as an 8-bit image, or to a ``.npy``
    path its exact float32 values ``(C,H,W)`` (what :func:`load_image` reads back unchanged; it was
    written as a TIFF under that name), atomically (temporary name, then rename) so that an
    interrupted run never leaves a truncated file."""
    from skimage import io as skio

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"save_image takes a torch tensor (1, C, H, W) on [-1, 1], got {type(x).__name__}")
    if x.ndim == 2:
        x = x[None]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    if path.suffix.lower() == ARRAY_SUFFIX:
        if x.ndim == 4 and x.shape[0] == 1:
            x = x[0]
        if x.ndim != 3:
            raise ValueError(f"expected a single image (1, C, H, W), got shape {tuple(x.shape)}")
        np.save(tmp, x.detach().float().cpu().numpy())
    else:
        skio.imsave(tmp, to_uint8(x), check_contrast=False)
    os.replace(tmp, path)
    return path


def list_images(folder) -> list[Path]:
    """The image files (PNG/JPEG/... and ``.npy`` arrays) directly inside ``folder``, sorted by
    name; a picture with a ``.npy`` of the same name beside it (a run's ``measurement/`` folder:
    the picture shows the data) is left out for the array."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    files = [p for p in folder.iterdir() if p.suffix.lower() in (*IMAGE_SUFFIXES, ARRAY_SUFFIX)
             and not p.name.startswith(".")]
    arrays = {p.stem for p in files if p.suffix.lower() == ARRAY_SUFFIX}
    return sorted(p for p in files if p.suffix.lower() == ARRAY_SUFFIX or p.stem not in arrays)


def load_folder(folder, size: int | None = None, channels: int | None = None) -> torch.Tensor:
    """All images of ``folder`` as one ``(N, C, size, size)`` batch in [-1, 1]."""
    files = list_images(folder)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return torch.cat([load_image(p, size, channels) for p in files])
