"""The runner: data, batching, per-image seeds, multi-process splitting, outputs, resume,
metrics and summaries.  The command line (:mod:`ipsolve.cli`) and the Python API
(:func:`reconstruct`) are two thin doors onto :func:`execute`.

Run directory layout (every file written under a temporary name, then renamed; the per-image
record is written last, so an image counts as finished only when all its files exist)::

    recon/<name>.png          reconstruction
    measurement/<name>.png    the measurement y (shown at the image size: nearest upsampling for SR)
    initial/<name>.png        the operator's initial guess from y (bicubic for SR, ...)
    kernel/<name>.png         estimated blur kernel (blind deblurring; scaled to its maximum)
    records/<name>.json       metrics, solver info, seeds, rank
    metrics.csv, summary.json, grid.png, config.yaml
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("ipsolve")

DEMO_DATA = Path(__file__).resolve().parent / "demo_data"
TEMP_MARK = ".tmp"  # temporary files are ".<name>.tmp<suffix>"
METRICS = ("psnr", "ssim", "lpips")
INFO_KEYS = ("nfe", "iterations", "stop_reason", "residual", "seconds")


class RunError(Exception):
    """A problem with the user's input or settings (printed without a traceback by the CLI)."""


def conf_dir() -> Path | None:
    """The Hydra config directory: ``conf/`` next to the package (a source checkout or an
    editable install) or ``ipsolve/conf`` inside an installed package."""
    here = Path(__file__).resolve().parent
    for cand in (here / "conf", here.parent / "conf"):
        if (cand / "config.yaml").is_file():
            return cand
    return None


# ----------------------------------------------------------------------------------------
# names and configs → objects (the same functions serve the CLI, the API and the config test)
# ----------------------------------------------------------------------------------------
def load_preset(group: str, name: str) -> dict | None:
    """The contents of ``conf/<group>/<name>.yaml`` as a dict, or None if there is none."""
    root = conf_dir()
    if root is None or "/" in name or not (root / group / f"{name}.yaml").is_file():
        return None
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(OmegaConf.load(root / group / f"{name}.yaml"), resolve=False)
    data.pop("defaults", None)
    return data


def _plain(spec) -> dict:
    """An OmegaConf node or mapping as a plain dict (``???`` → a clear error)."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    if isinstance(spec, DictConfig):
        try:
            return OmegaConf.to_container(spec, resolve=True, throw_on_missing=True)
        except MissingMandatoryValue as err:
            raise RunError(f"a required setting is missing: {err.full_key} (set it on the command line, "
                           f"e.g. {err.full_key}=...)") from None
    return dict(spec)


def _named_params(group: str, spec, registry: Mapping) -> tuple[str, dict]:
    """``(registry name, params)`` from a registry name (its defaults), a preset name
    (``conf/<group>/<name>.yaml``) or a mapping ``{name: <registry name>, **params}``."""
    if isinstance(spec, str):
        preset = load_preset(group, spec)
        if preset is None:
            if spec not in registry:
                raise RunError(f"unknown {group} {spec!r}; known {group}s: {', '.join(sorted(registry))} "
                               f"(or a preset in conf/{group}/)")
            preset = {"name": spec}
        spec = preset
    params = _plain(spec)
    name = params.pop("name", None)
    if name is None:
        raise RunError(f"{group} settings need a 'name' (one of {', '.join(sorted(registry))}), got {params}")
    return name, params


def build_operator(spec):
    """An :class:`~ipsolve.operators.Operator` from an operator object, a registry / preset name,
    or a mapping ``{name: <registry name>, **params}`` (a ``conf/operator`` node)."""
    from .operators import OPERATORS, Operator, make_operator

    if isinstance(spec, Operator):
        return spec
    name, params = _named_params("operator", spec, OPERATORS)
    try:
        return make_operator(name, **params)
    except (TypeError, ValueError, FileNotFoundError) as err:
        raise RunError(f"cannot build operator {name!r}: {err}") from None


def build_solver(spec, progress: bool | None = None):
    """A :class:`~ipsolve.solvers.Solver` from a solver object, a registry name (paper defaults),
    a preset name (``conf/solver/<name>.yaml``, e.g. ``dmplug_cpu``) or a mapping
    ``{name: <registry name>, **params}``.  ``progress`` sets the solver's own progress bar."""
    from .solvers import SOLVERS, Solver, make_solver

    if isinstance(spec, Solver):
        return spec
    name, params = _named_params("solver", spec, SOLVERS)
    if progress is not None:
        params["progress"] = progress
    try:
        return make_solver(name, **params)
    except (TypeError, ValueError) as err:
        raise RunError(f"cannot build solver {name!r}: {err}") from None


def prior_source(spec) -> tuple[str, dict]:
    """``(source, kwargs)`` for :func:`ipsolve.load_prior` from a source string, a preset name
    (``conf/prior/<name>.yaml``) or a mapping ``{source: ..., **kwargs}``."""
    if isinstance(spec, str):
        preset = load_preset("prior", spec)
        if preset is None:
            return spec, {}
        if preset.get("source") == "???":
            raise RunError(f"prior={spec} needs its source: add prior={spec} prior.source=/path/to/checkpoint "
                           f"(see conf/prior/{spec}.yaml)")
        spec = preset
    params = _plain(spec)
    if "source" not in params or params["source"] in (None, "???"):
        raise RunError("prior settings need a 'source' (bundled:<name>, a diffusers directory or hub id, "
                       "an ADM .pt file, gaussian or gmm)")
    source = str(params.pop("source"))
    return source, params


def build_prior(spec, device=None):
    """A :class:`~ipsolve.priors.Prior` from a prior object or anything :func:`prior_source` takes."""
    from .priors import Prior, load_prior

    if isinstance(spec, Prior):
        return spec.to(device) if device is not None else spec
    source, kwargs = prior_source(spec)
    try:
        return load_prior(source, device=device, **kwargs)
    except (FileNotFoundError, ValueError) as err:
        raise RunError(f"cannot load prior {source!r}: {err}") from None


def registry_name(obj, registry: Mapping) -> str:
    for name, cls in registry.items():
        if type(obj) is cls:
            return name
    return type(obj).__name__


def describe(operator, solver, prior) -> dict:
    """What defines the results of a run (also its resume fingerprint)."""
    from .operators import OPERATORS
    from .solvers import SOLVERS

    sp = {k: v for k, v in solver.params().items() if k not in ("progress",)}
    params = list(prior.parameters())
    weights = {"parameters": sum(p.numel() for p in params),  # which weights made the results
               "checksum": f"{float(sum(p.detach().double().sum() for p in params)) if params else 0.0:.12g}"}
    return {"operator": {"name": registry_name(operator, OPERATORS), **getattr(operator, "params", {})},
            "solver": {"name": registry_name(solver, SOLVERS), **sp},
            "prior": {"source": getattr(prior, "source", type(prior).__name__), "kind": prior.kind,
                      "image_size": prior.image_size, "channels": prior.channels, "weights": weights}}


# ----------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------
@dataclass
class Item:
    """One input image: a file (``path``) or an in-memory tensor (``tensor``, ``(1, C, H, W)``)."""

    name: str
    path: Path | None = None
    tensor: object = None


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


def collect_items(source, max_images: int | None = None, names: Sequence[str] | None = None) -> list[Item]:
    """The inputs of a run: a folder (path or ``bundled:<name>``), a list of image paths, or a
    tensor ``(N, C, H, W)`` in [-1, 1] (``names`` optional, default ``image_0000`` ...)."""
    import torch

    from .io import IMAGE_SUFFIXES, list_images

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
            folder = resolve_data_path(source)
            if folder.is_file():
                paths = [folder]
            elif not folder.is_dir():
                raise RunError(f"data folder {folder} does not exist (data.path={source})")
            else:
                paths = list_images(folder)
                if not paths:
                    raise RunError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in data folder {folder}")
        else:
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
    if max_images is not None:
        if int(max_images) < 1:
            raise RunError(f"max_images must be >= 1 or null, got {max_images}")
        items = items[:int(max_images)]
    return items


def load_truth(item: Item, prior):
    """The ground-truth image of ``item`` as ``(1, C, S, S)`` for the prior's size and channels."""
    from .io import load_image

    if item.tensor is not None:
        x = item.tensor
        if tuple(x.shape[1:]) != tuple(prior.shape):
            raise ValueError(f"image {item.name} has shape {tuple(x.shape[1:])}, the prior needs {tuple(prior.shape)}")
        return x
    return load_image(item.path, size=prior.image_size, channels=prior.channels)


def load_measurement(item: Item, operator, prior):
    """A measurement ``y`` at the operator's output size.  An image at the image size whose
    pixels repeat in ``f×f`` blocks (ipsolve's own ``measurement/`` display of a smaller y) is
    taken back to the output size."""
    from .io import load_image

    y = item.tensor if item.tensor is not None else load_image(item.path, channels=prior.channels)
    expected = tuple(operator.output_shape((1, *prior.shape)))
    if tuple(y.shape) == expected:
        return y
    h, w = expected[-2:]
    if tuple(y.shape[-2:]) == tuple(prior.shape[-2:]) and y.shape[-2] % h == 0 and y.shape[-1] % w == 0:
        fh, fw = y.shape[-2] // h, y.shape[-1] // w
        small = y[..., ::fh, ::fw]
        if torch_equal(small.repeat_interleave(fh, -2).repeat_interleave(fw, -1), y):
            return small
    raise ValueError(f"measurement {item.name} has shape {tuple(y.shape)}; the operator makes {expected} from "
                     f"images of {tuple(prior.shape)}")


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def derive_seed(seed: int, name: str, purpose: str) -> int:
    """A per-image seed from the run seed and the image name (independent of rank and batch)."""
    return zlib.crc32(f"{int(seed)}:{name}:{purpose}".encode())


# ----------------------------------------------------------------------------------------
# the run directory
# ----------------------------------------------------------------------------------------
def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}{TEMP_MARK}{path.suffix}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def check_writable(folder: Path) -> Path:
    """Create ``folder`` and prove that files can be written there, or raise :class:`RunError`."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test", suffix=TEMP_MARK)
        os.close(fd)
        Path(probe).unlink(missing_ok=True)  # (another rank's clean-up may have removed it already)
    except OSError as err:
        raise RunError(f"cannot write to the output directory {folder}: {err.strerror or err}") from None
    return folder.resolve()


def remove_temp_files(folder: Path) -> list[Path]:
    """Delete what an interrupted run left under temporary names (``.<name>.tmp<suffix>``)."""
    removed = []
    for p in Path(folder).rglob(f".*{TEMP_MARK}*"):
        if p.is_file() and ".hydra" not in p.parts:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def read_record(path: Path) -> dict | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return rec if isinstance(rec, dict) and rec.get("name") else None


def is_finished(out: Path, name: str) -> dict | None:
    """The record of an image whose outputs are all written, else None."""
    rec = read_record(out / "records" / f"{name}.json")
    if rec is None:
        return None
    if not all((out / rel).is_file() for rel in rec.get("outputs", {}).values()):
        return None
    return rec


def fingerprint(settings: dict) -> str:
    return f"{zlib.crc32(json.dumps(settings, sort_keys=True, default=str).encode()):08x}"


# ----------------------------------------------------------------------------------------
# distribution
# ----------------------------------------------------------------------------------------
def process_state(device=None):
    """accelerate's :class:`PartialState`; on a machine without CUDA (or with ``device='cpu'``)
    created with ``cpu=True`` so that ``torchrun`` / ``accelerate launch --multi_gpu`` processes
    join one gloo group instead of each doing every image."""
    import torch
    from accelerate import PartialState

    dev = None if device in (None, "auto") else torch.device(device)
    cpu = (dev is not None and dev.type == "cpu") or not torch.cuda.is_available()
    return PartialState(cpu=cpu)


def _broadcast(obj, state):
    if state.num_processes == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _all_gather(obj, state) -> list:
    if state.num_processes == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * state.num_processes
    dist.all_gather_object(out, obj)
    return out


# ----------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------
@dataclass
class Reconstruction:
    """What a run returns: ``x`` (``(N, C, H, W)`` in [-1, 1], CPU; None with
    ``return_images=False``), one record per finished image (same order), the names, the
    images skipped as unreadable, the summary and the output directory (or None).
    Unpacks as ``x, records = ipsolve.reconstruct(...)``."""

    x: object
    records: list[dict]
    names: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    output_dir: Path | None = None

    def __iter__(self):
        return iter((self.x, self.records))


def _stats(values) -> dict | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(vals), "min": min(vals), "max": max(vals)}


def summarize(records: list[dict], *, settings: dict, skipped: list[dict], num_processes: int,
              wall_seconds: float, extra: dict | None = None) -> dict:
    """Mean ± std (sample std; ``n`` images) per metric and per solver statistic."""
    has_truth = any("metrics" in r for r in records)
    metrics = {}
    if has_truth:
        for m in METRICS:
            metrics[m] = _stats(r["metrics"].get(m) for r in records)
            metrics[f"{m}_initial"] = _stats(r.get("initial_metrics", {}).get(m) for r in records)
    return {
        "num_images": len(records) + len(skipped),
        "num_finished": len(records),
        "num_skipped": len(skipped),
        "skipped": skipped,
        "ground_truth": has_truth,
        "metrics": metrics,
        "nfe": {**(_stats(r["info"]["nfe"] for r in records) or {}),
                "total": sum(int(r["info"]["nfe"]) for r in records)},
        "iterations": _stats(r["info"].get("iterations") for r in records),
        "seconds": _stats(r["info"]["seconds"] for r in records),
        "residual": _stats(r["info"]["residual"] for r in records),
        "stop_reasons": dict(Counter(r["info"]["stop_reason"] for r in records)),
        "seeds": {r["name"]: r["seed"] for r in records},
        "num_processes": num_processes,
        "rank": {r["name"]: r["rank"] for r in records},
        "wall_seconds": wall_seconds,
        **settings,
        **(extra or {}),
    }


CSV_INFO = ("nfe", "iterations", "stop_reason", "residual", "seconds")


def metrics_csv(records: list[dict]) -> str:
    has_truth = any("metrics" in r for r in records)
    cols = ["name", "rank"]
    if has_truth:
        cols += list(METRICS) + [f"{m}_initial" for m in METRICS]
    cols += list(CSV_INFO) + ["seed_noise", "seed_solver"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)

    def fmt(v):
        if v is None:
            return "n/a"
        return f"{v:.6g}" if isinstance(v, float) else v

    for r in records:
        row = [r["name"], r["rank"]]
        if has_truth:
            row += [fmt(r["metrics"].get(m)) for m in METRICS]
            row += [fmt(r.get("initial_metrics", {}).get(m)) for m in METRICS]
        row += [fmt(r["info"].get(k)) for k in CSV_INFO]
        row += [r["seed"]["noise"], r["seed"]["solver"]]
        w.writerow(row)
    return buf.getvalue()


def _display(y, size: tuple[int, int]):
    """A measurement at the image size for viewing (nearest upsampling if it is smaller)."""
    import torch.nn.functional as F

    if tuple(y.shape[-2:]) == tuple(size):
        return y
    return F.interpolate(y.float(), size=size, mode="nearest")


def make_grid(rows: list[list], pad: int = 2):
    """Images ``(1, C, H, W)`` in rows → one image with ``pad`` white pixels between them."""
    import torch

    c = max(t.shape[1] for row in rows for t in row)
    h = max(t.shape[-2] for row in rows for t in row)
    w = max(t.shape[-1] for row in rows for t in row)
    ncol = max(len(r) for r in rows)
    grid = torch.ones(1, c, pad + len(rows) * (h + pad), pad + ncol * (w + pad))
    for i, row in enumerate(rows):
        for j, t in enumerate(row):
            t = t.float().cpu().expand(1, c, *t.shape[-2:])
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            grid[:, :, top:top + t.shape[-2], left:left + t.shape[-1]] = t
    return grid


def _kernel_image(k):
    k = k.detach().float().cpu()
    return (k / k.max().clamp_min(1e-12) * 2 - 1)[None, None]


def execute(items: list[Item], *, operator, solver, prior, sigma: float = 0.01, noise: str = "gaussian",
            seed: int = 0, batch_size: int = 4, measurements: bool = False, output_dir=None,
            metrics: Sequence[str] = METRICS, lpips_net: str = "alex", grid_max: int = 8, progress: bool = True,
            state=None, device=None, config_yaml: str | None = None, extra_summary: dict | None = None,
            return_images: bool = True) -> Reconstruction:
    """Reconstruct ``items``: split across processes, batched within each, every image seeded
    from (``seed``, name), skipping the images whose record already exists in ``output_dir``.

    ``operator`` / ``solver`` / ``prior``: objects, names or config mappings (see
    :func:`build_operator`, :func:`build_solver`, :func:`build_prior`).  Unreadable images are
    skipped with a logged reason.  Rank 0 writes ``metrics.csv``, ``summary.json`` and
    ``grid.png``; every rank returns the full list of records."""
    import torch

    from . import metrics as M
    from .io import load_image, save_image
    from .solvers import solve

    start = time.perf_counter()
    if int(batch_size) < 1:
        raise RunError(f"batch_size must be >= 1, got {batch_size}")
    batch_size = int(batch_size)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise RunError(f"unknown metric(s) {unknown}; known: {', '.join(METRICS)}")
    if noise not in ("gaussian", "poisson"):
        raise RunError(f"noise must be 'gaussian' or 'poisson', got {noise!r}")
    sigma = float(sigma)
    out = check_writable(Path(output_dir)) if output_dir is not None else None
    if state is None:
        state = process_state(device)
    rank, world = state.process_index, state.num_processes
    device = torch.device(device) if device not in (None, "auto") else state.device

    # models (the first process of each machine first: a download or cache fill happens once per machine)
    with state.local_main_process_first():
        prior = build_prior(prior, device)
    operator = build_operator(operator).to(device)
    solver = build_solver(solver, progress=(progress and rank == 0) if not _is_solver(solver) else None)
    try:
        solver.check(operator, prior)
    except ValueError as err:
        from .solvers import SOLVERS
        from .solvers.base import prior_key

        fits = [n for n, cls in SOLVERS.items() if prior_key(prior) in cls.accepts]
        raise RunError(f"{err}" + (f" (solvers for this prior: {', '.join(fits)}, or their *_cpu presets)"
                                   if fits else "")) from None
    settings = {**describe(operator, solver, prior), "sigma": sigma, "noise": noise, "seed": int(seed),
                "measurements": bool(measurements)}
    fp = fingerprint(settings)

    # resume: rank 0 cleans up and decides what is left to do; every rank gets the same list
    names = [it.name for it in items]
    done: dict[str, dict] = {}
    error = None
    if rank == 0 and out is not None:
        for p in remove_temp_files(out):
            log.info("removed the temporary file %s left by an interrupted run", p)
        for nm in names:
            rec = is_finished(out, nm)
            if rec is None:
                continue
            if rec.get("fingerprint") != fp:
                error = (f"{out} holds results of different settings ({out / 'records' / (nm + '.json')}: "
                         f"fingerprint {rec.get('fingerprint')} != {fp}); use another output directory "
                         f"(hydra.run.dir=...) or remove it")
                break
            done[nm] = rec
        if config_yaml is not None and error is None:
            atomic_write_text(out / "config.yaml", config_yaml)
    pending, error = _broadcast(([nm for nm in names if nm not in done], error) if rank == 0 else None, state)
    if error is not None:  # every rank stops, none waits for the others
        raise RunError(error)
    if rank == 0:
        log.info("%d image(s) | operator %s | solver %s | prior %s (%s, %d px, %d channel(s)) | sigma %g | "
                 "seed %d | %d process(es) | device %s%s", len(names), settings["operator"]["name"],
                 settings["solver"]["name"], settings["prior"]["source"], prior.kind, prior.image_size,
                 prior.channels, sigma, int(seed), world, device, f" | output {out}" if out else "")
        if done:
            log.info("resuming in %s: %d of %d images already finished, %d to do", out, len(done), len(names),
                     len(pending))
    by_name = {it.name: it for it in items}
    with state.split_between_processes(pending) as local_names:
        local = [by_name[nm] for nm in local_names]
    log.debug("rank %d/%d: %d images", rank, world, len(local))

    from tqdm.auto import tqdm

    desc = "ipsolve" if world == 1 else f"ipsolve (rank 0 of {world})"
    bar = tqdm(total=len(local), unit="img", desc=desc, disable=not progress or rank != 0, dynamic_ncols=True)
    records, skipped, images = [], [], {}
    want = list(metrics)
    for b0 in range(0, len(local), batch_size):
        batch = local[b0:b0 + batch_size]
        ok, xs, ys = [], [], []
        for it in batch:
            try:
                if measurements:
                    ys.append(load_measurement(it, operator, prior).to(device))
                else:
                    xs.append(load_truth(it, prior).to(device))
                ok.append(it)
            except (OSError, ValueError) as err:
                log.warning("skipping %s: %s", it.path or it.name, err)
                skipped.append({"name": it.name, "file": str(it.path) if it.path else None, "reason": str(err)})
        if not ok:
            bar.update(len(batch))
            continue
        seeds = [{"noise": derive_seed(seed, it.name, "noise"), "solver": derive_seed(seed, it.name, "solver")}
                 for it in ok]
        if not measurements:
            ys = [operator.measure(x, sigma, noise, generator=torch.Generator().manual_seed(s["noise"]))
                  for x, s in zip(xs, seeds)]
        y = torch.cat(ys)
        gens = [torch.Generator().manual_seed(s["solver"]) for s in seeds]
        try:
            result = solve(y, operator, prior, solver, sigma=sigma, generator=gens)
        except ValueError as err:
            raise RunError(str(err)) from None
        with torch.no_grad():
            init = operator.initial_guess(y).clamp(-1, 1)
        scores = {}
        if not measurements:
            truth = torch.cat(xs)
            for m in want:
                fn = getattr(M, m)
                kw = {"net": lpips_net} if m == "lpips" else {}
                scores[m] = (fn(result.x, truth, **kw), fn(init, truth, **kw))
        for i, it in enumerate(ok):
            rec = {"name": it.name, "file": str(it.path) if it.path else None, "rank": rank,
                   "num_processes": world, "seed": seeds[i], "run_seed": int(seed), "batch": [o.name for o in ok],
                   "device": str(device), "fingerprint": fp}
            if not measurements:
                rec["metrics"] = {m: (None if v[0] is None else float(v[0][i])) for m, v in scores.items()}
                rec["initial_metrics"] = {m: (None if v[1] is None else float(v[1][i])) for m, v in scores.items()}
            rec["info"] = {k: (float(v) if isinstance(v, float) else v) for k, v in result.info[i].items()}
            xi = result.x[i:i + 1].detach().cpu()
            if out is not None:
                outputs = {"recon": f"recon/{it.name}.png", "measurement": f"measurement/{it.name}.png",
                           "initial": f"initial/{it.name}.png"}
                save_image(xi, out / outputs["recon"])
                save_image(_display(y[i:i + 1].cpu(), prior.shape[-2:]), out / outputs["measurement"])
                save_image(init[i:i + 1].cpu(), out / outputs["initial"])
                if result.kernel is not None:
                    outputs["kernel"] = f"kernel/{it.name}.png"
                    save_image(_kernel_image(result.kernel[i]), out / outputs["kernel"])
                rec["outputs"] = outputs
                atomic_write_text(out / "records" / f"{it.name}.json", json.dumps(rec, indent=1, default=str))
            records.append(rec)
            if return_images:
                images[it.name] = xi
        bar.update(len(batch))
    bar.close()
    state.wait_for_everyone()

    # everyone gets every record (small); rank 0 writes the summaries
    gathered = _all_gather((records, skipped), state)
    all_recs = {r["name"]: r for part, _ in gathered for r in part}
    all_skipped = [s for _, part in gathered for s in part]
    all_recs.update(_broadcast(done, state) if world > 1 else done)
    ordered = [all_recs[nm] for nm in names if nm in all_recs]
    skipped_ordered = sorted(all_skipped, key=lambda s: names.index(s["name"]))
    summary = summarize(ordered, settings=settings, skipped=skipped_ordered, num_processes=world,
                        wall_seconds=time.perf_counter() - start,
                        extra={"output_dir": str(out) if out else None, **(extra_summary or {})})
    if rank == 0:
        log.info("finished %d of %d image(s) (%d skipped) in %.1f s", len(ordered), len(names), len(skipped_ordered),
                 summary["wall_seconds"])
    if rank == 0 and out is not None:
        atomic_write_text(out / "metrics.csv", metrics_csv(ordered))
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=str))
        rows = []
        for rec in ordered[:max(int(grid_max), 0)]:
            row = [] if measurements else [load_truth(by_name[rec["name"]], prior)]
            row += [load_image(out / rec["outputs"][k]) for k in ("measurement", "initial", "recon")]
            rows.append(row)
        if rows:
            save_image(make_grid(rows)[0], out / "grid.png")
    x = None
    if return_images:
        parts = _all_gather(images, state) if world > 1 else [images]
        merged = {k: v for part in parts for k, v in part.items()}
        for rec in ordered:
            if rec["name"] not in merged and out is not None:  # finished in an earlier run
                merged[rec["name"]] = load_image(out / rec["outputs"]["recon"])
        x = torch.cat([merged[r["name"]] for r in ordered]) if ordered else None
    return Reconstruction(x=x, records=ordered, names=[r["name"] for r in ordered], skipped=skipped_ordered,
                          summary=summary, output_dir=out)


def _is_solver(obj) -> bool:
    from .solvers import Solver

    return isinstance(obj, Solver)


# ----------------------------------------------------------------------------------------
# the Python API
# ----------------------------------------------------------------------------------------
def reconstruct(images_or_folder, operator="super_resolution", solver="dmplug_cpu", prior="phantom_ddpm",
                output_dir=None, *, sigma: float = 0.01, noise: str = "gaussian", seed: int = 0,
                batch_size: int = 4, measurements: bool = False, max_images: int | None = None, names=None,
                device=None, metrics: Sequence[str] = METRICS, lpips_net: str = "alex", grid_max: int = 8,
                progress: bool = True, return_images: bool = True) -> Reconstruction:
    """Reconstruct a folder of images (a path or ``bundled:phantom`` / ``bundled:photo``), a
    list of image paths, or a tensor ``(N, C, H, W)`` in [-1, 1] (the prior's size and
    channels).  Files are centre-cropped and resized to the prior's size.

    ``operator``, ``solver``, ``prior``: objects, registry names (``"super_resolution"``,
    ``"dps"``, ...), config preset names (``"dmplug_cpu"``, ``"phantom_ddpm"``) or prior sources
    (``"bundled:phantom-ddpm"``, a diffusers directory, ...).  ``measurements=True``: the
    inputs are measurements ``y`` (no ground truth; no PSNR/SSIM/LPIPS).  Each image's noise and
    solver seeds derive from (``seed``, its name), so results do not depend on batching or on the
    number of processes.  With ``output_dir`` the same files as the command line are written
    and a rerun resumes.  Under ``accelerate launch`` / ``torchrun`` the images are split across
    the processes.  Returns a :class:`Reconstruction` (``x, records = reconstruct(...)``)."""
    if output_dir is not None:
        check_writable(Path(output_dir))  # before any work
    items = collect_items(images_or_folder, max_images=max_images, names=names)
    return execute(items, operator=operator, solver=solver, prior=prior, sigma=sigma, noise=noise, seed=seed,
                   batch_size=batch_size, measurements=measurements, output_dir=output_dir, metrics=metrics,
                   lpips_net=lpips_net, grid_max=grid_max, progress=progress, device=device,
                   return_images=return_images)


# ----------------------------------------------------------------------------------------
# the command line's job and sweep summaries
# ----------------------------------------------------------------------------------------
def run_config(cfg, output_dir: Path, state=None, extra_summary: dict | None = None) -> Reconstruction:
    """Run the job described by a composed ``conf/config.yaml`` into ``output_dir``."""
    from omegaconf import OmegaConf

    check_writable(output_dir)
    data = cfg.data
    if OmegaConf.is_missing(data, "path"):
        raise RunError("data.path is required with data=folder: ipsolve data=folder data.path=DIR")
    items = collect_items(data.path, max_images=data.get("max_images"))
    return execute(items, operator=cfg.operator, solver=cfg.solver, prior=cfg.prior, sigma=cfg.sigma,
                   noise=cfg.get("noise", "gaussian"), seed=cfg.seed, batch_size=data.get("batch_size", 4),
                   measurements=bool(data.get("measurements", False)), output_dir=output_dir,
                   metrics=list(cfg.get("metrics", METRICS)), lpips_net=cfg.get("lpips_net", "alex"),
                   grid_max=cfg.get("grid_max", 8), progress=bool(cfg.get("progress", True)), state=state,
                   device=cfg.get("device", "auto"), config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
                   extra_summary=extra_summary, return_images=False)


def format_stats(s: dict | None, digits: int = 2) -> str:
    return "n/a" if not s else f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def report(summary: dict) -> str:
    """A few human-readable lines about a finished run."""
    lines = []
    op, sv, pr = summary["operator"], summary["solver"], summary["prior"]
    lines.append(f"ipsolve: {summary['num_finished']} image(s) reconstructed"
                 + (f", {summary['num_skipped']} skipped (unreadable: "
                    f"{', '.join(str(s['file'] or s['name']) for s in summary['skipped'])})" if summary["skipped"] else "")
                 + f" | operator {op['name']} | solver {sv['name']} | prior {pr['source']} | sigma {summary['sigma']}"
                 + f" | {summary['num_processes']} process(es)")
    m = summary["metrics"]
    if m:
        lines.append(f"  PSNR {format_stats(m.get('psnr'))} dB (initial guess {format_stats(m.get('psnr_initial'))})"
                     f" | SSIM {format_stats(m.get('ssim'), 3)} (initial {format_stats(m.get('ssim_initial'), 3)})"
                     f" | LPIPS {format_stats(m.get('lpips'), 3)}")
    if summary["num_finished"]:
        lines.append(f"  NFE {format_stats(summary['nfe'], 0)} | residual/(sigma*sqrt(m)) "
                     f"{format_stats(summary['residual'])} | seconds {format_stats(summary['seconds'], 1)} | "
                     f"stop: {', '.join(f'{k} {v}' for k, v in summary['stop_reasons'].items())}")
    return "\n".join(lines)


def summarize_sweep(sweep_dir) -> tuple[Path, Path] | None:
    """Compare the runs of a sweep (every ``*/summary.json`` under ``sweep_dir``): writes
    ``sweep_summary.md`` and ``sweep_summary.csv`` there."""
    sweep_dir = Path(sweep_dir)
    runs = []
    for p in sweep_dir.glob("*/summary.json"):
        try:
            runs.append((p.parent.name, json.loads(p.read_text())))
        except (OSError, json.JSONDecodeError):
            continue
    if not runs:
        return None
    runs.sort(key=lambda r: (0, int(r[0])) if r[0].isdigit() else (1, r[0]))
    cols = ["job", "overrides", "operator", "solver", "prior", "images", "psnr", "psnr_std", "ssim", "ssim_std",
            "lpips", "psnr_initial", "nfe", "seconds", "residual", "stop_reasons"]
    overrides = [s.get("overrides", []) for _, s in runs]
    common = [o for o in overrides[0] if all(o in other for other in overrides[1:])] if len(runs) > 1 else []
    rows = []
    for job, s in runs:
        m = s.get("metrics") or {}

        def g(key, part="mean"):
            v = (m.get(key) or {}).get(part)
            return None if v is None else round(v, 4)

        rows.append({"job": job, "overrides": " ".join(o for o in s.get("overrides", []) if o not in common), "operator": s["operator"]["name"],
                     "solver": s["solver"]["name"], "prior": s["prior"]["source"], "images": s["num_finished"],
                     "psnr": g("psnr"), "psnr_std": g("psnr", "std"), "ssim": g("ssim"), "ssim_std": g("ssim", "std"),
                     "lpips": g("lpips"), "psnr_initial": g("psnr_initial"),
                     "nfe": round((s.get("nfe") or {}).get("mean", 0), 1),
                     "seconds": round((s.get("seconds") or {}).get("mean", 0), 2),
                     "residual": round((s.get("residual") or {}).get("mean", 0), 3),
                     "stop_reasons": " ".join(f"{k}:{v}" for k, v in s.get("stop_reasons", {}).items())})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("n/a" if v is None else v) for k, v in r.items()})
    csv_path, md_path = sweep_dir / "sweep_summary.csv", sweep_dir / "sweep_summary.md"
    atomic_write_text(csv_path, buf.getvalue())

    def pm(r, k, d):
        return "n/a" if r[k] is None else (f"{r[k]:.{d}f} ± {r[k + '_std']:.{d}f}" if r.get(k + "_std") is not None
                                          else f"{r[k]:.{d}f}")

    md = [f"# Sweep summary: {sweep_dir}", "",
          "PSNR/SSIM: mean ± std over the images (data range 1); PSNR (initial): the operator's initial guess; "
          "residual: ‖y − A(x)‖ / (σ√m), ≈ 1 at the noise level; seconds: solver time of the image's batch.",
          f"Overrides common to all runs: {' '.join(common) or '(none)'}", "",
          "| job | overrides | images | PSNR (dB) | SSIM | LPIPS | PSNR (initial) | NFE | seconds | residual | stop |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    def num(v, d):
        return "n/a" if v is None else f"{v:.{d}f}"

    for r in rows:
        md.append(f"| {r['job']} | {r['overrides'] or '(defaults)'} | {r['images']} | {pm(r, 'psnr', 2)} | "
                  f"{pm(r, 'ssim', 3)} | {num(r['lpips'], 3)} | {num(r['psnr_initial'], 2)} | {r['nfe']:g} | "
                  f"{r['seconds']:g} | {r['residual']:g} | {r['stop_reasons']} |")
    atomic_write_text(md_path, "\n".join(md) + "\n")
    return md_path, csv_path
