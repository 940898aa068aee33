"""One run at a time per output directory.

Two runs into one folder mix their results silently: an audit (2026-12-07) started the same
4-image run twice a second apart with ``solver.steps=60`` and ``20``; both ended "results written",
with steps-60 records and summary beside a ``config.yaml`` saying 20 (and a SLURM requeue or a
double launch does all the work twice).  The first process of a run writes ``.ipsolve.lock``
(its host and process id) with ``O_EXCL`` and removes it when the run ends, however it ends; a
second run on the same host finds the process alive and stops with one line.  A lock whose process
is gone (killed, out of memory), or whose process id now belongs to a process started later, is
taken over; one written on another host cannot be checked, so it is said and taken over — a
requeued SLURM job must resume after its node died.  Written here
rather than with ``filelock`` (installed with huggingface_hub): its OS lock dies with the process,
but it cannot say which run holds the folder, and fcntl locks on a cluster's network file system are
not to be relied on."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from pathlib import Path

from .errors import RunError

LOCK_FILE = ".ipsolve.lock"
FRESH_SECONDS = 5.0  # a lock file younger than this that cannot be read yet is being written by its run
log = logging.getLogger("ipsolve")
_HELD: set[str] = set()  # the folders this process holds (the command line takes the lock before the runner does)


class LockHeld(RunError):
    """Another live run holds the folder: nothing of it may be removed or rewritten."""


def _alive(pid: int) -> bool:
    if pid <= 0:  # (os.kill(0, …) signals this process group)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22), None where
    there is no /proc: with it a lock whose process id was reused by another process (a restarted
    container numbers its processes from 1 again) is known to be stale."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])  # (the name in parentheses may hold spaces)
    except (OSError, ValueError, IndexError):
        return None


def _still_running(other: dict) -> bool:
    """The lock's process is alive and is the one that wrote it (same start time, where both are known)."""
    if not _alive(other["pid"]):
        return False
    recorded, now = other.get("start_ticks"), _start_ticks(other["pid"])
    return not (isinstance(recorded, int) and now is not None and now != recorded)


def _holder(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")


def _create(path: Path, me: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(me, f)
    return True


@contextlib.contextmanager
def run_lock(folder: Path | None, main_process: bool = True, state=None):
    """Hold ``folder``'s lock for the run (nothing without an output directory, or on processes
    other than the first: a run's processes share its folder).  With ``state`` (accelerate's, every
    process calling) a refusal is shared: each process raises it, where the others used to wait in
    the run's first collective until the launcher ended them (and a ``-m`` sweep's ranks parted ways)."""
    if state is not None and getattr(state, "num_processes", 1) > 1:
        from .processes import broadcast

        with contextlib.ExitStack() as stack:
            refusal = None
            if main_process:
                try:
                    stack.enter_context(run_lock(folder, True))
                except RunError as err:
                    refusal = (isinstance(err, LockHeld), str(err))
            refusal = broadcast(refusal, state)
            if refusal is not None:
                raise (LockHeld if refusal[0] else RunError)(refusal[1])
            yield
        return
    if folder is None or not main_process or str(Path(folder).resolve()) in _HELD:
        yield
        return
    path = Path(folder) / LOCK_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:  # the run's own check of its output directory says why, in one line
        yield
        return
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
          "start_ticks": _start_ticks(os.getpid())}
    for _ in range(2):  # a stale lock is removed once, then created as ours
        if _create(path, me):
            break
        other = _holder(path)
        if other is None and _age(path) < FRESH_SECONDS:  # created, not yet written: another run is taking it
            raise LockHeld(f"another ipsolve run is starting in {folder} (its lock {path} is being written): wait for "
                           f"it to end, or give another output directory")
        if other is not None and other.get("host") == me["host"] and other["pid"] != me["pid"] \
                and _still_running(other):
            raise LockHeld(f"another ipsolve run (process {other['pid']}, started {other.get('started', '?')}) is "
                           f"writing to {folder}: wait for it to end, or give another output directory "
                           f"(hydra.run.dir=... / output_dir=...); two runs into one folder mix their results (if "
                           f"no such run is going, delete {path})")
        if other is not None and other.get("host") != me["host"]:
            log.warning("%s holds the lock of a run on host %s (process %s, started %s), which cannot be checked "
                        "from here: taken over; if that run is still going, stop one of the two (they would mix "
                        "their results)", folder, other.get("host"), other["pid"], other.get("started", "?"))
        path.unlink(missing_ok=True)  # its process is gone (or it was unreadable, or it is this process's own)
    else:
        raise RunError(f"cannot take the lock {path}: another run keeps creating it")
    _HELD.add(str(Path(folder).resolve()))
    try:
        yield
    finally:
        _HELD.discard(str(Path(folder).resolve()))
        held = _holder(path)
        if held is not None and held["pid"] == me["pid"] and held.get("host") == me["host"]:
            path.unlink(missing_ok=True)
