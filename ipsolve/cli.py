"""The ``ipsolve`` command: a Hydra main over :func:`ipsolve.runner.run_config`.

    ipsolve                                    the demo job (phantom prior, SR ×4, dmplug_cpu)
    ipsolve operator=inpainting solver=dps_cpu
    ipsolve -m solver=dps_cpu,dmplug_cpu operator=super_resolution,inpainting   (a sweep)
    torchrun --nproc_per_node 2 -m ipsolve ...                                  (2 processes)
    accelerate launch --multi_gpu --num_processes 2 -m ipsolve ...              (2 processes)

Under a multi-process launcher every process runs this Hydra main; Hydra's ``${now:}`` run
directory differs between processes, so rank 0's directory is broadcast to all ranks, the
other ranks' stray directories are removed and their log goes to ``ipsolve_rank<r>.log`` in
the shared directory.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .runner import RunError, conf_dir, report, run_config, summarize_sweep

log = logging.getLogger("ipsolve")
CONF_DIR = conf_dir()


def _writable_target(path: Path) -> str | None:
    """Why files cannot be written under ``path`` (which may not exist yet), or None."""
    path = Path(path).expanduser().absolute()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


class Callbacks(Callback):
    """Hydra callbacks: check the output directory before any work; after a ``-m`` sweep,
    write ``sweep_summary.md`` / ``.csv`` comparing its runs."""

    def _check(self, folder) -> None:
        why = _writable_target(Path(str(folder)))
        if why is not None:
            print(f"ipsolve: error: cannot write to the output directory {folder}: {why}", file=sys.stderr)
            sys.exit(2)

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        paths = summarize_sweep(Path(config.hydra.sweep.dir))
        if paths is None:
            print(f"ipsolve: no finished runs in {config.hydra.sweep.dir}", file=sys.stderr)
            return
        print(f"ipsolve: sweep summary written to {paths[0]} and {paths[1]}")
        print(paths[0].read_text())


def _hydra_files_only(folder: Path, job_name: str) -> bool:
    """True when ``folder`` holds nothing but what Hydra creates for a run (safe to remove)."""
    allowed = {".hydra", f"{job_name}.log"}
    return folder.is_dir() and all(p.name in allowed for p in folder.iterdir())


def _redirect_file_logs(target: Path, console_level: int | None = None) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, logging.FileHandler):
            new = logging.FileHandler(target)
            new.setFormatter(h.formatter)
            new.setLevel(h.level)
            root.removeHandler(h)
            h.close()
            root.addHandler(new)
        elif console_level is not None and isinstance(h, logging.StreamHandler):
            h.setLevel(console_level)


def pin_run_dir(state) -> Path:
    """One run directory for all ranks: rank 0's (broadcast)."""
    hc = HydraConfig.get()
    mine = Path(hc.runtime.output_dir).resolve()
    if state.num_processes == 1:
        return mine
    import torch.distributed as dist

    box = [str(mine)]
    dist.broadcast_object_list(box, src=0)
    shared = Path(box[0])
    if state.process_index != 0:
        # rank > 0: log to its own file in the shared directory, console warnings only
        _redirect_file_logs(shared / f"{hc.job.name}_rank{state.process_index}.log", console_level=logging.WARNING)
        if mine != shared and _hydra_files_only(mine, hc.job.name):
            shutil.rmtree(mine, ignore_errors=True)
            try:
                mine.parent.rmdir()  # the date folder, if it is now empty
            except OSError:
                pass
    return shared


def run(cfg: DictConfig) -> dict | None:
    """The Hydra task: pin the run directory, run, print where the results are."""
    from .runner import process_state

    state = None
    try:
        state = process_state(cfg.get("device", "auto"))
        out = pin_run_dir(state)
        hc = HydraConfig.get()
        extra = {"overrides": list(hc.overrides.task), "job": hc.job.get("num") if hc.mode.name == "MULTIRUN" else None}
        result = run_config(cfg, out, state=state, extra_summary=extra)
        if result.summary["num_finished"] == 0 and result.summary["num_skipped"]:
            raise RunError(f"none of the {result.summary['num_skipped']} image(s) could be read (see {out / 'summary.json'})")
        if state.is_main_process:
            print(report(result.summary))
            print(f"ipsolve: results written to {out}")
            print("  grid.png, summary.json, metrics.csv, config.yaml; recon/, measurement/, initial/, records/")
        return result.summary
    except RunError as err:
        log.error("%s", err)
        print(f"ipsolve: error: {err}", file=sys.stderr)
        sys.exit(2)
    finally:
        if state is not None and state.num_processes > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


if CONF_DIR is not None:
    _main = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(run)
else:  # pragma: no cover - an installation without its config files
    def _main():
        sys.exit("ipsolve: cannot find the configuration directory conf/ (config.yaml); reinstall ipsolve")


def main() -> None:
    """Console entry point (``ipsolve``) and ``python -m ipsolve``."""
    _main()


if __name__ == "__main__":
    main()
