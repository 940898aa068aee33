"""Progress as log lines, for runs whose output goes to a file (nohup, CI, SLURM): a terminal
gets tqdm bars instead, which a log file would fill with frames.

One line per finished batch and one every N solver iterations, N chosen from the measured time
per iteration so that a line comes every ~:data:`TARGET_SECONDS`; each line says how many images
are done, the elapsed time and an estimate of the rest (from the images and iterations done so
far; solvers that stop early finish sooner than estimated)."""
from __future__ import annotations

import logging
import time

log = logging.getLogger("ipsolve")

TARGET_SECONDS = 20.0  # aim: a line every 10–30 s
MEASURE_SECONDS = 2.0  # time per iteration measured over at least this long before N is fixed


def duration(seconds: float) -> str:
    """``'45 s'``, ``'3 min 05 s'``, ``'1 h 02 min'``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def iteration_budget(solver) -> int | None:
    """The callbacks a solver makes per run at most: its ``callback_budget()`` where it defines one
    (D-Flow: closure evaluations), else iterations / annealing steps / steps; or None."""
    if callable(getattr(solver, "callback_budget", None)):
        return solver.callback_budget()
    for attr in ("iterations", "annealing_steps", "steps"):
        value = getattr(solver, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class ProgressLog:
    """Log lines about a run of ``total`` images in batches (this process's share).

    Use :meth:`start_batch` before a batch, pass :meth:`callback` to the solver, and call
    :meth:`end_batch` after it.  ``clock`` is replaceable for tests."""

    def __init__(self, total: int, num_batches: int, budget: int | None, samples: int = 1, label: str = "",
                 target: float = TARGET_SECONDS, clock=time.perf_counter):
        self.total, self.num_batches, self.samples, self.label = total, num_batches, samples, label
        self.budget = budget * samples if budget else None  # a batch with k samples is solved k times
        self.target, self.clock = target, clock
        self.start = clock()
        self.done, self.skipped, self.batch, self.batch_size = 0, 0, 0, 0
        self.reused = 0  # images whose solve calibration had made: done at no cost, left out of the estimate
        self.every: int | None = None  # N, once measured
        self.calls, self.batch_start = 0, self.start

    def start_batch(self, size: int) -> None:
        self.batch += 1
        self.batch_size, self.calls, self.batch_start = size, 0, self.clock()

    def _done(self) -> str:
        """``'3/4 images done'``, with ``', 1 skipped'`` where inputs could not be used."""
        return f"{self.done}/{self.total} images done" + (f", {self.skipped} skipped" if self.skipped else "")

    def _eta(self, fraction_of_batch: float) -> str:
        elapsed = self.clock() - self.start
        finished = self.done + self.skipped + self.batch_size * min(max(fraction_of_batch, 0.0), 1.0)
        if finished - self.reused <= 0:
            return "time left unknown yet"
        left = elapsed * (self.total - finished) / (finished - self.reused)  # (a skipped input counts as handled)
        return f"about {duration(left)} left"

    def callback(self, iteration: int, state=None) -> None:
        """The solver's per-iteration callback: counts, fixes N once the time per iteration is
        known, and logs every N iterations."""
        self.calls += 1
        now = self.clock()
        if self.every is None:
            spent = now - self.batch_start
            if spent < MEASURE_SECONDS:
                return
            per_iteration = spent / self.calls
            self.every = max(1, round(self.target / per_iteration))
            log.info("%sprogress: %.2f s per solver iteration; a line every %d iterations (~%s)", self.label,
                     per_iteration, self.every, duration(self.every * per_iteration))
        if self.calls % self.every:
            return
        of = f"/{self.budget}" if self.budget else ""
        fraction = self.calls / self.budget if self.budget else 0.0
        log.info("%sprogress: batch %d/%d at iteration %d%s | %s | %s elapsed | %s", self.label,
                 self.batch, self.num_batches, self.calls, of, self._done(),
                 duration(self.clock() - self.start), self._eta(fraction))

    def split_batch(self, parts: int, skipped: int = 0) -> None:
        """The batch just started did not fit in memory and is solved as ``parts`` smaller ones
        (``skipped``: its inputs that could not be used, counted now)."""
        self.batch -= 1
        self.num_batches += parts - 1
        self.skipped += skipped
        self.batch_size = 0

    def end_batch(self, finished: int, skipped: int = 0, reused: int = 0) -> None:
        """After a batch: ``finished`` images solved, ``skipped`` inputs of it that could not be used,
        ``reused`` of the finished ones taken from calibration's solve (they said "0 s left" before)."""
        self.done += finished
        self.skipped += skipped
        self.reused += reused
        self.batch_size = 0
        log.info("%sprogress: batch %d/%d finished%s | %s | %s elapsed | %s", self.label, self.batch,
                 self.num_batches, " (solved by calibration's check, taken from it)" if 0 < finished == reused else "",
                 self._done(), duration(self.clock() - self.start),
                 "done" if self.done + self.skipped >= self.total else self._eta(0.0))
