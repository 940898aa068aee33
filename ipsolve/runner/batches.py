"""The batch loop: load a batch (skipping unreadable images with a reason), measure it with
per-image seeds, solve, score the reconstruction and the initial guess, and record every image."""
from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .errors import RunError
from .grid import kernel_image
from .inputs import Item, derive_seed, input_digest, load_measurement, load_truth
from .progress import ProgressLog, iteration_budget
from .rundir import write_image_outputs

log = logging.getLogger("ipsolve")


@dataclass
class Job:
    """What every batch of a run shares: the models, the settings, the process and the output."""

    operator: object
    solver: object
    prior: object
    sigma: float
    noise: str
    seed: int
    measurements: bool
    metrics: list[str]
    lpips_net: str
    device: object
    rank: int
    world: int
    fingerprint: str
    out: Path | None
    samples: int = 1
    select: str = "mean"
    keep_arrays: bool = False  # also write recon/initial/std as float32 .npy (volume runs reassemble them)
    coupling: float | None = None  # z-coupling weight: a volume's slices are solved together (see ipsolve.solvers.coupling)
    # measurements read from an ipsolve run's own measurement/ folder: its .npy files are y exactly as the
    # operator made it (inpainting: with the noise in the holes), so they are not projected
    own_measurements: bool = False
    # the calibration check's solve of its images with the chosen values, by name: (x, info, kernel, its seconds per
    # image), not solved again
    solved: dict = field(default_factory=dict)
    deterministic: bool = False  # torch's deterministic algorithms on (recorded per image: a resume may switch it)
    # the values calibration chose (the solver holds them): each record says so, as solve()'s info does — only
    # summary.json did, and config.yaml keeps the settings as given (an audit, 2026-12-07)
    calibrated: dict = field(default_factory=dict)
    # sigma=auto_each: each image's own σ̂ by name (its batch of one is solved with it; ``sigma`` is their median),
    # or why it has none (a flat measurement: that image is skipped with the reason)
    sigma_each: dict | None = None
    # what reading a file changed about it (ipsolve.io.read_notices: transparency, 12-bit values, a TIFF's
    # first page), by name: each record says it (the log said it, transparency for the first file only)
    input_notes: dict = field(default_factory=dict)


def run_batches(job: Job, local: list[Item], batch_size: int, progress: bool,
                return_images: bool, log_progress: bool = False) -> tuple[list[dict], list[dict], dict]:
    """This process's images batch by batch: ``(records, skipped, reconstructions by name if return_images)``.

    ``progress``: a tqdm bar (a terminal); ``log_progress``: log lines instead (output to a
    file: one per batch and one every ~20 s of solver iterations, :mod:`.progress`)."""
    from tqdm.auto import tqdm

    desc = "ipsolve" if job.world == 1 else f"ipsolve (rank 0 of {job.world})"
    bar = tqdm(total=len(local), unit="img", desc=desc, disable=not progress or job.rank != 0, dynamic_ncols=True)
    lines = None
    batches = make_batches(job, local, batch_size)
    if log_progress and job.rank == 0 and local:
        lines = ProgressLog(len(local), len(batches), iteration_budget(job.solver),
                            samples=job.samples, label="" if job.world == 1 else f"rank 0 of {job.world}: ")
    records, skipped, images = [], [], {}
    queue = list(batches)
    while queue:
        batch = queue.pop(0)
        this = own_sigma(job, batch)  # (sigma=auto_each: the image's own σ)
        if lines is not None:
            lines.start_batch(len(batch))
        ok, inputs, unreadable = load_batch(this, batch)
        skipped += unreadable
        if ok:
            try:
                done = run_batch(this, ok, inputs, callback=lines.callback if lines is not None else None)
            except RuntimeError as err:  # (torch.OutOfMemoryError is one)
                if not out_of_memory(err):
                    raise
                del inputs
                parts = split_for_memory(this, ok, err)
                queue = parts + [b[k:k + len(parts[0])] for b in queue for k in range(0, len(b), len(parts[0]))]
                bar.update(len(unreadable))
                if lines is not None:
                    lines.split_batch(len(parts), len(unreadable))
                continue
            for rec, x in done:
                records.append(rec)
                if return_images:
                    images[rec["name"]] = x
        bar.update(len(batch))
        if skipped:
            bar.set_postfix(skipped=len(skipped))
        if lines is not None:
            lines.end_batch(len(ok), len(unreadable), sum(it.name in job.solved for it in ok))
    bar.close()
    return records, skipped, images


def own_sigma(job: Job, batch: list[Item]) -> Job:
    """``job`` with σ set to the batch's image's own estimate under ``sigma=auto_each`` (batches of one)."""
    from dataclasses import replace

    if job.sigma_each is None or not batch or not isinstance(job.sigma_each.get(batch[0].name), float):
        return job  # (no estimate: load_batch skips it, saying why)
    return replace(job, sigma=job.sigma_each[batch[0].name])


def out_of_memory(err: BaseException) -> bool:
    """torch's out-of-memory error (a GPU's), or the CPU allocator's failure to allocate."""
    import torch

    return isinstance(err, torch.OutOfMemoryError) or (isinstance(err, RuntimeError)
                                                       and "can't allocate memory" in str(err))


def split_for_memory(job: Job, ok: list[Item], err: BaseException) -> list[list[Item]]:
    """A batch that ran out of memory as two halves to solve instead (each image's seeds are its own,
    so the results do not depend on batching; the later batches take the smaller size) — it was a
    traceback, and a paper-size prior's batch of 16 is often one.  :class:`RunError` where nothing is
    left to split (one image, or a volume whose slices z-coupling solves together)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    where = f"{torch.device(job.device).type.upper()} memory" if job.device is not None else "memory"
    first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
    if len(ok) == 1 or job.coupling is not None:
        what = "one image" if len(ok) == 1 else f"volume {ok[0].volume}'s {len(ok)} slices (z-coupling solves them together)"
        raise RunError(f"out of {where} solving {what} ({first}): finished images are kept and a rerun resumes; "
                       f"lower the memory per image — a prior's memory options (gradient checkpointing, VAE "
                       f"slicing/tiling: README, 'Memory at 512 px'), a smaller prior.image_size, fewer samples"
                       + ("" if job.coupling is None else ", or data.z_coupling=0 (slice by slice)")) from None
    half = (len(ok) + 1) // 2
    log.warning("out of %s on a batch of %d image(s) (%s): solving it as %d + %d; later batches take at most %d "
                "(each image's seeds are its own: the results do not depend on batching)", where, len(ok), first, half,
                len(ok) - half, half)
    return [ok[:half], ok[half:]]


def make_batches(job: Job, local: list[Item], batch_size: int) -> list[list[Item]]:
    """``batch_size`` images at a time; with z-coupling, one volume (all its slices, in z order) at a time."""
    if job.sigma_each is not None:  # sigma=auto_each: each image alone, with its own σ
        batch_size = 1
    if job.coupling is None:  # the images calibration already solved come first, in batches of their own
        first = [it for it in local if it.name in job.solved]
        rest = [it for it in local if it.name not in job.solved]
        return [part[b0:b0 + batch_size] for part in (first, rest) for b0 in range(0, len(part), batch_size)]
    volumes: dict = {}
    for it in local:
        volumes.setdefault(it.volume, []).append(it)
    return [sorted(v, key=lambda it: it.z if it.z is not None else 0) for v in volumes.values()]


def read_measurement(item: Item, operator, prior, device, own_measurements: bool):
    """``item``'s measurement y on ``device`` as the solver gets it: an ipsolve run's own ``.npy``
    exactly, any other file projected onto what the operator can produce (``OSError`` /
    ``ValueError`` for an unreadable one)."""
    operator.set_images([item.name])
    y = load_measurement(item, operator, prior).to(device)
    exact = own_measurements and item.path is not None and item.path.suffix.lower() == ".npy"
    return y if exact else operator.project_measurement(y)


def load_batch(job: Job, batch: list[Item]) -> tuple[list[Item], list, list[dict]]:
    """``(readable items, their truths or measurements on the device, unreadable ones with the reason)``."""
    import torch

    from ..io import read_notices
    from ..solvers.inputs import check_range

    ok, tensors, skipped = [], [], []
    for it in batch:
        try:
            with read_notices() as notes:
                if job.measurements:
                    y = read_measurement(it, job.operator, job.prior, job.device, job.own_measurements)
                else:
                    y = load_truth(it, job.prior).to(job.device)
            if notes:
                job.input_notes[it.name] = notes
            if job.sigma_each is not None and isinstance(job.sigma_each.get(it.name), str):
                raise ValueError(job.sigma_each[it.name])  # sigma=auto_each found no noise to estimate in it
            if job.measurements:  # one file on another scale is skipped by name, as an unreadable one (it stopped
                check_range(y, job.operator, (y.shape[0], *job.prior.shape), job.sigma)  # the whole run)
            if not bool(torch.isfinite(y).all()):  # one NaN image of a tensor stopped the whole run (audit 2026-12-07)
                raise ValueError(f"its {'measurement' if job.measurements else 'image'} holds NaN or inf values; "
                                 f"expected finite numbers")
            tensors.append(y)
            ok.append(it)
        except (OSError, ValueError) as err:
            log.warning("skipping %s: %s", it.path or it.name, err)
            skipped.append({"name": it.name, "file": str(it.path) if it.path else None, "reason": str(err)})
    return ok, tensors, skipped


def run_batch(job: Job, ok: list[Item], inputs: list, callback=None) -> list[tuple[dict, object]]:
    """Measure (unless given), solve, score and write one batch: ``[(record, reconstruction on the CPU)]``.
    ``callback``: the solver's per-iteration callback."""
    import torch

    start = time.perf_counter()
    seeds = image_seeds(job.seed, ok)
    y = torch.cat(inputs if job.measurements else measure(job, inputs, seeds, [it.name for it in ok]))
    job.operator.set_images([it.name for it in ok])  # per-image operator state (masks) follows the image names
    result = solve_batch(job, y, seeds, ok, callback)
    init = initial_guess(job.operator, y)
    init_residual = initial_residual(job.operator, y, init, job.sigma)
    # ground truth: the images themselves, or the truths that came with the measurements (e.g. a fastMRI target)
    truth = torch.cat(inputs) if not job.measurements else \
        (torch.cat([it.truth for it in ok]).to(result.x) if all(it.truth is not None for it in ok) else None)
    scores = score(job, result.x, init, truth) if truth is not None else {}
    # the field's classical method where it is not the initial guess (a blur's Tikhonov deconvolution): its
    # metrics beside the initial guess's, so a gain over y is not read as a gain over deconvolution
    classical = classical_estimate(job.operator, y)
    classical_scores = score(job, classical, None, truth) if classical is not None and truth is not None else {}
    # a reused solve (calibration's check) still cost its share of that solve's time
    batch_seconds = time.perf_counter() - start + sum(job.solved[it.name][3] for it in ok if it.name in job.solved)
    finished = []
    for i, it in enumerate(ok):
        rec = image_record(job, it, [o.name for o in ok], seeds[i], scores, i, result.info[i], truth is not None)
        if classical is not None:  # what classical/ and the *_classical metrics hold
            rec["classical"] = job.operator.classical_name
        if classical_scores:
            rec["classical_metrics"] = {m: (None if v[0] is None else float(v[0][i])) for m, v in classical_scores.items()}
        if result.kernel is not None and not job.measurements:  # simulated: the true kernel is known
            rec["kernel_error"] = kernel_error(result.kernel[i], job.operator)
        rec["batch_seconds"] = batch_seconds
        rec["seconds_per_image"] = batch_seconds / len(ok)  # the batch's images share its time
        flag_against_initial(rec, None if init_residual is None else float(init_residual[i]), y[0].numel(),
                             job.sigma)
        x = result.x[i:i + 1].detach().cpu()
        if job.out is not None:
            images = output_images(job, x, y[i:i + 1], init[i:i + 1], result.kernel, i)
            if classical is not None:  # classical/<name>.png beside initial/ (a blur's Tikhonov deconvolution)
                images["classical"] = classical[i:i + 1].cpu()
            if result.samples is not None:
                images.update(sample_images(result, i, job.keep_arrays))
            write_image_outputs(job.out, rec, images)
        finished.append((rec, x))
    return finished


def image_seeds(seed: int, items: list[Item]) -> list[dict]:
    """Each image's noise and solver seeds, from the run seed and its name."""
    return [{"noise": derive_seed(seed, it.name, "noise"), "solver": derive_seed(seed, it.name, "solver")}
            for it in items]


def measure(job: Job, xs: list, seeds: list[dict], names: list[str]) -> list:
    """The noisy measurements of the ground truths ``xs``, each with its own noise seed."""
    import torch

    out = []
    for x, s, name in zip(xs, seeds, names):
        job.operator.set_images([name])
        out.append(job.operator.measure(x, job.sigma, job.noise, generator=torch.Generator().manual_seed(s["noise"])))
    return out


def solve_batch(job: Job, y, seeds: list[dict], items: list[Item] | None = None, callback=None):
    """The solver's :class:`~ipsolve.solvers.Result` for the batch ``y``, each image with its own
    solver seed; with z-coupling, the penalty couples neighbouring slices of the batch's volume.
    Images the calibration check already solved (same ``y``, seeds and values: ``job.solved``)
    are taken from that solve instead of being solved twice."""
    from ..solvers.base import ResidualWarning

    with warnings.catch_warnings():  # the run logs each image's residual warning itself (image_record)
        warnings.simplefilter("ignore", ResidualWarning)
        return _solve_batch(job, y, seeds, items, callback)


def _solve_batch(job: Job, y, seeds: list[dict], items: list[Item] | None, callback):
    import torch

    from ..solvers import Result, finish, solve
    from ..solvers.coupling import ZCoupling, neighbour_pairs

    if items is not None and items and all(it.name in job.solved for it in items):
        x, info, kernel, _ = zip(*(job.solved[it.name] for it in items))
        result = Result(x=torch.cat(x).to(y.device), info=[{**i, "reused_from_calibration": True} for i in info],
                        kernel=None if kernel[0] is None else torch.cat(kernel).to(y.device))
        return finish(result, y, job.prior, job.solver, job.sigma)
    gens = [torch.Generator().manual_seed(s["solver"]) for s in seeds]
    penalty = None
    if job.coupling is not None and items is not None:
        penalty = ZCoupling(job.coupling, neighbour_pairs([(it.volume, it.z) for it in items]))
    try:
        return solve(y, job.operator, job.prior, job.solver, sigma=job.sigma, generator=gens, samples=job.samples,
                     select=job.select, callback=callback, penalty=penalty)
    except ValueError as err:
        names = f" (images {', '.join(it.name for it in items)})" if items else ""
        raise RunError(f"{err}{names}") from None


def initial_guess(operator, y):
    """The operator's initial guess from ``y``, clamped to [-1, 1]."""
    import torch

    with torch.no_grad():
        return operator.initial_guess(y).clamp(-1, 1)


def classical_estimate(operator, y):
    """The operator's classical estimate from ``y`` (:meth:`~ipsolve.operators.Operator.classical_estimate`),
    clamped to [-1, 1]; None where it has none."""
    import torch

    with torch.no_grad():
        est = operator.classical_estimate(y)
    return None if est is None else est.clamp(-1, 1)


def initial_residual(operator, y, init, sigma: float):
    """‖y − A(x₀)‖/(σ√m) per image for the initial guess x₀ — what a reconstruction should at least
    match, known without the ground truth; None for a blind operator (its A needs the unknown kernel)."""
    import torch

    from ..operators import BlindBlur
    from ..solvers.base import residual_ratio

    if isinstance(operator, BlindBlur) or sigma == 0:  # (σ = 0: no noise level to measure against, as the result's)
        return None
    with torch.no_grad():
        return residual_ratio(y, operator(init.to(y)), sigma).cpu()


def flag_against_initial(rec: dict, init_residual: float | None, m: int, sigma: float) -> None:
    """Record the initial guess's residual and flag a reconstruction that fits the measurement
    worse than the initial guess does: residual above the initial guess's *and* above the noise
    level (the χ²_m 95 % factor τ — below it both fit as well as the true image could, and an
    initial guess that interpolates y, such as inpainting's fill, has residual ≈ 0)."""
    from ..solvers.stopping import discrepancy_tau

    rec["initial_residual"] = init_residual
    residual = rec["info"].get("residual")
    if init_residual is None or residual is None or not math.isfinite(residual):
        return
    level = discrepancy_tau(m) if sigma > 0 else 0.0
    if residual > max(init_residual, level) and math.isfinite(init_residual):
        above_level = (f" and above {level:.2f}×, the most a fit at the noise level reaches (χ² 95 %)"
                       if level > 0 else "")
        rec["worse_than_initial"] = (f"residual {residual:.2f}× the noise level, above the initial guess's "
                                     f"{init_residual:.2f}×{above_level}: the reconstruction explains the measurement "
                                     f"worse than the initial guess")
        log.warning("%s: %s", rec["name"], rec["worse_than_initial"])


def score(job: Job, x, init, truth) -> dict:
    """``{metric: (values for x, values for the initial guess)}`` against the ground truth (``init``
    None: ``(values for x, None)``)."""
    from .. import metrics as M

    scores = {}
    # modulo the operator's true ambiguities (phase retrieval: translation, twin image); identity otherwise
    x = job.operator.align(x, truth.to(x))
    init = None if init is None else job.operator.align(init, truth.to(init))
    for m in job.metrics:
        fn = getattr(M, m)
        kw = {"net": job.lpips_net} if m == "lpips" else {}
        scores[m] = (fn(x, truth, **kw), None if init is None else fn(init, truth, **kw))
    return scores


def image_record(job: Job, it: Item, batch: list[str], seed: dict, scores: dict, i: int, info: dict,
                 has_truth: bool | None = None) -> dict:
    """The record of ``it``, the ``i``-th image of its batch (its outputs are added when written)."""
    import torch

    rec = {"name": it.name, "file": str(it.path) if it.path else None, "rank": job.rank,
           "num_processes": job.world, "threads": torch.get_num_threads(), "seed": seed, "run_seed": int(job.seed),
           "batch": batch,
           "device": str(job.device), "deterministic": job.deterministic, "fingerprint": job.fingerprint,
           "input_digest": input_digest(it)}
    if it.volume is not None:
        rec["volume"], rec["z"] = it.volume, it.z
    elif it.path is not None and not job.measurements:  # the file's own size: centre-cropped and resized from it
        from ..io import image_size                      # to the prior's when they differ (only summary.json counted)

        hw = image_size(it.path)
        if hw is not None:
            rec["input_size"] = [int(hw[0]), int(hw[1])]
    if (not job.measurements) if has_truth is None else has_truth:
        rec["metrics"] = {m: (None if v[0] is None else float(v[0][i])) for m, v in scores.items()}
        rec["initial_metrics"] = {m: (None if v[1] is None else float(v[1][i])) for m, v in scores.items()}
    rec["info"] = {k: (float(v) if isinstance(v, float) else v) for k, v in info.items()}
    if job.calibrated:
        rec["info"]["calibrated"] = dict(job.calibrated)
    if job.sigma_each is not None:  # sigma=auto_each: the σ this image was solved with (its own estimate)
        rec["sigma"] = float(job.sigma)
    if job.input_notes.get(it.name):
        rec["input_notes"] = list(job.input_notes[it.name])
    rec["reliability"] = rec["info"].get("reliability")
    warning = rec["info"].pop("warning", None)  # solve()'s (ipsolve.solvers.base.residual_warning)
    if warning:
        rec["warning"] = warning
        log.warning("%s: %s", it.name, rec["warning"])
    return rec


def kernel_error(estimate, operator) -> float | None:
    """``‖k̂ − k‖ / ‖k‖`` of a blind solver's kernel against the operator's true one (the
    measurement was simulated with it); None when their sizes differ."""
    true = getattr(operator, "kernel", None)
    if true is None or tuple(true.shape[-2:]) != tuple(estimate.shape[-2:]):
        return None
    true = true.detach().double().cpu()
    return float((estimate.detach().double().cpu() - true).norm() / true.norm())


def output_images(job: Job, x, y, init, kernels, i: int) -> dict:
    """One image's files to write, by folder: reconstruction, measurement (shown at the image
    size: ``operator.display``), initial guess and, from a blind solver, the estimated kernel.
    Every measurement is also kept exactly, as ``measurement/<name>.npy`` beside its picture (an
    8-bit picture clips and rounds y; ``data.measurements=true`` reads the array first)."""
    images = {"recon": x, "measurement": job.operator.display(y.cpu(), job.prior.shape[-2:]), "initial": init.cpu(),
              "measurement_data": y.detach().cpu()}
    if job.keep_arrays:  # float values for the volume files (the PNGs are 8-bit)
        images["recon_data"], images["initial_data"] = x, init.cpu()
    if kernels is not None:  # the picture (scaled to its maximum) and the values (kernel/<name>.npy, sums to 1)
        images["kernel"] = kernel_image(kernels[i])
        images["kernel_data"] = kernels[i].detach().float().cpu()[None]
    return images


def sample_images(result, i: int, keep_arrays: bool = False) -> dict:
    """With k > 1 samples: ``mean/``, ``std/`` (colour-mapped, see :func:`std_image`; with
    ``keep_arrays`` also its values, ``std/<name>.npy``) and one file per sample (``samples/<name>_s<j>``)."""
    # mean/ is the samples' mean also where select=residual returned one sample as the reconstruction (recon/)
    images = {"mean": result.samples[i:i + 1].mean(1).detach().cpu(), "std": std_image(result.std[i:i + 1].detach().cpu())}
    if keep_arrays:
        images["std_data"] = result.std[i:i + 1].detach().cpu()
    for j in range(result.samples.shape[1]):
        images[f"samples/_s{j}"] = result.samples[i:i + 1, j].detach().cpu()
    return images


STD_RANGE = 0.25  # std (on the [-1, 1] scale) shown at the top of the colour map


def std_image(std):
    """Per-pixel std ``(1, C, H, W)`` → an RGB image in [-1, 1] (matplotlib's ``magma``, 0 … 0.25
    fixed so that maps of different images and runs compare; channels averaged)."""
    import matplotlib

    import torch

    v = (std.float().mean(1)[0] / STD_RANGE).clamp(0, 1).numpy()
    rgb = matplotlib.colormaps["magma"](v)[..., :3]
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() * 2 - 1
