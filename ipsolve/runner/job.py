"""The command line's job: :func:`run_config` turns a composed ``conf/config.yaml`` into a run —
a folder of images through :func:`~ipsolve.runner.run.execute`, volumes (DICOM, NIfTI, fastMRI)
through :func:`~ipsolve.runner.volumes.run_volume_config`."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .errors import RunError, flag
from .inputs import collect_items
from .reports import METRICS
from .rundir import check_writable
from .run import Reconstruction, execute, recorded_operator
from .settings import to_plain
from .volumes import run_volume_config


def run_config(cfg, output_dir: Path, state=None, extra_summary: dict | None = None,
               explicit_operator: Sequence[str] = (), given: Sequence[str] = ("operator", "sigma", "noise")) -> Reconstruction:
    """Run the job described by a composed ``conf/config.yaml`` into ``output_dir``
    (``explicit_operator``: the operator settings given on the command line; ``given``: the
    top-level settings and groups given there — measurements from an ipsolve run take its
    operator, sigma and noise where these were not given)."""
    from omegaconf import OmegaConf

    check_writable(output_dir)
    data = cfg.data
    if data.get("format") is not None:  # DICOM, NIfTI, fastMRI volumes: slices through execute, then reassembled
        return run_volume_config(cfg, output_dir, state=state, extra_summary=extra_summary,
                                 explicit_operator=explicit_operator)
    if OmegaConf.is_missing(data, "path"):
        raise RunError("data.path is required with data=folder: ipsolve data=folder data.path=DIR")
    items = collect_items(data.path, max_images=data.get("max_images"))
    operator, sigma, noise = cfg.operator, cfg.sigma, cfg.get("noise", "gaussian")
    if flag("data.measurements", data.get("measurements", False)):
        operator, sigma, noise = recorded_operator(items, operator, sigma, noise, keep_operator="operator" in given,
                                                   keep_sigma="sigma" in given, keep_noise="noise" in given)
    return execute(items, operator=operator, solver=cfg.solver, prior=cfg.prior, sigma=sigma,
                   noise=noise, seed=cfg.seed, batch_size=data.get("batch_size", 4),
                   measurements=flag("data.measurements", data.get("measurements", False)), output_dir=output_dir,
                   metrics=to_plain(cfg.get("metrics", METRICS)), lpips_net=cfg.get("lpips_net", "alex"),
                   grid_max=cfg.get("grid_max", 8), progress=flag("progress", cfg.get("progress", True)), state=state,
                   device=cfg.get("device", "auto"), config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
                   extra_summary=extra_summary, return_images=False, explicit_operator=explicit_operator,
                   samples=cfg.get("samples", 1), review_below=cfg.get("review_below"),
                   review_coverage=cfg.get("review_coverage"), threads=cfg.get("threads", "auto"),
                   calibrate=to_plain(cfg.get("calibrate")), select=cfg.get("select", "mean"),
                   deterministic=cfg.get("deterministic", False),
                   keep_arrays=flag("save_arrays", cfg.get("save_arrays", False)))


