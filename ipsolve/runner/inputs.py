"""The inputs of a run and their names: folders, image lists or tensors as :class:`Item` s,
loading an image's ground truth or measurement, and the per-image seeds."""
from __future__ import annotations

import itertools
import os
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..notices import shown
from .errors import RunError
from .rundir import file_digest

DEMO_DATA = Path(__file__).resolve().parent.parent / "demo_data"


@dataclass
class Item:
    """One input image: a file (``path``) or an in-memory tensor (``tensor``, ``(1, C, H, W)``).
    A slice of a volume also names its ``volume`` and index ``z`` (z-coupling batches a volume's
    slices together); a measurement may carry its ground ``truth`` (``(1, C, H, W)``, for metrics
    only — e.g. a fastMRI file's ``reconstruction_rss``)."""

    name: str
    path: Path | None = None
    tensor: object = None
    volume: str | None = None
    z: int | None = None
    truth: object = None


@dataclass
class Plan:
    """One input volume's trip through the runner."""

    name: str
    kind: str
    window: object  # ipsolve.io.Window
    first: int
    last: int
    size: int
    affine: np.ndarray  # of the reconstructed volume (RAS+)
    slice_names: list[str]
    files: list[Path]
    source: dict
    crop: tuple | None = None  # (row0, col0, side) of the in-plane crop (images) or None (k-space: see fastmri)
    headers: list | None = None  # DICOM: one per output slice; NIfTI: [header]
    positions: list | None = None  # DICOM: each output slice's input ImagePositionPatient (LPS) or None
    truth: object = None  # (n, 1, S, S) in [-1, 1] or None
    warnings: list[str] = field(default_factory=list)

    def settings(self) -> dict:
        """What defines this volume's inputs (part of the resume fingerprint)."""
        return {"window": [self.window.lo, self.window.hi], "slices": [self.first, self.last], "size": self.size,
                "crop": list(self.crop) if self.crop else None}


def input_digest(item: Item) -> str | None:
    """What an image's result was made from: its file's digest, or an in-memory tensor's (a
    volume slice after its window), so a resume notices another data set under the same names
    or an edited file."""
    import hashlib

    if item.path is not None and Path(item.path).is_file():
        return file_digest(item.path)
    if item.tensor is not None:
        return hashlib.sha256(item.tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
    return None


def resolve_data_path(path) -> Path:
    """``bundled:<name>`` → the demo folder shipped with ipsolve; otherwise the path itself."""
    text = str(path)
    if text.startswith("bundled:"):
        name = text.split(":", 1)[1]
        folder = DEMO_DATA / name
        if not folder.is_dir():
            known = sorted(p.name for p in DEMO_DATA.iterdir() if p.is_dir()) if DEMO_DATA.is_dir() else []
            raise RunError(f"unknown bundled data set {name!r}; bundled: {', '.join(known) or 'none'} "
                           f"(the demo images are made by scripts/make_demo_data.py)")
        return folder
    return Path(text).expanduser()


def _unique_names(paths: Sequence[Path]) -> list[str]:
    stems = Counter(p.stem for p in paths)
    return [p.stem if stems[p.stem] == 1 else p.name.replace(".", "_") for p in paths]


def _scan_hint(paths) -> str:
    """``"; ... use data=nifti"`` when ``paths`` include a scan format the image loader does not
    read (the medical readers' own suffixes; else "")."""
    from ..io import fastmri, nifti
    from ..io.sources import is_dicom_file

    presets = {**{s: "data=nifti" for s in nifti.SUFFIXES}, ".dcm": "data=dicom",
               **{s: "data=fastmri" for s in fastmri.SUFFIXES}}
    found = {preset for p in paths for suffix, preset in presets.items() if p.name.lower().endswith(suffix)}
    if any(p.is_file() and is_dicom_file(p) for p in paths[:8]):  # DICOM files often have no suffix
        found.add("data=dicom")
    if not found:
        return ""
    formats = sorted(f.split("=")[1] for f in found)
    return (f"; for medical scans use {' or '.join(sorted(found))} (data.path=...) on the command line, or "
            f"ipsolve.reconstruct_volumes(path, {formats[0]!r}, output_dir) in Python")


def collect_items(source, max_images: int | None = None, names: Sequence[str] | None = None) -> list[Item]:
    """The inputs of a run: a folder (path or ``bundled:<name>``), a list of image paths, or a float
    tensor or array ``(N, C, H, W)`` in [-1, 1] (``names`` optional, default ``image_0000`` ...)."""
    import torch

    from ..io import ARRAY_SUFFIX, IMAGE_SUFFIXES, list_images

    if isinstance(source, np.ndarray) and source.dtype.kind == "f":  # (N, C, H, W) in [-1, 1], as a tensor
        source = torch.from_numpy(np.ascontiguousarray(source, dtype=np.float32))  # any byte order, strides
    elif isinstance(source, np.ndarray) and source.dtype.kind in "US":  # an array of paths
        source = source.tolist()
    elif not isinstance(source, (str, os.PathLike, torch.Tensor, np.ndarray, list, tuple)) and \
            hasattr(source, "__iter__"):  # a generator, set, Path.glob(...): a list of paths
        source = sorted(source, key=str) if isinstance(source, (set, frozenset)) else list(source)
    if isinstance(source, torch.Tensor):
        if source.ndim == 3:
            source = source[None]
        if source.ndim != 4:
            raise RunError(f"an image tensor must be (N, C, H, W) in [-1, 1], got shape {tuple(source.shape)}")
        n = source.shape[0]
        names = list(names) if names is not None else [f"image_{i:04d}" for i in range(n)]
        if len(names) != n or len(set(names)) != n:
            raise RunError(f"need {n} distinct names for {n} images, got {names}")
        items = [Item(nm, tensor=source[i:i + 1].detach().float().cpu()) for i, nm in enumerate(names)]
    else:
        if isinstance(source, (str, os.PathLike)):
            if not str(source).strip():  # `data.path=` from an unset shell variable: not the current folder
                raise RunError("data.path is empty; expected a folder of images, an image file or bundled:<name>")
            folder = resolve_data_path(source)
            if folder.is_file():
                hint = _scan_hint([folder]) if folder.suffix.lower() not in (*IMAGE_SUFFIXES, ARRAY_SUFFIX) else ""
                if hint:  # a scan given to the image loader (other suffixes are tried by the image reader)
                    raise RunError(f"{folder} is not an image ({', '.join(IMAGE_SUFFIXES)}, {ARRAY_SUFFIX}){hint}")
                paths = [folder]
            elif not folder.is_dir():
                raise RunError(f"data folder {folder} does not exist (data.path={source})")
            else:
                paths = list_images(folder)
                if not paths:
                    below = sum(1 for p in itertools.islice(folder.rglob("*"), 10_000)
                                if p.suffix.lower() in (*IMAGE_SUFFIXES, ARRAY_SUFFIX) and p.parent != folder)
                    raise RunError(f"no images ({', '.join(IMAGE_SUFFIXES)}, {ARRAY_SUFFIX}) in data folder {folder}"
                                   + (f" ({below} in its subfolders, which are not read: give the folder that holds "
                                      f"them)" if below else "") + _scan_hint(list(folder.iterdir())))
        else:
            if not isinstance(source, (list, tuple)) or not all(isinstance(p, (str, os.PathLike)) for p in source):
                got = (f"a list holding {', '.join(sorted({type(p).__name__ for p in source}))}"
                       if isinstance(source, (list, tuple)) else
                       f"an array of {source.dtype}{' (from 0…255 use x / 127.5 − 1)' if source.dtype.kind in 'iub' else ''}"
                       if isinstance(source, np.ndarray) else type(source).__name__)
                raise RunError(f"images must be a folder (a path or bundled:<name>), a list of image paths, or a "
                               f"float tensor or array (N, C, H, W) in [-1, 1], got {got}")
            paths = [Path(p).expanduser() for p in source]
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise RunError(f"image files not found: {', '.join(missing)}")
        if not paths:
            raise RunError("no images given")
        names = list(names) if names is not None else _unique_names(paths)
        if len(names) != len(paths) or len(set(names)) != len(paths):
            raise RunError(f"need {len(paths)} distinct names, got {names}")
        items = [Item(nm, path=p) for nm, p in zip(names, paths)]
    bad = [it.name for it in items if not _safe_name(it.name)]
    if bad:  # output files are named after the images: "../x" left the run folder, "a/b" made subfolders
        raise RunError(f"image names become file names: {bad[:3]} hold a path separator, '..' or nothing; "
                       f"expected plain names such as 'scan_01'")
    if max_images is not None:
        if isinstance(max_images, bool) or not isinstance(max_images, int) and not str(max_images).isdigit():
            raise RunError(f"max_images must be an integer >= 1 or null, got {shown(max_images)}")
        if int(max_images) < 1:
            raise RunError(f"max_images must be >= 1 or null, got {max_images}")
        items = items[:int(max_images)]
    return items


def _safe_name(name) -> bool:
    name = str(name)
    return bool(name.strip()) and name not in (".", "..") and not any(c in name for c in "/\\\0")


def load_truth(item: Item, prior):
    """The ground-truth image of ``item`` as ``(1, C, S, S)`` for the prior's size and channels."""
    from ..io import load_image

    if item.tensor is not None:
        x = item.tensor
        if x.ndim == 4 and tuple(x.shape[2:]) == tuple(prior.shape[1:]) and \
                (x.shape[1], prior.channels) in ((1, 3), (3, 1)):
            x = convert_channels(x, prior.channels)  # as image files are (load_image), with the same logged warning
        if tuple(x.shape[1:]) != tuple(prior.shape):
            raise ValueError(f"image {item.name} has shape {tuple(x.shape[1:])}, the prior needs {tuple(prior.shape)}")
        return x
    return load_image(item.path, size=prior.image_size, channels=prior.channels)


def load_measurement(item: Item, operator, prior):
    """A measurement ``y`` at the operator's output size.  An image at the image size whose
    pixels repeat in ``f×f`` blocks (ipsolve's own ``measurement/`` display of a smaller y) is
    taken back to the output size."""
    from ..io import ARRAY_SUFFIX, load_array, load_image
    from ..operators.base import operator_label

    if item.tensor is not None:
        y = item.tensor
    elif item.path.suffix.lower() == ARRAY_SUFFIX:
        y = load_array(item.path)  # exact values, as the operator makes them
    elif not operator.measurement_is_image:  # a picture of a sinogram / k-space / |F| is a display, never the data
        raise ValueError(f"measurement {item.name} is a picture ({item.path.name}); for {operator_label(operator)} "
                         f"measurements are data, read from .npy files (a run's measurement/*.npy), not from pictures "
                         f"(an equal-shaped one was used as the data)")
    else:
        y = load_image(item.path, channels=prior.channels)
    expected = tuple(operator.output_shape((1, *prior.shape)))
    if tuple(y.shape) == expected:
        return y
    h, w = expected[-2:]
    if tuple(y.shape[-2:]) == tuple(prior.shape[-2:]) and y.shape[-2] % h == 0 and y.shape[-1] % w == 0:
        fh, fw = y.shape[-2] // h, y.shape[-1] // w
        small = y[..., ::fh, ::fw]
        if torch_equal(small.repeat_interleave(fh, -2).repeat_interleave(fw, -1), y):
            return small
    if len(expected) == y.dim() == 4 and tuple(y.shape[-2:]) == tuple(expected[-2:]) and y.shape[1] != expected[1]:
        raise ValueError(f"measurement {item.name} has {y.shape[1]} channel(s) where the prior's images give "
                         f"{expected[1]}: an array (.npy, a tensor) is read exactly, not converted as a picture is "
                         f"— save it with {expected[1]} channel(s) (np.repeat / a luminance average), or use a "
                         f"{y.shape[1]}-channel prior")
    hint = ("; were they made by another operator or preset? (the summary.json of the run that made them names "
            "its operator)")
    raise ValueError(f"measurement {item.name} has shape {tuple(y.shape)}; the operator makes {expected} from "
                     f"images of {tuple(prior.shape)}{hint}")


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def derive_seed(seed: int, name: str, purpose: str) -> int:
    """A per-image seed from the run seed and the image name (independent of rank and batch)."""
    return zlib.crc32(f"{int(seed)}:{name}:{purpose}".encode())


def describe_spec(spec: dict) -> str:
    """``ct (views=16, angles=[0, 180], ...)`` from a recorded operator description, with the
    ``conf/operator`` preset it equals when there is one."""
    from .settings import matching_presets

    params = ", ".join(f"{k}={v!r}" for k, v in spec.items() if k != "name")
    presets = matching_presets(spec)
    same = f" (same as {', '.join(presets[1:])})" if len(presets) > 1 else ""
    return f"{spec.get('name')} ({params})" + (f", i.e. operator={presets[0]}{same}" if presets else "")


def same_operator(recorded: dict, ours: dict) -> bool:
    """Whether two operator descriptions (``describe_operator``) describe the same measurement model: a
    file setting by its contents (its ``_sha256``; the path the file was given by does not count), a
    blur kernel by the kernel applied (``kernel_digest``: a file, an array or the run's
    ``operator_kernel.npy`` with the same normalised kernel are the same operator)."""
    def essence(spec: dict, other: dict) -> dict:
        out = dict(spec)
        for key in [k for k in spec if k.endswith("_sha256") and k in other]:
            out.pop(key.removesuffix("_sha256"), None)
        if "kernel_digest" in spec and "kernel_digest" in other:
            for key in ("kernel", "kernel_sha256"):
                out.pop(key, None)
        if str(spec.get("name", "")).startswith("blind_blur"):  # the size of the kernel to estimate: y is the same
            out.pop("kernel_size", None)
        return out

    return essence(recorded, ours) == essence(ours, recorded)


def check_measurement_provenance(operator, explicit: Sequence[str],
                                 made_by: dict | None) -> None:
    """Measurements from an ipsolve run's ``measurement/`` folder meet the operator that made
    them (``made_by``: its recorded operator, from the run's ``summary.json``), or
    :class:`RunError` naming that operator.  Measurements of unknown provenance meeting an
    operator with hidden state (a mask, a kernel drawn from ``seed``) need that state given
    explicitly (``explicit`` names the operator settings given: ``seed``, ``mask``, or ``*`` for
    an operator object), else :class:`RunError`."""
    from .settings import describe_operator

    import json

    ours = json.loads(json.dumps(describe_operator(operator), default=str))  # as summary.json records it
    if made_by is not None:
        if same_operator(made_by, ours):
            return
        raise RunError(f"these measurements were made by the operator {describe_spec(made_by)} (recorded in the "
                       f"summary.json beside them), but this run's operator is {describe_spec(ours)}: leave out the "
                       f"operator settings to use the recorded ones")
    hidden = operator.seeded_state()
    if hidden is None or {"seed", "mask", "*"} & set(explicit):
        return
    name = ours["name"]
    hint = " or the mask that made them (operator.mask=PATH, white = observed)" if name == "inpainting" else ""
    raise RunError(f"operator {name} draws {hidden} from operator.seed, and nothing says which made these "
                   f"measurements: give the seed explicitly (operator.seed=N; ipsolve writes it in the config.yaml "
                   f"of the run that made them){hint}")


def recorded_settings(items: Sequence[Item]) -> dict | None:
    """What the ipsolve run whose ``measurement/`` folder holds the items recorded about how it
    measured them, else None: ``{"operator": its description (summary.json), "config": its
    ``operator`` config node (config.yaml; None for a Python-API run), "sigma", "noise", "file"}``.
    The run's files are read beside ``measurement/``, or inside the items' folder when they were
    copied there with the measurements (such a folder fell back to the default operator)."""
    import json

    folders = {it.path.parent for it in items if it.path is not None}
    if len(folders) != 1 or any(it.path is None for it in items):
        return None
    (folder,) = folders
    if (folder / "summary.json").is_file():
        run = folder
    elif folder.name == "measurement":
        run = folder.parent
    else:
        return None
    summary = run / "summary.json"
    try:
        data = json.loads(summary.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("operator"), dict):
        return None
    config = None
    try:
        from omegaconf import OmegaConf

        node = OmegaConf.load(run / "config.yaml").get("operator")
        config = OmegaConf.to_container(node, resolve=True) if node is not None else None
    except Exception:  # noqa: BLE001 - no config.yaml (an API run), or not one ipsolve wrote
        config = None
    # a run that solved each image with its own estimate (sigma=auto_each) recorded their median as its sigma
    each = isinstance(data.get("sigma_estimate"), dict) and data["sigma_estimate"].get("each")
    return {"operator": data["operator"], "config": config, "sigma": "auto_each" if each else data.get("sigma"),
            "noise": data.get("noise"), "file": str(summary)}


def measurement_origin(items: Sequence[Item]) -> dict | None:
    """The operator settings recorded by the ipsolve run whose ``measurement/`` folder holds the
    items (its ``summary.json``), else None."""
    recorded = recorded_settings(items)
    return recorded["operator"] if recorded else None


def converted_channels(items: Sequence[Item], channels: int) -> list[str]:
    """The images whose channel count differs from ``channels`` (files: read from the header only)."""
    from ..io import image_channels

    converted = []
    for it in items:
        if it.path is not None:
            c = image_channels(it.path)
        else:  # a tensor: only the counts load_truth converts (another count is refused there, by name)
            c = int(it.tensor.shape[1]) if it.tensor is not None and it.tensor.ndim == 4 else None
            c = c if (c, channels) in ((1, 3), (3, 1)) else None
        if c is not None and c != channels:
            converted.append(it.name)
    return converted


def convert_channels(x, channels: int):
    """``(1, C, H, W)`` in [-1, 1] to ``channels``: grey replicated to RGB, RGB to grey by the
    luminance weights :func:`skimage.color.rgb2gray` uses (linear, so the [-1, 1] scale is kept)."""
    import torch

    if channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    weights = torch.tensor([0.2125, 0.7154, 0.0721], dtype=x.dtype, device=x.device)  # skimage's rgb2gray
    return (x * weights.view(1, 3, 1, 1)).sum(1, keepdim=True)
