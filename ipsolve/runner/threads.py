"""torch's intra-op thread count for a run (the ``threads`` setting).

torch starts one intra-op thread per core.  On a small or busy CPU that oversubscribes it: the
threads of one operation wait for each other while other processes hold the cores (measured on
a 2-core machine at load ~4.5: the main job took 16 min with torch's default, 87 s with one
thread, bit-identical).  ``threads=auto`` therefore chooses:

* the ``OMP_NUM_THREADS`` of the environment when it is set (the user already chose);
* one thread per process when several processes share the machine;
* on a machine with ≤ 2 usable cores, all of them when it is idle (other work uses at most
  :data:`IDLE_BUSY_CORES`: on 2 idle cores the main job takes 21 s with two threads, 26 s with
  one), else one — two threads beside any other work is where the several-fold loss above happens;
* otherwise the cores other work leaves free (sampled from ``/proc/stat`` over a fraction of a
  second; the 1-minute load average where that file does not exist), split between this
  machine's processes, at most :data:`MAX_AUTO_THREADS`.

Results can differ in the last bits between counts — a float reduction split over 1 or 2 threads
rounds differently (DPS on a blur, 5 steps: 5·10⁻⁶) — so a run records its count (``summary.json``)
and ``threads=N`` pins it for bit-for-bit repeats; the speed is what the count is chosen for.
"""
from __future__ import annotations

import contextlib
import math
import os
import time

from .errors import RunError
from ..notices import shown

MAX_AUTO_THREADS = 8  # the bundled 32-px networks gain nothing beyond a few threads
SMALL_MACHINE = 2     # cores: at or below this, more than one thread only on an idle machine
IDLE_BUSY_CORES = 0.25  # other work's cores at or below which a small machine counts as idle


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    try:  # cgroup v2 quota ("max 100000" = none; "150000 100000" = 1.5 cores)
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _cpu_times() -> tuple[int, int] | None:
    """``(busy, total)`` jiffies of all CPUs from ``/proc/stat``, or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def busy_cores(cores: int, interval: float = 0.3) -> tuple[float, str]:
    """How many of ``cores`` other work keeps busy now, and where the figure comes from.

    Samples the machine's CPU use over ``interval`` seconds while this process sleeps (so the
    figure is the others'); without ``/proc/stat``, the 1-minute load average."""
    first = _cpu_times()
    if first is not None:
        mine = time.process_time()
        time.sleep(interval)
        second = _cpu_times()
        mine = time.process_time() - mine
        if second is not None and second[1] > first[1]:
            share = (second[0] - first[0]) / (second[1] - first[1])
            ncpu = os.cpu_count() or cores
            busy = max(0.0, share * ncpu - mine / interval)  # the machine's busy cores, less this process
            return min(busy, float(cores)), f"{share:.0%} of the CPU busy with other work"
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0, "load unknown"
    return min(load, float(cores)), f"load average {load:.1f}"


def processes_here(num_processes: int = 1) -> int:
    """The processes of this run on this machine (torchrun / accelerate set ``LOCAL_WORLD_SIZE``)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", num_processes)))
    except ValueError:
        return max(1, num_processes)


def choose_threads(setting="auto", num_processes: int = 1) -> tuple[int, str]:
    """``(threads, why)`` for this process from the ``threads`` setting: a number ≥ 1, or ``auto``."""
    if setting is None or str(setting).strip().lower() == "auto":
        env = os.environ.get("OMP_NUM_THREADS", "").strip()
        if env.isdigit() and int(env) >= 1:
            return int(env), f"OMP_NUM_THREADS={env} in the environment"
        cores, procs = usable_cores(), processes_here(num_processes)
        if procs > 1 and procs >= cores:
            return 1, f"auto: {procs} processes share {cores} cores"
        if cores == 1:
            return 1, "auto: 1 usable CPU core"
        busy, source = busy_cores(cores)
        if cores <= SMALL_MACHINE:
            if busy <= IDLE_BUSY_CORES:
                return cores, f"auto: {cores} usable CPU cores, idle ({source})"
            return 1, (f"auto: {cores} usable CPU cores, {source} ({busy:.1f} cores) — one thread on a machine "
                       f"this small unless it is idle")
        free = max(1, math.floor(cores - busy + 0.5))
        n = max(1, min(free // procs, MAX_AUTO_THREADS))
        return n, (f"auto: {cores} usable cores, {source} ({busy:.1f} cores), {procs} process(es) here"
                   + (f", at most {MAX_AUTO_THREADS}" if free // procs > MAX_AUTO_THREADS else ""))
    try:
        n = int(str(setting))
    except ValueError:
        n = 0
    if n < 1 or isinstance(setting, bool):
        raise RunError(f"threads must be auto or an integer >= 1 (torch's CPU threads per process), got {shown(setting)}")
    return n, f"threads={n} (set)"


@contextlib.contextmanager
def torch_threads(setting="auto", num_processes: int = 1):
    """Run the block with the chosen thread count (torch's own count is restored afterwards);
    yields ``{"setting", "threads", "reason"}`` (what ``summary.json`` records)."""
    import torch

    before = torch.get_num_threads()
    n, why = choose_threads(setting, num_processes)
    torch.set_num_threads(n)
    try:
        yield {"setting": str(setting), "threads": n, "reason": why}
    finally:
        torch.set_num_threads(before)
