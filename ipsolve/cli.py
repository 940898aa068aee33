"""The ``ipsolve`` command: a Hydra main over :func:`ipsolve.runner.run_config`.

    ipsolve                                    the main job (4 demo phantoms, SR ×4, dmplug_quick)
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

import csv
import difflib
import json
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .notices import did_you_mean, main_process
from .runner import RunError, conf_dir, report, run_config, summarize_sweep
from .runner.errors import flag
from .runner.lock import LockHeld, run_lock
from .runner.run import check_some_usable
from .runner.reports import failed_job_choices, job_files, sweep_files
from .runner.settings import missing_source_message

log = logging.getLogger("ipsolve")
CONF_DIR = conf_dir()


def _writable_target(path: str | Path) -> str | None:
    """Why files cannot be written under ``path`` (which may not exist yet), or None.  A folder
    that does not exist is created (Hydra creates it next anyway; with ``exist_ok``, as every rank
    of a multi-process run checks it): a writable-looking parent can still refuse (``/sys``,
    ``/proc``; a read-only mount), which Hydra met with a traceback."""
    if not str(path).strip():
        return "it is empty (the outputs would be mixed into the current directory); give a folder"
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
    if probe != path:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            return f"{path} cannot be created ({err.strerror or err})"
    return None


# the run directory as it was before Hydra created it: (path, existed, its entries) — a failed
# start removes only what the run added
_BEFORE_RUN: dict = {}
# Hydra's record of the settings (.hydra/*.yaml) of run folders that existed, by folder: Hydra rewrites
# it before the run starts, so a refused resume would leave the refused settings recorded there
_HYDRA_RECORDS: dict = {}


def _hydra_record(folder: Path) -> dict:
    """``{folder: {file name: contents}}`` of ``folder/.hydra`` ({} where there is none)."""
    try:
        files = {p.name: p.read_bytes() for p in (folder / ".hydra").iterdir() if p.is_file()}
    except OSError:
        return {}
    return {folder: files} if files else {}


def _restore_hydra_record(folder: Path, always: bool = False) -> None:
    """Put back ``folder/.hydra`` as it was before this (refused) run, where it held finished images
    (``always``: whatever it holds — another live run's folder)."""
    folder = Path(folder).absolute()
    saved = _HYDRA_RECORDS.get(folder)
    if not (always or any((folder / "records").glob("[!.]*.json"))):
        return
    if not saved:  # a folder without one (the Python API's): what Hydra wrote for the refused run goes
        if _BEFORE_RUN.get("path") == folder:
            before = _BEFORE_RUN.get("entries", {".hydra"})
            if ".hydra" not in before:
                shutil.rmtree(folder / ".hydra", ignore_errors=True)
            for log_file in folder.glob("*.log"):
                if log_file.name not in before:
                    log_file.unlink(missing_ok=True)
        return
    try:
        for p in (folder / ".hydra").iterdir():
            if p.is_file() and p.name not in saved:
                p.unlink()
        for name, data in saved.items():
            (folder / ".hydra" / name).write_bytes(data)
    except OSError:
        pass


class Callbacks(Callback):
    """Hydra callbacks: check the output directory before any work (and note what it held);
    after a ``-m`` sweep, write ``sweep_summary.md`` / ``.csv`` comparing its runs, failed jobs
    included, and exit with status 1 if any failed."""

    def _check(self, folder) -> None:
        why = _writable_target(str(folder))  # (not a Path: Path('') is '.')
        if why is not None:
            print(f"ipsolve: error: cannot write to the output directory {folder or '(none given)'}: {why}",
                  file=sys.stderr)
            sys.exit(2)

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        folder = Path(str(config.hydra.run.dir)).absolute()  # as it was: the check creates it
        entries = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        # another process of this launch, started the same second, may have made it (its log only): not there before
        sibling = folder.is_dir() and os.environ.get("WORLD_SIZE", "1") not in ("", "0", "1") and \
            all(name.startswith(f"{config.hydra.job.name}_rank") for name in entries)
        _BEFORE_RUN.update(path=folder, created=_levels_created(folder, sibling, config.hydra.job.name),
                           entries=set() if sibling else entries)
        _HYDRA_RECORDS.update(_hydra_record(folder))
        self._check(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config.hydra.sweep.dir)
        # this sweep's summary lists this sweep's jobs: an earlier sweep's reasons are cleared and
        # jobs not run now (an earlier, larger sweep in the same folder) are left out
        for old in job_files(config.hydra.sweep.dir, FAILED_FILE) if _main_rank() else ():
            old.unlink(missing_ok=True)
        for job in job_files(config.hydra.sweep.dir, ".hydra"):
            _HYDRA_RECORDS.update(_hydra_record(job.parent.absolute()))
        _SWEEP_START["files"] = sweep_files(Path(str(config.hydra.sweep.dir)))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if not _main_rank():  # the first process writes and prints the summary (two wrote it, one lost rows)
            if job_files(config.hydra.sweep.dir, FAILED_FILE):
                _exit_after_main(1)
            return
        paths = summarize_sweep(Path(config.hydra.sweep.dir), before=_SWEEP_START.get("files"), refused=_REFUSED_JOBS)
        if paths is None:
            print(f"ipsolve: no finished runs in {config.hydra.sweep.dir}", file=sys.stderr)
            return
        print(f"ipsolve: sweep summary written to {paths[0]} and {paths[1]}")
        print(paths[0].read_text())
        failed = job_files(config.hydra.sweep.dir, FAILED_FILE) + _REFUSED_JOBS
        if failed:
            print(f"ipsolve: {len(failed)} sweep job(s) failed (reasons in {paths[0]}"
                  + (f"; job(s) {', '.join(str(j['job']) for j in _REFUSED_JOBS)} found another run writing to their "
                     f"folder)"
                     if _REFUSED_JOBS else ")"), file=sys.stderr)
        skipping = []
        if config.get("strict") is True:  # as a single run's strict=true (a sweep's exit status was 0)
            with open(paths[1], newline="") as f:
                skipping = [r["job"] for r in csv.DictReader(f) if r["skipped"] not in ("", "n/a", "0")]
            if skipping:
                print(f"ipsolve: error: strict=true: {len(skipping)} sweep job(s) skipped inputs (job(s) "
                      f"{', '.join(skipping[:5])}{', ...' if len(skipping) > 5 else ''}; reasons in their summary.json)",
                      file=sys.stderr)
        if failed or skipping:
            sys.exit(1)


def _hydra_files_only(folder: Path, job_name: str) -> bool:
    """True when ``folder`` holds nothing but what Hydra creates for a run (safe to remove)."""
    allowed = {".hydra", f"{job_name}.log"}
    return folder.is_dir() and all(p.name in allowed or p.name.startswith(f"{job_name}_rank") for p in folder.iterdir())


def _redirect_file_logs(target: Path, console_level: int | None = None, console_prefix: str = "") -> None:
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
            if console_prefix:  # another process's warnings on the shared console say whose they are (audit 2026-12-07)
                fmt = getattr(h.formatter, "_fmt", None) or "%(message)s"
                h.setFormatter(logging.Formatter(console_prefix + fmt))


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
        _redirect_file_logs(shared / f"{hc.job.name}_rank{state.process_index}.log", console_level=logging.WARNING,
                            console_prefix=f"[rank {state.process_index}]")
        if mine != shared and _hydra_files_only(mine, hc.job.name):
            shutil.rmtree(mine, ignore_errors=True)
            try:
                mine.parent.rmdir()  # the date folder, if it is now empty
            except OSError:
                pass
    return shared


def _log_file_only(message: str) -> None:
    """Record ``message`` in the run's log file without echoing it on the console (the console
    gets it once, from :func:`fail`)."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


FAILED_FILE = "failed.json"  # a sweep job's one-line reason, read by the sweep summary
_REFUSED_JOBS: list = []  # sweep jobs whose folder another live run held (no failed.json written into it)
_SWEEP_START: dict = {}  # the job files as this process's -m sweep started (its summary lists the jobs it wrote)
RUN_FILES = ("config.yaml", "report.txt", "summary.json", "metrics.csv", "grid.png", "risk_coverage.csv",
             "risk_coverage.png")


def _multirun() -> bool:
    try:
        return HydraConfig.get().mode.name == "MULTIRUN"
    except ValueError:  # no Hydra config (called outside a Hydra run)
        return False


def _levels_created(folder: Path, sibling: bool, job_name: str) -> list[Path]:
    """The folders a run into ``folder`` creates — the folder, its date folder, ``outputs/`` — removed
    again, when empty, after a failed start (``outputs/`` was left behind, and after a multi-process
    start the date folder).  ``sibling``: another process of the launch made ``folder``; in a
    multi-process launch a level above that holds nothing but the level below and the other processes'
    own folders (their rank log only, removed as they join this one's) counts as made by the launch."""
    launch = os.environ.get("WORLD_SIZE", "1") not in ("", "0", "1")
    cwd = Path.cwd().absolute()

    def made_by_launch(level: Path) -> bool:
        if level == folder:
            return sibling
        if not (launch and level != cwd and level.is_relative_to(cwd)):  # (the folder the user started in was there)
            return False
        others = [p for p in level.iterdir() if p.name != created[-1].name]
        return all(p.is_dir() and all(f.name.startswith(f"{job_name}_rank") for f in p.iterdir()) for p in others)

    created: list[Path] = []
    for level in (folder, *folder.parents):
        if level.is_dir() and not made_by_launch(level):
            break
        created.append(level)
    return created


def _remove_failed_start(folder: Path, job_name: str) -> None:
    """After a run that finished no image: remove what it added to ``folder`` (Hydra's files, the
    log, ``config.yaml`` and the run's summaries, empty output folders) — never what was there
    before it started — and the folder itself (and an empty date folder above it) if that leaves
    it empty.  A run directory with finished images is kept: it resumes."""
    folder = Path(folder).absolute()
    if not folder.is_dir() or any((folder / "records").glob("[!.]*.json")):
        return
    before = _BEFORE_RUN.get("entries", set()) if _BEFORE_RUN.get("path") == folder else set()
    ours = {".hydra", f"{job_name}.log", *RUN_FILES}
    logging.shutdown()
    for p in folder.iterdir():
        rank_log = p.name.startswith(f"{job_name}_rank")  # another process's, perhaps opened before the first noted
        if p.name in before and not rank_log:            # what was there (a folder without finished images)
            continue
        if p.name in ours or rank_log:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        elif p.is_dir() and not any(f.is_file() and not f.name.startswith(".") for f in p.rglob("*")):
            shutil.rmtree(p, ignore_errors=True)  # an output folder without a finished file
    if _BEFORE_RUN.get("path") != folder:  # not the directory noted at the start: leave it
        return
    for level in _BEFORE_RUN["created"]:  # the folder, then the folders above it that the run created
        try:
            level.rmdir()  # only if empty
        except OSError:
            break


def fail(message: str, run_dir: Path | None = None, held: bool = False) -> None:
    """One line on stderr, exit code 2; what the failed run added to its run directory is
    removed (:func:`_remove_failed_start`) unless it finished images.  In a ``-m`` sweep the job
    instead records its reason (``failed.json``, read by the sweep summary) and the sweep goes on.
    ``held``: the folder is another live run's — nothing is removed or written there, and its
    ``.hydra`` record (which Hydra rewrote for this run) is put back."""
    _log_file_only(message)
    if _multirun():
        hc = HydraConfig.get()
        folder = Path(run_dir) if run_dir is not None else Path(hc.runtime.output_dir)
        if not _main_rank():  # the first process says it and records it (its log has it too)
            return
        print(f"ipsolve: error: sweep job {hc.job.num} ({' '.join(as_typed(hc.overrides.task))}): {message}", file=sys.stderr)
        if held:  # its row: this job's choices, read before the other run's .hydra record is put back
            _REFUSED_JOBS.append({"job": hc.job.num, "folder": str(folder.absolute()), "reason": message,
                                  "overrides": as_typed(hc.overrides.task), "choices": failed_job_choices(folder)})
            _restore_hydra_record(folder, always=True)
            return
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # this job's operator/solver/prior, read before a refused resume restores the folder's own .hydra (its
            # row named the earlier job's solver: audit 2026-12-07)
            (folder / FAILED_FILE).write_text(json.dumps({"job": hc.job.num, "overrides": as_typed(hc.overrides.task),
                                                          "reason": message, "choices": failed_job_choices(folder)},
                                                         indent=1))
        except OSError:
            pass
        _restore_hydra_record(folder)
        return
    if not _main_rank():  # one line per run, not one per process (each process's log has it)
        _exit_after_main(2)
    print(f"ipsolve: error: {message}", file=sys.stderr)
    try:
        folder = Path(run_dir) if run_dir is not None else Path(HydraConfig.get().runtime.output_dir)
        if held:
            _restore_hydra_record(folder, always=True)
            sys.exit(2)
        _remove_failed_start(folder, HydraConfig.get().job.name)
        _restore_hydra_record(folder)  # a refused resume: the folder's .hydra keeps the settings its images had
    except (ValueError, OSError):  # no Hydra config (called outside a Hydra run)
        pass
    sys.exit(2)


def _stopped() -> str:
    """How the run was stopped, as the resume line says it: Ctrl-C, or SIGTERM (a crashed process
    was reported as "interrupted" while torchrun's report below named the real cause: audit 2026-12-07)."""
    if _SIGNAL.get("name") == "SIGTERM":
        return ("stopped by SIGTERM (a time limit, scancel, or a launcher stopping every process because one of them "
                "failed: its report says which)")
    return "interrupted"


def interrupted(run_dir: Path | None) -> None:
    """Ctrl-C (or SIGTERM): one line saying how to resume (the run directory, unless the user chose it),
    exit 130; said by the first process only.  In a ``-m`` sweep the finished jobs are summarised
    first (``sweep_summary.md``) and kept: the same command resumes the sweep."""
    if not _main_rank():
        sys.exit(130)
    where, kept, sweep = "", True, None
    try:
        hc = HydraConfig.get()
        chose = any(o.split("=", 1)[0].lstrip("+~") == "hydra.run.dir" for o in hc.overrides.hydra)
        chose_sweep = any(o.split("=", 1)[0].lstrip("+~") == "hydra.sweep.dir" for o in hc.overrides.hydra)
        folder = Path(run_dir) if run_dir is not None else Path(hc.runtime.output_dir)
        if not any((folder / "records").glob("[!.]*.json")):
            _remove_failed_start(folder, hc.job.name)
            kept = False
        elif not chose and hc.mode.name != "MULTIRUN":
            where = f" with hydra.run.dir={folder}"
        if hc.mode.name == "MULTIRUN":
            sweep = summarize_sweep(Path(hc.sweep.dir), before=_SWEEP_START.get("files"), refused=_REFUSED_JOBS)
            if not chose_sweep:  # the default folder is named by the clock: the same command would start anew
                where = f" with hydra.sweep.dir={Path(hc.sweep.dir).absolute()}"
    except (ValueError, OSError):
        pass
    if sweep is not None:  # the jobs finished before it are kept (it said "nothing was kept")
        print(f"\nipsolve: {_stopped()}; the sweep's finished jobs are kept (summary: {sweep[0]}); run the same "
              f"command again{where} to resume", file=sys.stderr)
    elif kept:
        print(f"\nipsolve: {_stopped()}; run the same command again{where} to resume", file=sys.stderr)
    else:  # the folder held nothing finished and was removed: a rerun starts over
        print(f"\nipsolve: {_stopped()} before any image finished; nothing was kept (the same command starts over)",
              file=sys.stderr)
    sys.exit(130)


def run(cfg: DictConfig) -> dict | None:
    """The Hydra task: pin the run directory, run, print where the results are."""
    from .runner import process_state

    state, out = None, None
    try:
        strict = flag("strict", cfg.get("strict", False))  # (checked before any work)
        state = process_state(cfg.get("device", "auto"))
        out = pin_run_dir(state)
        hc = HydraConfig.get()
        if OmegaConf.is_missing(cfg.prior, "source"):
            raise RunError(missing_source_message(hc.runtime.choices.get("prior")))
        extra = {"overrides": as_typed(hc.overrides.task), "job": hc.job.get("num") if hc.mode.name == "MULTIRUN" else None}
        given = [o.split("=", 1)[0].lstrip("+~") for o in hc.overrides.task]
        check_auto_not_switched_off(cfg, hc.overrides.task)
        blind_preset_note(hc.runtime.choices.get("solver"), cfg.get("operator"))
        explicit = [key.split(".", 1)[1] for key in given if key.startswith("operator.")]
        with run_lock(out, state.is_main_process, state):  # the whole run: a volume's files are written around the runner's
            result = run_config(cfg, out, state=state, extra_summary=extra, explicit_operator=explicit,
                                given={key.split(".", 1)[0] for key in given})
        check_some_usable(result.summary)
        if state.is_main_process:
            print(report(result.summary))
            print(f"ipsolve: results written to {out}")
            files = ["grid.png"] if (out / "grid.png").is_file() else []
            files += ["report.txt", "summary.json", "metrics.csv", "config.yaml"]
            files += ["risk_coverage.png", "risk_coverage.csv"] if (out / "risk_coverage.csv").is_file() else []
            files += [f for f in ("calibration.json", "calibration.csv", "calibration.png") if (out / f).is_file()]
            folders = ["recon/", "measurement/", "initial/"]
            folders += ["classical/"] if (out / "classical").is_dir() else []  # a blur's Tikhonov deconvolution
            folders += ["records/"]
            folders += ["mean/", "std/", "samples/"] if result.summary.get("samples", 1) > 1 else []
            folders += ["volumes/"] if result.summary.get("volumes") else []
            folders += ["dicom/"] if (out / "dicom").is_dir() else []
            folders += ["kernel/"] if (out / "kernel").is_dir() else []  # a blind solver's kernels (.png, .npy)
            files += ["operator_kernel.npy"] if (out / "operator_kernel.npy").is_file() else []
            print(f"  {', '.join(files)}; {', '.join(folders)}")
        skipped = [s.get("file") or s.get("name") for s in [*result.summary["skipped"],
                                                             *(result.summary.get("input_skipped") or [])]]
        if strict and skipped and not _multirun():  # a script or a SLURM job sees it (exit status 0 before)
            if state.is_main_process:
                print(f"ipsolve: error: strict=true: {len(skipped)} input(s) skipped ({', '.join(map(str, skipped[:3]))}"
                      f"{', ...' if len(skipped) > 3 else ''}; reasons in summary.json); the other results are written "
                      f"to {out}", file=sys.stderr)
                sys.exit(1)
            _exit_after_main(1)
        return result.summary
    except LockHeld as err:  # another live run's folder: nothing of it is removed or rewritten
        fail(str(err), out, held=True)
    except RunError as err:
        fail(str(err), out)
    except KeyboardInterrupt:
        interrupted(out)
    except Exception as err:  # noqa: BLE001 - a sweep records a job's crash and goes on
        if not _multirun():
            raise
        log.exception("sweep job failed")
        fail(f"{type(err).__name__}: {err}".splitlines()[0], out)
    finally:
        if state is not None and state.num_processes > 1 and not _CLEANUP_REGISTERED:
            # at exit, not after each run: a -m sweep's next job reuses the group (accelerate's state
            # is a singleton: a destroyed group failed every job after the first)
            import atexit

            import torch.distributed as dist

            atexit.register(lambda: dist.destroy_process_group() if dist.is_initialized() else None)
            _CLEANUP_REGISTERED.append(True)


def check_auto_not_switched_off(cfg: DictConfig, overrides) -> None:
    """``solver.X=auto`` asks for calibration (the value chosen from the measurement); with
    ``calibrate.enabled=false`` (or ``calibrate=false``) also given, one line saying the two
    disagree — the auto value was calibrated silently before."""
    off = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] in ("calibrate", "calibrate.enabled")
           and o.split("=", 1)[-1].strip().lower() in ("false", "no", "off", "0")]
    from .solvers import SOLVERS

    solver = cfg.get("solver")
    declared = getattr(SOLVERS.get(str(solver.get("name")), None), "search_space", None) or {} \
        if OmegaConf.is_dict(solver) else {}  # (DAPS's timestep=auto and FlowDPS's loss_space=auto are no calibration)
    autos = [k for k in declared if solver.get(k) == "auto"]
    if off and autos:
        raise RunError(f"{off[0]} turns calibration off, but solver.{autos[0]}=auto asks for it (the value chosen from "
                       f"the measurement): give solver.{autos[0]} a number, or leave out {off[0]}")


def blind_preset_note(solver_choice, operator) -> None:
    """A blind-deblurring solver preset (``dmplug_blind``) on an operator whose kernel is known runs as
    the plain solver, its kernel settings unused: said (it ran silently; audit 2026-12-07).  BlindDPS
    refuses such an operator itself."""
    name = str(operator.get("name", "")) if OmegaConf.is_dict(operator) else ""
    if solver_choice and "blind" in str(solver_choice) and name and not name.startswith("blind_blur"):
        log.warning("solver=%s is a blind-deblurring preset, but operator %s knows its kernel: no kernel is estimated "
                    "and the preset's kernel settings go unused (operator=blind_blur or blind_blur_dmplug estimates one)",
                    solver_choice, name)


_CLEANUP_REGISTERED: list = []  # the process group's destruction is registered once per process


def _main_rank() -> bool:
    """Whether this is the first process of a torchrun / accelerate launch (or the only one): it
    alone prints errors and writes a sweep's summary (the others log them)."""
    return main_process()


# a process other than the first that stops waits this long before it exits: torchrun ends the others
# when one exits with an error, and the first was cut off in 3 of 4 runs while it printed, cleaned and
# summarised (an audit, 2026-12-07: exit code -15)
RANK_EXIT_GRACE_SECONDS = 5.0


def _exit_after_main(code: int) -> None:
    """``sys.exit(code)`` on a process other than the first, after giving the first time to finish."""
    if os.environ.get("WORLD_SIZE", "1") not in ("", "0", "1"):
        import time

        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # ended by torchrun meanwhile: quietly, not "interrupted"
        time.sleep(RANK_EXIT_GRACE_SECONDS)
    sys.exit(code)


def rank_overrides() -> list[str]:
    """Hydra settings for a process other than the first: no ``.hydra`` record of its own, no Hydra
    console lines, and its log in ``<job>_rank<N>.log`` from the start.  With ``hydra.run.dir`` given, every process's Hydra
    wrote into the one folder — a refused resume's settings over the record the first process had
    restored, and files a failed start's clean-up did not know were new (an audit, 2026-12-07)."""
    if main_process():
        return []
    rank = os.environ.get("RANK", "1")
    return ["hydra.output_subdir=null", "hydra/hydra_logging=none",  # (a sweep's "Launching N jobs" lines: rank 0's)
            f"hydra.job_logging.handlers.file.filename=${{hydra.runtime.output_dir}}/${{hydra.job.name}}_rank{rank}.log"]


if CONF_DIR is not None:
    _main = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(run)
else:  # pragma: no cover - an installation without its config files
    def _main():
        sys.exit("ipsolve: cannot find the configuration directory conf/ (config.yaml); reinstall ipsolve")


def _group_choices(args: list[str], group: str) -> list[str]:
    """The presets a ``group=a,b`` sweep (or a plain choice) names; [] for Hydra's sweep
    functions (``range(...)``, ``choice(...)``): those are left to Hydra.  The last one given wins,
    as in Hydra (``solver=dps_cpu solver=daps_cpu`` runs DAPS; its settings were checked against DPS)."""
    for arg in reversed(args):
        if arg.startswith(f"{group}="):
            value = arg.split("=", 1)[1]
            return [] if "(" in value else [v.strip() for v in value.split(",") if v.strip()]
    choice = _group_choice(args, group)
    return [choice] if choice else []


def _group_choice(args: list[str], group: str) -> str | None:
    """The preset chosen for ``group`` on the command line, else the default of config.yaml
    (None for a sweep over several); the last one given, as in Hydra."""
    for arg in reversed(args):
        if arg.startswith(f"{group}="):
            value = arg.split("=", 1)[1]
            return None if "," in value or "(" in value else value
    for entry in OmegaConf.load(CONF_DIR / "config.yaml").defaults:
        if isinstance(entry, dict) or OmegaConf.is_dict(entry):
            if group in entry:
                return entry[group]
    return None


GROUPS = ("operator", "solver", "prior", "data")


def _top_level_settings() -> list[str]:
    return [k for k in OmegaConf.load(CONF_DIR / "config.yaml") if k not in ("defaults", "hydra")]


def _fixed_keys(args: list[str], group: str) -> tuple[list[str] | None, str]:
    """The keys a ``group.X=v`` override may name where that set is fixed, and where they come from:
    the chosen data preset's, or a dict setting of config.yaml's (``calibrate``); None elsewhere
    (solver and operator parameters are checked against their class, prior options by ``load_prior``,
    hydra's own by Hydra)."""
    from .runner import load_preset

    if group == "data":
        choice = _group_choice(args, "data")
        preset = load_preset("data", choice) if choice else None  # an unknown preset is reported by name
        return (list(preset), f"data={choice}") if preset is not None else (None, "")
    if group in GROUPS or group == "hydra":
        return None, ""
    value = OmegaConf.load(CONF_DIR / "config.yaml").get(group)
    return (list(value), group) if isinstance(value, DictConfig) else (None, "")


def _registry(group: str) -> dict:
    if group == "solver":
        from .solvers import SOLVERS

        return SOLVERS
    from .operators import OPERATORS

    return OPERATORS


def _hydra_values(arg: str) -> tuple[bool, list] | None:
    """Hydra's own reading of ``key=value`` (its override grammar: lists ``[0.3,0.7]``, quoted strings,
    ``a,b`` and ``range(...)`` sweeps): (whether it is a sweep, its values).  None where Hydra cannot
    enumerate it (``interval(...)``) or parse it; Hydra then reports it itself."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        override = OverridesParser.create().parse_override(arg)
        if override.is_sweep_override():
            return True, list(override.sweep_iterator())
        return False, [override.value()]
    except Exception:  # noqa: BLE001 - any parse failure is Hydra's to report, with its own message
        return None


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# Hydra's own command-line flags (hydra/_internal/utils.py get_args_parser): everything else is key=value
HYDRA_FLAGS = {"--help", "--hydra-help", "--version", "--cfg", "--resolve", "--package", "--run", "--multirun",
               "--shell-completion", "--config-path", "--config-name", "--config-dir", "--experimental-rerun", "--info"}


def check_overrides(args: list[str]) -> list[str]:
    """Check and normalise the command line before Hydra sees it, so that a mistake gets one
    line naming what exists (Hydra's own errors suggest ``+key=`` and end in a bare TypeError):

    * ``solver.X=v`` / ``operator.X=v``: X must be a parameter of the chosen solver/operator
      (closest name suggested); a valid X missing from the preset's yaml is added (``++``).
    * ``prior=PATH`` (not a preset name) means ``prior.source=PATH``; ``prior.X=v`` is passed on
      to ``load_prior`` (which names the options a prior takes).
    * ``solver=NAME`` etc.: NAME must be a preset in ``conf/<group>/``.
    * ``calibrate.X=v`` (X other than ``enabled``) turns calibration on, as a mapping does in Python,
      unless ``calibrate.enabled`` is given (a budget given for a calibration that never ran was ignored).
    """
    from .runner import load_preset

    out, calibrate_keys, calibrate_off = [], set(), False
    for i, arg in enumerate(args):
        flag_name = arg.split("=", 1)[0]
        if arg.startswith("--") and len(arg) > 2 and not any(f.startswith(flag_name) for f in HYDRA_FLAGS):
            # (argparse's "unrecognized arguments"; Hydra's flags may be abbreviated, as argparse allows)
            name, _, value = arg[2:].partition("=")
            if not value and i + 1 < len(args) and "=" not in args[i + 1] \
                    and (not args[i + 1].startswith("-") or _is_number(args[i + 1])):
                value = args[i + 1]
            fail(f"unknown option {arg.split('=', 1)[0]}: ipsolve takes its settings as key=value (Hydra), e.g. "
                 f"{name}={value or '...'}; its own options: --help, --multirun (-m), --cfg job")
        if arg.startswith("-") or "=" not in arg:
            out.append(arg)
            continue
        key, value = arg.split("=", 1)
        if key.lstrip("+") == "hydra/launcher" and value == "slurm":
            import importlib.util

            try:
                found = importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None
            except ModuleNotFoundError:  # no hydra_plugins package at all
                found = False
            if not found:
                fail('hydra/launcher=slurm needs Hydra\'s submitit launcher: pip install -e ".[slurm]" '
                     '(hydra-submitit-launcher)')
        if key in ("calibrate", "+calibrate", "++calibrate") and value.lower() in ("true", "false"):
            out.append(f"calibrate.enabled={value.lower()}")  # calibrate=true is short for calibrate.enabled=true
            calibrate_keys.add("enabled")
            calibrate_off = value.lower() == "false"
            continue
        bare = key.lstrip("+~")
        if bare == "calibrate.enabled":
            calibrate_off = value.lower() == "false"
        group, _, param = bare.partition(".")
        parsed = _hydra_values(arg)
        sweep = parsed[0] if parsed is not None else ("," in value or "(" in value)
        if group in GROUPS and not param and not key.startswith(("+", "~")):
            presets = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
            if not sweep and value not in presets:
                if group == "prior":  # a source: a directory, a hub id, a checkpoint, bundled:<name>
                    out.append(f"prior.source={value}")
                    continue
                fail(f"unknown {group} {value!r}{did_you_mean(value, presets)}; {group} presets: "
                     f"{', '.join(presets)} (conf/{group}/)")
            unknown = [v for v in _group_choices([arg], group) if v not in presets] if sweep and group != "prior" else []
            if unknown:
                fail(f"unknown {group} {unknown[0]!r}{did_you_mean(unknown[0], presets)} in the sweep {arg}; {group} "
                     f"presets: {', '.join(presets)} (conf/{group}/)")
        if group not in GROUPS and not key.startswith(("+", "~")) and "/" not in group and group != "hydra":
            settings = _top_level_settings()
            if group not in settings:  # review.coverage=0.5 too (Hydra's "not in struct" before: audit 2026-12-07)
                close = (difflib.get_close_matches(bare.replace(".", "_"), settings, n=1) if param else []) \
                    or difflib.get_close_matches(group, settings + list(GROUPS), n=1)
                fail(f"unknown setting {bare if param else group!r}" + (f"; did you mean {close[0]!r}?" if close else ";")
                     + f" settings: {', '.join(settings)}; groups: {', '.join(GROUPS)} (ipsolve --help)")
        given = [param] if param and "." not in param else []
        if not param and group not in GROUPS and parsed is not None:  # calibrate={images:2,...}: each key
            given = [k for v in parsed[1] if isinstance(v, dict) for k in v]
        if group == "calibrate" and not key.startswith("~"):
            calibrate_keys.update(given)
        if given and not key.startswith(("+", "~")):
            keys, where = _fixed_keys(args, group)
            for name in (n for n in given if keys is not None and n not in keys):
                close = difflib.get_close_matches(name, keys, n=1)
                fail(f"{group} has no setting {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                     + f"; the settings of {where}: {', '.join(keys)}")
        if group in ("solver", "operator") and param and "." not in param:
            # every preset a sweep names (solver=dps_cpu,daps_cpu): the setting must exist in each
            choices = [(c, load_preset(group, c)) for c in _group_choices(args, group)]
            choices = [(c, p) for c, p in choices if p is not None]
            if choices and param != "name":
                from .parameters import expected_types, parameter_type_message, unknown_parameters_message

                for choice, preset in choices:
                    cls = _registry(group).get(preset.get("name"))
                    declared = getattr(cls, "search_space", {}) or {}
                    types = expected_types(cls) if cls is not None else {}
                    if group == "solver" and value == "auto" and param in types and param not in declared \
                            and "str" not in types[param]:
                        fail(f"solver {preset['name']!r} cannot choose {param!r} automatically; parameters that "
                             f"accept 'auto': {', '.join(declared) or 'none'} (preset {group}={choice})")
                    values = parsed[1] if parsed is not None else []  # interval(...) sweeps: left to Hydra
                    message = cls and (unknown_parameters_message(group, preset["name"], cls, [param])
                                       or next(filter(None, (parameter_type_message(group, preset["name"], cls,
                                                                                    {param: v}) for v in values)), None))
                    if message:
                        fail(f"{message} (preset {group}={choice})")
                if not key.startswith(("+", "~")):
                    arg = f"++{bare}={value}"  # valid, maybe absent from the preset's yaml
        if group == "prior" and param and not key.startswith(("+", "~")):
            arg = f"++{bare}={value}"  # prior options (prompt, image_size, dtype, ...): load_prior checks the names
        out.append(arg)
    if calibrate_keys and "enabled" not in calibrate_keys:
        out.append("calibrate.enabled=true")
    unused = sorted(calibrate_keys - {"enabled"})
    if calibrate_off and unused and main_process():  # (the run went on without a word)
        print(f"ipsolve: note: calibration is off (calibrate=false), so {', '.join(f'calibrate.{k}' for k in unused)} "
              f"{'is' if len(unused) == 1 else 'are'} not used", file=sys.stderr)
    return out


def as_typed(overrides) -> list[str]:
    """The run's settings as the user typed them: the ``++`` that :func:`check_overrides` puts before a
    solver or prior parameter (valid, maybe absent from the preset's yaml) is left out of what is
    shown and recorded (summaries and sweep tables read ``++solver.steps=60`` for ``solver.steps=60``;
    typed either way, the setting is the same)."""
    return [o[2:] if o.startswith("++") else o for o in overrides]


_SIGNAL: dict = {}  # the signal that stopped the run, when not Ctrl-C


def _terminated(signum, frame) -> None:
    _SIGNAL["name"] = "SIGTERM"
    raise KeyboardInterrupt


def main() -> None:
    """Console entry point (``ipsolve``) and ``python -m ipsolve``."""
    try:
        if CONF_DIR is not None:
            sys.argv[1:] = check_overrides(sys.argv[1:]) + rank_overrides()
        try:  # SLURM's scancel, timeout, torchrun: as Ctrl-C (the resume line)
            signal.signal(signal.SIGTERM, _terminated)
        except ValueError:  # main() called outside the main thread: signals stay as they are
            pass
        _main()
    except KeyboardInterrupt:  # before or after the run (the run itself reports its directory)
        if main_process():
            print(f"\nipsolve: {_stopped()}; run the same command again to resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
